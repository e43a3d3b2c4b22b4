//! A flood of bad connections during a 2-worker gRPC run: connections with
//! wrong tokens, garbage bytes and half-open HTTP/2 streams (each connection
//! one attempt every `PACE`).  Training goes on at 80 % or more of its
//! undisturbed steps/s, the coordinator's memory stays bounded, the result
//! is bitwise that of the undisturbed run, and refused attempts are logged
//! at most once a second per source address, with a count.
//!
//! CI floods with 60 connections; `scripts/flood.sh` with 200 for a minute
//! (LOCKSTEP_FLOOD_CONNECTIONS, LOCKSTEP_FLOOD_STEPS).
//!
//! A real flood comes from other machines; here it shares the run's cores
//! (two on CI), so the flooding threads run at the lowest priority (nice
//! 19): what is measured is the coordinator's cost of refusing, not the
//! attacker's CPU.  The coordinator caps the rate at which it accepts
//! connections (`dist::coordinator::ACCEPT_PER_SECOND`), which caps what a
//! flood costs its steps.  These machines are noisy (two calm runs here
//! differed by a factor of 1.9), so the runs come in five adjacent pairs of
//! one calm and one flooded run (C F, F C, C F, F C, C F) and the median of
//! the five flooded/calm ratios is held to 80 %.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep::checkpoint;
use lockstep::dist::proto::{self, coordinator_client::CoordinatorClient};

mod common;

use common::{bin, bits, free_port};

const PACE: Duration = Duration::from_millis(100);

fn env(k: &str, default: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The coordinator's resident memory (KiB), when readable.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

struct Run {
    steps_per_second: f64,
    max_rss_kib: u64,
    stderr: String,
    gen: Vec<u32>,
    disc: Vec<u32>,
}

/// A coordinator with a token on loopback and two worker processes; floods
/// it with `connections` while it trains when `connections` > 0.
fn run(d: &Path, steps: u64, connections: usize) -> (Run, u64) {
    std::fs::create_dir_all(d).unwrap();
    let token = d.join("token");
    common::write_secret(&token, "0123456789abcdef0123456789abcdef\n");
    let port = free_port();
    let out = d.join("run");
    let mut coord: Child = bin()
        .args(["coordinator", "--quiet", "--config", "tests/data/tiny-ring.toml", "--steps", &steps.to_string()])
        .args(["--set", "log.checkpoint_every=100000", "--min-workers", "2", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--token-file")
        .arg(&token)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let workers: Vec<Child> = (0..2).map(|_| common::worker(port, Some(&token))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let flood = (connections > 0).then(|| {
        let (stop, attempts) = (stop.clone(), attempts.clone());
        std::thread::spawn(move || flood(port, connections, stop, attempts))
    });
    let mut max_rss = 0;
    let pid = coord.id();
    while coord.try_wait().unwrap().is_none() {
        max_rss = max_rss.max(rss_kib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(f) = flood {
        f.join().unwrap();
    }
    let mut stderr = String::new();
    coord.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(coord.wait().unwrap().success(), "{stderr}");
    for mut w in workers {
        let _ = w.wait();
    }
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let st = checkpoint::load(&checkpoint::latest(&out).unwrap()).unwrap().state;
    let r = Run {
        steps_per_second: summary["steps_per_second"].as_f64().unwrap(),
        max_rss_kib: max_rss,
        stderr,
        gen: bits(&st.gen),
        disc: bits(&st.disc),
    };
    (r, attempts.load(Ordering::Relaxed))
}

/// Nice 19 for the calling thread (Linux keeps niceness per thread, and
/// threads it starts inherit it).
fn lowest_priority() {
    // SAFETY: plain syscalls on the calling thread's own id.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as libc::id_t, 19) };
    assert_eq!(r, 0, "setpriority: {}", std::io::Error::last_os_error());
}

/// `connections` connections, a third each: gRPC sessions with a wrong
/// token, garbage bytes, half-open HTTP/2 (the preface, then silence).
fn flood(port: u16, connections: usize, stop: Arc<AtomicBool>, attempts: Arc<AtomicU64>) {
    lowest_priority();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(lowest_priority)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for i in 0..connections {
            let (stop, attempts) = (stop.clone(), attempts.clone());
            tasks.push(tokio::spawn(async move {
                let mut half_open: Option<tokio::net::TcpStream> = None;
                while !stop.load(Ordering::Relaxed) {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    match i % 3 {
                        0 => {
                            if let Ok(ch) = lockstep::dist::worker::connect(&format!("http://127.0.0.1:{port}")).await {
                                let attach =
                                    lockstep::dist::auth::Attach::new(Some("wrong-token-wrong-token".into())).unwrap();
                                let mut c = CoordinatorClient::with_interceptor(ch, attach);
                                let (tx, rx) = tokio::sync::mpsc::channel::<proto::WorkerMessage>(1);
                                drop(tx);
                                let _ = c.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
                            }
                        }
                        1 => {
                            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                                use tokio::io::AsyncWriteExt;
                                let junk: Vec<u8> =
                                    (0..2048u32).map(|k| (k.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
                                let _ = s.write_all(&junk).await;
                            }
                        }
                        _ => {
                            if half_open.is_none() {
                                if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                                    use tokio::io::AsyncWriteExt;
                                    let _ = s
                                        .write_all(
                                            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
                                        )
                                        .await;
                                    half_open = Some(s);
                                }
                            }
                        }
                    }
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn a_flood_of_bad_connections_neither_slows_nor_changes_a_run() {
    let steps = env("LOCKSTEP_FLOOD_STEPS", 12000);
    let connections = env("LOCKSTEP_FLOOD_CONNECTIONS", 60) as usize;
    let d = common::tmp("flood", "run");
    let (mut calm, mut flooded) = (Vec::new(), Vec::new());
    for pair in 0..5 {
        for flooding in [pair % 2 == 1, pair % 2 == 0] {
            let dir = d.join(format!("run{}", calm.len() + flooded.len()));
            if flooding {
                let started = Instant::now();
                let (r, attempts) = run(&dir, steps, connections);
                flooded.push((r, attempts, started.elapsed().as_secs_f64()));
            } else {
                calm.push(run(&dir, steps, 0).0);
            }
        }
    }
    let ratios: Vec<f64> =
        calm.iter().zip(&flooded).map(|(c, (f, ..))| f.steps_per_second / c.steps_per_second).collect();
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let ratio = sorted[sorted.len() / 2];
    let calm_rss = calm.iter().map(|r| r.max_rss_kib).max().unwrap();
    for (r, attempts, seconds) in &flooded {
        let refused_lines: Vec<&str> = r.stderr.lines().filter(|l| l.contains("refused")).collect();
        eprintln!(
            "flood: {connections} connections, {attempts} attempts in {seconds:.1} s; steps/s {:.1} flooded; \
             coordinator peak RSS {} KiB; {} refusal lines",
            r.steps_per_second,
            r.max_rss_kib,
            refused_lines.len()
        );
        for l in refused_lines.iter().take(3) {
            eprintln!("  {l}");
        }
        assert!(r.max_rss_kib < calm_rss + 64 * 1024, "memory grew under the flood");
        assert!(!refused_lines.is_empty(), "the bad tokens were not logged");
        assert!(refused_lines.len() as f64 <= seconds + 2.0, "{} lines in {seconds:.1} s", refused_lines.len());
        assert!(refused_lines.iter().all(|l| l.contains("127.0.0.1") && l.contains("request(s)")));
    }
    eprintln!(
        "flood: steps/s calm {:.1?}, flooded {:.1?}; flooded/calm by pair {:.2?}, median {:.0} %; peak RSS {calm_rss} KiB calm",
        calm.iter().map(|r| r.steps_per_second).collect::<Vec<_>>(),
        flooded.iter().map(|(r, ..)| r.steps_per_second).collect::<Vec<_>>(),
        ratios,
        100.0 * ratio
    );
    for (r, ..) in &flooded {
        assert_eq!((&calm[0].gen, &calm[0].disc), (&r.gen, &r.disc), "a flooded run's result differs");
    }
    assert_eq!((&calm[0].gen, &calm[0].disc), (&calm[1].gen, &calm[1].disc), "two calm runs differ");
    assert!(ratio >= 0.8, "the flood slowed training to {:.0} %", 100.0 * ratio);
}
