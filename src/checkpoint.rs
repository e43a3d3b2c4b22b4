//! Checkpoints: safetensors files in PyTorch's layout.
//!
//! `generator.N.weight` is `[out, in]` and `generator.N.bias` `[out]`, with N
//! the layer's index in `nn.Sequential` (likewise `discriminator.*`), so a
//! PyTorch user loads the generator with `safetensors.torch.load_file`.
//! Adam's moments are `optim.{generator,discriminator}.exp_avg.N.weight` and
//! `exp_avg_sq`; the metadata holds the format, the step, the optimizer step
//! counts, the skipped steps and the resolved config (TOML).
//!
//! Files are written atomically (temporary file, fsync, rename, fsync of the
//! directory), so a crash leaves either the old file or the new one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::f32le;
use crate::fsutil::write_atomic;
use crate::gan::phases::Game;
use crate::gan::trainer::{self, TrainState};
use crate::nn::Network;

pub const FORMAT: &str = "lockstep-checkpoint-1";

/// Serializes the training state and its config.
pub fn to_bytes(cfg: &Config, game: &Game, st: &TrainState) -> Result<Vec<u8>> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |prefix: &str, net: &Network, v: &[f32]| {
        for t in net.tensors() {
            owned.push((format!("{prefix}.{}", t.name), t.shape.clone(), f32le::encode(&v[t.range.clone()])));
        }
    };
    add("generator", &game.gen, &st.gen);
    add("discriminator", &game.disc, &st.disc);
    for (player, net, opt) in [("generator", &game.gen, &st.opt_gen), ("discriminator", &game.disc, &st.opt_disc)] {
        if !opt.m.is_empty() {
            add(&format!("optim.{player}.exp_avg"), net, &opt.m);
            add(&format!("optim.{player}.exp_avg_sq"), net, &opt.v);
        }
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("sizes match")))
        .collect();
    let meta: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("step", st.step.to_string()),
        ("skipped_steps", st.skipped.to_string()),
        ("optim.generator.step", st.opt_gen.t.to_string()),
        ("optim.discriminator.step", st.opt_disc.t.to_string()),
        ("seed", cfg.train.seed.to_string()),
        ("loss_scale", st.loss_scale.scale.to_string()),
        ("loss_scale_clean_steps", st.loss_scale.clean.to_string()),
        ("config", cfg.to_toml()),
        ("data_shape", format!("{},{},{}", game.disc.input_shape.c, game.disc.input_shape.h, game.disc.input_shape.w)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    serialize(views, meta).map_err(|e| Error::runtime(format!("cannot serialize checkpoint: {e}")))
}

/// The metadata key of a file's digests.
pub const INTEGRITY: &str = "integrity";

/// The digests a file is checked against when read: SHA-256 of each tensor
/// (its name, dtype, shape and bytes) and of the rest of the metadata (its
/// keys and values in sorted order).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Integrity {
    tensors: std::collections::BTreeMap<String, String>,
    metadata: String,
}

fn tensor_digest(name: &str, dtype: Dtype, shape: &[usize], data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"lockstep tensor v1\0");
    h.update(name.as_bytes());
    h.update(format!("\0{dtype:?}\0{shape:?}\0").as_bytes());
    h.update(data);
    crate::data::hex(&h.finalize())
}

fn metadata_digest(meta: &HashMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut keys: Vec<&String> = meta.keys().filter(|k| *k != INTEGRITY).collect();
    keys.sort();
    let mut h = Sha256::new();
    h.update(b"lockstep metadata v1\0");
    for k in keys {
        for part in [k.as_bytes(), b"\0", meta[k].as_bytes(), b"\0"] {
            h.update(part);
        }
    }
    crate::data::hex(&h.finalize())
}

/// Checks a safetensors file's bytes against the digests it carries; Err
/// naming the tensor or the metadata that does not match, or saying that
/// the file carries no digests (none is loaded without them: a file from a
/// lockstep before digests is refused too).
pub fn verify(bytes: &[u8]) -> std::result::Result<(), String> {
    open_verified(bytes).map(|_| ())
}

/// A safetensors file's tensors and metadata, parsed once and checked by `verify`'s rules.
pub fn open_verified(bytes: &[u8]) -> std::result::Result<(SafeTensors<'_>, HashMap<String, String>), String> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format!("{e:?}"))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("{e:?}"))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let Some(text) = meta.get(INTEGRITY) else {
        return Err(format!(
            "it carries no digests (metadata `{INTEGRITY}` is missing: the file was altered, or written by a lockstep before digests)"
        ));
    };
    let want: Integrity =
        serde_json::from_str(text).map_err(|e| format!("metadata `{INTEGRITY}` is not valid: {e}"))?;
    if metadata_digest(&meta) != want.metadata {
        return Err("the metadata does not match its digest (the file is corrupt)".into());
    }
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    for name in &names {
        let v = st.tensor(name).map_err(|e| format!("{e:?}"))?;
        match want.tensors.get(name) {
            None => return Err(format!("tensor `{name}` is not among the digests (the file was altered)")),
            Some(d) if *d != tensor_digest(name, v.dtype(), v.shape(), v.data()) => {
                return Err(format!("tensor `{name}` does not match its digest (the file is corrupt)"))
            }
            Some(_) => {}
        }
    }
    if let Some(missing) = want.tensors.keys().find(|k| !names.contains(k)) {
        return Err(format!("tensor `{missing}` is missing"));
    }
    // A file with digests was written in canonical form (`serialize`): any
    // other byte in its header (even whitespace or an escape that parses
    // the same) is a change, and refused.
    let (at, canonical) = canonical_header(bytes)?;
    if canonical != bytes[at] {
        return Err("the header is not as it was written (the file is corrupt)".into());
    }
    Ok((st, meta))
}

/// safetensors bytes of `views` and `meta`, with the digests `verify`
/// checks and the header's keys in sorted order, so that the same tensors
/// and metadata give the same bytes in every process (the metadata map's
/// own order is random).
pub fn serialize(
    views: Vec<(String, TensorView)>,
    mut meta: HashMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    let integrity = Integrity {
        tensors: views.iter().map(|(n, v)| (n.clone(), tensor_digest(n, v.dtype(), v.shape(), v.data()))).collect(),
        metadata: metadata_digest(&meta),
    };
    meta.insert(INTEGRITY.into(), serde_json::to_string(&integrity).expect("json"));
    let mut bytes = safetensors::serialize(views, &Some(meta)).map_err(|e| e.to_string())?;
    let (at, sorted) = canonical_header(&bytes)?;
    bytes[at].copy_from_slice(&sorted);
    Ok(bytes)
}

/// Where a safetensors file's header lies, and the header in canonical form
/// (compact JSON with every map's keys sorted, padded with spaces to the
/// same length): what `serialize` writes and `verify` expects.
fn canonical_header(bytes: &[u8]) -> std::result::Result<(std::ops::Range<usize>, Vec<u8>), String> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    // serde_json's maps are sorted (BTreeMap), so a round trip sorts every level.
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| e.to_string())?;
    let mut sorted = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    if sorted.len() > n {
        return Err("the sorted header is longer than safetensors' own".into());
    }
    sorted.resize(n, b' ');
    Ok((8..8 + n, sorted))
}

/// Writes a checkpoint atomically.
pub fn save(path: &Path, cfg: &Config, game: &Game, st: &TrainState) -> Result<()> {
    write_atomic(path, &to_bytes(cfg, game, st)?)
}

/// A loaded checkpoint: its config and the training state.
pub struct Loaded {
    pub config: Config,
    pub game: Game,
    pub state: TrainState,
}

/// Reads and validates a checkpoint; any problem is an input error naming
/// the file.  `path` is a checkpoint, a run's `checkpoints/latest` pointer,
/// or a run directory (its latest checkpoint): see [`resolve`].
pub fn load(path: &Path) -> Result<Loaded> {
    let path = &resolve(path)?;
    let bytes = std::fs::read(path).map_err(|e| {
        Error::input(format!(
            "{}: cannot read checkpoint: {e} (check the path; checkpoints are in RUN/checkpoints/)",
            path.display()
        ))
    })?;
    parse(&bytes, &path.display().to_string())
}

/// Reads and validates a checkpoint's bytes; `origin` names it in errors.
pub fn parse(bytes: &[u8], origin: &str) -> Result<Loaded> {
    from_bytes(bytes).map_err(|m| {
        Error::input(format!("{origin}: not a valid lockstep checkpoint: {m}; use an earlier checkpoint of checkpoints/ (`train --resume` falls back to the newest that verifies)"))
    })
}

/// The checkpoints of a run, newest first: the one `checkpoints/latest`
/// names, then every `step-*.safetensors` by step, descending.
pub fn candidates(run_dir: &Path) -> Vec<PathBuf> {
    let mut all = step_files(&run_dir.join("checkpoints")).unwrap_or_default();
    all.reverse();
    if let Some(l) = latest(run_dir) {
        all.retain(|p| *p != l);
        all.insert(0, l);
    }
    all
}

/// The `step-*.safetensors` files of a checkpoints folder, oldest first.
fn step_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let is_step = |p: &Path| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-") && n.ends_with(".safetensors"))
    };
    let mut all: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_step(p)).collect();
    all.sort();
    Ok(all)
}

/// Loads the newest checkpoint of a run that verifies.  When an older one
/// is loaded, `skipped` hears first of each newer one that did not verify
/// (with why); when none verifies, the error names the run and what was wrong.
pub fn load_newest(run_dir: &Path, mut skipped: impl FnMut(&Path, &Error)) -> Result<(PathBuf, Loaded)> {
    let mut bad: Vec<(PathBuf, Error)> = Vec::new();
    for p in candidates(run_dir) {
        match load(&p) {
            Ok(l) => {
                for (p, e) in &bad {
                    skipped(p, e);
                }
                return Ok((p, l));
            }
            Err(e) => bad.push((p, e)),
        }
    }
    Err(Error::input(match bad.first() {
        None => format!(
            "--resume: {} has no checkpoint (checkpoints/ holds no step-*.safetensors); start a new run without --resume",
            run_dir.display()
        ),
        Some((_, e)) => format!("--resume: none of the {} checkpoint(s) of {} verifies; the newest: {e}", bad.len(), run_dir.display()),
    }))
}

fn from_bytes(bytes: &[u8]) -> std::result::Result<Loaded, String> {
    let (st, md) = open_verified(bytes)?;
    let get = |k: &str| md.get(k).ok_or_else(|| format!("metadata `{k}` missing"));
    if get("format")? != FORMAT {
        return Err(format!("format `{}`, expected `{FORMAT}`", get("format")?));
    }
    let num = |k: &str| -> std::result::Result<u64, String> {
        get(k)?.parse::<u64>().map_err(|_| format!("metadata `{k}` is not a number"))
    };
    let config = Config::from_toml_str(get("config")?, "the checkpoint's config", &[]).map_err(|e| e.to_string())?;
    // The data's shape is in the metadata, so that a checkpoint loads where its dataset is not.
    let game = match md.get("data_shape") {
        Some(s) => {
            let d: Vec<usize> = s.split(',').filter_map(|v| v.parse().ok()).collect();
            if d.len() != 3 || d.contains(&0) {
                return Err(format!("metadata `data_shape` is `{s}`, expected C,H,W"));
            }
            trainer::game(&config, crate::nn::Shape::new(d[0], d[1], d[2]))
        }
        None => trainer::game_of(&config),
    }
    .map_err(|e| e.to_string())?;
    let mut state = TrainState::init(&config, &game);
    let read = |name: &str, net: &Network, out: &mut Vec<f32>| -> std::result::Result<(), String> {
        for t in net.tensors() {
            let full = format!("{name}.{}", t.name);
            let v = st.tensor(&full).map_err(|_| format!("tensor `{full}` missing"))?;
            if v.dtype() != Dtype::F32 || v.shape() != t.shape.as_slice() {
                return Err(format!("tensor `{full}` is {:?} {:?}, expected F32 {:?}", v.dtype(), v.shape(), t.shape));
            }
            f32le::decode(v.data(), &mut out[t.range.clone()], &full)?;
        }
        Ok(())
    };
    read("generator", &game.gen, &mut state.gen)?;
    read("discriminator", &game.disc, &mut state.disc)?;
    if !state.opt_gen.m.is_empty() {
        read("optim.generator.exp_avg", &game.gen, &mut state.opt_gen.m)?;
        read("optim.generator.exp_avg_sq", &game.gen, &mut state.opt_gen.v)?;
        read("optim.discriminator.exp_avg", &game.disc, &mut state.opt_disc.m)?;
        read("optim.discriminator.exp_avg_sq", &game.disc, &mut state.opt_disc.v)?;
    }
    state.step = num("step")?;
    state.skipped = num("skipped_steps")?;
    // Checkpoints written before loss scaling have no (or a placeholder) scale.
    if let Some(s) = md.get("loss_scale").and_then(|s| s.parse::<f32>().ok()) {
        if !(s.is_finite() && s > 0.0) {
            return Err(format!("metadata `loss_scale` is {s}, expected a positive number"));
        }
        state.loss_scale.scale = s;
    }
    if md.contains_key("loss_scale_clean_steps") {
        state.loss_scale.clean = num("loss_scale_clean_steps")?;
    }
    state.opt_gen.t = num("optim.generator.step")?;
    state.opt_disc.t = num("optim.discriminator.step")?;
    if state.gen.iter().chain(&state.disc).any(|v| !v.is_finite()) {
        return Err("parameters contain non-finite values".into());
    }
    Ok(Loaded { config, game, state })
}

/// `checkpoints/step-NNNNNNN.safetensors` under a run directory.
pub fn path_for(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join("checkpoints").join(format!("step-{step:07}.safetensors"))
}

/// The newest checkpoint of a run directory (`checkpoints/latest` names it).
pub fn latest(run_dir: &Path) -> Option<PathBuf> {
    read_pointer(&run_dir.join("checkpoints").join("latest"))
}

/// The existing file a `latest` pointer names (a small text file beside it).
fn read_pointer(pointer: &Path) -> Option<PathBuf> {
    let small = std::fs::metadata(pointer).is_ok_and(|m| m.is_file() && m.len() < 4096);
    let name = small.then(|| std::fs::read_to_string(pointer).ok()).flatten()?;
    let p = pointer.with_file_name(name.trim());
    p.is_file().then_some(p)
}

/// The checkpoint file a user means by `path`: the file `checkpoints/latest`
/// names when `path` is that pointer, a run directory or its
/// `checkpoints/` folder; otherwise `path` itself.
///
/// # Errors
/// An input error when a run directory or pointer names no checkpoint that exists.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    let pointer = if path.is_dir() {
        let dir = if path.join("checkpoints").is_dir() { path.join("checkpoints") } else { path.to_path_buf() };
        dir.join("latest")
    } else if path.file_name().is_some_and(|n| n == "latest") {
        path.to_path_buf()
    } else {
        return Ok(path.to_path_buf());
    };
    read_pointer(&pointer).ok_or_else(|| {
        Error::input(format!(
            "{}: no checkpoint there ({} names none that exists); give a checkpoints/step-NNNNNNN.safetensors file",
            path.display(),
            pointer.display()
        ))
    })
}

/// Writes a checkpoint of a run, points `latest` at it, and keeps the newest `keep`.
pub fn save_in_run(run_dir: &Path, cfg: &Config, game: &Game, st: &TrainState, keep: usize) -> Result<PathBuf> {
    let dir = run_dir.join("checkpoints");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create", e))?;
    let path = path_for(run_dir, st.step);
    save(&path, cfg, game, st).map_err(|e| {
        Error::runtime(format!(
            "{}: cannot write the checkpoint: {e}; the previous checkpoint and checkpoints/latest are unchanged (free disk space, then `train --resume`)",
            path.display()
        ))
    })?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    write_atomic(&dir.join("latest"), format!("{name}\n").as_bytes())?;
    let all = step_files(&dir).map_err(|e| Error::io(&dir, "list", e))?;
    let n = all.len();
    for old in all.into_iter().take(n.saturating_sub(keep)) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}
