//! The worker's side of a session: dial the coordinator, join, build the
//! replica from the config it sends, then answer every phase request with the
//! shard's block maxima and, told the run-wide ones, with its whole shard
//! folded into one row of int64 fixed point (`gan::reduce`), or, as the only
//! worker, run whole steps on the state the coordinator hands over.

use std::time::Instant;

use tokio::sync::mpsc as tmpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::proto::{self, coordinator_client::CoordinatorClient, coordinator_message::Kind, worker_message};
use super::{wire, PROTOCOL_VERSION};
use crate::backend::{self, Backend, BackendSpec, Draw, ShardTask};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::f32le;
use crate::gan::host_step::HostStep;
use crate::gan::optim::Optimizer;
use crate::gan::phases::PartialLayout;
use crate::gan::reduce::{self, Blocks, FixedPoint};
use crate::gan::trainer;

/// Connects to `url` (e.g. `http://10.0.0.1:7070`) in plaintext.
pub async fn connect(url: &str) -> Result<Channel> {
    connect_with(url, None).await
}

/// Connects to `url`, over TLS when `tls` is given (an `http://` URL is then
/// dialed as `https://`); an `https://` URL without TLS is an input error.
pub async fn connect_with(url: &str, tls: Option<ClientTlsConfig>) -> Result<Channel> {
    let url = match (&tls, url.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => url.to_string(),
    };
    if tls.is_none() && url.starts_with("https://") {
        return Err(Error::input(format!(
            "--coordinator {url}: https needs --tls-ca FILE (the PEM of the CA or self-signed certificate of the \
             coordinator's --tls-cert)"
        )));
    }
    let mut ep = Endpoint::from_shared(url.clone())
        .map_err(|e| Error::input(format!("--coordinator {url}: not a valid URL ({e}); e.g. http://HOST:7070")))?
        .initial_stream_window_size(wire::WINDOW_BYTES)
        .initial_connection_window_size(wire::WINDOW_BYTES)
        .max_frame_size(wire::MAX_FRAME_BYTES)
        .tcp_nodelay(true);
    if let Some(t) = tls {
        ep = ep.tls_config(t).map_err(|e| {
            Error::input(format!(
                "--tls-ca/--tls-domain: cannot set up TLS for {url} ({}); check --tls-domain (a DNS name in the \
                 coordinator's certificate)",
                super::tls::source_chain(&e)
            ))
        })?;
    }
    ep.connect()
        .await
        .map_err(|e| Error::runtime(format!("cannot reach the coordinator at {url}: {}", super::tls::source_chain(&e))))
}

/// Runs one session to its end: returns Ok when the coordinator closes it.
pub async fn run_session(channel: Channel, choice: BackendSpec, token: Option<String>) -> Result<()> {
    run_session_noting(channel, choice, token, None, &mut false).await
}

/// `run_session`, setting `joined` once the coordinator has welcomed this
/// worker (a failure before that is a failure to reach the run at all).
pub async fn run_session_noting(
    channel: Channel,
    choice: BackendSpec,
    token: Option<String>,
    data_path: Option<&str>,
    joined: &mut bool,
) -> Result<()> {
    let (out_tx, out_rx) = tmpsc::channel::<proto::WorkerMessage>(4);
    // The replica is built from the Welcome's config; the Join describes it beforehand.
    let (name, device, capacity) = backend::describe(choice)?;
    let join = proto::Join { protocol_version: PROTOCOL_VERSION, backend: name.into(), device, capacity };
    out_tx
        .send(proto::WorkerMessage { kind: Some(worker_message::Kind::Join(join)) })
        .await
        .map_err(|_| Error::runtime("session closed before joining"))?;
    let mut client = CoordinatorClient::with_interceptor(channel, super::auth::Attach::new(token)?)
        .max_decoding_message_size(usize::MAX >> 1)
        .max_encoding_message_size(usize::MAX >> 1);
    let mut inbound = client.session(ReceiverStream::new(out_rx)).await.map_err(refusal)?.into_inner();
    let welcome = match inbound.message().await {
        Ok(Some(proto::CoordinatorMessage { kind: Some(Kind::Welcome(w)) })) => w,
        Ok(_) => return Err(Error::runtime("the coordinator did not answer Join with Welcome")),
        Err(s) => return Err(refusal(s)),
    };
    *joined = true;
    let mut replica = Replica::from_welcome(&welcome, choice, data_path)?;
    let ready = proto::Ready { dataset_digest: welcome.dataset_digest.clone() };
    out_tx
        .send(proto::WorkerMessage { kind: Some(worker_message::Kind::Ready(ready)) })
        .await
        .map_err(|_| Error::runtime("the session closed before this worker was ready"))?;
    // The replica computes right here, between reading a request and writing
    // its result: no hand-over to another thread and back.  This blocks the
    // runtime's thread while it computes, which is what a worker's runtime
    // is for (local mode gives each worker a runtime of its own).
    let id = welcome.worker_id.to_string();
    let name = crate::telemetry::names::WORKER_COMPUTE;
    let compute = [
        metrics::histogram!(name, "worker" => id.clone(), "phase" => "one"),
        metrics::histogram!(name, "worker" => id, "phase" => "two"),
    ];
    loop {
        let answer = match inbound.message().await {
            Ok(Some(proto::CoordinatorMessage { kind: Some(Kind::Params(p)) })) => {
                replica.set_params(&p)?;
                continue;
            }
            Ok(Some(proto::CoordinatorMessage { kind: Some(Kind::Phase(req)) })) => {
                let result = replica.answer(&req);
                compute[usize::from(req.phase == proto::Phase::Two as i32)].record(result.compute_seconds);
                worker_message::Kind::Result(result)
            }
            Ok(Some(proto::CoordinatorMessage { kind: Some(Kind::Load(state)) })) => {
                replica.load(&state);
                continue;
            }
            Ok(Some(proto::CoordinatorMessage { kind: Some(Kind::Step(req)) })) => {
                let result = replica.whole_step(&req);
                if result.phase_one_seconds > 0.0 {
                    compute[0].record(result.phase_one_seconds);
                    compute[1].record(result.phase_two_seconds);
                } else {
                    // Parts not timed (a CUDA graph): the whole step counts as phase one.
                    compute[0].record(result.compute_seconds);
                }
                worker_message::Kind::Step(result)
            }
            Ok(Some(proto::CoordinatorMessage { kind: Some(Kind::Store(req)) })) => {
                worker_message::Kind::State(replica.store(req.request_id))
            }
            Ok(Some(proto::CoordinatorMessage { kind: Some(Kind::Sum(req)) })) => {
                worker_message::Kind::Sum(replica.sum(&req))
            }
            Ok(Some(proto::CoordinatorMessage { kind: Some(Kind::Update(u)) })) => {
                replica.apply(&u);
                continue;
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Ok(()),
            Err(s) => return Err(ended(s)),
        };
        if out_tx.send(proto::WorkerMessage { kind: Some(answer) }).await.is_err() {
            // The outgoing stream is gone: the session has ended, and the
            // incoming side says how.  Only a clean end is the end of
            // training; a broken connection (a coordinator killed while
            // this worker computed) means reconnecting, not exiting.
            loop {
                match inbound.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return Ok(()),
                    Err(s) => return Err(ended(s)),
                }
            }
        }
    }
}

/// Whether a status refuses something this worker sent, which trying again
/// cannot cure (a wrong token, another protocol version, a result that does
/// not fit): the worker then stops rather than reconnects.
fn is_refusal(s: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(s.code(), Unauthenticated | FailedPrecondition | InvalidArgument | OutOfRange)
}

/// The coordinator's answer to Join, when it is not a Welcome.
fn refusal(s: tonic::Status) -> Error {
    if is_refusal(&s) {
        Error::input(format!("the coordinator refused the session: {}", s.message()))
    } else {
        Error::runtime(format!("the session with the coordinator failed before joining: {}", s.message()))
    }
}

/// A status that ended a session after joining: a refusal of this worker's
/// result (printed, and the worker stops), an eviction (it stops, exit code
/// 3) or a failure (it reconnects).
fn ended(s: tonic::Status) -> Error {
    if s.code() == tonic::Code::Aborted && s.message().starts_with(super::EVICTED) {
        Error::Evicted(format!(
            "the coordinator {}; this worker exits: start it again to rejoin at a step boundary (a worker that is \
             merely slow: give the coordinator a longer --phase-deadline)",
            s.message()
        ))
    } else if is_refusal(&s) {
        Error::input(format!(
            "the coordinator refused this worker's result and ended the session ({:?}): {}; \
             this worker's results do not fit the run (a bug or a faulty device), so it stops",
            s.code(),
            s.message()
        ))
    } else {
        Error::runtime(format!("session with the coordinator failed: {}", s.message()))
    }
}

/// A worker's replica of both networks and the buffers it answers from.
pub struct Replica {
    be: Box<dyn Backend>,
    layout: PartialLayout,
    fixed: FixedPoint,
    /// The (step, phase, columns, chunks) of the rows in `rows`, kept for
    /// the SumRequest, and the maxima (by block) their sums were sent with.
    held: Option<(u64, i32, Vec<std::ops::Range<usize>>, usize)>,
    guess: Vec<f32>,
    /// The step of the phase 2 whose v is in `v`.
    v_step: Option<u64>,
    /// An Update's generator gradient (a buffer kept from step to step).
    grad_gen: Vec<f32>,
    /// Why the last Update could not be applied (reported by the next
    /// PhaseResult: this replica is then out of step and gets evicted).
    update_error: Option<String>,
    /// Chunks per step: a request beyond them is refused before anything is sized by it.
    chunks: usize,
    rows: Vec<f32>,
    gen: Vec<f32>,
    disc: Vec<f32>,
    v: Vec<f32>,
    /// Whole steps on a backend without a step of its own.
    host: HostStep,
    /// The optimizers as the config makes them (State fills in their state).
    fresh_opt: [Optimizer; 2],
    /// Why the last State could not be taken over (reported by the next
    /// StepResult or State, since Load has no answer).
    load_error: Option<String>,
    /// Whether the last whole step was applied (a speculative request runs only then).
    last_applied: bool,
    /// Each optimizer's step count during whole steps (a CUDA step keeps the
    /// moments on the device but not the counts).
    opt_steps: [u64; 2],
}

impl Replica {
    /// The replica the coordinator's config describes, on the backend asked for.
    /// The replica of `welcome`'s config; this worker reads the dataset from
    /// its own `data_path` (default: the config's) and refuses to train
    /// when its copy's digest is not the coordinator's.
    pub fn from_welcome(welcome: &proto::Welcome, choice: BackendSpec, data_path: Option<&str>) -> Result<Replica> {
        let mut cfg = Config::from_toml_str(&welcome.config_toml, "the coordinator's config", &[])?;
        if let Some(p) = data_path {
            cfg.data.path = Some(p.to_string());
        }
        let setup = trainer::setup(&cfg)?;
        let mine = setup.data.digest();
        if mine != welcome.dataset_digest {
            return Err(Error::input(format!(
                "this worker's dataset ({}) has digest {mine}, the coordinator's has digest {}; give this worker \
                 the coordinator's data (lockstep worker --data-path DIR)",
                setup.data.describe(),
                welcome.dataset_digest
            )));
        }
        let layout = setup.game.layout();
        let be = backend::create(choice, &setup)?;
        // Only the optimizers: the parameters come with the state (Load).
        let fresh_opt = trainer::fresh_optimizers(&cfg, &setup.game);
        Ok(Replica {
            be,
            host: HostStep::new(&setup.game, setup.chunks),
            fixed: FixedPoint::new(Blocks::of(&setup.game), setup.chunks),
            held: None,
            guess: Vec::new(),
            v_step: None,
            grad_gen: vec![0.0; layout.n_gen],
            update_error: None,
            chunks: setup.chunks,
            fresh_opt,
            load_error: Some("no training state was handed over yet (Load)".into()),
            last_applied: false,
            opt_steps: [0; 2],
            rows: Vec::new(),
            gen: vec![0.0; layout.n_gen],
            disc: vec![0.0; layout.n_disc],
            v: vec![0.0; layout.n_disc],
            layout,
        })
    }

    /// Takes the parameters after an optimizer step.
    pub fn set_params(&mut self, p: &proto::Params) -> Result<()> {
        f32le::decode(&p.generator, &mut self.gen, "generator")
            .and_then(|_| f32le::decode(&p.discriminator, &mut self.disc, "discriminator"))
            .map_err(|m| Error::runtime(format!("bad parameters from the coordinator: {m}")))?;
        self.be.set_params(&self.gen, &self.disc)
    }

    /// Takes over the training state for whole steps (on the backend's own
    /// step when it has one, else the host step).
    pub fn load(&mut self, st: &proto::State) {
        let [mut og, mut od] = self.fresh_opt.clone();
        let decoded = (|| -> std::result::Result<(), String> {
            f32le::decode(&st.generator, &mut self.gen, "generator")?;
            f32le::decode(&st.discriminator, &mut self.disc, "discriminator")?;
            for (bytes, v, what) in [
                (&st.gen_m, &mut og.m, "gen_m"),
                (&st.gen_v, &mut og.v, "gen_v"),
                (&st.disc_m, &mut od.m, "disc_m"),
                (&st.disc_v, &mut od.v, "disc_v"),
            ] {
                f32le::decode(bytes, v, what)?;
            }
            Ok(())
        })();
        (og.t, od.t) = (st.gen_t, st.disc_t);
        // The host copy always (a worker among several steps it with the
        // reduced gradients), the backend's own step too when it has one.
        let loaded = decoded.map_err(Error::runtime).and_then(|_| {
            self.host.load(self.be.as_mut(), &self.gen, &self.disc, [&og, &od])?;
            match self.be.device_step() {
                Some(d) => d.load(&self.gen, &self.disc, [&og, &od]),
                None => Ok(()),
            }
        });
        self.load_error = loaded.err().map(|e| format!("cannot take over the training state: {e}"));
        self.update_error = None;
        self.last_applied = false;
        self.opt_steps = [st.gen_t, st.disc_t];
    }

    /// Runs one whole step and reports its figures.
    pub fn whole_step(&mut self, req: &proto::StepRequest) -> proto::StepResult {
        let started = Instant::now();
        let input = backend::StepInput {
            step: req.step,
            loss_scale: req.loss_scale,
            gen: [req.gen_a, req.gen_b],
            disc: [req.disc_a, req.disc_b],
        };
        let mut res = proto::StepResult { request_id: req.request_id, step: req.step, ..Default::default() };
        if req.speculative && !self.last_applied {
            // Its inputs assumed the previous step was applied; it was not.
            res.discarded = true;
            return res;
        }
        let out = match &self.load_error {
            Some(e) => Err(Error::runtime(e.clone())),
            None if !(req.loss_scale.is_finite() && req.loss_scale > 0.0) => {
                Err(Error::runtime(format!("loss scale {} is not a positive number", req.loss_scale)))
            }
            None => match self.be.device_step() {
                Some(d) => d.step(&input, req.with_gen_grad),
                None => self.host.step(self.be.as_mut(), &input, req.with_gen_grad),
            },
        };
        match out {
            Ok(o) => {
                res.nonfinite = o.nonfinite;
                res.bad_params = o.bad_params;
                res.stats = f32le::encode(&o.stats);
                (res.sq_norm_disc, res.sq_norm_gen) = (o.sq_norm_disc, o.sq_norm_gen);
                let parts = match self.be.device_step() {
                    Some(d) => d.part_seconds(),
                    None => Some(self.host.part_seconds),
                };
                [res.phase_one_seconds, res.phase_two_seconds, res.optimizer_seconds] = parts.unwrap_or_default();
            }
            Err(e) => res.error = e.to_string(),
        }
        self.last_applied = res.error.is_empty() && res.nonfinite == 0;
        if self.last_applied {
            self.opt_steps = self.opt_steps.map(|t| t + 1);
        }
        res.compute_seconds = started.elapsed().as_secs_f64();
        res
    }

    /// The training state after the whole steps so far.
    pub fn store(&mut self, request_id: u64) -> proto::State {
        let mut st = proto::State { request_id, ..Default::default() };
        if let Some(e) = &self.load_error {
            st.error = e.clone();
            return st;
        }
        let [mut og, mut od] = self.fresh_opt.clone();
        let stored = match self.be.device_step() {
            Some(d) => d.store(&mut self.gen, &mut self.disc, [&mut og, &mut od]),
            None => self.host.store(&mut self.gen, &mut self.disc, [&mut og, &mut od]),
        };
        match stored {
            Ok(()) => {
                (st.generator, st.discriminator) = (f32le::encode(&self.gen), f32le::encode(&self.disc));
                (st.gen_m, st.gen_v, st.disc_m, st.disc_v) =
                    (f32le::encode(&og.m), f32le::encode(&og.v), f32le::encode(&od.m), f32le::encode(&od.v));
                [st.gen_t, st.disc_t] = self.opt_steps;
            }
            Err(e) => st.error = format!("cannot send the training state back: {e}"),
        }
        st
    }

    /// Computes the answer to one phase request: the shard's block maxima
    /// over the phase's result columns (+inf in a block with a non-finite
    /// value), or the error that stopped it.  The rows are kept for `sum`.
    pub fn answer(&mut self, req: &proto::PhaseRequest) -> proto::PhaseResult {
        let started = Instant::now();
        let stride = self.layout.stride();
        let chunks = req.first_chunk as usize..req.first_chunk as usize + req.chunks as usize;
        if chunks.is_empty() || chunks.end > self.chunks {
            let error = format!("chunks {chunks:?} are not within this step's {} chunks", self.chunks);
            return proto::PhaseResult {
                request_id: req.request_id,
                step: req.step,
                phase: req.phase,
                error,
                ..Default::default()
            };
        }
        self.held = None;
        if let Some(e) = self.update_error.clone().or_else(|| self.load_error.clone()) {
            return proto::PhaseResult {
                request_id: req.request_id,
                step: req.step,
                phase: req.phase,
                error: e,
                ..Default::default()
            };
        }
        self.rows.resize(chunks.len() * stride, 0.0);
        let phase_two = req.phase == proto::Phase::Two as i32;
        let done = if phase_two {
            self.v_step = None;
            f32le::decode(&req.v, &mut self.v, "v")
                .map_err(Error::runtime)
                .and_then(|_| self.be.phase2(&self.v, &mut self.rows))
                .inspect(|_| self.v_step = Some(req.step))
        } else {
            let draw = if req.draw == proto::Draw::Second as i32 { Draw::Second } else { Draw::First };
            let task = ShardTask {
                step: req.step,
                draw,
                chunks: chunks.clone(),
                with_gen_grad: req.with_gen_grad,
                loss_scale: req.loss_scale,
            };
            if req.loss_scale.is_finite() && req.loss_scale > 0.0 {
                self.be.phase1(&task, &mut self.rows)
            } else {
                Err(Error::runtime(format!("loss scale {} is not a positive number", req.loss_scale)))
            }
        };
        let mut result = proto::PhaseResult {
            request_id: req.request_id,
            step: req.step,
            phase: req.phase,
            compute_seconds: started.elapsed().as_secs_f64(),
            ..Default::default()
        };
        match done {
            Ok(()) => {
                let cols = wire::result_columns(&self.layout, phase_two, req.with_gen_grad);
                let rows: Vec<usize> = (0..chunks.len()).collect();
                let mut maxima = Vec::new();
                self.fixed.maxima_over(&self.rows, stride, &rows, &cols, &mut maxima);
                let blocks = self.fixed.blocks_of(&cols);
                let mine: Vec<f32> = blocks.iter().map(|&b| maxima[b]).collect();
                result.maxima = f32le::encode(&mine);
                // The guess of the run-wide maxima (a hint of the wrong size
                // is ignored: the coordinator then asks again).
                if req.maxima_hint.len() == blocks.len() * 4 {
                    for (&b, h) in blocks.iter().zip(f32le::iter(&req.maxima_hint)) {
                        maxima[b] = reduce::guess(maxima[b], h);
                    }
                }
                result.fixed = self.quantised(&cols, chunks.len(), &maxima);
                self.guess = maxima;
                if req.want_digest {
                    result.params_digest = self.host.digest().to_vec();
                }
                self.held = Some((req.step, req.phase, cols, chunks.len()));
            }
            Err(e) => result.error = e.to_string(),
        }
        result
    }
}

impl Replica {
    /// Applies an Update (the reduced gradients of a step) to this replica;
    /// a failure is reported by the next PhaseResult.
    pub fn apply(&mut self, u: &proto::Update) {
        if self.update_error.is_some() {
            return;
        }
        let r = (|| -> std::result::Result<(), String> {
            let gen = !u.generator_grad.is_empty();
            if gen {
                f32le::decode(&u.generator_grad, &mut self.grad_gen, "generator_grad")?;
            }
            // The discriminator's gradient lands in `v` (phase 2's, or the update's own).
            let disc = if u.discriminator_from_v {
                if self.v_step != Some(u.step) {
                    return Err(format!(
                        "the update of step {} takes its gradient from a phase 2 this worker did not run",
                        u.step
                    ));
                }
                true
            } else if !u.discriminator_grad.is_empty() {
                self.v_step = None;
                f32le::decode(&u.discriminator_grad, &mut self.v, "discriminator_grad")?;
                true
            } else {
                false
            };
            self.host
                .apply(
                    self.be.as_mut(),
                    gen.then_some(&self.grad_gen[..]),
                    disc.then_some(&self.v[..]),
                    [u.gen_t, u.disc_t],
                )
                .map_err(|e| e.to_string())
        })();
        self.update_error = r.err().map(|e| format!("cannot apply the update of step {}: {e}", u.step));
    }

    /// Answers a SumRequest: the rows of the last phase answered, quantised
    /// with the scales of the run-wide `maxima` and added into one row of
    /// int64 over the blocks whose guessed scale did not hold (in order), or
    /// the error.
    pub fn sum(&mut self, req: &proto::SumRequest) -> proto::SumResult {
        let mut res =
            proto::SumResult { request_id: req.request_id, step: req.step, phase: req.phase, ..Default::default() };
        let held = match &self.held {
            Some((step, phase, cols, n)) if (*step, *phase) == (req.step, req.phase) => (cols.clone(), *n),
            _ => {
                res.error = format!(
                    "no rows of step {} phase {} are held here (a SumRequest answers the phase answered last)",
                    req.step, req.phase
                );
                return res;
            }
        };
        let (cols, n) = held;
        let blocks = self.fixed.blocks_of(&cols);
        let theirs: Vec<f32> = f32le::iter(&req.maxima).collect();
        if req.maxima.len() != blocks.len() * 4 || theirs.iter().any(|m| m.is_nan() || *m < 0.0) {
            res.error = format!(
                "maxima hold {} bytes, expected {} numbers >= 0 (one per block of the phase's columns)",
                req.maxima.len(),
                blocks.len()
            );
            return res;
        }
        let mut maxima = vec![0.0f32; self.fixed.blocks.len()];
        for (&b, &m) in blocks.iter().zip(&theirs) {
            maxima[b] = m;
        }
        // Only the blocks whose guessed scale was not the run-wide one.
        let again: Vec<std::ops::Range<usize>> = blocks
            .iter()
            .filter(|&&b| !self.fixed.same_scale(self.guess[b], maxima[b]))
            .map(|&b| self.fixed.blocks.columns(b))
            .collect();
        res.fixed = self.quantised(&again, n, &maxima);
        res
    }

    /// The first `n` rows held, quantised with the scales of `maxima` (by
    /// block) and added into one int64 row over `cols`, as bytes.
    fn quantised(&self, cols: &[std::ops::Range<usize>], n: usize, maxima: &[f32]) -> Vec<u8> {
        let rows: Vec<usize> = (0..n).collect();
        let mut acc = Vec::new();
        self.fixed.sum_over(&self.rows, self.layout.stride(), &rows, cols, maxima, &mut acc);
        wire::encode_i64(&acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_result_stops_the_worker_and_a_failure_lets_it_reconnect() {
        let st = tonic::Status::invalid_argument("PhaseResult for step 3 phase 1: partials hold 8 bytes, expected 12");
        let e = ended(st);
        assert_eq!(e.exit_code(), 2);
        let m = e.to_string();
        assert!(m.contains("refused this worker's result") && m.contains("InvalidArgument"), "{m}");
        assert!(m.contains("partials hold 8 bytes, expected 12"), "{m}");
        assert!(matches!(ended(tonic::Status::out_of_range("too large")), Error::Input(_)));
        let lost = ended(tonic::Status::unavailable("connection reset"));
        assert!(matches!(lost, Error::Runtime(_)), "{lost}");
        assert!(matches!(refusal(tonic::Status::unauthenticated("token")), Error::Input(_)));
        assert!(matches!(refusal(tonic::Status::cancelled("gone")), Error::Runtime(_)));
        let ev = ended(tonic::Status::aborted(format!("{} at step 7: it missed the deadline", super::super::EVICTED)));
        assert_eq!(ev.exit_code(), 3);
        assert!(ev.to_string().contains("evicted this worker at step 7: it missed the deadline"), "{ev}");
        assert!(ev.to_string().contains("start it again"), "{ev}");
    }
}
