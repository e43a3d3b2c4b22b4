//! Prometheus metrics: scraped from a training process while it runs, with
//! the series of DESIGN.md and values that agree with each other.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET / on 127.0.0.1:port; None until the endpoint answers.
fn scrape(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// `name{labels}` -> value, for every sample line.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| panic!("no series {key} in {:?}", m.keys().collect::<Vec<_>>()))
}

/// `promtool check metrics` prints nothing for `text` (every series has
/// HELP text, units, names as Prometheus wants them).  Skips, saying why,
/// without promtool (.ci/run installs it).
fn promtool_accepts(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIPPED promtool check metrics: promtool is not installed (apt-get install prometheus)");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}\non:\n{text}");
}

#[test]
fn a_running_trainer_serves_its_metrics() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("lockstep-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args([
            "train",
            "--quiet",
            "--config",
            "tests/data/tiny-ring.toml",
            "--steps",
            "1000000",
            "--transport",
            "grpc",
        ])
        .args([
            "--workers",
            "2",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
            "--set",
            "log.stability_every=10",
            "--out",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let first = loop {
        if let Some(m) = scrape(port).map(|b| parse(&b)) {
            let estimated = m.contains_key("lockstep_jacobian_spectral_abscissa");
            if m.get("lockstep_steps_total").is_some_and(|&s| s >= 20.0) && estimated {
                break m;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no metrics after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    let text = scrape(port).expect("second scrape");
    promtool_accepts(&text);
    let second = parse(&text);
    child.kill().unwrap();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    for m in [&first, &second] {
        let steps = get(m, "lockstep_steps_total");
        // Steps and samples move together (batch 64); a scrape may fall between the two.
        let samples = get(m, "lockstep_samples_total");
        assert!((samples / 64.0 - steps).abs() <= 1.0, "samples {samples} vs steps {steps}");
        assert_eq!(get(m, "lockstep_workers"), 2.0);
        assert_eq!(get(m, "lockstep_loss_scale"), 65536.0, "the initial loss scale (no overflow on the CPU)");
        assert!(get(m, "lockstep_value").is_finite());
        assert!(get(m, "lockstep_regularizer") >= 0.0);
        assert!(get(m, "lockstep_jacobian_spectral_abscissa").is_finite());
        assert!(get(m, "lockstep_jacobian_discrete_radius") > 0.0);
        assert!(get(m, "lockstep_grad_norm{player=\"generator\"}") > 0.0);
        assert!(get(m, "lockstep_grad_norm{player=\"discriminator\"}") > 0.0);
        let ones = get(m, "lockstep_step_duration_seconds_count{phase=\"one\"}");
        assert!((ones - steps).abs() <= 1.0, "phase-one timings {ones} vs steps {steps}");
        assert!(get(m, "lockstep_step_duration_seconds_count{phase=\"two\"}") >= steps - 1.0);
        for w in ["0", "1"] {
            let k = format!("lockstep_worker_compute_seconds_count{{worker=\"{w}\",phase=\"one\"}}");
            assert!(get(m, &k) >= steps - 1.0, "{k}");
        }
        let sent = get(m, "lockstep_comm_bytes_total{direction=\"sent\"}");
        let received = get(m, "lockstep_comm_bytes_total{direction=\"received\"}");
        // At least the gradients (phase 2's v, the generator's) go to each of 2 workers every step.
        assert!(sent > steps * 2.0 * 4.0 * 1000.0, "sent {sent} for {steps} steps");
        assert!(received > 0.0);
    }
    assert!(get(&second, "lockstep_steps_total") > get(&first, "lockstep_steps_total"));
}

/// The coordinator and a worker process each serve their series, every one
/// described: `promtool check metrics` prints nothing for either scrape.
#[test]
fn coordinator_and_worker_scrapes_pass_promtool() {
    let (cport, wport, gport) = (free_port(), free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("lockstep-metrics-cw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = env!("CARGO_BIN_EXE_lockstep");
    let mut coord = Command::new(bin)
        .args(["coordinator", "--quiet", "--config", "tests/data/tiny-ring.toml", "--steps", "1000000"])
        .args(["--min-workers", "2", "--listen", &format!("127.0.0.1:{gport}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{cport}"), "--out"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{gport}");
    let mut workers: Vec<std::process::Child> = [Some(wport), None]
        .into_iter()
        .map(|m| {
            let mut c = Command::new(bin);
            c.args(["worker", "--coordinator", &url, "--backend", "cpu"]);
            if let Some(p) = m {
                c.args(["--metrics-listen", &format!("127.0.0.1:{p}")]);
            }
            c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
        })
        .collect();
    let t = Instant::now();
    let (c, w) = loop {
        let c = scrape(cport).filter(|b| parse(b).get("lockstep_steps_total").is_some_and(|&s| s >= 20.0));
        let w = scrape(wport).filter(|b| b.contains("lockstep_worker_compute_seconds"));
        if let (Some(c), Some(w)) = (c, w) {
            break (c, w);
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no metrics after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = coord.kill();
    let _ = coord.wait();
    for w in workers.iter_mut() {
        let _ = w.kill();
        let _ = w.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    promtool_accepts(&c);
    promtool_accepts(&w);
}
