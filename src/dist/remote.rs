//! A worker on the other end of a session, seen by the trainer as a
//! `Backend`: parameters and phase requests go out on the session's stream;
//! each phase waits, up to a deadline, for the worker's result.  As the only
//! worker it is also a `DeviceStep`: it runs whole steps on its replica and
//! answers each with the step's figures (see proto/lockstep.proto).

use std::time::Duration;

use tokio::sync::mpsc as tmpsc;
use tonic::{Code, Status, Streaming};

use super::coordinator::Driver;
use super::proto::{self, coordinator_message::Kind, worker_message};
use super::validate::{self, StepVerdict, Verdict};
use super::wire;
use crate::backend::{Backend, DeviceStep, Draw, PhaseWork, ShardTask, StepInput, StepOutput, StepProfile};
use crate::error::{Error, Result};
use crate::f32le;
use crate::gan::optim::Optimizer;
use crate::gan::phases::{stat, PartialLayout};

pub type Outbound = tmpsc::Sender<std::result::Result<proto::CoordinatorMessage, Status>>;

/// The worker's side of the session's stream, read by the trainer's thread
/// itself (which drives the runtime meanwhile: see `coordinator::Driver`).
pub type Inbound = Streaming<proto::WorkerMessage>;

pub struct RemoteWorker {
    pub id: u32,
    backend: String,
    device: String,
    capacity: f64,
    tx: Outbound,
    rx: Inbound,
    /// The runtime serving the session, driven while this waits.
    driver: Driver,
    /// Where each quantity sits in a row of partial sums.
    layout: PartialLayout,
    deadline: Duration,
    next_request: u64,
    /// The shard of the last phase 1 (phase 2 continues it).
    last: Option<ShardTask>,
    /// Seconds the worker reported computing in the last phase.
    pub last_compute_seconds: f64,
    /// The last result was folded into the shard's first row.
    last_folded: bool,
    /// The phase request awaiting its result: what the result must be, and
    /// the columns it carries.
    pending: Option<(validate::Expected, Vec<std::ops::Range<usize>>)>,
    /// Whole steps: the request sent ahead, not yet answered.
    ahead: Option<Ahead>,
    /// Whole steps: the worker's figures for the last step's parts, and
    /// their sums and count since profiling was switched on.
    last_parts: Option<[f64; 3]>,
    profiled: ([f64; 3], u32),
    bytes_sent: metrics::Counter,
    bytes_received: metrics::Counter,
}

impl RemoteWorker {
    pub fn new(
        id: u32,
        join: &proto::Join,
        tx: Outbound,
        rx: Inbound,
        driver: Driver,
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
            driver,
            layout,
            deadline,
            next_request: 1,
            last: None,
            last_compute_seconds: 0.0,
            last_folded: false,
            pending: None,
            ahead: None,
            last_parts: None,
            profiled: ([0.0; 3], 0),
            bytes_sent: metrics::counter!(crate::telemetry::names::COMM_BYTES, "direction" => "sent"),
            bytes_received: metrics::counter!(crate::telemetry::names::COMM_BYTES, "direction" => "received"),
        }
    }

    /// Queues a message on the session's stream (it goes out during the
    /// next wait); a worker that stopped reading its stream has until the
    /// deadline to make room.
    fn send(&mut self, kind: Kind) -> Result<()> {
        let (tx, deadline) = (&self.tx, self.deadline);
        let msg = Ok(proto::CoordinatorMessage { kind: Some(kind) });
        match self.driver.block_on(async move { tokio::time::timeout(deadline, tx.send(msg)).await })? {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::runtime(format!(
                "worker {}: its session has closed (the worker stopped or disconnected)",
                self.id
            ))),
            Err(_) => Err(Error::runtime(format!(
                "worker {} ({}) has not read its stream for {:.0} s (the deadline)",
                self.id,
                self.device,
                deadline.as_secs_f64()
            ))),
        }
    }

    /// Sends one phase request; `finish` waits for its result.
    fn send_phase(&mut self, req: proto::PhaseRequest) -> Result<()> {
        self.last_folded = false;
        let cols = wire::result_columns(&self.layout, req.phase == proto::Phase::Two as i32, req.with_gen_grad);
        let want = validate::Expected::of(&req, &cols);
        self.bytes_sent.increment(req.v.len() as u64 + 64);
        self.send(Kind::Phase(req))?;
        self.pending = Some((want, cols));
        Ok(())
    }

    /// Waits for the result of the phase request sent last and writes it
    /// into `out`.  A result that does not fit the request is refused: the
    /// worker gets the status on its stream, nothing of it is used, and the
    /// error evicts the worker.
    fn receive_phase(&mut self, out: &mut [f32]) -> Result<()> {
        let (want, cols) = self.pending.take().ok_or_else(|| Error::runtime("no phase request is outstanding"))?;
        let awaited = Awaited::Phase(want.step, want.phase);
        let res = match self.receive(awaited)? {
            worker_message::Kind::Result(r) => r,
            _ => return Err(self.wrong_kind(awaited, "PhaseResult")),
        };
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

    /// Sends a whole-step request; `await_step` waits for its answer.
    fn send_step(
        &mut self,
        input: &StepInput,
        with_gen_grad: bool,
        speculative: bool,
    ) -> Result<validate::StepExpected> {
        let req = proto::StepRequest {
            request_id: self.next_request,
            step: input.step,
            loss_scale: input.loss_scale,
            gen_a: input.gen[0],
            gen_b: input.gen[1],
            disc_a: input.disc[0],
            disc_b: input.disc[1],
            with_gen_grad,
            speculative,
        };
        self.next_request += 1;
        let want = validate::StepExpected { request_id: req.request_id, step: req.step, speculative };
        self.bytes_sent.increment(64);
        self.send(Kind::Step(req))?;
        Ok(want)
    }

    /// Waits for the answer to a whole-step request: the result and its
    /// stats, or None when the worker discarded a request sent ahead.
    fn await_step(&mut self, want: &validate::StepExpected) -> Result<Option<(proto::StepResult, [f32; stat::COUNT])>> {
        let awaited = Awaited::Step(want.step);
        let res = match self.receive(awaited)? {
            worker_message::Kind::Step(r) => r,
            _ => return Err(self.wrong_kind(awaited, "StepResult")),
        };
        self.bytes_received.increment(res.stats.len() as u64 + 96);
        match validate::validate_step(&res, want) {
            Err(st) => Err(self.refuse(st)),
            Ok(StepVerdict::Failed(why)) => {
                Err(Error::runtime(format!("worker {} failed step {}: {why}", self.id, want.step)))
            }
            Ok(StepVerdict::Discarded) => Ok(None),
            Ok(StepVerdict::Ran(stats)) => Ok(Some((res, stats))),
        }
    }

    /// Waits, up to the deadline, for the worker's next message (or why the
    /// session ended); `awaited` names what it answers, for the messages.  A
    /// message that breaks the protocol (over the size limit, not a message,
    /// no kind) ends the session: the worker gets a status saying why, and
    /// the error says the same.
    fn receive(&mut self, awaited: Awaited) -> Result<worker_message::Kind> {
        let (rx, deadline) = (&mut self.rx, self.deadline);
        // The timer is made inside the runtime's context.
        let next = self.driver.block_on(async move { tokio::time::timeout(deadline, rx.message()).await })?;
        let refusal = match next {
            Ok(Ok(Some(proto::WorkerMessage { kind: Some(k) }))) => return Ok(k),
            Ok(Ok(Some(_))) => {
                Status::invalid_argument(format!("expected the answer to {awaited}; got a message without a kind"))
            }
            Ok(Ok(None)) => return Err(Error::runtime(format!("worker {}: closed its session", self.id))),
            // Too large, or not a message at all: the worker's fault.
            Ok(Err(s)) if matches!(s.code(), Code::OutOfRange | Code::Internal | Code::InvalidArgument) => {
                Status::new(s.code(), format!("the coordinator cannot take your message: {}", s.message()))
            }
            Ok(Err(s)) => return Err(Error::runtime(format!("worker {}: session failed: {}", self.id, s.message()))),
            Err(_) => {
                return Err(Error::runtime(format!(
                    "worker {} ({}) missed the {:.0} s deadline of {awaited}",
                    self.id,
                    self.device,
                    self.deadline.as_secs_f64(),
                )))
            }
        };
        Err(self.refuse(refusal))
    }

    /// Refuses a message of another kind than the one `awaited`.
    fn wrong_kind(&self, awaited: Awaited, want: &str) -> Error {
        self.refuse(Status::invalid_argument(format!(
            "expected a {want} answering {awaited}; got another kind of message"
        )))
    }

    /// Ends the worker's session with `st` (best effort: a worker that does
    /// not read its stream only sees the session close) and says why.
    fn refuse(&self, st: Status) -> Error {
        let msg = format!("worker {} refused: {}", self.id, st.message());
        let _ = self.tx.try_send(Err(st));
        Error::runtime(msg)
    }

    /// Writes a validated result's columns into `out`.
    fn unpack(&mut self, res: &proto::PhaseResult, out: &mut [f32], cols: &[std::ops::Range<usize>]) -> Result<()> {
        let stride = self.layout.stride();
        let what = format!("worker {} step {} partial sums", self.id, res.step);
        if res.folded {
            // One row: the shard's rows already added in chunk order (the
            // trainer reduces that row alone; see `Backend::folded`).
            wire::unpack_columns(&res.partials, &mut out[..stride], stride, cols, &what).map_err(Error::runtime)?;
            self.last_folded = true;
            Ok(())
        } else {
            wire::unpack_columns(&res.partials, out, stride, cols, &what).map_err(Error::runtime)
        }
    }
}

/// What a message awaited answers (named in messages only when something goes wrong).
#[derive(Debug, Clone, Copy)]
enum Awaited {
    /// Step, phase.
    Phase(u64, i32),
    Step(u64),
    State,
}

impl std::fmt::Display for Awaited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Awaited::Phase(step, phase) => write!(f, "step {step}, phase {phase}"),
            Awaited::Step(step) => write!(f, "step {step} (a whole step)"),
            Awaited::State => write!(f, "the request for the training state"),
        }
    }
}

/// A whole-step request sent ahead: the inputs it assumed, and its answer's ids.
struct Ahead {
    input: StepInput,
    with_gen_grad: bool,
    want: validate::StepExpected,
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

    fn folded(&self) -> bool {
        self.last_folded
    }

    fn device_step(&mut self) -> Option<&mut dyn DeviceStep> {
        Some(self)
    }

    fn set_params(&mut self, gen: &[f32], disc: &[f32]) -> Result<()> {
        let (generator, discriminator) = (f32le::encode(gen), f32le::encode(disc));
        self.bytes_sent.increment((generator.len() + discriminator.len()) as u64 + 32);
        self.send(Kind::Params(proto::Params { step: 0, generator, discriminator }))
    }

    fn phase1(&mut self, task: &ShardTask, out: &mut [f32]) -> Result<()> {
        self.start(&PhaseWork::One(task.clone()))?;
        self.receive_phase(out)
    }

    fn phase2(&mut self, v: &[f32], out: &mut [f32]) -> Result<()> {
        self.start(&PhaseWork::Two(v))?;
        self.receive_phase(out)
    }

    fn start(&mut self, work: &PhaseWork<'_>) -> Result<bool> {
        // Phase 2 continues the shard of the last phase 1.
        let (phase, v) = match work {
            PhaseWork::One(task) => {
                self.last = Some(task.clone());
                (proto::Phase::One, Vec::new())
            }
            PhaseWork::Two(v) => (proto::Phase::Two, f32le::encode(v)),
        };
        let task = self.last.as_ref().ok_or_else(|| Error::runtime("phase 2 before phase 1"))?;
        let one = phase == proto::Phase::One;
        let req = proto::PhaseRequest {
            request_id: self.next_request,
            step: task.step,
            phase: phase as i32,
            draw: match (one, task.draw) {
                (false, _) => 0,
                (true, Draw::First) => proto::Draw::First as i32,
                (true, Draw::Second) => proto::Draw::Second as i32,
            },
            first_chunk: task.chunks.start as u32,
            chunks: task.chunks.len() as u32,
            with_gen_grad: one && task.with_gen_grad,
            v,
            loss_scale: task.loss_scale,
        };
        self.next_request += 1;
        self.send_phase(req)?;
        Ok(true)
    }

    fn finish(&mut self, out: &mut [f32]) -> Result<()> {
        self.receive_phase(out)
    }
}

/// A worker that is the only one runs whole steps on its replica (the CPU
/// backend through `gan::host_step`, a CUDA backend as one graph per step):
/// per step, one small request and one small answer cross the wire, instead
/// of two phases, the parameters and the gradients.
impl DeviceStep for RemoteWorker {
    fn load(&mut self, gen: &[f32], disc: &[f32], opt: [&Optimizer; 2]) -> Result<()> {
        let [g, d] = opt;
        let st = proto::State {
            request_id: 0,
            generator: f32le::encode(gen),
            discriminator: f32le::encode(disc),
            gen_m: f32le::encode(&g.m),
            gen_v: f32le::encode(&g.v),
            disc_m: f32le::encode(&d.m),
            disc_v: f32le::encode(&d.v),
            gen_t: g.t,
            disc_t: d.t,
            error: String::new(),
        };
        self.bytes_sent.increment(validate::state_bytes(&st) as u64 + 64);
        self.send(Kind::Load(st))
    }

    fn step(&mut self, input: &StepInput, with_gen_grad: bool) -> Result<StepOutput> {
        self.step_ahead(input, with_gen_grad, None)
    }

    fn step_ahead(&mut self, input: &StepInput, with_gen_grad: bool, next: Option<&StepInput>) -> Result<StepOutput> {
        // The request sent ahead last time, if any, is this step's when its
        // guess held; the worker discarded it when the step before was not
        // applied (the guess then cannot hold either).
        let mut ran = None;
        if let Some(ahead) = self.ahead.take() {
            if let Some(res) = self.await_step(&ahead.want)? {
                if (ahead.input, ahead.with_gen_grad) != (*input, with_gen_grad) {
                    return Err(Error::runtime(format!(
                        "worker {} ran step {} sent ahead, but the step's inputs turned out otherwise",
                        self.id, ahead.input.step
                    )));
                }
                ran = Some(res);
            }
        }
        let want = match ran {
            Some(_) => None,
            None => Some(self.send_step(input, with_gen_grad, false)?),
        };
        if let Some(n) = next {
            let want = self.send_step(n, with_gen_grad, true)?;
            self.ahead = Some(Ahead { input: *n, with_gen_grad, want });
        }
        let (res, stats) = match (ran, want) {
            (Some(r), _) => r,
            (None, Some(w)) => self.await_step(&w)?.ok_or_else(|| {
                Error::runtime(format!("worker {} discarded step {}, which was not sent ahead", self.id, w.step))
            })?,
            (None, None) => unreachable!("a step is either run ahead or sent now"),
        };
        self.last_compute_seconds = res.compute_seconds;
        let parts = [res.phase_one_seconds, res.phase_two_seconds, res.optimizer_seconds];
        // All zero: the worker's step does not time its parts (a CUDA graph).
        self.last_parts = (parts != [0.0; 3]).then_some(parts);
        for (sum, x) in self.profiled.0.iter_mut().zip(parts) {
            *sum += x;
        }
        self.profiled.1 += 1;
        Ok(StepOutput {
            nonfinite: res.nonfinite,
            bad_params: res.bad_params,
            stats,
            sq_norm_disc: res.sq_norm_disc,
            sq_norm_gen: res.sq_norm_gen,
        })
    }

    fn store(&mut self, gen: &mut [f32], disc: &mut [f32], opt: [&mut Optimizer; 2]) -> Result<()> {
        // A request sent ahead must have been discarded: the state asked for
        // is the one before it.
        if let Some(ahead) = self.ahead.take() {
            if self.await_step(&ahead.want)?.is_some() {
                return Err(Error::runtime(format!(
                    "worker {} ran step {} ahead of the state asked for",
                    self.id, ahead.input.step
                )));
            }
        }
        let req = proto::StoreRequest { request_id: self.next_request };
        self.next_request += 1;
        self.bytes_sent.increment(16);
        let want = validate::StateExpected {
            request_id: req.request_id,
            n_gen: gen.len(),
            n_disc: disc.len(),
            moments: [opt[0].m.len(), opt[1].m.len()],
            t: [opt[0].t, opt[1].t],
        };
        self.send(Kind::Store(req))?;
        let awaited = Awaited::State;
        let st = match self.receive(awaited)? {
            worker_message::Kind::State(s) => s,
            _ => return Err(self.wrong_kind(awaited, "State")),
        };
        self.bytes_received.increment(validate::state_bytes(&st) as u64 + 64);
        match validate::validate_state(&st, &want) {
            Err(s) => return Err(self.refuse(s)),
            Ok(Err(why)) => return Err(Error::runtime(format!("worker {}: {why}", self.id))),
            Ok(Ok(())) => {}
        }
        let [g, d] = opt;
        // Sizes are checked: decoding cannot fail.
        let decode = |b: &[u8], out: &mut [f32]| f32le::decode(b, out, "state").map_err(Error::runtime);
        decode(&st.generator, gen)?;
        decode(&st.discriminator, disc)?;
        decode(&st.gen_m, &mut g.m)?;
        decode(&st.gen_v, &mut g.v)?;
        decode(&st.disc_m, &mut d.m)?;
        decode(&st.disc_v, &mut d.v)
    }

    fn set_profiling(&mut self, _on: bool) -> Result<()> {
        // The worker times every step's parts anyway.
        self.profiled = ([0.0; 3], 0);
        Ok(())
    }

    fn profile(&mut self) -> Result<StepProfile> {
        let (sums, n) = self.profiled;
        let ms = |i: usize| (sums[i] / f64::from(n.max(1)) * 1e3) as f32;
        Ok(StepProfile { phase_ms: [ms(0), ms(1), ms(2)], ..Default::default() })
    }

    fn part_seconds(&self) -> Option<[f64; 3]> {
        self.last_parts
    }
}
