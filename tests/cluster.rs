//! The cluster's two commands as separate processes on loopback: a
//! coordinator and workers train to bitwise the same result as local mode;
//! listening beyond loopback needs a token, and a worker without it is
//! refused.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use lockstep::checkpoint;

mod common;

use common::{bin, coordinator, finish, free_port, local_run, params, worker};

fn tmp(name: &str) -> PathBuf {
    common::tmp("cluster", name)
}

#[test]
fn coordinator_and_two_worker_processes_match_local_mode_bitwise() {
    let d = tmp("match");
    let local = common::local_run(&d, "60");

    let port = free_port();
    let run = d.join("cluster");
    let coord = bin()
        .args([
            "coordinator",
            "--quiet",
            "--config",
            "tests/data/tiny-ring.toml",
            "--steps",
            "60",
            "--min-workers",
            "2",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--out"])
        .arg(&run)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (w1, w2) = (worker(port, None), worker(port, None));
    let (_, summary) = common::finish_cluster(coord, vec![w1, w2]);
    assert_eq!(summary["workers"], 2);
    assert_eq!(params(&local), params(&run));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn beyond_loopback_a_token_is_required_and_checked() {
    let d = tmp("token");
    // No token: refused before anything is written.
    let out = d.join("run");
    let o = bin()
        .args(["coordinator", "--config", "tests/data/tiny-ring.toml", "--listen", "0.0.0.0:0", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--token-file"));
    assert!(!out.exists());

    let token = d.join("token");
    common::write_secret(&token, "0123456789abcdef0123456789abcdef\n");
    let wrong = d.join("wrong");
    common::write_secret(&wrong, "ffffffffffffffffffffffffffffffff\n");
    let short = d.join("short");
    common::write_secret(&short, "abc\n");
    // A token others may read: refused with the fix, before anything is written.
    let open = d.join("open");
    std::fs::write(&open, "0123456789abcdef0123456789abcdef\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let o = bin()
        .args(["coordinator", "--config", "tests/data/tiny-ring.toml", "--listen", "0.0.0.0:0", "--token-file"])
        .arg(&open)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    common::assert_input_error(&o, &["open", "chmod 600", "644"]);
    assert!(!out.exists());
    // Beyond loopback without TLS: refused, naming both ways out.
    let o = bin()
        .args(["coordinator", "--config", "tests/data/tiny-ring.toml", "--listen", "0.0.0.0:0", "--token-file"])
        .arg(&token)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    common::assert_input_error(&o, &["without TLS", "--tls-cert", "--allow-plaintext"]);
    assert!(!out.exists());
    let o = bin()
        .args(["coordinator", "--config", "tests/data/tiny-ring.toml", "--listen", "0.0.0.0:0", "--token-file"])
        .arg(&short)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("at least 16"));

    let port = free_port();
    let coord = bin()
        .args(["coordinator", "--quiet", "--config", "tests/data/tiny-ring.toml", "--steps", "20"])
        .args(["--listen", &format!("0.0.0.0:{port}"), "--allow-plaintext", "--token-file"])
        .arg(&token)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Without the token, and with a wrong one: refused at once, exit code 2.
    for t in [None, Some(wrong.as_path())] {
        let o = finish(worker(port, t));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("token"), "{err}");
    }
    // With it: trains to the end.
    let w = worker(port, Some(&token));
    let c = finish(coord);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert!(finish(w).status.success());
    assert_eq!(checkpoint::load(&checkpoint::latest(&out).unwrap()).unwrap().state.step, 20);
    std::fs::remove_dir_all(&d).unwrap();
}

use common::wait_for_step;

#[test]
fn a_worker_killed_mid_run_is_evicted_and_the_result_does_not_change() {
    let d = tmp("kill");
    let local = local_run(&d, "3000");
    let port = free_port();
    let run = d.join("cluster");
    let coord = coordinator(port, "3000", "3", &run);
    let (w1, mut w2, w3) = (worker(port, None), worker(port, None), worker(port, None));
    wait_for_step(&run, 300);
    w2.kill().unwrap(); // SIGKILL
    let _ = w2.wait();
    let c = finish(coord);
    let err = String::from_utf8_lossy(&c.stderr);
    assert!(c.status.success(), "coordinator: {err}");
    assert!(err.contains("evicted worker"), "{err}");
    for w in [w1, w3] {
        assert!(finish(w).status.success());
    }
    assert_eq!(params(&local), params(&run));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_worker_joining_mid_run_takes_a_shard_and_the_result_does_not_change() {
    let d = tmp("join");
    // One worker alone runs whole steps (thousands per second on tiny-ring):
    // enough steps that the second joins well before the end.
    let local = local_run(&d, "8000");
    let port = free_port();
    let run = d.join("cluster");
    let coord = coordinator(port, "8000", "1", &run);
    let w1 = worker(port, None);
    wait_for_step(&run, 200);
    let w2 = worker(port, None);
    let c = finish(coord);
    let err = String::from_utf8_lossy(&c.stderr);
    assert!(c.status.success(), "coordinator: {err}");
    assert!(err.contains("joins at step"), "{err}");
    for w in [w1, w2] {
        assert!(finish(w).status.success());
    }
    assert_eq!(params(&local), params(&run));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_coordinator_killed_and_resumed_ends_bitwise_where_a_straight_run_ends() {
    let d = tmp("restart");
    let local = local_run(&d, "2000");
    let port = free_port();
    let run = d.join("cluster");
    let mut coord = coordinator(port, "2000", "2", &run);
    let (w1, w2) = (worker(port, None), worker(port, None));
    wait_for_step(&run, 300);
    coord.kill().unwrap(); // SIGKILL
    let _ = coord.wait();
    assert!(!run.join("summary.json").exists(), "the run finished before the kill");
    // Restarted on the same port with --resume: the workers reconnect.
    let again = bin()
        .args(["coordinator", "--quiet", "--resume", "--min-workers", "2", "--listen", &format!("127.0.0.1:{port}")])
        // Both workers reconnect within seconds; a missing one fails the test in 2 minutes, not 10.
        .args(["--wait-seconds", "120"])
        .arg("--out")
        .arg(&run)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let c = finish(again);
    assert!(c.status.success(), "coordinator: {}", String::from_utf8_lossy(&c.stderr));
    for w in [w1, w2] {
        let o = finish(w);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(err.contains("retrying"), "{err}");
    }
    assert_eq!(params(&local), params(&run));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_stalled_worker_misses_the_phase_deadline_and_is_evicted() {
    let d = tmp("stall");
    let local = local_run(&d, "1500");
    let port = free_port();
    let run = d.join("cluster");
    let coord = bin()
        .args(["coordinator", "--quiet", "--config", "tests/data/tiny-ring.toml", "--steps", "1500"])
        .args(["--min-workers", "2", "--phase-deadline", "2", "--listen", &format!("127.0.0.1:{port}"), "--out"])
        .arg(&run)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (w1, mut w2) = (worker(port, None), worker(port, None));
    wait_for_step(&run, 200);
    let stop = |sig: &str| Command::new("kill").args([sig, &w2.id().to_string()]).status().unwrap();
    assert!(stop("-STOP").success());
    let c = finish(coord);
    let err = String::from_utf8_lossy(&c.stderr);
    assert!(c.status.success(), "coordinator: {err}");
    assert!(err.contains("missed the 2 s deadline") && err.contains("evicted worker"), "{err}");
    let _ = stop("-CONT");
    // Told why, the evicted worker exits 3 on its own (it does not pass for finished).
    let t = std::time::Instant::now();
    while w2.try_wait().unwrap().is_none() && t.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if w2.try_wait().unwrap().is_none() {
        let _ = w2.kill();
    }
    let o = finish(w2);
    let werr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "the evicted worker: {werr}");
    assert!(werr.contains("evicted this worker at step") && werr.contains("missed the 2 s deadline"), "{werr}");
    assert!(werr.contains("start it again") && !werr.contains("training finished"), "{werr}");
    assert!(finish(w1).status.success());
    assert_eq!(params(&local), params(&run));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_worker_takes_as_many_threads_as_its_cpu_affinity_allows() {
    let Ok(taskset) = which_taskset() else {
        eprintln!("SKIPPED a_worker_takes_as_many_threads_as_its_cpu_affinity_allows: no taskset (util-linux)");
        return;
    };
    // Nothing listens there: the worker says its thread count, then gives up.
    let port = free_port();
    let o = Command::new(taskset)
        .args(["-c", "0"])
        .arg(env!("CARGO_BIN_EXE_lockstep"))
        .args(["worker", "--coordinator", &format!("http://127.0.0.1:{port}"), "--backend", "cpu", "--retry-for", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("worker: 1 CPU threads"), "{err}");
}

fn which_taskset() -> Result<PathBuf, ()> {
    ["/usr/bin/taskset", "/bin/taskset"].iter().map(PathBuf::from).find(|p| p.exists()).ok_or(())
}
