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
use crate::gan::reduce::FixedPoint;

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
    /// Where each quantity sits in a row of partial sums, and its blocks.
    layout: PartialLayout,
    fixed: FixedPoint,
    deadline: Duration,
    next_request: u64,
    /// The shard of the last phase 1 (phase 2 continues it).
    last: Option<ShardTask>,
    /// Seconds the worker reported computing in the last phase.
    pub last_compute_seconds: f64,
    /// The phase request awaiting its result: what the result must be.
    pending: Option<validate::Expected>,
    /// The last phase's answer (the rows stay on the worker).
    answered: Option<Answered>,
    /// The run-wide maxima of every block at the last phase that had it
    /// (the hint each request carries), and the hint the outstanding
    /// request carried (by block of its columns).
    hint: Vec<f32>,
    sent_blocks: Vec<usize>,
    sent_hint: Vec<f32>,
    /// By block of the last answer: whose guessed scale did not hold (those
    /// are asked for again; the others are used as sent).
    again: Vec<bool>,
    retries: metrics::Counter,
    /// The SumRequest awaiting its answer.
    pending_sum: Option<validate::Expected>,
    /// The step whose phase 2 this worker was sent (its v is the step's grad_D).
    v_step: Option<u64>,
    /// The digest the next phase 1's parameters must have (`expect_digest`),
    /// and the one the outstanding request asked for.
    digest_next: Option<[u8; 32]>,
    digest_pending: Option<[u8; 32]>,
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
    /// The worker `id` that sent `join`, on the session `(tx, rx)`.
    pub fn new(
        id: u32,
        join: &proto::Join,
        (tx, rx): (Outbound, Inbound),
        driver: Driver,
        layout: PartialLayout,
        fixed: FixedPoint,
        deadline: Duration,
    ) -> RemoteWorker {
        let blocks = fixed.blocks.len();
        RemoteWorker {
            id,
            backend: join.backend.clone(),
            device: join.device.clone(),
            capacity: join.capacity,
            tx,
            rx,
            driver,
            layout,
            fixed,
            deadline,
            next_request: 1,
            last: None,
            last_compute_seconds: 0.0,
            pending: None,
            answered: None,
            hint: vec![0.0; blocks],
            sent_blocks: Vec::new(),
            sent_hint: Vec::new(),
            again: Vec::new(),
            retries: metrics::counter!(crate::telemetry::names::FIXED_POINT_RETRIES),
            pending_sum: None,
            v_step: None,
            digest_next: None,
            digest_pending: None,
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
    fn send_phase(&mut self, mut req: proto::PhaseRequest) -> Result<()> {
        self.answered = None;
        self.pending_sum = None;
        self.digest_pending = None;
        if req.phase == proto::Phase::One as i32 {
            self.digest_pending = self.digest_next.take();
            req.want_digest = self.digest_pending.is_some();
        } else {
            self.v_step = Some(req.step);
        }
        let cols = wire::result_columns(&self.layout, req.phase == proto::Phase::Two as i32, req.with_gen_grad);
        let blocks = self.fixed.blocks_of(&cols);
        let want = validate::Expected::of(&req, &cols, blocks.len());
        self.sent_hint = blocks.iter().map(|&b| self.hint[b]).collect();
        self.sent_blocks = blocks;
        req.maxima_hint = f32le::encode(&self.sent_hint);
        self.bytes_sent.increment((req.v.len() + req.maxima_hint.len()) as u64 + 64);
        self.send(Kind::Phase(req))?;
        self.pending = Some(want);
        Ok(())
    }

    /// Waits for the result of the phase request sent last: the shard's
    /// block maxima.  A result that does not fit the request is refused: the
    /// worker gets the status on its stream, nothing of it is used, and the
    /// error evicts the worker.
    fn receive_phase(&mut self) -> Result<()> {
        let want = self.pending.take().ok_or_else(|| Error::runtime("no phase request is outstanding"))?;
        let awaited = Awaited::Phase(want.step, want.phase);
        let res = match self.receive(awaited)? {
            worker_message::Kind::Result(r) => r,
            _ => return Err(self.wrong_kind(awaited, "PhaseResult")),
        };
        self.bytes_received.increment((res.maxima.len() + res.fixed.len()) as u64 + 64);
        match validate::validate_result(&res, &want) {
            Err(st) => Err(self.refuse(st)),
            Ok(Verdict::Failed(why)) => {
                Err(Error::runtime(format!("worker {} failed step {}: {why}", self.id, want.step)))
            }
            Ok(Verdict::Values) => {
                if let Some(d) = self.digest_pending.take() {
                    if res.params_digest != d {
                        return Err(Error::runtime(format!(
                            "worker {} ({}) holds other parameters than the coordinator at step {} (digest {} \
                             against {}): its replica diverged, so it is evicted rather than trained on",
                            self.id,
                            self.device,
                            want.step,
                            hex(&res.params_digest),
                            hex(&d)
                        )));
                    }
                }
                self.last_compute_seconds = res.compute_seconds;
                let maxima: Vec<f32> = f32le::iter(&res.maxima).collect();
                // The worker's guess, as it made it (`dist::worker::Replica::answer`).
                let guess =
                    maxima.iter().zip(&self.sent_hint).map(|(&m, &h)| crate::gan::reduce::guess(m, h)).collect();
                let blocks = self.sent_blocks.clone();
                self.answered = Some(Answered { maxima, guess, fixed: res.fixed, blocks, want });
                Ok(())
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
}

/// A phase's answer: the shard's block maxima, the maxima its sums were
/// quantised with (the worker's guess), the sums, and what a SumResult must
/// be once asked for.
struct Answered {
    maxima: Vec<f32>,
    guess: Vec<f32>,
    fixed: Vec<u8>,
    /// The blocks of the answer's columns (`FixedPoint::blocks_of`).
    blocks: Vec<usize>,
    want: validate::Expected,
}

/// A digest in hex (for messages).
fn hex(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect::<String>() + "…"
}

/// What a message awaited answers (named in messages only when something goes wrong).
#[derive(Debug, Clone, Copy)]
enum Awaited {
    /// Step, phase.
    Phase(u64, i32),
    Step(u64),
    Sum(u64, i32),
    State,
}

impl std::fmt::Display for Awaited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Awaited::Phase(step, phase) => write!(f, "step {step}, phase {phase}"),
            Awaited::Step(step) => write!(f, "step {step} (a whole step)"),
            Awaited::Sum(step, phase) => write!(f, "the sums of step {step}, phase {phase}"),
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

impl Backend for RemoteWorker {
    fn name(&self) -> &'static str {
        match self.backend.as_str() {
            "cuda" => "cuda",
            "synthetic" => "synthetic",
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

    fn steps_itself(&self) -> bool {
        true
    }

    fn apply(&mut self, u: &crate::backend::GradUpdate<'_>) -> Result<()> {
        let from_v = u.disc_is_v && u.disc.is_some() && self.v_step == Some(u.step);
        let upd = proto::Update {
            step: u.step,
            generator_grad: u.gen.map(f32le::encode).unwrap_or_default(),
            discriminator_grad: if from_v { Vec::new() } else { u.disc.map(f32le::encode).unwrap_or_default() },
            discriminator_from_v: from_v,
            gen_t: u.t[0],
            disc_t: u.t[1],
        };
        self.bytes_sent.increment((upd.generator_grad.len() + upd.discriminator_grad.len()) as u64 + 48);
        self.send(Kind::Update(upd))
    }

    fn expect_digest(&mut self, digest: [u8; 32]) {
        self.digest_next = Some(digest);
    }

    fn evicted(&mut self, why: &str) {
        // Best effort: a session already ended with a refusal keeps that status.
        let _ = self.tx.try_send(Err(Status::aborted(format!("{} {why}", super::EVICTED))));
    }

    fn shard_maxima(&self) -> Option<&[f32]> {
        self.answered.as_ref().map(|a| a.maxima.as_slice())
    }

    /// The sums sent with the answer are used when the scales of its guess
    /// are those of the run-wide `maxima`; else the worker is asked again.
    fn start_sum(&mut self, maxima: &[f32]) -> Result<()> {
        let a = self.answered.as_ref().ok_or_else(|| Error::runtime("start_sum without a phase answered"))?;
        for (&b, &m) in a.blocks.iter().zip(maxima) {
            self.hint[b] = m;
        }
        self.again = a.guess.iter().zip(maxima).map(|(&g, &m)| !self.fixed.same_scale(g, m)).collect();
        if !self.again.contains(&true) {
            return Ok(());
        }
        self.retries.increment(1);
        let mut want = a.want;
        want.width = a
            .blocks
            .iter()
            .zip(&self.again)
            .filter(|(_, &x)| x)
            .map(|(&b, _)| self.fixed.blocks.columns(b).len())
            .sum();
        want.request_id = self.next_request;
        self.next_request += 1;
        let req = proto::SumRequest {
            request_id: want.request_id,
            step: want.step,
            phase: want.phase,
            maxima: f32le::encode(maxima),
        };
        self.bytes_sent.increment(req.maxima.len() as u64 + 32);
        self.send(Kind::Sum(req))?;
        self.pending_sum = Some(want);
        Ok(())
    }

    fn finish_sum(&mut self, acc: &mut [i64]) -> Result<()> {
        let Some(want) = self.pending_sum.take() else {
            let a = self.answered.as_ref().ok_or_else(|| Error::runtime("finish_sum without a phase answered"))?;
            wire::add_i64(&a.fixed, acc);
            return Ok(());
        };
        let awaited = Awaited::Sum(want.step, want.phase);
        let res = match self.receive(awaited)? {
            worker_message::Kind::Sum(r) => r,
            _ => return Err(self.wrong_kind(awaited, "SumResult")),
        };
        self.bytes_received.increment(res.fixed.len() as u64 + 32);
        match validate::validate_sum(&res, &want) {
            Err(st) => Err(self.refuse(st)),
            Ok(Verdict::Failed(why)) => {
                Err(Error::runtime(format!("worker {} failed the sums of step {}: {why}", self.id, want.step)))
            }
            Ok(Verdict::Values) => {
                // The blocks sent again from the SumResult, the others as first sent.
                let a = self.answered.as_ref().ok_or_else(|| Error::runtime("a SumResult without its answer"))?;
                let (mut off, mut at) = (0, 0);
                for (&b, &again) in a.blocks.iter().zip(&self.again) {
                    let w = self.fixed.blocks.columns(b).len();
                    let dst = &mut acc[off..off + w];
                    if again {
                        wire::add_i64(&res.fixed[at * 8..(at + w) * 8], dst);
                        at += w;
                    } else {
                        wire::add_i64(&a.fixed[off * 8..(off + w) * 8], dst);
                    }
                    off += w;
                }
                Ok(())
            }
        }
    }

    fn device_step(&mut self) -> Option<&mut dyn DeviceStep> {
        Some(self)
    }

    fn set_params(&mut self, gen: &[f32], disc: &[f32]) -> Result<()> {
        let (generator, discriminator) = (f32le::encode(gen), f32le::encode(disc));
        self.bytes_sent.increment((generator.len() + discriminator.len()) as u64 + 32);
        self.send(Kind::Params(proto::Params { step: 0, generator, discriminator }))
    }

    /// The rows stay on the worker: `out` is left alone (see `shard_maxima`).
    fn phase1(&mut self, task: &ShardTask, _out: &mut [f32]) -> Result<()> {
        self.start(&PhaseWork::One(task.clone()))?;
        self.receive_phase()
    }

    fn phase2(&mut self, v: &[f32], _out: &mut [f32]) -> Result<()> {
        self.start(&PhaseWork::Two(v))?;
        self.receive_phase()
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
            want_digest: false,
            maxima_hint: Vec::new(),
        };
        self.next_request += 1;
        self.send_phase(req)?;
        Ok(true)
    }

    fn finish(&mut self, _out: &mut [f32]) -> Result<()> {
        self.receive_phase()
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
