//! Local mode over loopback gRPC (`lockstep train --transport grpc`): the
//! coordinator's service on 127.0.0.1, N worker sessions in this process
//! dialing it, and the trainer driving them as `RemoteWorker`s: the cluster's
//! code path on one machine.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tonic::transport::Server;

use super::coordinator::{CoordinatorService, Lobby};
use super::proto::coordinator_server::CoordinatorServer;
use super::{wire, worker};
use crate::backend::{Backend, BackendChoice};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::gan::trainer;

/// How long a phase may take before its worker counts as lost.
pub const PHASE_DEADLINE: Duration = Duration::from_secs(60);

/// A running loopback cluster: keep it alive while its workers train.
pub struct Loopback {
    pub runtime: Runtime,
    pub addr: std::net::SocketAddr,
}

/// Starts the service and `n` workers; returns them once all have joined.
pub fn start(cfg: &Config, n: usize, choice: BackendChoice) -> Result<(Loopback, Vec<Box<dyn Backend>>)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("lockstep-grpc")
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the gRPC runtime: {e}")))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| Error::runtime(format!("cannot listen on loopback: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Error::runtime(format!("loopback address: {e}")))?;
    let lobby = Arc::new(Lobby::default());
    let layout = trainer::setup(cfg).game.layout();
    let svc = CoordinatorService::new(lobby.clone(), cfg.to_toml(), layout, PHASE_DEADLINE);
    let max = wire::max_message_bytes(cfg);
    let server = Server::builder()
        .initial_stream_window_size(wire::WINDOW_BYTES)
        .initial_connection_window_size(wire::WINDOW_BYTES)
        .tcp_nodelay(true)
        .add_service(CoordinatorServer::new(svc).max_decoding_message_size(max).max_encoding_message_size(max))
        .serve_with_incoming(super::coordinator::incoming(listener));
    runtime.spawn(async move {
        if let Err(e) = server.await {
            eprintln!("lockstep: the coordinator's gRPC server stopped: {e}");
        }
    });
    let url = format!("http://{addr}");
    for _ in 0..n {
        let url = url.clone();
        runtime.spawn(async move {
            let r = match worker::connect(&url).await {
                Ok(ch) => worker::run_session(ch, choice).await,
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                eprintln!("lockstep: local worker: {e}");
            }
        });
    }
    let workers = lobby.wait_for(n, Duration::from_secs(60))?;
    let workers = workers.into_iter().map(|w| Box::new(w) as Box<dyn Backend>).collect();
    Ok((Loopback { runtime, addr }, workers))
}
