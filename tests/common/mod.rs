//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockstep::checkpoint;

/// A fresh, empty directory under the system's temp dir, unique to this process.
pub fn tmp(group: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lockstep-{group}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The step of a run directory's newest checkpoint.
pub fn latest_step(dir: &Path) -> Option<u64> {
    checkpoint::latest(dir)?
        .file_name()?
        .to_str()?
        .trim_start_matches("step-")
        .trim_end_matches(".safetensors")
        .parse()
        .ok()
}

/// Waits (up to 2 minutes) until the run in `dir` has a checkpoint at `step` or later.
pub fn wait_for_step(dir: &Path, step: u64) {
    let t = Instant::now();
    while latest_step(dir).is_none_or(|s| s < step) {
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint at step {step} in {}", dir.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The bit patterns of `v`, for bitwise comparisons.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
