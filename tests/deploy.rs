//! deploy/: the alert rules and the dashboard use only series lockstep
//! exports, and promtool accepts the Prometheus files (when installed; CI
//! installs it).

use std::process::Command;

use lockstep::telemetry::names;

const EXPORTED: &[&str] = &[
    names::STEP_DURATION,
    names::WORKER_COMPUTE,
    names::COMM_BYTES,
    names::SAMPLES,
    names::STEPS,
    names::SKIPPED,
    names::WORKERS,
    names::EVICTED,
    names::VALUE,
    names::GRAD_NORM,
    names::REGULARIZER,
    names::LOSS_SCALE,
    names::CHECKPOINT_DURATION,
];

/// Every `lockstep_...` identifier in `text`.
fn series(text: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("lockstep_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        v.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    v
}

#[test]
fn alerts_and_dashboard_use_exported_series() {
    for f in ["deploy/prometheus/alerts.yml", "deploy/grafana/lockstep-dashboard.json"] {
        let text = std::fs::read_to_string(f).unwrap();
        let used = series(&text);
        assert!(!used.is_empty(), "{f} uses no lockstep series");
        for s in used {
            let base = ["_bucket", "_count", "_sum"].iter().fold(s.as_str(), |s, suf| s.strip_suffix(suf).unwrap_or(s));
            assert!(EXPORTED.contains(&base), "{f} uses {s}, which lockstep does not export");
        }
    }
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/lockstep-dashboard.json").unwrap()).unwrap();
    assert!(dash["panels"].as_array().unwrap().len() >= 8);
}

#[test]
fn promtool_accepts_the_prometheus_files() {
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("SKIPPED promtool_accepts_the_prometheus_files: promtool is not installed (apt-get install prometheus); .ci/run installs it");
        return;
    }
    for args in
        [["check", "config", "deploy/prometheus/prometheus.yml"], ["check", "rules", "deploy/prometheus/alerts.yml"]]
    {
        let o = Command::new("promtool").args(args).output().unwrap();
        assert!(
            o.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
