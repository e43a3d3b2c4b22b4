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
    let (lb, lobby) = local::serve(&cfg, "127.0.0.1:0", None, local::PHASE_DEADLINE).unwrap();
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
    let game = trainer::setup(&cfg).game;
    let st = TrainState::init(&cfg, &game);
    let mut t = Trainer::new(cfg, game, st, workers).unwrap();
    for _ in 0..5 {
        assert!(!t.step().unwrap().skipped);
    }
    assert_eq!(t.state.step, 5);
}
