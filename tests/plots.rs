//! A run's pictures end to end: training draws curves.png (and keeps going
//! when it cannot), `lockstep plot --run DIR` redraws it and the newest
//! checkpoint's samples exactly as training drew them, and a directory that
//! is not a run gets a clear input error.

use std::path::{Path, PathBuf};
use std::process::Output;

use lockstep::plot::{CURVES_PANEL, CURVES_TITLE_HEIGHT, SCATTER_SIZE};

mod common;

fn tmp(name: &str) -> PathBuf {
    common::tmp("plots", name)
}

fn run(args: &[&str]) -> Output {
    common::bin().args(args).output().expect("lockstep runs")
}

/// A PNG's width, height and RGB bytes.
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Asserts the picture is no blank page: many colours, and dark (text) pixels in its top `band` rows.
fn assert_drawn(path: &Path, width: u32, rgb: &[u8], band: u32) {
    let colours: std::collections::HashSet<&[u8]> = rgb.chunks_exact(3).collect();
    assert!(colours.len() > 50, "{}: {} colours", path.display(), colours.len());
    let dark = rgb[..(band * width * 3) as usize].chunks_exact(3).filter(|p| p.iter().all(|&c| c < 100)).count();
    assert!(dark > 50, "{}: no title text ({dark} dark pixels)", path.display());
}

#[test]
fn a_short_run_draws_its_curves_and_plot_redraws_them_as_training_did() {
    let d = tmp("ring");
    let out = d.join("run");
    let o = run(&[
        "train",
        "--quiet",
        "--config",
        "configs/mog-ring.toml",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "300",
        "--set",
        "log.every=20",
        "--set",
        "log.eval_every=100",
        "--set",
        "log.sample_every=300",
        "--set",
        "log.checkpoint_every=300",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let curves = out.join("curves.png");
    assert_eq!(summary["curves_png"], curves.display().to_string());

    // Four step panels and the mixture's three scores, three to a row.
    let (w, h, rgb) = decode(&curves);
    assert_eq!((w, h), (3 * CURVES_PANEL.0, CURVES_TITLE_HEIGHT + 3 * CURVES_PANEL.1));
    assert_drawn(&curves, w, &rgb, CURVES_TITLE_HEIGHT);
    let samples = out.join("samples/step-0000300.png");
    let (w, h, rgb) = decode(&samples);
    assert_eq!((w, h), SCATTER_SIZE);
    assert_drawn(&samples, w, &rgb, 40);

    // `plot --run` writes both again, to the byte.
    let (curves_bytes, samples_bytes) = (std::fs::read(&curves).unwrap(), std::fs::read(&samples).unwrap());
    std::fs::remove_file(&curves).unwrap();
    std::fs::remove_file(&samples).unwrap();
    let o = run(&["plot", "--run", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect();
    assert_eq!(printed, [curves.display().to_string(), samples.display().to_string()]);
    assert!(std::fs::read(&curves).unwrap() == curves_bytes, "curves.png differs from training's");
    assert!(std::fs::read(&samples).unwrap() == samples_bytes, "the samples picture differs from training's");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn plot_on_a_directory_that_is_not_a_run_names_it() {
    let d = tmp("notarun");
    for dir in [d.clone(), d.join("missing")] {
        let o = run(&["plot", "--run", dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&dir.display().to_string()), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let err = lockstep::cmd::plot::run(&d).unwrap_err();
    assert!(err.to_string().contains("metrics.jsonl") && err.to_string().contains("checkpoint"), "{err}");
    assert!(std::fs::read_dir(&d).unwrap().next().is_none(), "nothing written");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_run_without_checkpoints_still_gets_its_curves() {
    let d = tmp("nockpt");
    let mut text = String::new();
    for i in 1..=5 {
        let row = serde_json::json!({"step": 10 * i, "value": -1.38, "gen_loss": -0.69, "grad_norm_disc": 0.1,
            "grad_norm_gen": 0.02, "regularizer": 1e-3, "d_accuracy_real": 0.5, "d_accuracy_fake": 0.6});
        text.push_str(&format!("{row}\n"));
    }
    // A torn last line, as a crash leaves it.
    text.push_str("{\"step\": 60, \"val");
    std::fs::write(d.join("metrics.jsonl"), text).unwrap();
    let rows = lockstep::telemetry::read_metrics(&d.join("metrics.jsonl")).unwrap();
    assert_eq!(rows.len(), 5);
    let written = lockstep::cmd::plot::run(&d).unwrap();
    assert_eq!(written, [d.join("curves.png")]);
    let (w, h, rgb) = decode(&written[0]);
    assert_eq!((w, h), (2 * CURVES_PANEL.0, CURVES_TITLE_HEIGHT + 2 * CURVES_PANEL.1));
    assert_drawn(&written[0], w, &rgb, CURVES_TITLE_HEIGHT);
    // A metrics file that does not exist: the error names it.
    let missing = d.join("nope.jsonl");
    let err = lockstep::telemetry::read_metrics(&missing).unwrap_err();
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_curves_failure_is_a_warning_not_the_end_of_a_run() {
    let d = tmp("warn");
    // A directory where curves.png belongs: it cannot be written.
    std::fs::create_dir_all(d.join("curves.png")).unwrap();
    let o = run(&[
        "train",
        "--quiet",
        "--config",
        "tests/data/tiny-ring.toml",
        "--out",
        d.to_str().unwrap(),
        "--steps",
        "100",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    let warnings: Vec<&str> =
        err.lines().filter(|l| l.starts_with("lockstep: warning: cannot draw curves.png: ")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("summary.json")).unwrap()).unwrap();
    assert!(summary.get("curves_png").is_none(), "{summary}");
    assert!(summary.get("modes_covered").is_some(), "{summary}");
    std::fs::remove_dir_all(&d).unwrap();
}
