//! Local mode over loopback gRPC (`lockstep train --transport grpc`): the
//! coordinator's service on 127.0.0.1, N worker sessions in this process
//! dialing it, and the trainer driving them as `RemoteWorker`s: the cluster's
//! code path on one machine.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tonic::transport::{Server, ServerTlsConfig};

use super::coordinator::{CoordinatorService, Driver, Lobby};
use super::proto::coordinator_server::CoordinatorServer;
use super::{wire, worker};
use crate::backend::{Backend, BackendSpec};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::gan::reduce::{Blocks, FixedPoint};
use crate::gan::trainer;

/// How long a phase may take before its worker counts as lost (the default
/// of `lockstep coordinator --phase-deadline`).
pub const PHASE_DEADLINE: Duration = Duration::from_secs(60);

/// A running coordinator service: keep it alive while its workers train.
/// Dropping it shuts the server down gracefully, so that workers see their
/// sessions end cleanly (and exit) rather than a broken connection.
pub struct Loopback {
    /// The service's current-thread runtime (see `coordinator::Driver`):
    /// the only owner, so that it stops with the `Loopback`.
    pub runtime: Arc<Runtime>,
    pub addr: std::net::SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Loopback {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(10), h).await });
        }
    }
}

/// How the coordinator's service lets workers in.
#[derive(Default, Clone)]
pub struct Access {
    /// A token every worker must present.
    pub token: Option<String>,
    /// TLS (the coordinator's certificate and key); plaintext when None.
    pub tls: Option<ServerTlsConfig>,
}

/// Starts the coordinator's service on `listen`, letting workers in as
/// `access` says; returns the runtime serving it, the bound address and the
/// lobby where joined workers wait.
pub fn serve(cfg: &Config, listen: &str, access: Access, deadline: Duration) -> Result<(Loopback, Arc<Lobby>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the gRPC runtime: {e}")))?;
    let runtime = Arc::new(runtime);
    let listener = runtime
        .block_on(super::coordinator::listen(listen))
        .map_err(|e| Error::input(format!("--listen {listen}: cannot listen there: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Error::runtime(format!("listening address: {e}")))?;
    let lobby = Arc::new(Lobby::new(Driver::of(&runtime)));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let data = crate::data::open(&cfg.data)?;
    let game = trainer::game(cfg, data.shape())?;
    let layout = game.layout();
    let fixed = FixedPoint::new(Blocks::of(&game), cfg.chunks());
    let svc = CoordinatorService::new(lobby.clone(), cfg.to_toml(), data.digest(), layout, fixed, deadline);
    let max = wire::max_message_bytes(&game);
    let service = CoordinatorServer::new(svc).max_decoding_message_size(max).max_encoding_message_size(max);
    let service = tonic::service::interceptor::InterceptedService::new(service, super::auth::Check::new(access.token));
    let mut builder = Server::builder();
    if let Some(tls) = access.tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::runtime(format!("cannot set up TLS: {}", super::tls::source_chain(&e))))?;
    }
    let server = builder
        .initial_stream_window_size(wire::WINDOW_BYTES)
        .initial_connection_window_size(wire::WINDOW_BYTES)
        .max_frame_size(wire::MAX_FRAME_BYTES)
        .add_service(service)
        .serve_with_incoming_shutdown(super::coordinator::incoming(listener), async {
            let _ = stop_rx.await;
        });
    let server = runtime.spawn(async move {
        if let Err(e) = server.await {
            eprintln!("lockstep: the coordinator's gRPC server stopped: {e}");
        }
    });
    Ok((Loopback { runtime, addr, shutdown: Some(stop_tx), server: Some(server) }, lobby))
}

/// Starts the service on loopback and `n` workers in this process; returns
/// them once all have joined.
pub fn start(cfg: &Config, n: usize, choice: BackendSpec) -> Result<(Loopback, Vec<Box<dyn Backend>>)> {
    let (lb, lobby) = serve(cfg, "127.0.0.1:0", Access::default(), PHASE_DEADLINE)?;
    let url = format!("http://{}", lb.addr);
    for i in 0..n {
        let url = url.clone();
        // Each worker on a thread of its own running a single-threaded
        // runtime: it reads a request, computes and writes the result on
        // that one thread (no wake-ups across threads on the worker's side).
        let run = move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::runtime(format!("cannot start a local worker's runtime: {e}")))?;
            rt.block_on(async {
                let ch = worker::connect(&url).await?;
                worker::run_session(ch, choice, None).await
            })
        };
        std::thread::Builder::new()
            .name(format!("lockstep-worker-{i}"))
            .spawn(move || {
                if let Err(e) = run() {
                    eprintln!("lockstep: local worker: {e}");
                }
            })
            .map_err(|e| Error::runtime(format!("cannot start a local worker's thread: {e}")))?;
    }
    let workers = lobby.wait_for(n, Duration::from_secs(60))?;
    let workers = workers.into_iter().map(|w| Box::new(w) as Box<dyn Backend>).collect();
    Ok((lb, workers))
}
