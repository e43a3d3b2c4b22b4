//! The worker's side of a session: dial the coordinator, join, build the
//! replica from the config it sends, then answer every phase request with the
//! shard's partial sums (folded into one row when the shard starts at chunk
//! 0, which cuts the bytes of a single worker to one row per phase).

use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::mpsc as tmpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::proto::{self, coordinator_client::CoordinatorClient, coordinator_message::Kind, worker_message};
use super::{wire, PROTOCOL_VERSION};
use crate::backend::{self, Backend, BackendSpec, Draw, ShardTask};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::f32le;
use crate::gan::phases::PartialLayout;
use crate::gan::trainer;

/// Connects to `url` (e.g. `http://10.0.0.1:7070`).
pub async fn connect(url: &str) -> Result<Channel> {
    let ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::input(format!("--coordinator {url}: not a valid URL ({e}); e.g. http://HOST:7070")))?
        .initial_stream_window_size(wire::WINDOW_BYTES)
        .initial_connection_window_size(wire::WINDOW_BYTES)
        .tcp_nodelay(true);
    ep.connect().await.map_err(|e| Error::runtime(format!("cannot reach the coordinator at {url}: {e}")))
}

/// Runs one session to its end: returns Ok when the coordinator closes it.
pub async fn run_session(channel: Channel, choice: BackendSpec, token: Option<String>) -> Result<()> {
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
    let cfg = Config::from_toml_str(&welcome.config_toml, "the coordinator's config", &[])?;
    let setup = trainer::setup(&cfg);
    let be = backend::create(choice, &setup)?;
    let layout = setup.game.layout();
    // The replica computes on its own thread; this task only moves messages.
    let (work_tx, work_rx) = mpsc::channel::<Kind>();
    let id = welcome.worker_id;
    let compute = std::thread::spawn(move || serve(be, layout, id, work_rx, out_tx));
    let end = loop {
        match inbound.message().await {
            Ok(Some(proto::CoordinatorMessage { kind: Some(k) })) => {
                if work_tx.send(k).is_err() {
                    break Ok(());
                }
            }
            Ok(Some(_)) => continue,
            Ok(None) => break Ok(()),
            Err(s) => break Err(Error::runtime(format!("session with the coordinator failed: {}", s.message()))),
        }
    };
    drop(work_tx);
    let served = compute.join().unwrap_or_else(|_| Err(Error::runtime("the worker's compute thread panicked")));
    end.and(served)
}

/// A refusal the worker cannot cure by trying again (a wrong token, another
/// protocol version) is an input error; anything else may pass.
fn refusal(s: tonic::Status) -> Error {
    let msg = format!("the coordinator refused the session: {}", s.message());
    match s.code() {
        tonic::Code::Unauthenticated | tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
            Error::input(msg)
        }
        _ => Error::runtime(msg),
    }
}

/// Answers phase requests until the session ends.
fn serve(
    mut be: Box<dyn Backend>,
    layout: PartialLayout,
    id: u32,
    rx: mpsc::Receiver<Kind>,
    tx: tmpsc::Sender<proto::WorkerMessage>,
) -> Result<()> {
    let stride = layout.stride();
    let mut rows: Vec<f32> = Vec::new();
    let name = crate::telemetry::names::WORKER_COMPUTE;
    let compute = [
        metrics::histogram!(name, "worker" => id.to_string(), "phase" => "one"),
        metrics::histogram!(name, "worker" => id.to_string(), "phase" => "two"),
    ];
    let mut gen = vec![0.0f32; layout.n_gen];
    let mut disc = vec![0.0f32; layout.n_disc];
    let mut v = vec![0.0f32; layout.n_disc];
    while let Ok(k) = rx.recv() {
        let req = match k {
            Kind::Params(p) => {
                let ok = f32le::decode(&p.generator, &mut gen, "generator")
                    .and_then(|_| f32le::decode(&p.discriminator, &mut disc, "discriminator"));
                match ok {
                    Ok(()) => be.set_params(&gen, &disc)?,
                    Err(m) => return Err(Error::runtime(format!("bad parameters from the coordinator: {m}"))),
                }
                continue;
            }
            Kind::Phase(r) => r,
            Kind::Welcome(_) => continue,
        };
        let started = Instant::now();
        let chunks = req.first_chunk as usize..(req.first_chunk + req.chunks) as usize;
        rows.resize(chunks.len() * stride, 0.0);
        let phase_two = req.phase == proto::Phase::Two as i32;
        let done = if phase_two {
            f32le::decode(&req.v, &mut v, "v").map_err(Error::runtime).and_then(|_| be.phase2(&v, &mut rows))
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
                be.phase1(&task, &mut rows)
            } else {
                Err(Error::runtime(format!("loss scale {} is not a positive number", req.loss_scale)))
            }
        };
        let compute_seconds = started.elapsed().as_secs_f64();
        compute[usize::from(phase_two)].record(compute_seconds);
        let folded = chunks.start == 0;
        let result = match done {
            Ok(()) => proto::PhaseResult {
                request_id: req.request_id,
                step: req.step,
                phase: req.phase,
                partials: {
                    let cols = wire::result_columns(&layout, phase_two, req.with_gen_grad);
                    if folded {
                        wire::pack_columns(&wire::fold_rows(&rows, stride), stride, &cols)
                    } else {
                        wire::pack_columns(&rows, stride, &cols)
                    }
                },
                folded,
                compute_seconds,
                error: String::new(),
            },
            Err(e) => proto::PhaseResult {
                request_id: req.request_id,
                step: req.step,
                phase: req.phase,
                error: e.to_string(),
                ..Default::default()
            },
        };
        if tx.blocking_send(proto::WorkerMessage { kind: Some(worker_message::Kind::Result(result)) }).is_err() {
            break;
        }
    }
    Ok(())
}
