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
    let cfg = tiny();
    let setup = trainer::setup(&cfg).unwrap();
    let st = TrainState::init(&cfg, &setup.game);
    let p = std::env::temp_dir().join(format!("lockstep-ck-{}-{name}.safetensors", std::process::id()));
    checkpoint::save(&p, &cfg, &setup.game, &st).unwrap();
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

#[test]
fn generator_loads_in_pytorch_and_computes_the_same() {
    let have_torch = Command::new("python3")
        .args(["-c", "import torch, safetensors"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have_torch {
        eprintln!("SKIPPED generator_loads_in_pytorch_and_computes_the_same: PyTorch is not installed (pip install torch safetensors)");
        return;
    }
    let (p, cfg, st) = save_fresh("torch");
    let out = Command::new("python3").arg("scripts/torch_load_generator.py").arg(&p).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let game = trainer::setup(&cfg).unwrap().game;
    let latent = cfg.train.latent;
    let z: Vec<f32> = (0..4).flat_map(|i| (0..latent).map(move |j| ((7 * i + j) as f64).sin() as f32)).collect();
    let mut ws = Workspace::new(&game.gen, 4);
    game.gen.forward(&st.gen, &z, &mut ws, 4);
    let ours = game.gen.output_of(&ws, 0..4);
    for i in 0..4 {
        for j in 0..2 {
            let theirs = v["outputs"][i][j].as_f64().unwrap();
            assert!(
                (theirs - ours[i * 2 + j] as f64).abs() < 1e-5,
                "row {i}: torch {theirs} vs ours {}",
                ours[i * 2 + j]
            );
        }
    }
    std::fs::remove_file(&p).unwrap();
}
