//! The control plane under churn (docs/scaling.md): a coordinator process
//! and synthetic worker processes (`--backend synthetic`), three alive at a
//! time; every fraction of a second one is killed (SIGKILL) or frozen
//! (SIGSTOP, so that only the phase deadline can find it) and a fresh one
//! started.  The run must end bitwise where an undisturbed one-worker run
//! ends, with every step applied exactly once, and in bounded time (no wait
//! without a deadline).
//!
//! `LOCKSTEP_CHURN_SECONDS` (default 15) sets how long the churn goes on;
//! scripts/churn.sh runs it for minutes.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{bin, free_port, params};

const CONFIG: &str = "tests/data/tiny-ring.toml";
/// Milliseconds a synthetic phase takes on the whole minibatch.
const SYNTHETIC_MS: &str = "2";

fn synthetic_worker(port: u16) -> Child {
    bin()
        .args(["worker", "--coordinator", &format!("http://127.0.0.1:{port}"), "--backend", "synthetic"])
        .args(["--synthetic-ms", SYNTHETIC_MS, "--retry-for", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(c: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on a child this test started and has not reaped.
    unsafe { libc::kill(c.id() as libc::pid_t, sig) };
}

/// The `train.steps`, steps skipped and optimizer step counts of a run's newest checkpoint.
fn counts(dir: &Path) -> (u64, u64, u64, u64) {
    let s = lockstep::checkpoint::load(&lockstep::checkpoint::latest(dir).unwrap()).unwrap().state;
    (s.step, s.skipped, s.opt_gen.t, s.opt_disc.t)
}

#[test]
fn workers_killed_frozen_and_started_throughout_change_nothing() {
    let churn_for =
        Duration::from_secs(std::env::var("LOCKSTEP_CHURN_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(15));
    let d = common::tmp("churn", "run");
    // Long enough that the churn, not the run, ends first (synthetic steps
    // run at a few hundred a second on loopback); cut short after it.
    let steps = (churn_for.as_secs() * 400).to_string();
    let quiet_logs = ["--set", "log.eval_every=1000000", "--set", "log.sample_every=1000000"];
    let local = d.join("local");
    let o = bin()
        .args(["train", "--quiet", "--config", CONFIG, "--steps", &steps, "--backend", "synthetic"])
        .args(["--synthetic-ms", "0"])
        .args(quiet_logs)
        .arg("--out")
        .arg(&local)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let port = free_port();
    let run = d.join("cluster");
    let started = Instant::now();
    let mut coord = bin()
        .args(["coordinator", "--quiet", "--config", CONFIG, "--steps", &steps, "--min-workers", "3"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--phase-deadline", "2"])
        .args(quiet_logs)
        .arg("--out")
        .arg(&run)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut live: Vec<Child> = (0..3).map(|_| synthetic_worker(port)).collect();
    let mut gone = Vec::new();
    let (mut killed, mut frozen) = (0, 0);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    while started.elapsed() < churn_for && coord.try_wait().unwrap().is_none() {
        // xorshift: which worker, what to do, how long to wait.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(150 + x % 500));
        let w = live.remove((x >> 20) as usize % live.len());
        if (x >> 40) % 6 == 0 {
            signal(&w, libc::SIGSTOP);
            frozen += 1;
        } else {
            signal(&w, libc::SIGKILL);
            killed += 1;
        }
        gone.push(w);
        live.push(synthetic_worker(port));
    }
    eprintln!(
        "churn: {killed} workers killed, {frozen} frozen, {} started in {:.1} s",
        killed + frozen + 3,
        started.elapsed().as_secs_f64()
    );
    // The frozen ones are evicted within the phase deadline (2 s); then they
    // go, so that the coordinator's shutdown does not wait on their
    // sessions.  The live ones stay: what is left of the run runs on them.
    std::thread::sleep(Duration::from_secs(3));
    for w in gone.iter_mut() {
        let _ = w.kill();
        let _ = w.wait();
    }
    let c = common::finish(coord);
    let err = String::from_utf8_lossy(&c.stderr);
    assert!(c.status.success(), "coordinator: {err}");
    let took = started.elapsed();
    for mut w in live {
        let _ = w.kill();
        let _ = w.wait();
    }
    eprintln!("churn: the run ended {:.1} s after it started", took.as_secs_f64());
    assert!(killed + frozen >= 10, "only {} churn events in {:?}: the run ended too soon", killed + frozen, took);
    assert!(err.contains("evicted worker"), "{err}");
    let n: u64 = steps.parse().unwrap();
    assert_eq!(counts(&run), (n, 0, n, n), "every step applied exactly once");
    assert_eq!(counts(&local), (n, 0, n, n));
    assert_eq!(params(&local), params(&run), "the churned run ended elsewhere than the undisturbed one");
    std::fs::remove_dir_all(&d).unwrap();
}
