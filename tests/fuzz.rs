//! Generated hostile inputs: valid inputs of every kind lockstep reads,
//! mutated (bit flips, overwritten and random bytes, truncations, insertions,
//! duplicated spans, length fields set to huge values, numbers replaced by
//! NaN, infinities and extremes), thousands of cases per kind, through the
//! real code paths: configs (and the networks they describe), checkpoints,
//! IDX and PNG files, the results the coordinator validates and the requests
//! a worker answers.  Never a panic, never an allocation above 1 GiB; every
//! refusal is an error value naming its input.  `LOCKSTEP_FUZZ_CASES`
//! scales the counts (scripts/fuzz.sh runs 50× CI's).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use prost::Message;

use lockstep::config::Config;
use lockstep::dist::proto;
use lockstep::dist::validate;

/// Every allocation above this is refused (the process aborts, failing the test loudly).
const LIMIT: usize = 1 << 30;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Capped;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        if l.size() > LIMIT {
            eprintln!("fuzz: an allocation of {} bytes (limit {LIMIT})", l.size());
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        if new > LIMIT {
            eprintln!("fuzz: a reallocation to {new} bytes (limit {LIMIT})");
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

/// CI's cases per kind times LOCKSTEP_FUZZ_CASES (default 1).
fn cases(base: u32) -> u32 {
    base * std::env::var("LOCKSTEP_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// One mutation of a byte string.
#[derive(Debug, Clone)]
enum Op {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Duplicate(usize, usize),
    /// Eight bytes at a position set to a huge little-endian number (a length field).
    Huge(usize),
    Delete(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(p, b)| Op::Flip(p, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(p, v)| Op::Set(p, v)),
        1 => any::<usize>().prop_map(Op::Truncate),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(p, v)| Op::Insert(p, v)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(p, n)| Op::Duplicate(p, n)),
        1 => any::<usize>().prop_map(Op::Huge),
        1 => (any::<usize>(), 1usize..32).prop_map(|(p, n)| Op::Delete(p, n)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..5)
}

fn apply(mut b: Vec<u8>, ops: &[Op]) -> Vec<u8> {
    for o in ops {
        let n = b.len().max(1);
        match *o {
            Op::Flip(p, bit) if !b.is_empty() => b[p % n] ^= 1 << bit,
            Op::Set(p, v) if !b.is_empty() => b[p % n] = v,
            Op::Truncate(p) => b.truncate(p % n),
            Op::Insert(p, ref v) => {
                let at = p % (b.len() + 1);
                b.splice(at..at, v.iter().copied());
            }
            Op::Duplicate(p, len) if !b.is_empty() => {
                let at = p % b.len();
                let span: Vec<u8> = b[at..(at + len).min(b.len())].to_vec();
                b.splice(at..at, span);
            }
            Op::Huge(p) if b.len() >= 8 => {
                let at = p % (b.len() - 7);
                b[at..at + 8].copy_from_slice(&(u64::MAX / 3).to_le_bytes());
            }
            Op::Delete(p, len) if !b.is_empty() => {
                let at = p % b.len();
                b.drain(at..(at + len).min(b.len()));
            }
            _ => {}
        }
    }
    b
}

/// Runs `check` on `n` mutations of each of `seeds`; returns the counts (tried, refused).
fn run(kind: &str, n: u32, seeds: &[Vec<u8>], check: impl Fn(&[u8]) -> bool) -> (u32, u32) {
    let refused = AtomicUsize::new(0);
    let mut runner = TestRunner::new(PtConfig { cases: n, failure_persistence: None, ..PtConfig::default() });
    runner
        .run(&(0..seeds.len(), mutations()), |(s, ops)| {
            let b = apply(seeds[s].clone(), &ops);
            if !check(&b) {
                refused.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
    let r = refused.load(Ordering::Relaxed) as u32;
    eprintln!(
        "fuzz {kind}: {n} cases, {r} refused, {} accepted, largest allocation so far {} bytes",
        n - r,
        LARGEST.load(Ordering::Relaxed)
    );
    assert!(LARGEST.load(Ordering::Relaxed) <= LIMIT);
    (n, r)
}

fn tiny() -> Config {
    Config::load(Path::new("tests/data/tiny-ring.toml"), &[]).unwrap()
}

#[test]
fn mutated_configs_are_errors_or_valid_games() {
    let seeds: Vec<Vec<u8>> = [
        "configs/mog-ring.toml",
        "configs/fashion-mnist-dcgan.toml",
        "configs/stacked-fmnist-dcgan.toml",
        "tests/data/tiny-ring.toml",
    ]
    .iter()
    .map(|p| std::fs::read(p).unwrap())
    .collect();
    // Also numbers swapped for extremes.
    let mut more = Vec::new();
    for s in &seeds {
        let t = String::from_utf8(s.clone()).unwrap();
        for bad in ["nan", "inf", "-1", "18446744073709551615", "1e308", "0", "99999999999999999999"] {
            more.push(t.replacen("= 0.5", &format!("= {bad}"), 1).replacen("64", bad, 1).into_bytes());
        }
    }
    let seeds: Vec<Vec<u8>> = seeds.into_iter().chain(more).collect();
    let (n, refused) = run("config", cases(2000), &seeds, |b| {
        let text = String::from_utf8_lossy(b);
        match Config::from_toml_str(&text, "fuzzed.toml", &[]) {
            Err(e) => {
                assert!(e.to_string().starts_with("fuzzed.toml"), "{e}");
                false
            }
            // A valid config: its networks are built (or refused) on its data's shape.
            Ok(cfg) => match lockstep::data::sample_shape(&cfg.data) {
                Ok(shape) => lockstep::gan::trainer::game(&cfg, shape).is_ok(),
                Err(_) => false,
            },
        }
    });
    assert!(refused > 0 && refused <= n);
}

#[test]
fn mutated_checkpoints_are_refused() {
    let cfg = tiny();
    let game = lockstep::gan::trainer::game_of(&cfg).unwrap();
    let st = lockstep::gan::trainer::TrainState::init(&cfg, &game);
    let good = lockstep::checkpoint::to_bytes(&cfg, &game, &st).unwrap();
    assert!(lockstep::checkpoint::parse(&good, "seed").is_ok());
    let seed = good.clone();
    let check = |b: &[u8]| match lockstep::checkpoint::parse(b, "fuzzed.safetensors") {
        Err(e) => {
            assert!(e.to_string().contains("fuzzed.safetensors"), "{e}");
            false
        }
        Ok(_) => {
            // Only a mutation that left every byte as it was (a byte set to its own value) loads.
            assert_eq!(b, &seed[..], "a changed checkpoint loaded");
            true
        }
    };
    let (n, refused) = run("checkpoint", cases(2000), &[good], check);
    assert!(refused as f64 >= 0.99 * n as f64, "{refused} of {n} refused");
}

#[test]
fn structurally_odd_checkpoints_with_valid_digests_are_refused() {
    // Files whose digests match but whose content is wrong: missing,
    // extra, reshaped and retyped tensors, and bad metadata values.
    use safetensors::tensor::{Dtype, TensorView};
    let cfg = tiny();
    let game = lockstep::gan::trainer::game_of(&cfg).unwrap();
    let names: Vec<(String, Vec<usize>)> =
        game.gen.tensors().into_iter().map(|t| (format!("generator.{}", t.name), t.shape)).collect();
    let mut runner = TestRunner::new(PtConfig { cases: cases(500), failure_persistence: None, ..PtConfig::default() });
    let strat = (
        proptest::collection::vec((0..names.len() + 2, 0usize..4, 0u32..3), 1..6),
        prop_oneof![
            Just("100".to_string()),
            Just("-1".to_string()),
            Just("abc".to_string()),
            Just(u64::MAX.to_string())
        ],
        prop_oneof![Just(cfg.to_toml()), Just("garbage = [".to_string()), Just(String::new())],
    );
    runner
        .run(&strat, |(tensors, step, config)| {
            let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
            for (i, grow, dt) in tensors {
                let (name, mut shape) = names.get(i).cloned().unwrap_or((format!("junk.{i}"), vec![3]));
                shape[0] += grow;
                let elems: usize = shape.iter().product();
                let width = if dt == 2 { 2 } else { 4 };
                owned.push((name, shape, vec![0u8; elems * width]));
            }
            owned.sort_by(|a, b| a.0.cmp(&b.0));
            owned.dedup_by(|a, b| a.0 == b.0);
            let views: Vec<(String, TensorView)> = owned
                .iter()
                .map(|(n, s, b)| {
                    let dt = if b.len() == 2 * s.iter().product::<usize>() { Dtype::F16 } else { Dtype::F32 };
                    (n.clone(), TensorView::new(dt, s.clone(), b).unwrap())
                })
                .collect();
            let meta = [
                ("format", lockstep::checkpoint::FORMAT.to_string()),
                ("step", step),
                ("skipped_steps", "0".into()),
                ("optim.generator.step", "0".into()),
                ("optim.discriminator.step", "0".into()),
                ("config", config),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let bytes = lockstep::checkpoint::serialize(views, meta).unwrap();
            assert!(lockstep::checkpoint::verify(&bytes).is_ok());
            let r = lockstep::checkpoint::parse(&bytes, "odd.safetensors");
            prop_assert!(r.is_err(), "a checkpoint without the discriminator loaded");
            Ok(())
        })
        .unwrap();
    eprintln!("fuzz checkpoint structure: {} cases, all refused", cases(500));
}

/// A valid IDX file of `n` 28×28 images (or, `labels`, n labels).
fn idx(n: usize, labels: bool) -> Vec<u8> {
    let mut b = Vec::new();
    if labels {
        b.extend(0x0801u32.to_be_bytes());
        b.extend((n as u32).to_be_bytes());
        b.extend((0..n).map(|i| (i % 10) as u8));
    } else {
        b.extend(0x0803u32.to_be_bytes());
        for d in [n as u32, 28, 28] {
            b.extend(d.to_be_bytes());
        }
        b.extend((0..n * 784).map(|i| (i * 7) as u8));
    }
    b
}

fn gz(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn mutated_idx_files_are_refused_or_read_within_their_size() {
    let dir = std::env::temp_dir().join(format!("lockstep-fuzz-idx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seeds = vec![idx(3, false), idx(5, true), gz(&idx(3, false)), gz(&idx(5, true))];
    let n = std::sync::atomic::AtomicU64::new(0);
    run("idx", cases(2000), &seeds, |b| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let gzipped = b.starts_with(&[0x1f, 0x8b]);
        let p = dir.join(format!("f{i}{}", if gzipped { ".gz" } else { "" }));
        std::fs::write(&p, b).unwrap();
        let images = lockstep::data::idx::read_images(&p);
        let labels = lockstep::data::idx::read_labels(&p);
        let _ = std::fs::remove_file(&p);
        for e in [images.as_ref().err(), labels.as_ref().err()].into_iter().flatten() {
            assert!(e.to_string().contains(p.file_name().unwrap().to_str().unwrap()), "{e}");
        }
        if let Ok(im) = &images {
            assert_eq!(im.pixels.len(), im.count * im.rows * im.cols);
        }
        images.is_ok() || labels.is_ok()
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mutated_png_files_are_refused_or_decoded() {
    let dir = std::env::temp_dir().join(format!("lockstep-fuzz-png-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = |w: u32, h: u32, color: png::ColorType| {
        let mut out = Vec::new();
        let mut e = png::Encoder::new(&mut out, w, h);
        e.set_color(color);
        e.set_depth(png::BitDepth::Eight);
        let ch = if color == png::ColorType::Rgb { 3 } else { 1 };
        let mut wr = e.write_header().unwrap();
        wr.write_image_data(&vec![128u8; (w * h) as usize * ch]).unwrap();
        wr.finish().unwrap();
        out
    };
    let seeds = vec![png(8, 8, png::ColorType::Grayscale), png(5, 3, png::ColorType::Rgb)];
    let n = std::sync::atomic::AtomicU64::new(0);
    run("png", cases(1000), &seeds, |b| {
        let p = dir.join(format!("f{}.png", n.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&p, b).unwrap();
        let r = lockstep::data::folder::decode(&p);
        let _ = std::fs::remove_file(&p);
        match r {
            Err(e) => {
                assert!(e.to_string().contains(p.file_name().unwrap().to_str().unwrap()), "{e}");
                false
            }
            Ok((shape, px)) => {
                assert_eq!(px.len(), shape.len());
                true
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mutated_results_are_validated_without_panics() {
    let want = validate::Expected { request_id: 7, step: 12, phase: 1, blocks: 3, width: 5 };
    let good = proto::PhaseResult {
        request_id: 7,
        step: 12,
        phase: 1,
        maxima: lockstep::f32le::encode(&[1.0f32, 0.0, f32::INFINITY]),
        fixed: vec![3; 40],
        ..Default::default()
    };
    let errored = proto::PhaseResult { error: "x".repeat(2000), maxima: Vec::new(), ..good.clone() };
    let seeds = vec![good.encode_to_vec(), errored.encode_to_vec()];
    run("PhaseResult", cases(3000), &seeds, |b| match proto::PhaseResult::decode(b) {
        Err(_) => false,
        Ok(r) => validate::validate_result(&r, &want).is_ok(),
    });
    let sum = proto::SumResult { request_id: 7, step: 12, phase: 1, fixed: vec![7; 40], ..Default::default() };
    run("SumResult", cases(2000), &[sum.encode_to_vec()], |b| match proto::SumResult::decode(b) {
        Err(_) => false,
        Ok(r) => validate::validate_sum(&r, &want).is_ok(),
    });
    let step_want = validate::StepExpected { request_id: 3, step: 9, speculative: true };
    let step_good = proto::StepResult {
        request_id: 3,
        step: 9,
        stats: lockstep::f32le::encode(&[0.5f32; lockstep::gan::phases::stat::COUNT]),
        ..Default::default()
    };
    run("StepResult", cases(2000), &[step_good.encode_to_vec()], |b| match proto::StepResult::decode(b) {
        Err(_) => false,
        Ok(r) => validate::validate_step(&r, &step_want).is_ok(),
    });
    let state_want = validate::StateExpected { request_id: 4, n_gen: 3, n_disc: 2, moments: [3, 2], t: [5, 5] };
    let f = |n: usize| lockstep::f32le::encode(&vec![0.25f32; n]);
    let state_good = proto::State {
        request_id: 4,
        generator: f(3),
        discriminator: f(2),
        gen_m: f(3),
        gen_v: f(3),
        disc_m: f(2),
        disc_v: f(2),
        gen_t: 5,
        disc_t: 5,
        ..Default::default()
    };
    run("State", cases(2000), &[state_good.encode_to_vec()], |b| match proto::State::decode(b) {
        Err(_) => false,
        Ok(s) => matches!(validate::validate_state(&s, &state_want), Ok(Ok(()))),
    });
    let join = proto::WorkerMessage {
        kind: Some(proto::worker_message::Kind::Join(proto::Join {
            protocol_version: lockstep::dist::PROTOCOL_VERSION,
            backend: "cpu".into(),
            device: "d".into(),
            capacity: 1.0,
        })),
    };
    run("WorkerMessage", cases(2000), &[join.encode_to_vec()], |b| proto::WorkerMessage::decode(b).is_ok());
}

#[test]
fn a_worker_answers_mutated_requests_with_errors_not_panics() {
    let cfg = tiny();
    let welcome = proto::Welcome { worker_id: 1, config_toml: cfg.to_toml(), dataset_digest: String::new() };
    // The digest of the tiny ring's data.
    let digest = lockstep::data::open(&cfg.data).unwrap().digest();
    let welcome = proto::Welcome { dataset_digest: digest, ..welcome };
    let mut w =
        lockstep::dist::worker::Replica::from_welcome(&welcome, lockstep::backend::BackendSpec::cpu(), None).unwrap();
    let game = lockstep::gan::trainer::game_of(&cfg).unwrap();
    // The training state first (as the coordinator hands it over).
    let init = lockstep::gan::trainer::TrainState::init(&cfg, &game);
    let e = lockstep::f32le::encode;
    w.load(&proto::State {
        generator: e(&init.gen),
        discriminator: e(&init.disc),
        gen_m: e(&init.opt_gen.m),
        gen_v: e(&init.opt_gen.v),
        disc_m: e(&init.opt_disc.m),
        disc_v: e(&init.opt_disc.v),
        ..Default::default()
    });
    let v = lockstep::f32le::encode(&vec![0.1f32; game.disc.n_params]);
    let req = |phase: i32| proto::PhaseRequest {
        request_id: 1,
        step: 0,
        phase,
        draw: 1,
        first_chunk: 0,
        chunks: cfg.chunks() as u32,
        with_gen_grad: true,
        v: if phase == 2 { v.clone() } else { Vec::new() },
        loss_scale: 1.0,
        want_digest: phase == 1,
        maxima_hint: Vec::new(),
    };
    let seeds = vec![req(1).encode_to_vec(), req(2).encode_to_vec()];
    let w = std::sync::Mutex::new(&mut w);
    run("PhaseRequest (worker)", cases(1000), &seeds, |b| match proto::PhaseRequest::decode(b) {
        Err(_) => false,
        Ok(r) => w.lock().unwrap().answer(&r).error.is_empty(),
    });
    // Mutated SumRequests for the rows of a phase 1 it answered.
    let answered = w.lock().unwrap().answer(&req(1));
    assert!(answered.error.is_empty(), "{}", answered.error);
    let sum = proto::SumRequest { request_id: 2, step: 0, phase: 1, maxima: answered.maxima };
    run("SumRequest (worker)", cases(1000), &[sum.encode_to_vec()], |b| match proto::SumRequest::decode(b) {
        Err(_) => false,
        Ok(r) => w.lock().unwrap().sum(&r).error.is_empty(),
    });
    // A mutated Welcome: its config is parsed and checked like any other.
    let seeds = vec![welcome.encode_to_vec()];
    run("Welcome (worker)", cases(300), &seeds, |b| match proto::Welcome::decode(b) {
        Err(_) => false,
        Ok(wl) => {
            lockstep::dist::worker::Replica::from_welcome(&wl, lockstep::backend::BackendSpec::cpu(), None).is_ok()
        }
    });
}
