//! The coordinator's gRPC service: it takes workers' sessions (handshake,
//! checks), and hands each joined worker, as a `RemoteWorker`, to the lobby
//! from which the trainer takes them.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc as tmpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::proto::{self, coordinator_message, worker_message};
use super::remote::RemoteWorker;
use super::PROTOCOL_VERSION;
use crate::error::{Error, Result};
use crate::gan::phases::PartialLayout;

/// The coordinator's runtime, seen from the threads that wait on it.
///
/// The service runs on a current-thread runtime with no thread of its own:
/// whichever thread waits on it (the trainer's, waiting for a phase result)
/// drives its sockets.  A request then goes out and its result comes in on
/// the trainer's thread, with no hand-over to a runtime thread and back,
/// which cost about 45 µs per hand-over on a 2-core VM (two per phase).  Between
/// waits nothing is served: joins and hostile clients are answered during the
/// next wait, a few milliseconds later.  Only the `Loopback` owns the runtime;
/// a driver whose runtime is gone says so.
#[derive(Clone)]
pub struct Driver(Weak<tokio::runtime::Runtime>);

impl Driver {
    pub fn of(rt: &Arc<tokio::runtime::Runtime>) -> Driver {
        Driver(Arc::downgrade(rt))
    }

    /// Runs `f` to completion, serving the coordinator's sessions meanwhile.
    pub fn block_on<F: Future>(&self, f: F) -> Result<F::Output> {
        let rt = self.0.upgrade().ok_or_else(|| Error::runtime("the coordinator's gRPC service has stopped"))?;
        Ok(rt.block_on(f))
    }
}

/// Workers that have joined and wait to be given work.
pub struct Lobby {
    joined: Mutex<Vec<RemoteWorker>>,
    driver: Driver,
}

impl Lobby {
    pub fn new(driver: Driver) -> Lobby {
        Lobby { joined: Mutex::new(Vec::new()), driver }
    }

    fn add(&self, w: RemoteWorker) {
        self.joined.lock().expect("lobby lock").push(w);
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
        let mut last_log = Instant::now();
        let joined = || self.joined.lock().expect("lobby lock").len();
        // Serves the sessions (joins happen there) while it polls.
        self.driver.block_on(async {
            while joined() < n {
                if start.elapsed() >= timeout {
                    return Err(Error::runtime(format!(
                        "only {} of {n} workers joined within {:.0} s; start more workers (lockstep worker --coordinator URL) or lower --min-workers",
                        joined(),
                        timeout.as_secs_f64()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                if last_log.elapsed() >= Duration::from_secs(5) && joined() < n {
                    eprintln!("lockstep: waiting for workers: {} of {n} joined", joined());
                    last_log = Instant::now();
                }
            }
            Ok(())
        })??;
        Ok(self.take_waiting())
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

/// How long a welcomed worker may take to build its replica and say Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

pub struct CoordinatorService {
    pub lobby: Arc<Lobby>,
    config_toml: String,
    dataset_digest: String,
    layout: PartialLayout,
    deadline: Duration,
    next_id: AtomicU32,
}

impl CoordinatorService {
    pub fn new(
        lobby: Arc<Lobby>,
        config_toml: String,
        dataset_digest: String,
        layout: PartialLayout,
        deadline: Duration,
    ) -> Self {
        CoordinatorService { lobby, config_toml, dataset_digest, layout, deadline, next_id: AtomicU32::new(1) }
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
        let welcome = proto::Welcome {
            worker_id: id,
            config_toml: self.config_toml.clone(),
            dataset_digest: self.dataset_digest.clone(),
        };
        tx.send(Ok(proto::CoordinatorMessage { kind: Some(coordinator_message::Kind::Welcome(welcome)) }))
            .await
            .map_err(|_| Status::unavailable("session closed"))?;
        // The worker joins the lobby once it says Ready with the run's
        // dataset (building a replica loads the data, and may compile kernels).
        let (lobby, layout, deadline, digest) =
            (self.lobby.clone(), self.layout, self.deadline, self.dataset_digest.clone());
        tokio::spawn(async move {
            let ready = tokio::time::timeout(READY_TIMEOUT, inbound.message()).await;
            let refuse = |why: String| {
                eprintln!("lockstep: worker {id} ({}) is not taken: {why}", join.device);
                let _ = tx.try_send(Err(Status::failed_precondition(why)));
            };
            match ready {
                Ok(Ok(Some(proto::WorkerMessage { kind: Some(worker_message::Kind::Ready(r)) }))) => {
                    if r.dataset_digest != digest {
                        return refuse(format!(
                            "its dataset has digest {}, the coordinator's has digest {digest}",
                            r.dataset_digest
                        ));
                    }
                    eprintln!(
                        "lockstep: worker {id} joined ({}, {}, capacity {})",
                        join.backend, join.device, join.capacity
                    );
                    let driver = lobby.driver.clone();
                    lobby.add(RemoteWorker::new(id, &join, tx, inbound, driver, layout, deadline));
                }
                Ok(Ok(Some(_))) => refuse("its first message after Welcome was not Ready".into()),
                Ok(Ok(None)) | Ok(Err(_)) => {
                    eprintln!("lockstep: worker {id} ({}) left before it was ready", join.device)
                }
                Err(_) => refuse(format!("not Ready within {} s of Welcome", READY_TIMEOUT.as_secs())),
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
