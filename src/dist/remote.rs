//! A worker on the other end of a session, seen by the trainer as a
//! `Backend`: parameters and phase requests go out on the session's stream;
//! each phase waits, up to a deadline, for the worker's result.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc as tmpsc;
use tonic::Status;

use super::proto::{self, coordinator_message::Kind};
use super::wire;
use crate::backend::{Backend, Draw, ShardTask};
use crate::error::{Error, Result};
use crate::f32le;
use crate::gan::phases::PartialLayout;

pub type Outbound = tmpsc::Sender<std::result::Result<proto::CoordinatorMessage, Status>>;

/// What the session's reader hands over: a result, or why the stream ended.
pub type Inbound = mpsc::Receiver<std::result::Result<proto::PhaseResult, String>>;

pub struct RemoteWorker {
    pub id: u32,
    backend: String,
    device: String,
    capacity: f64,
    tx: Outbound,
    rx: Inbound,
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

    /// Sends one phase request and writes the result into `out`.
    fn phase(&mut self, req: proto::PhaseRequest, out: &mut [f32]) -> Result<()> {
        let (id, step, phase) = (req.request_id, req.step, req.phase);
        let cols = wire::result_columns(&self.layout, phase == proto::Phase::Two as i32, req.with_gen_grad);
        let stride = self.layout.stride();
        self.bytes_sent.increment(req.v.len() as u64 + 64);
        self.send(Kind::Phase(req))?;
        let started = Instant::now();
        let res = loop {
            let left = self.deadline.saturating_sub(started.elapsed());
            let r = match self.rx.recv_timeout(left) {
                Ok(Ok(r)) => r,
                Ok(Err(why)) => return Err(Error::runtime(format!("worker {}: {why}", self.id))),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(Error::runtime(format!(
                        "worker {} ({}) missed the {:.0} s deadline of step {step}, phase {phase}",
                        self.id,
                        self.device,
                        self.deadline.as_secs_f64()
                    )))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::runtime(format!("worker {}: its session has closed", self.id)))
                }
            };
            if r.request_id == id {
                break r;
            }
            // A late answer to an earlier request: drop it.
        };
        if !res.error.is_empty() {
            return Err(Error::runtime(format!("worker {} failed step {step}: {}", self.id, res.error)));
        }
        if res.step != step || res.phase != phase {
            return Err(Error::runtime(format!(
                "worker {}: answered step {} phase {} to a request for step {step} phase {phase}",
                self.id, res.step, res.phase
            )));
        }
        self.bytes_received.increment(res.partials.len() as u64 + 64);
        self.last_compute_seconds = res.compute_seconds;
        let what = format!("worker {} step {step} partial sums", self.id);
        let bad = |m: String| Error::runtime(m);
        if res.folded {
            // One row: the shard's rows already added in chunk order.  The
            // other rows become -0.0, which leaves every sum unchanged.
            wire::unpack_columns(&res.partials, &mut out[..stride], stride, &cols, &what).map_err(bad)?;
            for r in out[stride..].chunks_exact_mut(stride) {
                for c in &cols {
                    r[c.clone()].fill(-0.0);
                }
            }
        } else {
            wire::unpack_columns(&res.partials, out, stride, &cols, &what).map_err(bad)?;
        }
        Ok(())
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
