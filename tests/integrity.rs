//! Nothing corrupt is ever loaded: every checkpoint carries SHA-256 digests
//! of its tensors and metadata; a flipped bit anywhere is refused by `eval`,
//! `sample` and `--resume` (naming the file), `--resume` falls back to the
//! newest checkpoint that verifies and ends bitwise where an undisturbed run
//! does, and a checkpoint write that fails (a file-size limit) stops the run
//! with the path and the cause, leaving the previous checkpoint and
//! `checkpoints/latest` as they were.

use std::path::{Path, PathBuf};

use lockstep::checkpoint;

mod common;

use common::{assert_input_error, bin, bits};

const CFG: &str = "tests/data/tiny-ring.toml";

fn train(out: &Path, steps: &str, extra: &[&str]) -> std::process::Output {
    bin()
        .args(["train", "--quiet", "--config", CFG, "--steps", steps, "--set", "log.keep_checkpoints=10", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn flipped(path: &Path, offset: usize, bit: u8) -> Vec<u8> {
    let mut b = std::fs::read(path).unwrap();
    b[offset] ^= 1 << bit;
    b
}

#[test]
fn a_flipped_bit_anywhere_is_refused() {
    let d = common::tmp("integrity", "flips");
    let run = d.join("run");
    assert!(train(&run, "100", &[]).status.success());
    let ck = checkpoint::latest(&run).unwrap();
    let bytes = std::fs::read(&ck).unwrap();
    assert!(checkpoint::verify(&bytes).is_ok(), "a fresh checkpoint carries digests that verify");
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Offsets through the length, the header (tensor table, metadata, digests) and the tensor data.
    let mut offsets: Vec<usize> = (0..8).collect();
    offsets.extend((0..60).map(|i| 8 + i * (header - 8) / 60));
    offsets.extend((0..60).map(|i| header + i * (bytes.len() - header) / 60));
    offsets.push(bytes.len() - 1);
    let bad = d.join("bad.safetensors");
    let mut refused = 0;
    for (i, &o) in offsets.iter().enumerate() {
        std::fs::write(&bad, flipped(&ck, o, (i % 8) as u8)).unwrap();
        match checkpoint::load(&bad) {
            Ok(_) => panic!("a flip of bit {} at offset {o} (header ends at {header}) was loaded", i % 8),
            Err(e) => {
                assert!(e.to_string().contains("bad.safetensors"), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, offsets.len());
    // A flip in a tensor names the tensor and the way out.
    std::fs::write(&bad, flipped(&ck, bytes.len() - 3, 2)).unwrap();
    let e = checkpoint::load(&bad).err().unwrap().to_string();
    assert!(e.contains("does not match its digest") && e.contains("tensor `") && e.contains("--resume"), "{e}");
    // eval and sample refuse it, naming the file.
    let b = bad.to_str().unwrap();
    assert_input_error(&bin().args(["eval", "--checkpoint", b]).output().unwrap(), &["bad.safetensors", "digest"]);
    let png = d.join("s.png");
    let o = bin().args(["sample", "--checkpoint", b, "--n", "10", "--out", png.to_str().unwrap()]).output().unwrap();
    assert_input_error(&o, &["bad.safetensors", "digest"]);
    assert!(!png.exists());
    // The metadata too: a changed step is refused, though the file still parses.
    let mut b2 = bytes.clone();
    let needle = b"\"step\":\"100\"";
    let at = b2[..header].windows(needle.len()).position(|w| w == needle).expect("step in the metadata") + 9;
    b2[at] = b'2';
    std::fs::write(&bad, &b2).unwrap();
    let e = checkpoint::load(&bad).err().unwrap().to_string();
    assert!(e.contains("metadata does not match"), "{e}");
}

#[test]
fn resume_skips_a_corrupt_checkpoint_and_ends_bitwise_as_an_undisturbed_run() {
    let d = common::tmp("integrity", "resume");
    let (whole, broken) = (d.join("whole"), d.join("broken"));
    assert!(train(&whole, "300", &[]).status.success());
    assert!(train(&broken, "200", &[]).status.success());
    // The newest checkpoint (step 200) is corrupted in its tensor data.
    let newest = checkpoint::latest(&broken).unwrap();
    let len = std::fs::metadata(&newest).unwrap().len() as usize;
    std::fs::write(&newest, flipped(&newest, len - 5, 0)).unwrap();
    let o = bin()
        .args(["train", "--quiet", "--config", CFG, "--steps", "300", "--set", "log.keep_checkpoints=10", "--resume"])
        .arg("--out")
        .arg(&broken)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("skipping") && err.contains("step-0000200.safetensors") && err.contains("digest"), "{err}");
    let a = checkpoint::load(&checkpoint::latest(&whole).unwrap()).unwrap().state;
    let b = checkpoint::load(&checkpoint::latest(&broken).unwrap()).unwrap().state;
    assert_eq!(a.step, 300);
    assert_eq!((bits(&a.gen), bits(&a.disc)), (bits(&b.gen), bits(&b.disc)));
    // The step-200 file was rewritten by the resumed run and verifies again.
    assert!(checkpoint::load(&newest).is_ok());
}

#[test]
fn a_failed_checkpoint_write_keeps_the_previous_one() {
    let d = common::tmp("integrity", "full");
    let run = d.join("run");
    assert!(train(&run, "100", &[]).status.success());
    let before = checkpoint::latest(&run).unwrap();
    let size = std::fs::metadata(&before).unwrap().len();
    // A file-size limit below a checkpoint's size (SIGXFSZ ignored, so the
    // write fails with EFBIG as a full disk fails with ENOSPC).
    let limit_kib = size / 1024 / 2;
    let exe = env!("CARGO_BIN_EXE_lockstep");
    let script = format!(
        "trap '' XFSZ; ulimit -f {limit_kib}; exec {exe} train --quiet --config {CFG} --steps 300 --resume --set log.sample_every=0 --out {}",
        run.display()
    );
    let o = std::process::Command::new("bash").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the run went on: {err}");
    assert!(err.contains("step-0000200.safetensors") && err.contains("cannot write the checkpoint"), "{err}");
    assert!(err.to_lowercase().contains("too large") || err.contains("os error"), "the cause: {err}");
    assert_eq!(checkpoint::latest(&run).unwrap(), before, "latest still names the previous checkpoint");
    assert_eq!(checkpoint::load(&before).unwrap().state.step, 100);
    let left: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.iter().all(|p| !p.to_string_lossy().contains("step-0000200")), "{left:?}");
}
