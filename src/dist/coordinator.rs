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
use crate::gan::reduce::FixedPoint;

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

/// New connections the coordinator accepts per second, at most, and in a
/// burst.  The service runs on the trainer's thread (see `Driver`), so every
/// connection a flood opens is served on the step's critical path; a cap on
/// the accept rate caps what a flood of any size costs a step (measured on 2
/// cores, 200 bad connections: 87 % of the calm steps/s uncapped, 93 % at 64
/// a second, 94 % at 1).  Beyond it, connections wait in the kernel's accept
/// queue (during a flood a worker's join waits its turn there, see
/// `ACCEPT_QUEUE`), and a whole cluster's join fits in one burst.
pub const ACCEPT_PER_SECOND: f64 = 64.0;
pub const ACCEPT_BURST: f64 = 128.0;

/// Connections the kernel queues for `accept`: under a flood, a worker's
/// dial waits its turn in the queue (at most `ACCEPT_QUEUE /
/// ACCEPT_PER_SECOND`, 16 s) rather than being dropped.
const ACCEPT_QUEUE: u32 = 1024;

/// Listens on `addr` (host:port) with `ACCEPT_QUEUE`.
pub async fn listen(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(ACCEPT_QUEUE)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the address resolved to nothing")))
}

/// A token bucket: `ACCEPT_BURST` tokens, refilled at `ACCEPT_PER_SECOND`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: tokio::time::Instant,
}

impl Bucket {
    fn full(now: tokio::time::Instant) -> Bucket {
        Bucket { tokens: ACCEPT_BURST, refilled: now }
    }

    /// Ok when a token is there at `now` (it is not taken yet), else when the next one is due.
    fn ready(&mut self, now: tokio::time::Instant) -> std::result::Result<(), tokio::time::Instant> {
        let since = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + since * ACCEPT_PER_SECOND).min(ACCEPT_BURST);
        self.refilled = now;
        if self.tokens >= 1.0 - 1e-9 {
            Ok(())
        } else {
            Err(now + Duration::from_secs_f64((1.0 - self.tokens) / ACCEPT_PER_SECOND))
        }
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

/// Accepted connections with Nagle's algorithm off (small phase requests
/// must not wait for delayed ACKs), at most `ACCEPT_PER_SECOND` (in bursts
/// of `ACCEPT_BURST`), for `Server::serve_with_incoming`.
pub fn incoming(listener: tokio::net::TcpListener) -> Incoming {
    Incoming { listener, bucket: Bucket::full(tokio::time::Instant::now()), wait: None }
}

/// The stream `incoming` returns.
pub struct Incoming {
    listener: tokio::net::TcpListener,
    bucket: Bucket,
    /// Set while the bucket is empty: until the next token is due.
    wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl tokio_stream::Stream for Incoming {
    type Item = std::io::Result<tokio::net::TcpStream>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        while let Err(due) = self.bucket.ready(tokio::time::Instant::now()) {
            let wait = self.wait.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            wait.as_mut().reset(due);
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.wait = None;
        match self.listener.poll_accept(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok((s, _))) => {
                self.bucket.take();
                Poll::Ready(Some(s.set_nodelay(true).map(|()| s)))
            }
        }
    }
}

/// How long a welcomed worker may take to build its replica and say Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

pub struct CoordinatorService {
    pub lobby: Arc<Lobby>,
    config_toml: String,
    dataset_digest: String,
    layout: PartialLayout,
    fixed: FixedPoint,
    deadline: Duration,
    next_id: AtomicU32,
}

impl CoordinatorService {
    pub fn new(
        lobby: Arc<Lobby>,
        config_toml: String,
        dataset_digest: String,
        layout: PartialLayout,
        fixed: FixedPoint,
        deadline: Duration,
    ) -> Self {
        CoordinatorService { lobby, config_toml, dataset_digest, layout, fixed, deadline, next_id: AtomicU32::new(1) }
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
        let (lobby, layout, fixed, deadline, digest) =
            (self.lobby.clone(), self.layout, self.fixed.clone(), self.deadline, self.dataset_digest.clone());
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
                    lobby.add(RemoteWorker::new(id, &join, (tx, inbound), driver, layout, fixed, deadline));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_a_burst_through_then_the_capped_rate() {
        let t0 = tokio::time::Instant::now();
        let mut b = Bucket::full(t0);
        for _ in 0..ACCEPT_BURST as usize {
            assert!(b.ready(t0).is_ok());
            b.take();
        }
        let due = b.ready(t0).unwrap_err();
        let gap = due - t0;
        assert!((gap.as_secs_f64() - 1.0 / ACCEPT_PER_SECOND).abs() < 1e-6, "{gap:?}");
        // Ten seconds later: ten seconds' worth, not more than a burst.
        let later = t0 + Duration::from_secs(10);
        let mut n = 0;
        while b.ready(later).is_ok() {
            b.take();
            n += 1;
        }
        assert_eq!(n, (10.0 * ACCEPT_PER_SECOND).min(ACCEPT_BURST) as usize);
    }

    #[test]
    fn incoming_accepts_a_burst_then_at_the_capped_rate() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            use tokio_stream::StreamExt;
            let listener = listen("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let n = ACCEPT_BURST as usize + 16;
            let mut clients = Vec::new();
            for _ in 0..n {
                clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            }
            let mut inc = incoming(listener);
            let start = tokio::time::Instant::now();
            let mut times = Vec::new();
            while times.len() < n {
                let s = tokio::time::timeout(Duration::from_secs(10), inc.next()).await.unwrap().unwrap().unwrap();
                assert!(s.nodelay().unwrap());
                times.push(start.elapsed().as_secs_f64());
            }
            // The burst: the connections before the first wait for a token.
            let burst = 1 + times.windows(2).take_while(|w| w[1] - w[0] < 0.5 / ACCEPT_PER_SECOND).count();
            assert!((ACCEPT_BURST as usize..=ACCEPT_BURST as usize + 1).contains(&burst), "{burst}: {times:?}");
            let rest = times[n - 1] - times[burst - 1];
            let want = 16.0 / ACCEPT_PER_SECOND;
            assert!(rest > 0.9 * want && rest < want + 0.5, "{rest} s for 16, want {want}");
        });
    }
}
