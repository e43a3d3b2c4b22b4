//! The CPU backend allocates no buffers per step: every buffer is allocated
//! once, when the trainer is built.  What is left is the `gemm` crate's own
//! scratch (its packing flags and, when it packs, a panel, allocated inside
//! a product), so the test allows at most two allocations per matrix
//! product and none besides.  (Alone in its file: the counting allocator sees the
//! whole process.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use lockstep::backend::{self, BackendSpec};
use lockstep::config::Config;
use lockstep::gan::trainer::{self, TrainState, Trainer};
use lockstep::nn::float::matmul_count;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn training_steps_do_not_allocate() {
    // The image config too, where Fashion-MNIST is installed (convolutions
    // keep their im2row buffers in the workspace).
    let images = "configs/fashion-mnist-dcgan-ci.toml";
    let mut configs = vec!["configs/mog-ring.toml"];
    if std::path::Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() {
        configs.push(images);
    } else {
        eprintln!("SKIPPED {images} in training_steps_do_not_allocate: apt-get install dataset-fashion-mnist");
    }
    for (config, update, eta) in configs.iter().flat_map(|c| {
        ["simultaneous", "alternating"].into_iter().flat_map(move |u| ["0.5", "0"].into_iter().map(move |e| (*c, u, e)))
    }) {
        {
            let sets = [format!("train.update=\"{update}\""), format!("train.eta={eta}")];
            let cfg = Config::load(std::path::Path::new(config), &sets).unwrap();
            let setup = trainer::setup(&cfg).unwrap();
            let be = backend::create(BackendSpec::cpu(), &setup).unwrap();
            let st = TrainState::init(&cfg, &setup.game);
            let mut t = Trainer::new(cfg, setup.game, st, vec![be]).unwrap();
            for _ in 0..3 {
                t.step().unwrap();
            }
            let (n0, g0) = (ALLOCS.load(Ordering::SeqCst), matmul_count());
            for _ in 0..20 {
                t.step().unwrap();
            }
            let (n, g) = (ALLOCS.load(Ordering::SeqCst) - n0, matmul_count() - g0);
            eprintln!("{config}, {update}, eta {eta}: {} allocations and {} matrix products per step", n / 20, g / 20);
            assert!(g > 0);
            assert!(n <= 2 * g as usize, "{config}, {update}, eta {eta}: {n} allocations for {g} products in 20 steps");
        }
    }
}
