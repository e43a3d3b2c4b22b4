//! Training end to end on the CPU: the authors' ring (shortened) covers all
//! modes; results do not depend on the number of threads; every objective
//! and update rule trains without a non-finite step.

use std::path::{Path, PathBuf};
use std::process::Command;

use lockstep::checkpoint;

mod common;

fn tmp(name: &str) -> PathBuf {
    common::tmp("train", name)
}

fn train(args: &[&str], out: &Path) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["train", "--quiet", "--out", out.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

/// Trains into a fresh directory and returns the final state (the directory removed).
fn final_state(name: &str, args: &[&str]) -> (serde_json::Value, lockstep::gan::trainer::TrainState) {
    let d = tmp(name);
    let summary = train(args, &d);
    let st = checkpoint::load(&checkpoint::latest(&d).unwrap()).unwrap().state;
    std::fs::remove_dir_all(&d).unwrap();
    (summary, st)
}

/// Asserts both players' parameters are the same to the bit.
fn assert_same_bits(a: &lockstep::gan::trainer::TrainState, b: &lockstep::gan::trainer::TrainState, what: &str) {
    use common::bits;
    assert_eq!(bits(&a.gen), bits(&b.gen), "{what}: generator");
    assert_eq!(bits(&a.disc), bits(&b.disc), "{what}: discriminator");
}

#[test]
fn short_ring_covers_all_modes_with_mostly_high_quality_samples() {
    let d = tmp("ring");
    let s = train(&["--config", "configs/mog-ring-short.toml"], &d);
    eprintln!("mog-ring-short: {s}");
    assert_eq!(s["modes_total"], 8);
    assert_eq!(s["modes_covered"], 8, "{s}");
    assert!(s["high_quality_fraction"].as_f64().unwrap() >= 0.5, "{s}");
    assert_eq!(s["skipped_steps"], 0);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn one_two_and_three_workers_give_bitwise_the_same_parameters() {
    // The authors' config, 200 steps: per-chunk partial sums added in chunk
    // order make the worker count irrelevant, to the bit.
    let run = |n: &str| {
        let (s, st) = final_state(
            &format!("workers{n}"),
            &["--config", "configs/mog-ring.toml", "--steps", "200", "--workers", n],
        );
        assert_eq!(s["workers"].as_u64().unwrap(), n.parse::<u64>().unwrap());
        st
    };
    let base = run("1");
    for n in ["2", "3"] {
        let st = run(n);
        assert_same_bits(&st, &base, &format!("{n} workers"));
        assert_eq!(
            st.opt_gen.v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            base.opt_gen.v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn grpc_and_in_process_workers_give_bitwise_the_same_parameters() {
    let run = |transport: &str, workers: &str| {
        let args =
            ["--config", "tests/data/tiny-ring.toml", "--steps", "60", "--workers", workers, "--transport", transport];
        let (s, st) = final_state(&format!("{transport}{workers}"), &args);
        assert_eq!(s["steps"], 60);
        st
    };
    let base = run("inproc", "1");
    for (t, w) in [("grpc", "1"), ("grpc", "2"), ("grpc", "3"), ("inproc", "3")] {
        assert_same_bits(&run(t, w), &base, &format!("{t} with {w} workers"));
    }
}

#[test]
fn one_worker_over_grpc_runs_whole_steps_bitwise_as_in_process_for_every_objective_and_optimizer() {
    // One worker over gRPC runs whole steps on its replica (gan::host_step);
    // eta = 0 takes grad_G from phase 1, SGD has no moments, nsgan and wgan
    // other objectives.  The optimizers' state must match too.
    for (i, set) in ["train.eta=0", "optimizer.kind=\"sgd\"", "train.objective=\"nsgan\"", "train.objective=\"wgan\""]
        .into_iter()
        .enumerate()
    {
        let run = |transport: &str| {
            let args =
                ["--config", "tests/data/tiny-ring.toml", "--steps", "50", "--transport", transport, "--set", set];
            final_state(&format!("whole{i}{transport}"), &args).1
        };
        let (local, remote) = (run("inproc"), run("grpc"));
        assert_same_bits(&remote, &local, set);
        assert_eq!(remote.opt_gen, local.opt_gen, "{set}");
        assert_eq!(remote.opt_disc, local.opt_disc, "{set}");
        assert_eq!((remote.step, remote.skipped), (local.step, local.skipped), "{set}");
    }
}

#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    let run = |t: &str| {
        final_state(&format!("threads{t}"), &["--config", "tests/data/tiny-ring.toml", "--steps", "60", "--threads", t])
            .1
    };
    let base = run("1");
    for t in ["2", "3"] {
        assert_same_bits(&run(t), &base, &format!("{t} threads"));
    }
}

#[test]
fn every_objective_and_update_trains_without_non_finite_steps() {
    for (i, sets) in [
        vec!["train.objective=\"nsgan\""],
        vec!["train.objective=\"wgan\"", "optimizer.lr=1e-5"],
        vec!["train.update=\"alternating\""],
        vec!["train.update=\"alternating\"", "train.eta=0"],
        vec!["optimizer.kind=\"sgd\"", "optimizer.lr=0.05"],
        vec!["train.eta=0"],
    ]
    .into_iter()
    .enumerate()
    {
        let d = tmp(&format!("obj{i}"));
        let mut args = vec!["--config", "tests/data/tiny-ring.toml", "--steps", "200"];
        for s in &sets {
            args.extend(["--set", s]);
        }
        let s = train(&args, &d);
        assert_eq!(s["skipped_steps"], 0, "{sets:?}: {s}");
        assert_eq!(s["steps"], 200);
        let m: Vec<serde_json::Value> = std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(m.len(), 4, "{sets:?}");
        for l in &m {
            for k in ["value", "grad_norm_disc", "grad_norm_gen", "regularizer", "d_accuracy_real", "d_accuracy_fake"] {
                assert!(l[k].as_f64().is_some_and(f64::is_finite), "{sets:?}: {k} in {l}");
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn a_diverging_run_stops_with_a_clear_error() {
    let d = tmp("diverge");
    let o = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["train", "--quiet", "--config", "tests/data/tiny-ring.toml", "--set", "optimizer.lr=1e30"])
        .args(["--out", d.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("training diverged") && err.contains("lower optimizer.lr"), "{err}");
    assert!(!d.join("summary.json").exists());
    // No checkpoint holds non-finite parameters.
    for e in std::fs::read_dir(d.join("checkpoints")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            checkpoint::load(&p).unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}
