//! The coordinator's gRPC service: it takes workers' sessions (handshake,
//! checks), and hands each joined worker, as a `RemoteWorker`, to the lobby
//! from which the trainer takes them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc as tmpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::proto::{self, coordinator_message, worker_message};
use super::remote::RemoteWorker;
use super::PROTOCOL_VERSION;
use crate::error::{Error, Result};
use crate::gan::phases::PartialLayout;

/// Workers that have joined and wait to be given work.
#[derive(Default)]
pub struct Lobby {
    joined: Mutex<Vec<RemoteWorker>>,
    arrived: Condvar,
}

impl Lobby {
    fn add(&self, w: RemoteWorker) {
        self.joined.lock().expect("lobby lock").push(w);
        self.arrived.notify_all();
    }

    /// The workers that have joined and not been taken yet (at once, no waiting).
    pub fn take_waiting(&self) -> Vec<RemoteWorker> {
        let mut v: Vec<RemoteWorker> = self.joined.lock().expect("lobby lock").drain(..).collect();
        v.sort_by_key(|w| w.id);
        v
    }

    /// Waits until `n` workers have joined, logging who is missing, for at
    /// most `timeout`; returns them in the order they joined.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<RemoteWorker>> {
        let start = Instant::now();
        let mut g = self.joined.lock().expect("lobby lock");
        let mut last_log = Instant::now();
        while g.len() < n {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::runtime(format!(
                    "only {} of {n} workers joined within {:.0} s; start more workers (lockstep worker --coordinator URL) or lower --min-workers",
                    g.len(),
                    timeout.as_secs_f64()
                )));
            }
            g = self.arrived.wait_timeout(g, left.min(Duration::from_secs(5))).expect("lobby lock").0;
            if last_log.elapsed() >= Duration::from_secs(5) && g.len() < n {
                eprintln!("lockstep: waiting for workers: {} of {n} joined", g.len());
                last_log = Instant::now();
            }
        }
        let mut v: Vec<RemoteWorker> = g.drain(..).collect();
        v.sort_by_key(|w| w.id);
        Ok(v)
    }
}

/// Accepted connections with Nagle's algorithm off (small phase requests
/// must not wait for delayed ACKs), for `Server::serve_with_incoming`.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}

pub struct CoordinatorService {
    pub lobby: Arc<Lobby>,
    config_toml: String,
    layout: PartialLayout,
    deadline: Duration,
    next_id: AtomicU32,
}

impl CoordinatorService {
    pub fn new(lobby: Arc<Lobby>, config_toml: String, layout: PartialLayout, deadline: Duration) -> Self {
        CoordinatorService { lobby, config_toml, layout, deadline, next_id: AtomicU32::new(1) }
    }
}

fn check_join(j: &proto::Join) -> std::result::Result<(), Status> {
    if j.protocol_version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "protocol version {} is not this coordinator's {PROTOCOL_VERSION}; run the same lockstep release on both ends",
            j.protocol_version
        )));
    }
    if !(j.capacity.is_finite() && j.capacity > 0.0 && j.capacity <= 1e6) {
        return Err(Status::invalid_argument(format!("capacity {} must be in (0, 1e6]", j.capacity)));
    }
    if j.backend.len() > 64 || j.device.len() > 256 {
        return Err(Status::invalid_argument("backend or device name too long"));
    }
    Ok(())
}

#[tonic::async_trait]
impl proto::coordinator_server::Coordinator for CoordinatorService {
    type SessionStream = ReceiverStream<std::result::Result<proto::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        req: Request<Streaming<proto::WorkerMessage>>,
    ) -> std::result::Result<Response<Self::SessionStream>, Status> {
        let mut inbound = req.into_inner();
        let first =
            inbound.message().await?.ok_or_else(|| Status::invalid_argument("empty session: send Join first"))?;
        let join = match first.kind {
            Some(worker_message::Kind::Join(j)) => j,
            _ => return Err(Status::invalid_argument("the first message of a session must be Join")),
        };
        check_join(&join)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tmpsc::channel(4);
        let welcome = proto::Welcome { worker_id: id, config_toml: self.config_toml.clone() };
        tx.send(Ok(proto::CoordinatorMessage { kind: Some(coordinator_message::Kind::Welcome(welcome)) }))
            .await
            .map_err(|_| Status::unavailable("session closed"))?;
        eprintln!("lockstep: worker {id} joined ({}, {}, capacity {})", join.backend, join.device, join.capacity);
        let rt = tokio::runtime::Handle::current();
        self.lobby.add(RemoteWorker::new(id, &join, tx, inbound, rt, self.layout, self.deadline));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
