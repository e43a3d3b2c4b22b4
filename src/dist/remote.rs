//! A worker on the other end of a session, seen by the trainer as a
//! `Backend`: parameters and phase requests go out on the session's stream;
//! each phase waits, up to a deadline, for the worker's result.

use std::time::Duration;

use tokio::sync::mpsc as tmpsc;
use tonic::{Code, Status, Streaming};

use super::proto::{self, coordinator_message::Kind, worker_message};
use super::validate::{self, Verdict};
use super::wire;
use crate::backend::{Backend, Draw, ShardTask};
use crate::error::{Error, Result};
use crate::f32le;
use crate::gan::phases::PartialLayout;

pub type Outbound = tmpsc::Sender<std::result::Result<proto::CoordinatorMessage, Status>>;

/// The worker's side of the session's stream, read by the trainer's thread
/// itself (blocking on the runtime's handle: no task in between).
pub type Inbound = Streaming<proto::WorkerMessage>;

pub struct RemoteWorker {
    pub id: u32,
    backend: String,
    device: String,
    capacity: f64,
    tx: Outbound,
    rx: Inbound,
    /// The runtime serving the session.
    rt: tokio::runtime::Handle,
    /// Where each quantity sits in a row of partial sums.
    layout: PartialLayout,
    deadline: Duration,
    next_request: u64,
    /// The shard of the last phase 1 (phase 2 continues it).
    last: Option<ShardTask>,
    /// Seconds the worker reported computing in the last phase.
    pub last_compute_seconds: f64,
    bytes_sent: metrics::Counter,
    bytes_received: metrics::Counter,
}

impl RemoteWorker {
    pub fn new(
        id: u32,
        join: &proto::Join,
        tx: Outbound,
        rx: Inbound,
        rt: tokio::runtime::Handle,
        layout: PartialLayout,
        deadline: Duration,
    ) -> RemoteWorker {
        RemoteWorker {
            id,
            backend: join.backend.clone(),
            device: join.device.clone(),
            capacity: join.capacity,
            tx,
            rx,
            rt,
            layout,
            deadline,
            next_request: 1,
            last: None,
            last_compute_seconds: 0.0,
            bytes_sent: metrics::counter!(crate::telemetry::names::COMM_BYTES, "direction" => "sent"),
            bytes_received: metrics::counter!(crate::telemetry::names::COMM_BYTES, "direction" => "received"),
        }
    }

    fn send(&mut self, kind: Kind) -> Result<()> {
        self.tx.blocking_send(Ok(proto::CoordinatorMessage { kind: Some(kind) })).map_err(|_| {
            Error::runtime(format!("worker {}: its session has closed (the worker stopped or disconnected)", self.id))
        })
    }

    /// Sends one phase request and writes the result into `out`.  A result
    /// that does not fit the request is refused: the worker gets the status
    /// on its stream, nothing of it is used, and the error evicts the worker.
    fn phase(&mut self, req: proto::PhaseRequest, out: &mut [f32]) -> Result<()> {
        let want = validate::Expected::of(&req, &self.layout);
        let cols = wire::result_columns(&self.layout, req.phase == proto::Phase::Two as i32, req.with_gen_grad);
        self.bytes_sent.increment(req.v.len() as u64 + 64);
        self.send(Kind::Phase(req))?;
        let res = self.receive(&want)?;
        self.bytes_received.increment(res.partials.len() as u64 + 64);
        match validate::validate_result(&res, &want) {
            Err(st) => Err(self.refuse(st)),
            Ok(Verdict::Failed(why)) => {
                Err(Error::runtime(format!("worker {} failed step {}: {why}", self.id, want.step)))
            }
            Ok(Verdict::Overflow) => {
                self.last_compute_seconds = res.compute_seconds;
                // +inf in every row: the trainer's non-finite check skips the step everywhere.
                fill_columns(out, self.layout.stride(), &cols, f32::INFINITY);
                Ok(())
            }
            Ok(Verdict::Values) => {
                self.last_compute_seconds = res.compute_seconds;
                self.unpack(&res, out, &cols)
            }
        }
    }

    /// Waits, up to the deadline, for the next result (or why the session
    /// ended).  A message that breaks the protocol (not a PhaseResult, or
    /// over the size limit) ends the session: the worker gets a status
    /// saying why, and the error says the same.
    fn receive(&mut self, want: &validate::Expected) -> Result<proto::PhaseResult> {
        let (rx, deadline) = (&mut self.rx, self.deadline);
        // The timer is made inside the runtime's context.
        let next = self.rt.block_on(async move { tokio::time::timeout(deadline, rx.message()).await });
        let refusal = match next {
            Ok(Ok(Some(proto::WorkerMessage { kind: Some(worker_message::Kind::Result(r)) }))) => return Ok(r),
            Ok(Ok(Some(_))) => {
                Status::invalid_argument("after Join a worker sends only PhaseResult messages; got another kind")
            }
            Ok(Ok(None)) => return Err(Error::runtime(format!("worker {}: closed its session", self.id))),
            // Too large, or not a message at all: the worker's fault.
            Ok(Err(s)) if matches!(s.code(), Code::OutOfRange | Code::Internal | Code::InvalidArgument) => {
                Status::new(s.code(), format!("the coordinator cannot take your message: {}", s.message()))
            }
            Ok(Err(s)) => return Err(Error::runtime(format!("worker {}: session failed: {}", self.id, s.message()))),
            Err(_) => {
                return Err(Error::runtime(format!(
                    "worker {} ({}) missed the {:.0} s deadline of step {}, phase {}",
                    self.id,
                    self.device,
                    self.deadline.as_secs_f64(),
                    want.step,
                    want.phase
                )))
            }
        };
        let msg = format!("worker {}: {}", self.id, refusal.message());
        let _ = self.tx.try_send(Err(refusal));
        Err(Error::runtime(msg))
    }

    /// Ends the worker's session with `st` (best effort: a worker that does
    /// not read its stream only sees the session close) and says why.
    fn refuse(&self, st: Status) -> Error {
        let msg = format!("worker {} refused: {}", self.id, st.message());
        let _ = self.tx.try_send(Err(st));
        Error::runtime(msg)
    }

    /// Writes a validated result's columns into `out`.
    fn unpack(&self, res: &proto::PhaseResult, out: &mut [f32], cols: &[std::ops::Range<usize>]) -> Result<()> {
        let stride = self.layout.stride();
        let what = format!("worker {} step {} partial sums", self.id, res.step);
        if res.folded {
            // One row: the shard's rows already added in chunk order.  The
            // other rows become -0.0, which leaves every sum unchanged.
            wire::unpack_columns(&res.partials, &mut out[..stride], stride, cols, &what).map_err(Error::runtime)?;
            fill_columns(&mut out[stride..], stride, cols, -0.0);
            Ok(())
        } else {
            wire::unpack_columns(&res.partials, out, stride, cols, &what).map_err(Error::runtime)
        }
    }
}

/// Sets `cols` of every row (`stride` floats each) to `x`.
fn fill_columns(rows: &mut [f32], stride: usize, cols: &[std::ops::Range<usize>], x: f32) {
    for r in rows.chunks_exact_mut(stride) {
        for c in cols {
            r[c.clone()].fill(x);
        }
    }
}

impl Backend for RemoteWorker {
    fn name(&self) -> &'static str {
        match self.backend.as_str() {
            "cuda" => "cuda",
            _ => "cpu",
        }
    }

    fn device(&self) -> String {
        format!("{} (worker {}, over gRPC)", self.device, self.id)
    }

    fn capacity(&self) -> f64 {
        self.capacity
    }

    fn reported_compute_seconds(&self) -> Option<f64> {
        Some(self.last_compute_seconds)
    }

    fn set_params(&mut self, gen: &[f32], disc: &[f32]) -> Result<()> {
        let (generator, discriminator) = (f32le::encode(gen), f32le::encode(disc));
        self.bytes_sent.increment((generator.len() + discriminator.len()) as u64 + 32);
        self.send(Kind::Params(proto::Params { step: 0, generator, discriminator }))
    }

    fn phase1(&mut self, task: &ShardTask, out: &mut [f32]) -> Result<()> {
        let req = proto::PhaseRequest {
            request_id: self.next_request,
            step: task.step,
            phase: proto::Phase::One as i32,
            draw: match task.draw {
                Draw::First => proto::Draw::First as i32,
                Draw::Second => proto::Draw::Second as i32,
            },
            first_chunk: task.chunks.start as u32,
            chunks: task.chunks.len() as u32,
            with_gen_grad: task.with_gen_grad,
            v: Vec::new(),
            loss_scale: task.loss_scale,
        };
        self.next_request += 1;
        self.last = Some(task.clone());
        self.phase(req, out)
    }

    fn phase2(&mut self, v: &[f32], out: &mut [f32]) -> Result<()> {
        let task = self.last.clone().ok_or_else(|| Error::runtime("phase 2 before phase 1"))?;
        let req = proto::PhaseRequest {
            request_id: self.next_request,
            step: task.step,
            phase: proto::Phase::Two as i32,
            draw: 0,
            first_chunk: task.chunks.start as u32,
            chunks: task.chunks.len() as u32,
            with_gen_grad: false,
            v: f32le::encode(v),
            loss_scale: task.loss_scale,
        };
        self.next_request += 1;
        self.phase(req, out)
    }
}
