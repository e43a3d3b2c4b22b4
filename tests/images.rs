//! Convolutional GANs on images, end to end on the CPU: the CI-sized
//! Fashion-MNIST DCGAN trains bitwise the same on 1, 2 and 3 workers, in
//! process and over gRPC, and after SIGKILL and resume; a run draws sample
//! grids; `sample` writes PNG grids and NumPy arrays; bad image data, bad
//! shapes and a worker with other data are one-line input errors that write
//! nothing.
//!
//! The tests that train need Debian's `dataset-fashion-mnist` (CI installs
//! it); without it they print why they skipped.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use lockstep::checkpoint;

mod common;

use common::{assert_input_error, bin, bits, finish, free_port};

const CI: &str = "configs/fashion-mnist-dcgan-ci.toml";
use common::have_fashion_mnist;

fn tmp(name: &str) -> PathBuf {
    common::tmp("images", name)
}

fn train(args: &[&str], out: &Path) -> serde_json::Value {
    let o = bin().args(["train", "--quiet", "--out", out.to_str().unwrap()]).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

fn state(dir: &Path) -> lockstep::gan::trainer::TrainState {
    checkpoint::load(&checkpoint::latest(dir).unwrap()).unwrap().state
}

fn assert_same(a: &lockstep::gan::trainer::TrainState, b: &lockstep::gan::trainer::TrainState, what: &str) {
    assert_eq!(a.step, b.step, "{what}: step");
    assert_eq!(bits(&a.gen), bits(&b.gen), "{what}: generator");
    assert_eq!(bits(&a.disc), bits(&b.disc), "{what}: discriminator");
    assert_eq!(bits(&a.opt_gen.m), bits(&b.opt_gen.m), "{what}: generator's Adam m");
    assert_eq!(bits(&a.opt_disc.v), bits(&b.opt_disc.v), "{what}: discriminator's Adam v");
}

fn png_size(path: &Path) -> (u32, u32) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let r = png::Decoder::new(std::io::BufReader::new(f)).read_info().unwrap();
    (r.info().width, r.info().height)
}

#[test]
fn ci_dcgan_is_bitwise_the_same_on_one_two_three_workers_and_over_grpc() {
    if !have_fashion_mnist("ci_dcgan_is_bitwise_the_same_on_one_two_three_workers_and_over_grpc") {
        return;
    }
    let d = tmp("workers");
    let run = |name: &str, extra: &[&str]| {
        let dir = d.join(name);
        let mut args = vec!["--config", CI];
        args.extend(extra);
        let s = train(&args, &dir);
        (s, state(&dir))
    };
    let (s1, one) = run("w1", &["--workers", "1"]);
    assert_eq!(one.step, 200);
    assert_eq!(s1["skipped_steps"], 0, "{s1}");
    assert!(one.gen.iter().chain(&one.disc).all(|v| v.is_finite()));
    for (name, extra) in [
        ("w2", vec!["--workers", "2"]),
        ("w3", vec!["--workers", "3"]),
        ("grpc2", vec!["--workers", "2", "--transport", "grpc"]),
    ] {
        let (s, st) = run(name, &extra);
        assert_eq!(s["workers"].as_u64().unwrap(), extra[1].parse::<u64>().unwrap());
        assert_same(&one, &st, name);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn killed_and_resumed_image_run_is_bitwise_identical() {
    if !have_fashion_mnist("killed_and_resumed_image_run_is_bitwise_identical") {
        return;
    }
    let d = tmp("resume");
    let (a, b) = (d.join("straight"), d.join("killed"));
    let args = ["--config", CI, "--steps", "600"];
    train(&args, &a);
    let mut cmd = bin();
    cmd.args(["train", "--quiet", "--out"]).arg(&b).args(args).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    common::wait_for_step(&b, 100);
    child.kill().unwrap(); // SIGKILL
    assert!(!child.wait().unwrap().success(), "the run finished before it could be killed; make it longer");
    assert!(!b.join("summary.json").exists());
    let o = bin().args(["train", "--quiet", "--resume", "--out"]).arg(&b).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same(&state(&a), &state(&b), "resumed");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_image_run_draws_grids_and_sample_writes_png_and_npy() {
    if !have_fashion_mnist("an_image_run_draws_grids_and_sample_writes_png_and_npy") {
        return;
    }
    let d = tmp("grids");
    let r = d.join("run");
    let s = train(&["--config", CI, "--steps", "100"], &r);
    assert!(s["dataset"].as_str().unwrap().contains("fashion-mnist"), "{s}");
    assert_eq!(s["sample_shape"], serde_json::json!([1, 28, 28]));
    assert_eq!(s["dataset_digest"].as_str().unwrap().len(), 64, "{s}");
    // 8×8 images of 28×28 at zoom 2 with 2-pixel gutters.
    let side = 2 + 8 * (28 * 2 + 2);
    assert_eq!(png_size(&r.join("samples/real.png")), (side, side));
    assert_eq!(png_size(&r.join("samples/step-0000100.png")), (side, side));
    let ck = checkpoint::latest(&r).unwrap();
    let (png, npy) = (d.join("g.png"), d.join("g.npy"));
    for out in [&png, &npy] {
        let o = bin().args(["sample", "--n", "10", "--checkpoint"]).arg(&ck).arg("--out").arg(out).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(png_size(&png), (2 + 4 * 58, 2 + 3 * 58));
    let b = std::fs::read(&npy).unwrap();
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
    assert!(header.contains("'shape': (10, 1, 28, 28)"), "{header}");
    assert_eq!(b.len(), 10 + hl + 10 * 784 * 4);
    let vals: Vec<f32> = b[10 + hl..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert!(vals.iter().all(|v| (-1.0..=1.0).contains(v)), "tanh outputs lie in [-1, 1]");
    // CSV holds points only.
    let o = bin().args(["sample", "--n", "3", "--checkpoint"]).arg(&ck).arg("--out").arg(d.join("g.csv")).output();
    assert_input_error(&o.unwrap(), &["1×28×28", ".npy"]);
    std::fs::remove_dir_all(&d).unwrap();
}

/// An IDX file: `magic` then big-endian `dims`, then `data`.
fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// A folder of `n` small Fashion-MNIST-style IDX files (28×28 images, labels).
fn fake_fmnist(dir: &Path, n: u32, fill: u8) {
    std::fs::create_dir_all(dir).unwrap();
    let pixels: Vec<u8> = (0..n * 784).map(|i| (i as u8).wrapping_mul(7).wrapping_add(fill)).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx(0x803, &[n, 28, 28], &pixels)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx(0x801, &[n], &labels)).unwrap();
}

fn write_png(path: &Path, w: u32, h: u32) {
    let f = std::fs::File::create(path).unwrap();
    let mut e = png::Encoder::new(std::io::BufWriter::new(f), w, h);
    e.set_color(png::ColorType::Grayscale);
    e.set_depth(png::BitDepth::Eight);
    e.write_header().unwrap().write_image_data(&vec![100u8; (w * h) as usize]).unwrap();
}

#[test]
fn bad_image_data_and_shapes_are_one_line_errors_that_write_nothing() {
    let d = tmp("bad");
    let out_dir = d.join("run");
    let o = out_dir.to_str().unwrap().to_string();
    // Data that is not there, or not IDX.
    let missing = d.join("nowhere");
    let bad_magic = d.join("magic");
    fake_fmnist(&bad_magic, 4, 0);
    std::fs::write(bad_magic.join("train-images-idx3-ubyte"), idx(0x804, &[4, 28, 28], &[0; 4 * 784])).unwrap();
    let short = d.join("short");
    fake_fmnist(&short, 4, 0);
    std::fs::write(short.join("train-images-idx3-ubyte"), idx(0x803, &[4, 28, 28], &[0; 3 * 784])).unwrap();
    let mixed = d.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    write_png(&mixed.join("a.png"), 8, 8);
    write_png(&mixed.join("b.png"), 9, 8);
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "no images here").unwrap();
    let good = d.join("good");
    fake_fmnist(&good, 8, 3);
    let s = |p: &Path| p.display().to_string();
    let set_path = |p: &Path| format!("data.path={}", s(p));
    let folder = |p: &Path| vec!["--set".to_string(), "data.kind=image-folder".into(), "--set".into(), set_path(p)];
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (vec!["--set".into(), set_path(&missing)], vec![s(&missing), "dataset-fashion-mnist".into()]),
        (vec!["--set".into(), set_path(&bad_magic)], vec!["train-images-idx3-ubyte".into(), "magic".into()]),
        (vec!["--set".into(), set_path(&short)], vec!["train-images-idx3-ubyte".into()]),
        (folder(&mixed), vec!["b.png".into(), "1×8×9".into()]),
        (folder(&empty), vec![s(&empty), "PNG".into()]),
        // G's output is not the data's shape (28×28 data, a 32×32 generator through padding-free data).
        (
            vec!["--set".into(), set_path(&good), "--set".into(), "data.pad=2".into()],
            vec!["generator.layers".into(), "1×28×28".into(), "1×32×32".into()],
        ),
        // A conv whose output would be empty.
        (
            vec![
                "--set".into(),
                set_path(&good),
                "--set".into(),
                "discriminator.layers=[\"conv 8 4 2 1\", \"conv 8 15 1 0\", \"flatten\", \"linear 1\"]".into(),
            ],
            vec!["discriminator layer 1".into(), "conv 8 15 1 0".into(), "8×14×14".into(), "empty".into()],
        ),
        // A linear layer on an image.
        (
            vec!["--set".into(), set_path(&good), "--set".into(), "discriminator.layers=[\"linear 1\"]".into()],
            vec!["discriminator layer 0".into(), "1×28×28".into(), "flatten".into()],
        ),
    ];
    for (i, (extra, needles)) in cases.iter().enumerate() {
        let mut args: Vec<String> = ["train", "--config", CI, "--out", &o, "--quiet"].map(String::from).to_vec();
        args.extend(extra.iter().cloned());
        let out = bin().args(&args).output().unwrap();
        let needles: Vec<&str> = needles.iter().map(|s| s.as_str()).collect();
        eprintln!("case {i}: {extra:?}");
        assert_input_error(&out, &needles);
        assert!(!out_dir.exists(), "case {i}: the run directory was created");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_worker_with_a_different_dataset_is_refused_with_both_digests() {
    let d = tmp("digest");
    let (theirs, mine) = (d.join("theirs"), d.join("mine"));
    fake_fmnist(&theirs, 64, 1);
    fake_fmnist(&mine, 64, 2);
    let port = free_port();
    let coord = bin()
        .args(["coordinator", "--quiet", "--config", CI, "--steps", "20", "--min-workers", "1"])
        .args(["--set", &format!("data.path={}", theirs.display())])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--out"])
        .arg(d.join("run"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let worker = |data: &Path| {
        bin()
            .args(["worker", "--backend", "cpu", "--retry-for", "30", "--coordinator", &url, "--data-path"])
            .arg(data)
            .output()
            .unwrap()
    };
    let refused = worker(&mine);
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    let err = String::from_utf8_lossy(&refused.stderr);
    let line = err.lines().last().unwrap_or("");
    assert!(line.contains(&mine.display().to_string()) && line.contains("digest"), "{err}");
    assert_eq!(line.matches("digest ").count(), 2, "both digests: {line}");
    // The same data elsewhere is accepted, and the run finishes.
    let copy = d.join("copy");
    fake_fmnist(&copy, 64, 1);
    let ok = worker(&copy);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let c = finish(coord);
    let cerr = String::from_utf8_lossy(&c.stderr);
    assert!(c.status.success(), "{cerr}");
    assert!(cerr.contains("left before it was ready"), "the refused worker is not taken: {cerr}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// lockstep's FLOP model of the dcgan28 step agrees with PyTorch's
/// FlopCounterMode on shared/reference/torch_gan_step.py (11.93 GFLOP at
/// eta 0.5, 7.77 at eta 0, batch 64; counted 2026-12-01).
#[test]
fn the_dcgan_step_costs_what_pytorch_counts() {
    let mut cfg = lockstep::config::Config::load(Path::new("configs/fashion-mnist-dcgan.toml"), &[]).unwrap();
    let game = lockstep::gan::trainer::game_of(&cfg).unwrap();
    let f = game.step_flops();
    for (net, l, layer, pass, fl) in &f.rows {
        eprintln!("| {net} | {l} `{layer}` | {pass} | {:.1} |", fl * 1e-6);
    }
    eprintln!("dcgan28 step: {:.3} GFLOP", f.total * 1e-9);
    assert!((f.total * 1e-9 - 11.93).abs() < 0.06, "{:.3} GFLOP", f.total * 1e-9);
    cfg.train.eta = 0.0;
    let f0 = lockstep::gan::trainer::game_of(&cfg).unwrap().step_flops();
    assert!((f0.total * 1e-9 - 7.77).abs() < 0.06, "eta 0: {:.3} GFLOP", f0.total * 1e-9);
}
