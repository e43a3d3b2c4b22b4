//! Compiles proto/lockstep.proto with protox (pure Rust, no system protoc)
//! and generates the tonic client and server.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/lockstep.proto");
    let fds = protox::compile(["proto/lockstep.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
