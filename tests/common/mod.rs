//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lockstep::checkpoint;

/// A fresh, empty directory under the system's temp dir, unique to this process.
pub fn tmp(group: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lockstep-{group}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `lockstep worker` (CPU) dialing 127.0.0.1:`port`, with a token file when given; stderr piped.
pub fn worker(port: u16, token: Option<&Path>) -> Child {
    let mut c = bin();
    c.args(["worker", "--coordinator", &format!("http://127.0.0.1:{port}"), "--backend", "cpu", "--retry-for", "30"]);
    if let Some(t) = token {
        c.arg("--token-file").arg(t);
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Where Debian's `dataset-fashion-mnist` puts the IDX files.
pub const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Whether Fashion-MNIST is installed; prints why `test` skips when not.
pub fn have_fashion_mnist(test: &str) -> bool {
    let ok = Path::new(FMNIST).join("train-images-idx3-ubyte.gz").exists()
        || Path::new(FMNIST).join("train-images-idx3-ubyte").exists();
    if !ok {
        eprintln!("SKIPPED {test}: {FMNIST} is missing (apt-get install dataset-fashion-mnist)");
    }
    ok
}

/// Writes a secret (a token file) readable by its owner only, as
/// `--token-file` requires.
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The step of a run directory's newest checkpoint.
pub fn latest_step(dir: &Path) -> Option<u64> {
    checkpoint::latest(dir)?
        .file_name()?
        .to_str()?
        .trim_start_matches("step-")
        .trim_end_matches(".safetensors")
        .parse()
        .ok()
}

/// Waits (up to 2 minutes) until the run in `dir` has a checkpoint at `step` or later.
pub fn wait_for_step(dir: &Path, step: u64) {
    let t = Instant::now();
    while latest_step(dir).is_none_or(|s| s < step) {
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint at step {step} in {}", dir.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The bit patterns of `v`, for bitwise comparisons.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The `lockstep` binary of this build.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lockstep"))
}

/// A TCP port free on loopback just now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits for a process and collects its output.
pub fn finish(c: Child) -> Output {
    c.wait_with_output().unwrap()
}

/// The parameters of a run directory's newest checkpoint, as bits (for bitwise comparisons).
pub fn params(dir: &Path) -> (Vec<u32>, Vec<u32>) {
    let s = checkpoint::load(&checkpoint::latest(dir).unwrap()).unwrap().state;
    (bits(&s.gen), bits(&s.disc))
}

/// Waits for a coordinator process and then its workers; asserts that each
/// succeeded and returns the coordinator's stderr and its summary (stdout).
pub fn finish_cluster(coord: Child, workers: Vec<Child>) -> (String, serde_json::Value) {
    let c = finish(coord);
    let err = String::from_utf8_lossy(&c.stderr).into_owned();
    assert!(c.status.success(), "coordinator: {err}");
    for w in workers {
        let o = finish(w);
        assert!(o.status.success(), "worker: {}", String::from_utf8_lossy(&o.stderr));
    }
    (err, serde_json::from_slice(&c.stdout).unwrap())
}

/// `lockstep train` of tests/data/tiny-ring.toml in process (no gRPC) for
/// `steps` steps, into `d/local`.
pub fn local_run(d: &Path, steps: &str) -> PathBuf {
    let local = d.join("local");
    let o = bin()
        .args(["train", "--quiet", "--config", "tests/data/tiny-ring.toml", "--steps", steps, "--out"])
        .arg(&local)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    local
}

/// `lockstep coordinator` of tests/data/tiny-ring.toml on 127.0.0.1:`port`,
/// its output piped.
pub fn coordinator(port: u16, steps: &str, min_workers: &str, out: &Path) -> Child {
    bin()
        .args(["coordinator", "--quiet", "--config", "tests/data/tiny-ring.toml", "--steps", steps])
        .args(["--min-workers", min_workers, "--listen", &format!("127.0.0.1:{port}"), "--out"])
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Asserts a bad-input failure: exit code 2 and one line of stderr holding every `needle`.
pub fn assert_input_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "expected exit code 2, stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` not in: {}", lines[0]);
    }
}
