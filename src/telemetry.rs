//! What a run reports about itself: metrics.jsonl (one JSON object per log
//! interval, appended and flushed as it goes), Prometheus metrics (names in
//! `names`, served with `--metrics-listen`) and process figures.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An append-only JSON-lines log.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `path` for appending, first dropping any line whose `step` is
    /// beyond `keep_up_to` (lines a crashed run wrote after its last checkpoint).
    pub fn open(path: &Path, keep_up_to: u64) -> Result<MetricsLog> {
        if path.exists() {
            let f = std::fs::File::open(path).map_err(|e| Error::io(path, "read", e))?;
            let kept: Vec<String> = std::io::BufReader::new(f)
                .lines()
                .map_while(|l| l.ok())
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                        .is_some_and(|s| s <= keep_up_to)
                })
                .collect();
            let mut text = kept.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            crate::fsutil::write_atomic(path, text.as_bytes())?;
        }
        let file =
            std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, "open", e))?;
        Ok(MetricsLog { path: path.to_path_buf(), file })
    }

    pub fn write(&mut self, line: &serde_json::Value) -> Result<()> {
        let mut s = line.to_string();
        s.push('\n');
        self.file.write_all(s.as_bytes()).map_err(|e| Error::io(&self.path, "append to", e))?;
        self.file.flush().map_err(|e| Error::io(&self.path, "flush", e))
    }
}

/// The rows of a metrics.jsonl file, in order.  Lines that are not a JSON
/// object (a torn last line of a crashed run, a stray blank line) are left
/// out.
///
/// # Errors
/// An I/O error naming `path` when it cannot be read (e.g. does not exist).
pub fn read_metrics(path: &Path) -> Result<Vec<serde_json::Value>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read metrics", e))?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.is_object())
        .collect())
}

/// Peak resident memory of this process in MiB (Linux; None elsewhere).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The CPU time the calling thread has used, in seconds (the coordinator's
/// own work in `lockstep bench`, apart from its workers' threads).
pub fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `t`, which outlives the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if r != 0 {
        return f64::NAN;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// `YYYYMMDD-HHMMSS` in UTC, for run directory names.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// The Prometheus series (DESIGN.md, "Metrics"): base units, `_total` for
/// counters, histograms for durations.
pub mod names {
    pub const STEP_DURATION: &str = "lockstep_step_duration_seconds";
    pub const WORKER_COMPUTE: &str = "lockstep_worker_compute_seconds";
    pub const COMM_BYTES: &str = "lockstep_comm_bytes_total";
    pub const SAMPLES: &str = "lockstep_samples_total";
    pub const STEPS: &str = "lockstep_steps_total";
    pub const SKIPPED: &str = "lockstep_skipped_steps_total";
    pub const WORKERS: &str = "lockstep_workers";
    pub const EVICTED: &str = "lockstep_workers_evicted_total";
    pub const VALUE: &str = "lockstep_value";
    pub const GRAD_NORM: &str = "lockstep_grad_norm";
    pub const REGULARIZER: &str = "lockstep_regularizer";
    pub const LOSS_SCALE: &str = "lockstep_loss_scale";
    pub const CHECKPOINT_DURATION: &str = "lockstep_checkpoint_duration_seconds";
    /// Phase answers whose int64 sums were quantised with a guessed scale
    /// that the run-wide maxima did not confirm (sent again: `gan::reduce`).
    pub const FIXED_POINT_RETRIES: &str = "lockstep_fixed_point_retries_total";
    /// max Re λ of the game Jacobian's computed eigenvalues (`log.stability_every`).
    pub const JACOBIAN_ABSCISSA: &str = "lockstep_jacobian_spectral_abscissa";
    /// max |1 + lr·λ| over them: the linearised gradient step's spectral radius.
    pub const JACOBIAN_RADIUS: &str = "lockstep_jacobian_discrete_radius";
}

/// Describes every series (HELP text and unit), so that `promtool check
/// metrics` on a scrape prints nothing.  Called once the recorder is
/// installed (descriptions go to the installed recorder).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    use names as n;
    describe_histogram!(
        n::STEP_DURATION,
        Unit::Seconds,
        "Seconds of a training step (phase=step) and of its parts (one, two, optimizer), on the coordinator"
    );
    describe_histogram!(
        n::WORKER_COMPUTE,
        Unit::Seconds,
        "Seconds a worker computed a phase, measured before any synchronization (stragglers show here)"
    );
    describe_counter!(
        n::COMM_BYTES,
        Unit::Bytes,
        "Bytes of messages the coordinator sent to and received from workers"
    );
    describe_counter!(n::SAMPLES, Unit::Count, "Training samples processed (minibatch size times steps)");
    describe_counter!(n::STEPS, Unit::Count, "Training steps taken, skipped ones included");
    describe_counter!(n::SKIPPED, Unit::Count, "Steps skipped because a value was not finite, by reason");
    describe_gauge!(n::WORKERS, Unit::Count, "Workers computing the current step");
    describe_counter!(n::EVICTED, Unit::Count, "Workers evicted (lost, late, or refused for a bad message)");
    describe_gauge!(n::VALUE, Unit::Count, "V, the game's value on the last step's minibatch (dimensionless)");
    describe_gauge!(n::GRAD_NORM, Unit::Count, "L2 norm of the last step's gradient, by player (dimensionless)");
    describe_gauge!(
        n::REGULARIZER,
        Unit::Count,
        "||grad_D V||^2 on the last step's minibatch, the penalty eta multiplies"
    );
    describe_gauge!(n::LOSS_SCALE, Unit::Count, "The fp16 loss scale of the last step (1 on fp32 backends)");
    describe_histogram!(n::CHECKPOINT_DURATION, Unit::Seconds, "Seconds to write a checkpoint (write, fsync, rename)");
    describe_counter!(
        n::FIXED_POINT_RETRIES,
        Unit::Count,
        "Worker answers whose fixed-point sums had a guessed scale the run-wide maxima did not confirm (asked again)"
    );
    describe_gauge!(
        n::JACOBIAN_ABSCISSA,
        Unit::Count,
        "Largest real part of the game Jacobian's computed eigenvalues at the last estimate (negative: locally stable)"
    );
    describe_gauge!(
        n::JACOBIAN_RADIUS,
        Unit::Count,
        "Largest |1 + lr*lambda| over those eigenvalues: the linearised gradient step's spectral radius"
    );
}

/// Serves Prometheus metrics on `addr` (e.g. 0.0.0.0:9100) at any path.
pub fn serve_prometheus(addr: &str) -> Result<()> {
    use std::net::ToSocketAddrs;
    let sa = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::input(format!("--metrics-listen {addr}: expected HOST:PORT, e.g. 0.0.0.0:9100")))?;
    // Buckets from 10 µs to 100 s: a CPU step is milliseconds, a GPU step microseconds.
    let buckets: Vec<f64> = (0..=28).map(|i| 1e-5 * 10f64.powf(i as f64 / 4.0)).collect();
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(sa)
        .set_buckets(&buckets)
        .map_err(|e| Error::runtime(format!("metrics buckets: {e}")))?
        .install()
        .map_err(|e| Error::input(format!("--metrics-listen {addr}: cannot serve metrics there: {e}")))?;
    describe();
    Ok(())
}
