//! The command line end to end: bad input gets a one-line error naming the
//! key or file and the fix, exit code 2, and nothing written over; a run
//! killed with SIGKILL and resumed ends bitwise where a straight run ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use lockstep::checkpoint;

mod common;

const TINY: &str = "tests/data/tiny-ring.toml";

fn lockstep() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lockstep"))
}

fn tmp(name: &str) -> PathBuf {
    common::tmp("cli", name)
}

fn run(args: &[&str]) -> Output {
    lockstep().args(args).output().expect("lockstep runs")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn bad_configs_name_the_key_and_write_nothing() {
    let d = tmp("badcfg");
    let base = std::fs::read_to_string(TINY).unwrap();
    let out_dir = d.join("run");
    let o = out_dir.to_str().unwrap();
    let cases: Vec<(String, Vec<&str>, Vec<&str>)> = vec![
        (base.replace("batch = 64", "bacth = 64"), vec![], vec!["train.bacth", "unknown field"]),
        (base.replace("batch = 64", "batch = \"big\""), vec![], vec!["train.batch", "expected a non-negative integer"]),
        (base.clone(), vec!["--set", "train.batch=0"], vec!["train.batch", "at least 1"]),
        (base.clone(), vec!["--set", "optimizer.lr=-0.001"], vec!["optimizer.lr", "> 0"]),
        (base.clone(), vec!["--set", "train.batch=100"], vec!["train.batch", "multiple of train.chunk"]),
        (base.replace("\"relu\"", "\"relux\""), vec![], vec!["generator.layers", "relux"]),
        (base.clone(), vec!["--set", "train.eta=nan"], vec!["train.eta"]),
        ("[train\nsteps = 1".to_string(), vec![], vec!["not valid TOML"]),
    ];
    for (i, (text, extra, needles)) in cases.iter().enumerate() {
        let cfg = write(&d, &format!("c{i}.toml"), text);
        let mut args = vec!["train", "--config", &cfg, "--out", o, "--quiet"];
        args.extend(extra);
        let out = run(&args);
        let mut needles = needles.clone();
        needles.push(&cfg);
        assert_input_error(&out, &needles);
        assert!(!out_dir.exists(), "case {i}: the run directory was created");
    }
    let out = run(&["train", "--config", "no/such.toml", "--quiet"]);
    assert_input_error(&out, &["no/such.toml", "--config"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_checkpoints_are_refused_and_left_alone() {
    let d = tmp("badck");
    let run_dir = d.join("run");
    let r = run_dir.to_str().unwrap();
    let out = run(&["train", "--config", TINY, "--out", r, "--steps", "100", "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ck = checkpoint::latest(&run_dir).expect("a checkpoint");
    let good = std::fs::read(&ck).unwrap();

    // Missing.
    let missing = d.join("missing.safetensors");
    assert_input_error(&run(&["eval", "--checkpoint", missing.to_str().unwrap()]), &["missing.safetensors"]);
    // Truncated, at several lengths, and garbage.
    for cut in [0, 7, 100, good.len() / 2, good.len() - 1] {
        let bad = d.join(format!("cut{cut}.safetensors"));
        std::fs::write(&bad, &good[..cut]).unwrap();
        let b = bad.to_str().unwrap();
        assert_input_error(&run(&["eval", "--checkpoint", b]), &[b, "not a valid lockstep checkpoint"]);
        let png = d.join("s.png");
        assert_input_error(&run(&["sample", "--checkpoint", b, "--n", "10", "--out", png.to_str().unwrap()]), &[b]);
        assert!(!png.exists());
    }
    // A truncated newest checkpoint: resume refuses and changes nothing.
    let cut = &good[..good.len() / 3];
    std::fs::write(&ck, cut).unwrap();
    let before = std::fs::read(run_dir.join("metrics.jsonl")).unwrap();
    let out = run(&["train", "--out", r, "--resume", "--steps", "200", "--quiet"]);
    assert_input_error(&out, &[ck.to_str().unwrap()]);
    assert_eq!(std::fs::read(&ck).unwrap(), cut);
    assert_eq!(std::fs::read(run_dir.join("metrics.jsonl")).unwrap(), before);
    // An existing run without --resume is not written over.
    std::fs::write(&ck, &good).unwrap();
    let out = run(&["train", "--config", TINY, "--out", r, "--quiet"]);
    assert_input_error(&out, &["--resume"]);
    assert_eq!(std::fs::read(&ck).unwrap(), good);
    std::fs::remove_dir_all(&d).unwrap();
}

use common::{assert_input_error, bits};

#[test]
fn killed_and_resumed_run_is_bitwise_identical() {
    let d = tmp("resume");
    let (a, b) = (d.join("straight"), d.join("killed"));
    let args = |dir: &Path| {
        vec![
            "train".to_string(),
            "--config".into(),
            TINY.into(),
            "--out".into(),
            dir.display().to_string(),
            "--steps".into(),
            "3000".into(),
            "--quiet".into(),
        ]
    };
    let out = lockstep().args(args(&a)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut child = lockstep().args(args(&b)).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill it once it has written a checkpoint past the first, mid-run.
    common::wait_for_step(&b, 200);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it could be killed; make it longer");
    assert!(!b.join("summary.json").exists());

    let out = lockstep().args(["train", "--out", b.to_str().unwrap(), "--resume", "--quiet"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let x = checkpoint::load(&checkpoint::latest(&a).unwrap()).unwrap().state;
    let y = checkpoint::load(&checkpoint::latest(&b).unwrap()).unwrap().state;
    assert_eq!(x.step, 3000);
    assert_eq!(y.step, 3000);
    assert_eq!(bits(&x.gen), bits(&y.gen));
    assert_eq!(bits(&x.disc), bits(&y.disc));
    assert_eq!(bits(&x.opt_gen.m), bits(&y.opt_gen.m));
    assert_eq!(bits(&x.opt_gen.v), bits(&y.opt_gen.v));
    assert_eq!(bits(&x.opt_disc.v), bits(&y.opt_disc.v));
    assert_eq!((x.opt_gen.t, x.opt_disc.t), (y.opt_gen.t, y.opt_disc.t));
    // The metrics log has each step once, in order, as the straight run's.
    let steps = |dir: &Path| -> Vec<u64> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(steps(&a), steps(&b));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn eval_and_sample_read_a_checkpoint() {
    let d = tmp("eval");
    let r = d.join("run");
    let out = run(&["train", "--config", TINY, "--out", r.to_str().unwrap(), "--steps", "100", "--quiet"]);
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(r.join("summary.json")).unwrap()).unwrap();
    for k in [
        "steps",
        "workers",
        "backend",
        "wall_seconds",
        "steps_per_second",
        "modes_covered",
        "modes_total",
        "high_quality_fraction",
        "reverse_kl",
    ] {
        assert!(summary.get(k).is_some(), "summary.json lacks {k}");
    }
    assert!(r.join("samples/step-0000100.png").exists());
    assert!(r.join("config.toml").exists());
    let ck = checkpoint::latest(&r).unwrap();
    let out = run(&["eval", "--checkpoint", ck.to_str().unwrap()]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["step"], 100);
    assert_eq!(v["modes_total"], 8);
    assert_eq!(v["samples"], 500);
    let csv = d.join("s.csv");
    let out = run(&["sample", "--checkpoint", ck.to_str().unwrap(), "--n", "37", "--out", csv.to_str().unwrap()]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 38);
    assert!(text.lines().skip(1).all(|l| l.split(',').all(|x| x.parse::<f32>().unwrap().is_finite())));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn backend_cuda_without_a_gpu_is_a_clear_input_error_and_auto_falls_back() {
    if let Some(why) = lockstep::backend::cuda::unavailable() {
        let out = tmp("cuda-none").join("run");
        let o = run(&["train", "--config", TINY, "--out", out.to_str().unwrap(), "--backend", "cuda", "--steps", "2"]);
        assert_input_error(&o, &[&why, "use --backend cpu"]);
        assert!(!out.exists(), "a refused run must write nothing");
        let o = run(&["bench", "--config", TINY, "--steps", "2", "--warmup", "0"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("backend auto") && err.contains("using the CPU backend"), "{err}");
        assert!(String::from_utf8_lossy(&o.stdout).contains("\"backend\":\"cpu\""));
    } else {
        println!("skipped: this machine has a usable GPU, so --backend cuda does not fail here");
    }
}

#[test]
fn bench_breakdown_reports_phase_times_and_bytes_on_the_wire() {
    let o = run(&[
        "bench",
        "--config",
        TINY,
        "--backend",
        "cpu",
        "--workers",
        "2",
        "--transport",
        "grpc",
        "--steps",
        "5",
        "--warmup",
        "2",
        "--breakdown",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let b = &v["breakdown"];
    for k in ["step_ms", "phase_one_ms", "phase_one_compute_ms", "phase_two_ms", "optimizer_ms"] {
        assert!(b[k].as_f64().is_some_and(|x| x >= 0.0), "{k}: {b}");
    }
    assert!(b["step_ms"].as_f64().unwrap() > 0.0, "{b}");
    assert!(b["bytes_sent_per_step"].as_f64().unwrap() > 0.0, "{b}");
    assert!(b["bytes_received_per_step"].as_f64().unwrap() > 0.0, "{b}");
    // Without --breakdown, no recorder and no figures.
    let o = run(&["bench", "--config", TINY, "--backend", "cpu", "--steps", "2", "--warmup", "0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["breakdown"].is_null(), "{v}");
}
