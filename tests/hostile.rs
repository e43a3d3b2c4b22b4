//! Hostile or broken clients get a clear gRPC status, and the coordinator
//! keeps serving the workers that behave.

use std::io::Write;
use std::time::Duration;

use lockstep::backend::{Backend, BackendSpec};
use lockstep::config::Config;
use lockstep::dist::proto::{self, coordinator_client::CoordinatorClient, worker_message};
use lockstep::dist::{local, worker, PROTOCOL_VERSION};
use lockstep::gan::trainer::{self, TrainState, Trainer};

fn tiny() -> Config {
    Config::load(std::path::Path::new("tests/data/tiny-ring.toml"), &[]).unwrap()
}

/// Opens a session whose first message is `first`; returns the status it ends with.
async fn session_status(url: String, first: proto::WorkerMessage) -> tonic::Status {
    let ch = worker::connect(&url).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(first).await.unwrap();
    let mut client = CoordinatorClient::new(ch);
    match client.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Err(s) => s,
        Ok(resp) => {
            let mut s = resp.into_inner();
            match s.message().await {
                Err(st) => st,
                Ok(m) => panic!("the coordinator accepted a bad session: {m:?}"),
            }
        }
    }
}

fn join(version: u32, capacity: f64) -> proto::WorkerMessage {
    proto::WorkerMessage {
        kind: Some(worker_message::Kind::Join(proto::Join {
            protocol_version: version,
            backend: "cpu".into(),
            device: "test".into(),
            capacity,
        })),
    }
}

#[test]
fn bad_sessions_are_refused_and_good_workers_still_train() {
    let cfg = tiny();
    let (lb, lobby) = local::serve(&cfg, "127.0.0.1:0", local::Access::default(), local::PHASE_DEADLINE).unwrap();
    let url = format!("http://{}", lb.addr);

    // Random bytes on the port: the connection dies, the server does not.
    let mut raw = std::net::TcpStream::connect(lb.addr).unwrap();
    let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let _ = raw.write_all(&junk);
    drop(raw);

    let cases = [
        (join(PROTOCOL_VERSION + 1, 1.0), tonic::Code::FailedPrecondition, "protocol version"),
        (join(PROTOCOL_VERSION, f64::NAN), tonic::Code::InvalidArgument, "capacity"),
        (join(PROTOCOL_VERSION, -1.0), tonic::Code::InvalidArgument, "capacity"),
        (
            proto::WorkerMessage { kind: Some(worker_message::Kind::Result(proto::PhaseResult::default())) },
            tonic::Code::InvalidArgument,
            "Join",
        ),
    ];
    for (msg, code, words) in cases {
        let st = lb.runtime.block_on(session_status(url.clone(), msg));
        assert_eq!(st.code(), code, "{st:?}");
        assert!(st.message().contains(words), "{st:?}");
    }
    assert!(lobby.take_waiting().is_empty(), "a refused session reached the lobby");

    // A good worker joins and trains as usual.
    lb.runtime.spawn(async move {
        let ch = worker::connect(&url).await.unwrap();
        worker::run_session(ch, BackendSpec::cpu(), None).await.unwrap();
    });
    let workers = lobby.wait_for(1, Duration::from_secs(30)).unwrap();
    let workers: Vec<Box<dyn Backend>> = workers.into_iter().map(|w| Box::new(w) as Box<dyn Backend>).collect();
    let game = trainer::setup(&cfg).unwrap().game;
    let st = TrainState::init(&cfg, &game);
    let mut t = Trainer::new(cfg, game, st, workers).unwrap();
    for _ in 0..5 {
        assert!(!t.step().unwrap().skipped);
    }
    assert_eq!(t.state.step, 5);
}

// ---------------------------------------------------------------------------
// Bad results from a worker that has joined a coordinator process.

use std::process::{Child, Stdio};

use lockstep::checkpoint;
use lockstep::dist::proto::coordinator_message::Kind;
use lockstep::dist::worker::Replica;

mod common;

use common::{bin, coordinator, finish, free_port, local_run, params};

/// A real `lockstep worker` process for the coordinator on `port`.
fn good_worker(port: u16) -> Child {
    bin()
        .args(["worker", "--coordinator", &format!("http://127.0.0.1:{port}"), "--backend", "cpu"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A worker speaking the proto directly: it joins, keeps a real replica (so
/// its answers are right), and passes every answer through `spoil` before
/// sending it; a whole step for which `skip` gives a StepResult is answered
/// with that instead of being run.  Returns the status its session ended
/// with (None: ended normally, training finished).
async fn fake_worker(
    url: String,
    mut spoil: impl FnMut(&mut worker_message::Kind),
    mut skip: impl FnMut(&proto::StepRequest) -> Option<proto::StepResult>,
) -> Option<tonic::Status> {
    let ch = connect_retrying(&url).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(join(PROTOCOL_VERSION, 1.0)).await.unwrap();
    let mut client = CoordinatorClient::new(ch).max_decoding_message_size(64 << 20);
    let mut inbound = client.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let mut replica = None;
    let mut skipped_last = false;
    loop {
        let kind = match inbound.message().await {
            Ok(Some(m)) => m.kind.expect("a message with a kind"),
            Ok(None) => return None,
            Err(s) => return Some(s),
        };
        let answer = match kind {
            Kind::Welcome(w) => {
                replica = Some(Replica::from_welcome(&w, BackendSpec::cpu(), None).unwrap());
                worker_message::Kind::Ready(proto::Ready { dataset_digest: w.dataset_digest })
            }
            // Workers step their own replicas: no weights travel after the join.
            Kind::Params(_) => panic!("the coordinator sent Params after the join"),
            Kind::Load(st) => {
                replica.as_mut().expect("Welcome first").load(&st);
                continue;
            }
            Kind::Phase(req) => worker_message::Kind::Result(replica.as_mut().expect("Welcome first").answer(&req)),
            // Whole steps, when it is the only worker.
            Kind::Step(req) => worker_message::Kind::Step(if req.speculative && skipped_last {
                // Sent ahead of a step this worker skipped: discarded, as a real worker does.
                proto::StepResult { request_id: req.request_id, step: req.step, discarded: true, ..Default::default() }
            } else if let Some(r) = skip(&req) {
                skipped_last = true;
                r
            } else {
                skipped_last = false;
                replica.as_mut().expect("Welcome first").whole_step(&req)
            }),
            Kind::Store(req) => {
                worker_message::Kind::State(replica.as_mut().expect("Welcome first").store(req.request_id))
            }
            Kind::Sum(req) => worker_message::Kind::Sum(replica.as_mut().expect("Welcome first").sum(&req)),
            Kind::Update(u) => {
                replica.as_mut().expect("Welcome first").apply(&u);
                continue;
            }
        };
        let mut answer = answer;
        spoil(&mut answer);
        let _ = tx.send(proto::WorkerMessage { kind: Some(answer) }).await;
    }
}

/// Connects to a coordinator that may still be starting (up to 60 s).
async fn connect_retrying(url: &str) -> tonic::transport::Channel {
    let started = std::time::Instant::now();
    loop {
        match worker::connect(url).await {
            Ok(ch) => return ch,
            Err(e) if started.elapsed() > Duration::from_secs(60) => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Sets block `i`'s maximum in a result to `x`.
fn set_max(r: &mut proto::PhaseResult, i: usize, x: f32) {
    r.maxima[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
}

type Spoil = fn(&mut proto::PhaseResult);

/// `spoil` applied to PhaseResults only.
fn phase_results(mut spoil: impl FnMut(&mut proto::PhaseResult)) -> impl FnMut(&mut worker_message::Kind) {
    move |k| {
        if let worker_message::Kind::Result(r) = k {
            spoil(r)
        }
    }
}

/// Runs every whole step.
fn no_skip(_: &proto::StepRequest) -> Option<proto::StepResult> {
    None
}

#[test]
fn bad_results_get_a_status_and_the_run_ends_where_an_undisturbed_one_does() {
    let d = common::tmp("hostile", "results");
    // Long enough for four fake workers to join, one after the other, while
    // the good worker alone runs whole steps (thousands per second).
    let steps = "5000";
    let local = local_run(&d, steps);
    let port = free_port();
    let run = d.join("cluster");
    let coord = coordinator(port, steps, "1", &run);
    let good = good_worker(port);
    common::wait_for_step(&run, 100);

    let cases: [(Spoil, tonic::Code, &[&str]); 4] = [
        // Maxima of the wrong size.
        (|r| r.maxima.truncate(r.maxima.len() - 4), tonic::Code::InvalidArgument, &["maxima hold", "expected"]),
        // An answer for the step before.
        (|r| r.step -= 1, tonic::Code::FailedPrecondition, &["(stale), expected"]),
        // A NaN maximum (a non-finite value is +inf).
        (|r| set_max(r, 0, f32::NAN), tonic::Code::InvalidArgument, &["maxima hold NaN at block 0", "+inf"]),
        // 100 MiB: over the coordinator's message size limit.
        (|r| r.maxima = vec![0; 100 << 20], tonic::Code::OutOfRange, &["too large: found 10485", "the limit is"]),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (spoil, code, words) in cases {
        let st = rt
            .block_on(fake_worker(format!("http://127.0.0.1:{port}"), phase_results(spoil), no_skip))
            .expect("a refusal");
        assert_eq!(st.code(), code, "{st:?}");
        for w in words {
            assert!(st.message().contains(w), "{w:?} not in {st:?}");
        }
        assert!(common::latest_step(&run).unwrap() < 5000, "the run ended before every case was tried");
    }

    let c = finish(coord);
    let err = String::from_utf8_lossy(&c.stderr);
    assert!(c.status.success(), "coordinator: {err}");
    assert_eq!(err.matches("evicted worker").count(), 4, "{err}");
    assert_eq!(err.matches(" refused: ").count(), 4, "{err}");
    assert!(err.contains("cannot take your message"), "{err}");
    let g = finish(good);
    assert!(g.status.success(), "worker: {}", String::from_utf8_lossy(&g.stderr));
    assert_eq!(params(&local), params(&run));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_declared_overflow_skips_the_step_and_keeps_the_worker() {
    let d = common::tmp("hostile", "overflow");
    let port = free_port();
    let run = d.join("cluster");
    // Two workers (the fake one and a real one): steps run in two phases.
    let coord = coordinator(port, "40", "2", &run);
    let good = good_worker(port);
    let mut overflows = 0;
    let spoil = |r: &mut proto::PhaseResult| {
        // Phase 1 of step 20 overflows (as fp16 under loss scaling would);
        // the replica then finds phase 2's v non-finite and flags it itself.
        if r.step == 20 && r.phase == proto::Phase::One as i32 {
            for i in 0..r.maxima.len() / 4 {
                set_max(r, i, f32::INFINITY);
            }
        }
        overflows += usize::from(lockstep::f32le::iter(&r.maxima).any(|m| m.is_infinite()));
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ended = rt.block_on(fake_worker(format!("http://127.0.0.1:{port}"), phase_results(spoil), no_skip));
    assert!(ended.is_none(), "the session ended with {ended:?}");
    assert_eq!(overflows, 2, "phase 1 and phase 2 of step 20");
    let c = finish(coord);
    let err = String::from_utf8_lossy(&c.stderr);
    assert!(c.status.success(), "coordinator: {err}");
    assert!(!err.contains("evicted"), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    assert_eq!(summary["skipped_steps"], 1, "{summary}");
    assert_eq!(summary["workers"], 2, "{summary}");
    let st = checkpoint::load(&checkpoint::latest(&run).unwrap()).unwrap().state;
    assert_eq!((st.step, st.skipped), (40, 1));
    assert!(finish(good).status.success());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_whole_step_that_overflows_is_skipped_and_the_worker_kept() {
    let d = common::tmp("hostile", "whole-overflow");
    let port = free_port();
    let run = d.join("cluster");
    // One worker: it runs whole steps; at step 20 it reports non-finite
    // values and leaves its state as it was (as an fp16 overflow would).
    let coord = coordinator(port, "40", "1", &run);
    let skip = |req: &proto::StepRequest| {
        (req.step == 20).then(|| proto::StepResult {
            request_id: req.request_id,
            step: req.step,
            nonfinite: 3,
            stats: lockstep::f32le::encode(&[f32::NAN; lockstep::gan::phases::stat::COUNT]),
            sq_norm_disc: f64::INFINITY,
            ..Default::default()
        })
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ended = rt.block_on(fake_worker(format!("http://127.0.0.1:{port}"), |_| {}, skip));
    assert!(ended.is_none(), "the session ended with {ended:?}");
    let c = finish(coord);
    let err = String::from_utf8_lossy(&c.stderr);
    assert!(c.status.success(), "coordinator: {err}");
    let summary: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    assert_eq!((summary["skipped_steps"].as_u64(), summary["workers"].as_u64()), (Some(1), Some(1)), "{summary}");
    let st = checkpoint::load(&checkpoint::latest(&run).unwrap()).unwrap().state;
    assert_eq!((st.step, st.skipped, st.opt_gen.t), (40, 1, 39));
    std::fs::remove_dir_all(&d).unwrap();
}

/// A worker running whole steps (the only one, in process) whose answers
/// `spoil` spoils: the trainer's step fails naming the fault, the worker
/// gets the status.  Returns both.
fn whole_step_refusal(spoil: impl FnMut(&mut worker_message::Kind) + Send + 'static) -> (String, tonic::Status) {
    let cfg = tiny();
    let (lb, lobby) = local::serve(&cfg, "127.0.0.1:0", local::Access::default(), local::PHASE_DEADLINE).unwrap();
    let fake = lb.runtime.spawn(fake_worker(format!("http://{}", lb.addr), spoil, no_skip));
    let workers = lobby.wait_for(1, Duration::from_secs(30)).unwrap();
    let workers: Vec<Box<dyn Backend>> = workers.into_iter().map(|w| Box::new(w) as Box<dyn Backend>).collect();
    let game = trainer::setup(&cfg).unwrap().game;
    let st = TrainState::init(&cfg, &game);
    let mut t = Trainer::new(cfg, game, st, workers).unwrap();
    assert!(t.uses_device_step(), "one remote worker runs whole steps");
    let err = (0..10).find_map(|_| t.step().and_then(|_| t.sync()).err()).expect("a refusal").to_string();
    drop(t);
    let status = lb.runtime.block_on(fake).unwrap().expect("the session ended with a status");
    (err, status)
}

#[test]
fn bad_whole_step_results_and_states_are_refused() {
    use tonic::Code::{FailedPrecondition, InvalidArgument};
    let at_step_3 = |f: fn(&mut proto::StepResult)| {
        move |k: &mut worker_message::Kind| match k {
            worker_message::Kind::Step(r) if r.step == 3 => f(r),
            _ => {}
        }
    };
    let (err, st) = whole_step_refusal(at_step_3(|r| r.step = 2));
    assert_eq!(st.code(), FailedPrecondition, "{st:?}");
    let m = st.message();
    assert!(m.starts_with("StepResult for step 3: request_id ") && m.contains(" step 2, expected request_id "), "{m}");
    assert!(err.contains("step 3 failed on the only worker") && err.contains("refused"), "{err}");

    let (err, st) = whole_step_refusal(at_step_3(|r| r.sq_norm_gen = f64::NAN));
    assert_eq!(st.code(), InvalidArgument, "{st:?}");
    assert!(st.message().contains("non-finite stats or gradient norms with nonfinite = 0"), "{st:?}");
    assert!(err.contains("non-finite stats"), "{err}");

    let (_, st) = whole_step_refusal(at_step_3(|r| r.stats.truncate(4)));
    assert_eq!(st.code(), InvalidArgument, "{st:?}");
    assert!(st.message().contains("stats"), "{st:?}");

    // The state sent back (at a sync) must fit the run.
    let (err, st) = whole_step_refusal(|k| {
        if let worker_message::Kind::State(s) = k {
            s.generator.truncate(8);
        }
    });
    assert_eq!(st.code(), InvalidArgument, "{st:?}");
    assert!(st.message().contains("State: generator holds 8 bytes, expected"), "{st:?}");
    assert!(err.contains("refused"), "{err}");
    let (_, st) = whole_step_refusal(|k| {
        if let worker_message::Kind::State(s) = k {
            s.gen_t += 1;
        }
    });
    assert_eq!(st.code(), FailedPrecondition, "{st:?}");
    assert!(st.message().contains("optimizer steps"), "{st:?}");
}
