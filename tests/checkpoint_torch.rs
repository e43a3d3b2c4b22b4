//! Checkpoints use PyTorch's layout: the tensor names and shapes of
//! `nn.Sequential`, so a PyTorch user loads the generator directly.

use std::process::Command;

use lockstep::checkpoint;
use lockstep::config::Config;
use lockstep::gan::trainer::{self, TrainState};
use lockstep::nn::Workspace;

fn tiny() -> Config {
    Config::load(std::path::Path::new("tests/data/tiny-ring.toml"), &[]).unwrap()
}

fn save_fresh(name: &str) -> (std::path::PathBuf, Config, TrainState) {
    save_fresh_of(tiny(), name)
}

/// A checkpoint of `cfg`'s freshly initialised state (the data is not read:
/// the shape comes from the config).
fn save_fresh_of(cfg: Config, name: &str) -> (std::path::PathBuf, Config, TrainState) {
    let game = trainer::game_of(&cfg).unwrap();
    let st = TrainState::init(&cfg, &game);
    let p = std::env::temp_dir().join(format!("lockstep-ck-{}-{name}.safetensors", std::process::id()));
    checkpoint::save(&p, &cfg, &game, &st).unwrap();
    (p, cfg, st)
}

#[test]
fn tensor_names_and_shapes_follow_nn_sequential() {
    let (p, _, st) = save_fresh("names");
    let bytes = std::fs::read(&p).unwrap();
    let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<(String, Vec<usize>)> = t
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .filter(|(n, _)| !n.starts_with("optim."))
        .collect();
    names.sort();
    let want: Vec<(String, Vec<usize>)> = [
        ("discriminator.1.bias", vec![32]),
        ("discriminator.1.weight", vec![32, 2]),
        ("discriminator.3.bias", vec![1]),
        ("discriminator.3.weight", vec![1, 32]),
        ("generator.0.bias", vec![32]),
        ("generator.0.weight", vec![32, 16]),
        ("generator.2.bias", vec![32]),
        ("generator.2.weight", vec![32, 32]),
        ("generator.4.bias", vec![2]),
        ("generator.4.weight", vec![2, 32]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(names, want);
    // Row-major [out, in]: element (1, 0) of generator.0.weight is the flat vector's element 16.
    let w = t.tensor("generator.0.weight").unwrap();
    let v = f32::from_le_bytes(w.data()[64..68].try_into().unwrap());
    assert_eq!(v, st.gen[16]);
    std::fs::remove_file(&p).unwrap();
}

fn have_torch(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import torch, safetensors"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED {test}: PyTorch is not installed (pip install torch safetensors)");
    }
    ok
}

/// Runs scripts/torch_load_generator.py on a fresh checkpoint of `cfg` and
/// checks PyTorch's G(z) against lockstep's to 1e-5 on every output.
fn torch_matches(cfg: Config, name: &str) {
    let (p, cfg, st) = save_fresh_of(cfg, name);
    let out = Command::new("python3").arg("scripts/torch_load_generator.py").arg(&p).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let game = trainer::game_of(&cfg).unwrap();
    let latent = cfg.train.latent;
    let z: Vec<f32> = (0..4).flat_map(|i| (0..latent).map(move |j| ((7 * i + j) as f64).sin() as f32)).collect();
    let mut ws = Workspace::new(&game.gen, 4);
    game.gen.forward(&st.gen, &z, &mut ws, 4);
    let ours = game.gen.output_of(&ws, 0..4);
    let w = game.gen.output();
    for i in 0..4 {
        let row = v["outputs"][i].as_array().unwrap();
        assert_eq!(row.len(), w, "row {i}: torch gives {} values, lockstep {w}", row.len());
        for j in 0..w {
            let theirs = row[j].as_f64().unwrap();
            assert!(
                (theirs - ours[i * w + j] as f64).abs() < 1e-5,
                "{name} row {i} value {j}: torch {theirs} vs ours {}",
                ours[i * w + j]
            );
        }
    }
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn generator_loads_in_pytorch_and_computes_the_same() {
    if have_torch("generator_loads_in_pytorch_and_computes_the_same") {
        torch_matches(tiny(), "torch");
    }
}

/// The DCGAN generators (linear, reshape, conv_t, activations) rebuild in
/// nn.Sequential, load with strict=True and compute the same images.
#[test]
fn dcgan_generators_load_in_pytorch_and_compute_the_same() {
    if !have_torch("dcgan_generators_load_in_pytorch_and_compute_the_same") {
        return;
    }
    for f in ["configs/fashion-mnist-dcgan-ci.toml", "configs/fashion-mnist-dcgan.toml"] {
        torch_matches(Config::load(std::path::Path::new(f), &[]).unwrap(), f.trim_start_matches("configs/"));
    }
}
