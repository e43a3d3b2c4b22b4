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
    names::JACOBIAN_ABSCISSA,
    names::JACOBIAN_RADIUS,
    names::FIXED_POINT_RETRIES,
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

mod common;

/// deploy/slurm/lockstep.sbatch end to end on this machine, with `srun` and
/// `scontrol` replaced by shims (one node, `localhost`, 2 CPU workers): the
/// job makes its certificate, the coordinator listens beyond loopback with
/// TLS and the token, the workers dial `https://`, and the run finishes.
#[test]
fn the_sbatch_script_trains_over_tls_with_srun_shims() {
    use std::os::unix::fs::PermissionsExt;
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED the_sbatch_script_trains_over_tls_with_srun_shims: openssl is not installed");
        return;
    }
    let d = common::tmp("deploy", "sbatch");
    let bin_dir = d.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let shim = |name: &str, body: &str| {
        let p = bin_dir.join(name);
        std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    shim("scontrol", "echo localhost");
    // srun: drop the --options, run the command once per --ntasks with SLURM_LOCALID set.
    shim(
        "srun",
        r#"n=1; while [[ "$1" == --* ]]; do case "$1" in --ntasks=*) n=${1#--ntasks=};; esac; shift; done
pids=(); for ((i = 0; i < n; i++)); do SLURM_LOCALID=$i "$@" & pids+=($!); done
s=0; for p in "${pids[@]}"; do wait "$p" || s=$?; done; exit $s"#,
    );
    let run = d.join("run");
    let out = Command::new("bash")
        .arg("deploy/slurm/lockstep.sbatch")
        .env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()))
        .env("HOME", &d)
        .env("SLURM_JOB_ID", "77")
        .env("SLURM_JOB_NODELIST", "localhost")
        .env("SLURM_NTASKS", "2")
        .env("LOCKSTEP", env!("CARGO_BIN_EXE_lockstep"))
        .env("CONFIG", "tests/data/tiny-ring.toml")
        .env("RUN", &run)
        .env("PORT", common::free_port().to_string())
        .env("METRICS_PORT", common::free_port().to_string())
        .env("BACKEND", "cpu")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("(TLS)") && !stderr.contains("plaintext"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary["steps"].as_u64(), summary["workers"].as_u64()), (Some(400), Some(2)), "{summary}");
    // The token was made owner-only, and the job's key is gone with the job.
    let mode = std::fs::metadata(d.join(".lockstep/token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "token mode {mode:o}");
    assert!(d.join(".lockstep/tls-77/cert.pem").exists() && !d.join(".lockstep/tls-77/key.pem").exists());
}
