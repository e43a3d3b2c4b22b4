//! The CUDA backend against its CPU twins, on a GPU.  Every kernel of
//! kernels/*.cu is run on fresh random inputs with its outputs poisoned (NaN)
//! first, and compared with the CPU code it mirrors: fp32 paths to a relative
//! error under 1e-5 (or bit for bit where the twin promises it), fp16 paths
//! under 1e-2; a NaN never passes.  Then the four network passes, a full step
//! against the CPU backend, loss scaling, worker-count exactness and a
//! training run.  Without a GPU each test prints why it skipped and passes.

use half::f16;
use lockstep::backend::cuda::device::{DevBuf, Gpu, Rows};
use lockstep::backend::cuda::net::{act_code, DevNet, GradOut};
use lockstep::backend::cuda::{self, objective_code, CudaBackend};
use lockstep::backend::{Backend, CpuBackend, Draw, ShardTask};
use lockstep::config::Config;
use lockstep::data::Mixture;
use lockstep::gan::loss_scale;
use lockstep::gan::objective::Objective;
use lockstep::gan::optim::{Direction, Optimizer};
use lockstep::gan::phases;
use lockstep::gan::trainer::{self, TrainState, Trainer};
use lockstep::nn::layer::{column_sums, Activation};
use lockstep::nn::{LayerSpec, Network, Workspace};
use lockstep::rng::{Purpose, Stream};

fn gpu() -> Option<Gpu> {
    if let Some(why) = cuda::unavailable() {
        println!("skipped: {why}; this test needs an NVIDIA GPU with its driver, NVRTC and cuBLAS");
        return None;
    }
    Some(Gpu::open(0).unwrap_or_else(|e| panic!("{e}")))
}

/// `n` N(0, 1) numbers times `scale`, different for every `tag`.
fn randn(tag: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut v = vec![0.0; n];
    Stream::new(0xC0DA, Purpose::Eval, tag).normals(0, &mut v);
    v.iter().map(|x| x * scale).collect()
}

/// Rounded to fp16 (what the GPU sees), as f32.
fn round16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

fn up16(g: &Gpu, v: &[f32]) -> DevBuf<f16> {
    let mut b = g.alloc::<f16>(v.len()).unwrap();
    g.upload(&v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>(), &mut b).unwrap();
    b
}

fn up32(g: &Gpu, v: &[f32]) -> DevBuf<f32> {
    let mut b = g.alloc::<f32>(v.len()).unwrap();
    g.upload(v, &mut b).unwrap();
    b
}

fn poisoned16(g: &Gpu, n: usize) -> DevBuf<f16> {
    up16(g, &vec![f32::NAN; n])
}

fn poisoned32(g: &Gpu, n: usize) -> DevBuf<f32> {
    up32(g, &vec![f32::NAN; n])
}

fn read16(g: &Gpu, b: &DevBuf<f16>) -> Vec<f32> {
    g.read::<f16>(b.ptr, b.len()).unwrap().iter().map(|x| x.to_f32()).collect()
}

fn read32(g: &Gpu, b: &DevBuf<f32>) -> Vec<f32> {
    g.read::<f32>(b.ptr, b.len()).unwrap()
}

/// ||gpu - cpu|| / ||cpu||; infinite when the GPU's values hold a NaN or an
/// inf the CPU's do not.
fn rel_err(gpu: &[f32], cpu: &[f32]) -> f64 {
    assert_eq!(gpu.len(), cpu.len());
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for (&g, &c) in gpu.iter().zip(cpu) {
        if !g.is_finite() && g.to_bits() != c.to_bits() {
            return f64::INFINITY;
        }
        if g.is_finite() {
            d += (g as f64 - c as f64).powi(2);
            n += (c as f64).powi(2);
        }
    }
    if n == 0.0 {
        d.sqrt()
    } else {
        (d / n).sqrt()
    }
}

fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], tol: f64) {
    let e = rel_err(gpu, cpu);
    assert!(e < tol, "{what}: relative error {e:e} (tolerance {tol:e})");
}

/// The elements of the selected rows, in selection order.
fn pick(v: &[f32], r: Rows, width: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for c in 0..r.chunks {
        let s = (c * r.block + r.start) * width;
        out.extend_from_slice(&v[s..s + r.count * width]);
    }
    out
}

/// Every element outside the selected rows is still NaN (the kernel wrote nowhere else).
fn assert_untouched(what: &str, v: &[f32], r: Rows, width: usize) {
    for (i, x) in v.iter().enumerate() {
        let row = i / width;
        let inside = (row % r.block) >= r.start && (row % r.block) < r.start + r.count;
        if !inside {
            assert!(x.is_nan(), "{what}: element {i} outside the selected rows was written ({x})");
        }
    }
}

const SEL: Rows = Rows { chunks: 3, block: 10, start: 4, count: 5 };

#[test]
fn activation_kernels_match_their_cpu_twins() {
    let Some(g) = gpu() else { return };
    let w = 7;
    let n = SEL.chunks * SEL.block * w;
    let acts =
        [Activation::Relu, Activation::LeakyRelu(0.2), Activation::Tanh, Activation::Sigmoid, Activation::Scale(0.25)];
    for (t, act) in acts.into_iter().enumerate() {
        let t = t as u64 * 10;
        let (a, adot, yb, tb) = (randn(t, n, 2.0), randn(t + 1, n, 1.0), randn(t + 2, n, 1.0), randn(t + 3, n, 1.0));
        let (da, dadot, dyb, dtb) = (up16(&g, &a), up16(&g, &adot), up16(&g, &yb), up16(&g, &tb));
        let (a, adot, yb, tb) = (round16(&a), round16(&adot), round16(&yb), round16(&tb));
        let code = act_code(act);
        let sel = |v: &[f32]| pick(v, SEL, w);

        let y = poisoned16(&g, n);
        g.act_forward(code, da.ptr, y.ptr, SEL, w).unwrap();
        let mut want = vec![0.0; sel(&a).len()];
        act.forward(&sel(&a), &mut want);
        let got = read16(&g, &y);
        assert_close(&format!("act_forward {act:?}"), &sel(&got), &want, 1e-2);
        assert_untouched("act_forward", &got, SEL, w);

        let d = poisoned16(&g, n);
        g.act_backward(code, da.ptr, dyb.ptr, d.ptr, SEL, w).unwrap();
        act.backward(&sel(&a), &sel(&yb), &mut want);
        assert_close(&format!("act_backward {act:?}"), &sel(&read16(&g, &d)), &want, 1e-2);

        let (ab, atb) = (poisoned16(&g, n), poisoned16(&g, n));
        g.act_jvp_backward(code, da.ptr, dadot.ptr, dyb.ptr, dtb.ptr, ab.ptr, atb.ptr, SEL, w).unwrap();
        let mut want_t = vec![0.0; want.len()];
        act.jvp_backward(&sel(&a), Some(&sel(&adot)), &sel(&yb), &sel(&tb), &mut want, Some(&mut want_t));
        assert_close(&format!("act_jvp_backward ā {act:?}"), &sel(&read16(&g, &ab)), &want, 1e-2);
        assert_close(&format!("act_jvp_backward ǡ {act:?}"), &sel(&read16(&g, &atb)), &want_t, 1e-2);
        // Without an input tangent.
        g.act_jvp_backward(code, da.ptr, 0, dyb.ptr, dtb.ptr, ab.ptr, 0, SEL, w).unwrap();
        act.jvp_backward(&sel(&a), None, &sel(&yb), &sel(&tb), &mut want, None);
        assert_close(&format!("act_jvp_backward ā, ȧ = 0 {act:?}"), &sel(&read16(&g, &ab)), &want, 1e-2);

        // The fused Linear-bias + activation pairs: the pre-activation as bias_cast rounds it, then the activation.
        let (acc, bias) = (randn(t + 4, n, 2.0), randn(t + 5, w, 0.5));
        let (dacc, dbias) = (up32(&g, &acc), up16(&g, &bias));
        let b16 = round16(&bias);
        let lin: Vec<f32> = sel(&acc).chunks(w).flat_map(|r| r.iter().zip(&b16).map(|(a, b)| a + b)).collect();
        let lin = round16(&lin);
        let (ylin, y) = (poisoned16(&g, n), poisoned16(&g, n));
        g.bias_act_forward(code, dacc.ptr, dbias.ptr, ylin.ptr, y.ptr, SEL, w).unwrap();
        act.forward(&lin, &mut want);
        assert_eq!(bits(&sel(&read16(&g, &ylin))), bits(&lin), "bias_act_forward: the linear output {act:?}");
        assert_close(&format!("bias_act_forward {act:?}"), &sel(&read16(&g, &y)), &want, 1e-2);
        let (tl, t2) = (poisoned16(&g, n), poisoned16(&g, n));
        g.bias_act_jvp(code, dacc.ptr, dbias.ptr, da.ptr, tl.ptr, t2.ptr, SEL, w).unwrap();
        act.jvp(&sel(&a), &lin, &mut want);
        assert_eq!(bits(&sel(&read16(&g, &tl))), bits(&lin), "bias_act_jvp: the linear tangent {act:?}");
        assert_close(&format!("bias_act_jvp {act:?}"), &sel(&read16(&g, &t2)), &want, 1e-2);
    }
}

#[test]
fn linear_kernels_match_their_cpu_twins() {
    let Some(g) = gpu() else { return };
    let w = 9;
    let n = SEL.chunks * SEL.block * w;
    let (acc, b) = (randn(1, n, 3.0), randn(2, w, 1.0));
    let (dacc, db) = (up32(&g, &acc), up16(&g, &b));
    let b = round16(&b);
    let y = poisoned16(&g, n);
    g.bias_cast(dacc.ptr, db.ptr, y.ptr, SEL, w).unwrap();
    let want: Vec<f32> = pick(&acc, SEL, w).chunks(w).flat_map(|r| r.iter().zip(&b).map(|(a, b)| a + b)).collect();
    let got = read16(&g, &y);
    assert_close("bias_cast", &pick(&got, SEL, w), &want, 1e-2);
    assert_untouched("bias_cast", &got, SEL, w);
    g.bias_cast(dacc.ptr, 0, y.ptr, SEL, w).unwrap();
    assert_close("bias_cast without bias", &pick(&read16(&g, &y), SEL, w), &pick(&acc, SEL, w), 1e-2);

    // Per-chunk column sums into strided fp32 rows.
    let dy = randn(3, n, 1.0);
    let ddy = up16(&g, &dy);
    let dy = round16(&dy);
    let stride = w + 4;
    let out = poisoned32(&g, SEL.chunks * stride);
    g.colsum_chunks(ddy.ptr, out.ptr, stride, 0.5, SEL, w).unwrap();
    let got = read32(&g, &out);
    for c in 0..SEL.chunks {
        let rows = pick(&dy, Rows { chunks: 1, ..SEL }, w);
        let s = c * SEL.block * w;
        let mut want = vec![0.0; w];
        column_sums(SEL.count, w, &dy[s + SEL.start * w..s + (SEL.start + SEL.count) * w], &mut want);
        want.iter_mut().for_each(|v| *v *= 0.5);
        assert_close("colsum_chunks", &got[c * stride..c * stride + w], &want, 1e-5);
        assert!(got[c * stride + w..(c + 1) * stride].iter().all(|v| v.is_nan()), "colsum wrote past its columns");
        drop(rows);
    }
}

#[test]
fn objective_kernels_match_their_cpu_twins() {
    let Some(g) = gpu() else { return };
    let (chunks, n) = (4, 37);
    let stride = 11;
    let (inv_b, scale, two_eta) = (1.0 / 300.0, 1024.0, 1.0);
    let sc = up32(&g, &[scale]);
    for (t, obj) in [Objective::Gan, Objective::Nsgan, Objective::Wgan].into_iter().enumerate() {
        let d = randn(40 + t as u64, chunks * 2 * n, 3.0);
        let dd = up16(&g, &d);
        let d = round16(&d);
        let code = objective_code(obj);

        let (yb, stats) = (poisoned16(&g, d.len()), poisoned32(&g, chunks * stride));
        g.phase1_seeds(dd.ptr, yb.ptr, stats.ptr, stride, chunks, n, code, inv_b, sc.ptr).unwrap();
        let (gy, gs) = (read16(&g, &yb), read32(&g, &stats));
        for c in 0..chunks {
            let mut want_y = vec![0.0; 2 * n];
            let mut want_s = vec![0.0; phases::stat::COUNT];
            phases::phase1_seeds(obj, &d[c * 2 * n..(c + 1) * 2 * n], inv_b, scale, &mut want_y, &mut want_s);
            assert_close(&format!("phase1_seeds ȳ {obj:?}"), &gy[c * 2 * n..(c + 1) * 2 * n], &want_y, 1e-2);
            assert_close(&format!("phase1_seeds stats {obj:?}"), &gs[c * stride..c * stride + 5], &want_s, 1e-5);
        }

        let fake = Rows { chunks, block: 2 * n, start: n, count: n };
        let yb = poisoned16(&g, d.len());
        g.gen_loss_seeds(dd.ptr, yb.ptr, chunks, n, code, inv_b, sc.ptr).unwrap();
        let got = read16(&g, &yb);
        let mut want = vec![0.0; chunks * n];
        for c in 0..chunks {
            let df = &d[c * 2 * n + n..(c + 1) * 2 * n];
            phases::gen_loss_seeds(obj, df, inv_b, scale, &mut want[c * n..(c + 1) * n]);
        }
        assert_close(&format!("gen_loss_seeds {obj:?}"), &pick(&got, fake, 1), &want, 1e-2);
        assert_untouched("gen_loss_seeds", &got, fake, 1);

        let ddot = randn(50 + t as u64, d.len(), 1.0);
        let dddot = up16(&g, &ddot);
        let ddot = round16(&ddot);
        let (yb, tb) = (poisoned16(&g, d.len()), poisoned16(&g, d.len()));
        g.phase2_seeds(dd.ptr, dddot.ptr, yb.ptr, tb.ptr, chunks, n, code, two_eta, inv_b, sc.ptr).unwrap();
        let (mut wy, mut wt) = (vec![0.0; chunks * n], vec![0.0; chunks * n]);
        let (df, tf) = (pick(&d, fake, 1), pick(&ddot, fake, 1));
        phases::phase2_seeds(obj, two_eta, &df, &tf, inv_b, scale, &mut wy, &mut wt);
        assert_close(&format!("phase2_seeds ȳ {obj:?}"), &pick(&read16(&g, &yb), fake, 1), &wy, 1e-2);
        assert_close(&format!("phase2_seeds ẏ̄ {obj:?}"), &pick(&read16(&g, &tb), fake, 1), &wt, 1e-2);
    }
}

#[test]
fn rng_kernels_reproduce_the_cpu_numbers_bit_for_bit() {
    let Some(g) = gpu() else { return };
    let (chunks, n, width) = (3, 20, 13);
    let r = Rows { chunks, block: 2 * n, start: n, count: n };
    let (seed, step) = (0x1234_5678_9abcu64, (7u64 << 32) + 5);
    let s = Stream::new(seed, Purpose::Latent, step);
    let key = [seed as u32, (seed >> 32) as u32];
    let mut dstep = g.alloc::<u64>(1).unwrap();
    g.upload(&[step], &mut dstep).unwrap();
    let first = 64 * 3;
    let out = poisoned32(&g, chunks * 2 * n * width);
    g.normals(true, out.ptr, key, Purpose::Latent as u32, dstep.ptr, first, r, width).unwrap();
    let got = pick(&read32(&g, &out), r, width);
    let mut want = vec![0.0; chunks * n * width];
    for (i, row) in want.chunks_exact_mut(width).enumerate() {
        s.normals(first + i as u32, row);
    }
    assert_eq!(bits(&got), bits(&want), "normals_f32 differs from rng::Stream::normals");
    let out16 = poisoned16(&g, chunks * 2 * n * width);
    g.normals(false, out16.ptr, key, Purpose::Latent as u32, dstep.ptr, first, r, width).unwrap();
    assert_eq!(bits(&pick(&read16(&g, &out16), r, width)), bits(&round16(&want)), "normals_f16");

    let cfg = Config::from_toml_str(&std::fs::read_to_string("configs/mog-grid.toml").unwrap(), "grid", &[]).unwrap();
    let mix = Mixture::from_config(&cfg.data);
    let centres: Vec<f64> = mix.centres.iter().flat_map(|c| [c[0], c[1]]).collect();
    let mut dc = g.alloc::<f64>(centres.len()).unwrap();
    g.upload(&centres, &mut dc).unwrap();
    let real = Rows { start: 0, ..r };
    let xs = Stream::new(seed, Purpose::Real, step);
    let out = poisoned32(&g, chunks * 2 * n * 2);
    g.mixture(true, out.ptr, key, Purpose::Real as u32, dstep.ptr, first, &dc, mix.std, real).unwrap();
    let mut want = vec![0.0; chunks * n * 2];
    mix.fill(&xs, first, &mut want);
    assert_eq!(bits(&pick(&read32(&g, &out), real, 2)), bits(&want), "mixture_f32 differs from data::Mixture::fill");
    let out16 = poisoned16(&g, chunks * 2 * n * 2);
    g.mixture(false, out16.ptr, key, Purpose::Real as u32, dstep.ptr, first, &dc, mix.std, real).unwrap();
    assert_eq!(bits(&pick(&read16(&g, &out16), real, 2)), bits(&round16(&want)), "mixture_f16");
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn cast_kernels_round_like_the_half_crate() {
    let Some(g) = gpu() else { return };
    let mut x = randn(60, 4099, 1000.0);
    x.extend([0.0, -0.0, 1e-8, 65504.0, 65520.0, 1e6, f32::INFINITY, -f32::INFINITY]);
    let dx = up32(&g, &x);
    let h = poisoned16(&g, x.len());
    g.f32_to_f16(dx.ptr, h.ptr, x.len()).unwrap();
    let got: Vec<u16> = g.read::<f16>(h.ptr, x.len()).unwrap().iter().map(|v| v.to_bits()).collect();
    let want: Vec<u16> = x.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
    assert_eq!(got, want, "f32_to_f16");
    let back = poisoned32(&g, x.len());
    g.f16_to_f32(h.ptr, back.ptr, x.len()).unwrap();
    assert_eq!(bits(&read32(&g, &back)), bits(&round16(&x)), "f16_to_f32");
}

#[test]
fn unscale_check_matches_its_twin() {
    let Some(g) = gpu() else { return };
    let (rows, stride, len) = (5, 23, 17);
    let mut x = randn(70, rows * stride, 1e4);
    x[stride + 3] = f32::INFINITY;
    x[3 * stride + 16] = f32::NAN;
    x[3 * stride + 20] = f32::NAN; // outside `len`: not counted
    let dx = up32(&g, &x);
    let mut flag = g.alloc::<u32>(1).unwrap();
    g.upload(&[0u32], &mut flag).unwrap();
    let inv = up32(&g, &[1.0 / 1024.0]);
    g.unscale_check(dx.ptr, stride, rows, len, inv.ptr, flag.ptr).unwrap();
    let bad = loss_scale::unscale_check(&mut x, stride, rows, len, 1.0 / 1024.0);
    assert_eq!(bad, 2);
    assert_eq!(g.read::<u32>(flag.ptr, 1).unwrap()[0] as usize, bad);
    // Bit for bit (a NaN's payload aside: the GPU returns the canonical NaN).
    let canon =
        |v: &[f32]| -> Vec<u32> { v.iter().map(|x| if x.is_nan() { 0x7fc0_0000 } else { x.to_bits() }).collect() };
    assert_eq!(canon(&read32(&g, &dx)), canon(&x), "unscale_check");
}

#[test]
fn optimizer_kernels_match_the_cpu_optimizers_bit_for_bit() {
    let Some(g) = gpu() else { return };
    let (n_gen, n_disc, disc_at) = (3001, 517, 3008);
    let cfg = Config::from_toml_str(&std::fs::read_to_string("configs/mog-ring.toml").unwrap(), "ring", &[]).unwrap();
    for kind in [lockstep::config::OptimizerKind::Adam, lockstep::config::OptimizerKind::Sgd] {
        let adam = kind == lockstep::config::OptimizerKind::Adam;
        let oc = lockstep::config::OptimizerConfig { kind, ..cfg.optimizer.clone() };
        let mut og = Optimizer::new(&oc, 1e-3, n_gen, Direction::Descend);
        let mut od = Optimizer::new(&oc, 3e-3, n_disc, Direction::Ascend);
        let (mut pg, mut pd) = (randn(80, n_gen, 1.0), randn(81, n_disc, 1.0));
        // Device layout: [gen | pad | disc] for p, m, v, p16; the gradient row is [disc | gen].
        let total = disc_at + n_disc;
        let mut p = vec![0.0; total];
        p[..n_gen].copy_from_slice(&pg);
        p[disc_at..].copy_from_slice(&pd);
        let (dp, p16) = (up32(&g, &p), poisoned16(&g, total));
        let (dm, dv) = (up32(&g, &vec![0.0; total]), up32(&g, &vec![0.0; total]));
        let (mut skip, mut bad) = (g.alloc::<u32>(1).unwrap(), g.alloc::<u32>(1).unwrap());
        g.upload(&[0], &mut bad).unwrap();
        let run = |grad: &DevBuf<f32>, coefs: (&DevBuf<f32>, &DevBuf<f32>), skip: &DevBuf<u32>| {
            let moments = adam.then_some((dm.ptr, dv.ptr, oc.beta1 as f32, oc.beta2 as f32, oc.eps as f32));
            let c = (coefs.0.ptr, coefs.1.ptr);
            g.players_step(
                moments,
                dp.ptr,
                grad.ptr,
                p16.ptr,
                (n_gen, n_disc, disc_at),
                (n_disc, 0),
                c,
                skip.ptr,
                bad.ptr,
            )
            .unwrap();
        };
        // A set skip flag changes nothing.
        g.upload(&[1], &mut skip).unwrap();
        let (cg, cd) = (up32(&g, &og.coefficients()), up32(&g, &od.coefficients()));
        run(&up32(&g, &vec![1.0; n_disc + n_gen]), (&cg, &cd), &skip);
        assert_eq!(bits(&read32(&g, &dp)), bits(&p), "{kind:?}: a set skip flag must leave the parameters alone");
        g.upload(&[0], &mut skip).unwrap();
        for step in 0..5u64 {
            let (gg, gd) = (randn(90 + step, n_gen, 0.1), randn(95 + step, n_disc, 0.1));
            let row: Vec<f32> = gd.iter().chain(&gg).copied().collect();
            let (cg, cd) = (up32(&g, &og.coefficients()), up32(&g, &od.coefficients()));
            run(&up32(&g, &row), (&cg, &cd), &skip);
            og.step(&mut pg, &gg);
            od.step(&mut pd, &gd);
        }
        let got = read32(&g, &dp);
        assert_eq!(bits(&got[..n_gen]), bits(&pg), "{kind:?}: generator");
        assert_eq!(bits(&got[disc_at..]), bits(&pd), "{kind:?}: discriminator");
        let h = read16(&g, &p16);
        assert_eq!(bits(&h[..n_gen]), bits(&round16(&pg)), "{kind:?}: fp16 copy");
        assert_eq!(bits(&h[disc_at..]), bits(&round16(&pd)), "{kind:?}: fp16 copy");
        assert_eq!(g.read::<u32>(bad.ptr, 1).unwrap()[0], 0, "no parameter is non-finite");
        if adam {
            let (m, v) = (read32(&g, &dm), read32(&g, &dv));
            assert_eq!(bits(&m[..n_gen]), bits(&og.m), "Adam m");
            assert_eq!(bits(&v[disc_at..]), bits(&od.v), "Adam v");
        }
    }
}

#[test]
fn reduction_kernels_match_the_host_reduction() {
    let Some(g) = gpu() else { return };
    let (rows, stride) = (7, 41);
    let mut x = randn(110, rows * stride, 3e3);
    x[2 * stride + 5] = f32::INFINITY;
    let (inv, one) = (up32(&g, &[1.0 / 4096.0]), up32(&g, &[1.0]));
    let dx = up32(&g, &x);
    let (out, out16) = (poisoned32(&g, stride), poisoned16(&g, 20));
    let mut flag = g.alloc::<u32>(1).unwrap();
    g.upload(&[0], &mut flag).unwrap();
    // Columns 0..20 unscaled (and copied to fp16), 36..41 as they are; 20..36 untouched.
    g.reduce_unscale(dx.ptr, stride, rows, 0..20, inv.ptr, 36..41, one.ptr, out.ptr, out16.ptr, flag.ptr).unwrap();
    let mut host = x.clone();
    loss_scale::unscale_check(&mut host, stride, rows, 20, 1.0 / 4096.0);
    let mut want = vec![0.0; stride];
    trainer::reduce_rows(&host, stride, 0..20, &mut want[..20]);
    trainer::reduce_rows(&host, stride, 36..41, &mut want[36..41]);
    let got = read32(&g, &out);
    assert_eq!(bits(&got[..20]), bits(&want[..20]), "reduce_unscale, scaled columns");
    assert_eq!(bits(&got[36..]), bits(&want[36..]), "reduce_unscale, plain columns");
    assert!(got[20..36].iter().all(|v| v.is_nan()), "reduce_unscale wrote outside its columns");
    assert_eq!(bits(&read16(&g, &out16)), bits(&round16(&want[..20])), "reduce_unscale, fp16 copy");
    assert_eq!(g.read::<u32>(flag.ptr, 1).unwrap()[0], 1, "one non-finite sum (column 5)");

    let (a, b) = (randn(111, 50_000, 0.01), randn(112, 513, 1.0));
    let (da, db, stats) = (up32(&g, &a), up32(&g, &b), up32(&g, &[1.0, 2.0, 3.0, 4.0, 5.0]));
    let (sq, so) = (g.alloc::<f64>(2).unwrap(), poisoned32(&g, 6));
    g.step_report(da.ptr, a.len(), db.ptr, b.len(), sq.ptr, sq.at(1), stats.ptr, so.ptr, 5).unwrap();
    let got = g.read::<f64>(sq.ptr, 2).unwrap();
    for (got, want) in got.iter().zip([trainer::sum_sq(&a), trainer::sum_sq(&b)]) {
        assert!((got - want).abs() <= 1e-12 * want, "step_report: {got} vs {want}");
    }
    let so = read32(&g, &so);
    assert_eq!(&so[..5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
    assert!(so[5].is_nan(), "step_report copied too much");
}

/// The four passes of a network with every layer kind, GPU against CPU, on
/// the fake rows of each chunk's block.
#[test]
fn network_passes_match_the_cpu_network() {
    let Some(g) = gpu() else { return };
    let specs =
        ["scale 0.5", "linear 24", "tanh", "linear 16", "sigmoid", "linear 16", "leaky_relu 0.2", "relu", "linear 3"];
    let layers: Vec<LayerSpec> = specs.iter().map(|s| LayerSpec::parse(s).unwrap()).collect();
    let net = Network::new(layers, 5);
    let (chunks, n) = (3, 8);
    let r = Rows { chunks, block: 2 * n, start: n, count: n };
    let rows = chunks * 2 * n;
    let p = round16(&randn(100, net.n_params, 0.4));
    let v = round16(&randn(101, net.n_params, 0.4));
    let x = round16(&randn(102, rows * net.input, 1.0));
    let xdot = round16(&randn(103, rows * net.input, 1.0));
    let dy = round16(&randn(104, rows * net.output(), 1.0));
    let tb = round16(&randn(105, rows * net.output(), 1.0));
    let (dp, dv, dx, dxdot, ddy, dtb) =
        (up16(&g, &p), up16(&g, &v), up16(&g, &x), up16(&g, &xdot), up16(&g, &dy), up16(&g, &tb));
    let mut dn = DevNet::new(&g, &net, chunks, 2 * n).unwrap();
    let stride = net.n_params + 3;
    let grads = poisoned32(&g, chunks * stride);
    let (xb, xtb, gdx) =
        (poisoned16(&g, rows * net.input), poisoned16(&g, rows * net.input), poisoned16(&g, rows * net.input));

    dn.forward(&g, dp.ptr, dx.ptr, r).unwrap();
    dn.backward(&g, dp.ptr, dx.ptr, r, ddy.ptr, Some(GradOut { base: grads.ptr, stride }), Some(gdx.ptr)).unwrap();
    let y_gpu = g.read::<f16>(dn.output(), rows * net.output()).unwrap();
    let y_gpu: Vec<f32> = y_gpu.iter().map(|h| h.to_f32()).collect();
    let (grads_gpu, dx_gpu) = (read32(&g, &grads), read16(&g, &gdx));
    dn.jvp(&g, dp.ptr, dv.ptr, dx.ptr, Some(dxdot.ptr), r).unwrap();
    let t_gpu: Vec<f32> =
        g.read::<f16>(dn.tangent().unwrap(), rows * net.output()).unwrap().iter().map(|h| h.to_f32()).collect();
    dn.jvp_backward(&g, dp.ptr, dv.ptr, dx.ptr, Some(dxdot.ptr), r, ddy.ptr, dtb.ptr, xb.ptr, Some(xtb.ptr)).unwrap();
    let (xb_gpu, xtb_gpu) = (read16(&g, &xb), read16(&g, &xtb));

    let (wi, wo) = (net.input, net.output());
    let mut ws = Workspace::new(&net, n);
    for c in 0..chunks {
        let at = |v: &[f32], w: usize| v[(c * 2 * n + n) * w..(c * 2 * n + 2 * n) * w].to_vec();
        let (xc, xdc, dyc, tbc) = (at(&x, wi), at(&xdot, wi), at(&dy, wo), at(&tb, wo));
        net.forward(&p, &xc, &mut ws, n);
        assert_close("forward", &at(&y_gpu, wo), net.output_of(&ws, 0..n), 1e-2);
        let mut gr = vec![0.0; net.n_params];
        let mut dxc = vec![0.0; n * wi];
        net.backward(&p, &xc, &mut ws, 0..n, &dyc, Some(&mut gr), Some(&mut dxc));
        assert_close("backward: parameter gradient", &grads_gpu[c * stride..c * stride + net.n_params], &gr, 1e-2);
        assert!(
            grads_gpu[c * stride + net.n_params..(c + 1) * stride].iter().all(|v| v.is_nan()),
            "wrote past the row"
        );
        assert_close("backward: input gradient", &at(&dx_gpu, wi), &dxc, 1e-2);
        net.jvp(&p, &v, &xc, Some(&xdc), &mut ws, 0..n);
        assert_close("jvp", &at(&t_gpu, wo), net.tangent_of(&ws, n).unwrap(), 1e-2);
        let (mut xbc, mut xtbc) = (vec![0.0; n * wi], vec![0.0; n * wi]);
        net.jvp_backward(&p, &v, &xc, Some(&xdc), &mut ws, 0..n, &dyc, &tbc, &mut xbc, Some(&mut xtbc));
        assert_close("jvp_backward x̄", &at(&xb_gpu, wi), &xbc, 1e-2);
        assert_close("jvp_backward ẋ̄", &at(&xtb_gpu, wi), &xtbc, 1e-2);
    }
}

fn config(path: &str, sets: &[&str]) -> Config {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Config::from_toml_str(&std::fs::read_to_string(path).unwrap(), path, &sets).unwrap()
}

/// One step's gradients (phase 1, and phase 2 when eta > 0), reduced over the chunks.
fn step_gradients(be: &mut dyn Backend, cfg: &Config, st: &TrainState, step: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let setup = trainer::setup(cfg).unwrap();
    let lay = setup.game.layout();
    be.set_params(&st.gen, &st.disc).unwrap();
    let k = setup.chunks;
    let eta0 = cfg.train.eta == 0.0;
    let task = ShardTask { step, draw: Draw::First, chunks: 0..k, with_gen_grad: eta0, loss_scale: 1024.0 };
    let mut out = vec![0.0; k * lay.stride()];
    be.phase1(&task, &mut out).unwrap();
    let sum = |out: &[f32], r: std::ops::Range<usize>| -> Vec<f32> {
        let mut s = vec![0.0; r.len()];
        for row in out.chunks(lay.stride()) {
            s.iter_mut().zip(&row[r.clone()]).for_each(|(a, b)| *a += b);
        }
        s
    };
    let (gd, stats) = (sum(&out, lay.disc()), sum(&out, lay.stats()));
    if !eta0 {
        be.phase2(&gd, &mut out).unwrap();
    }
    (gd, sum(&out, lay.gen()), stats)
}

#[test]
fn a_full_step_matches_the_cpu_backend() {
    let Some(_g) = gpu() else { return };
    let cases: &[&[&str]] = &[
        &[],
        &["train.objective=\"nsgan\""],
        &["train.objective=\"wgan\""],
        &["train.eta=0.0"],
        &["train.batch=640", "train.chunk=32"],
    ];
    for sets in cases {
        let cfg = config("configs/mog-ring.toml", sets);
        let setup = trainer::setup(&cfg).unwrap();
        let mut st = TrainState::init(&cfg, &setup.game);
        // Move away from the initial point so the gradients are generic.
        let mut tr =
            Trainer::new(cfg.clone(), setup.game.clone(), st.clone(), vec![Box::new(CpuBackend::new(&setup))]).unwrap();
        for _ in 0..30 {
            tr.step().unwrap();
        }
        st = tr.state.clone();
        let mut cpu = CpuBackend::new(&setup);
        let mut gpu = CudaBackend::new(&setup, 0).unwrap();
        let (cd, cg, cs) = step_gradients(&mut cpu, &cfg, &st, 31);
        let (gd, gg, gs) = step_gradients(&mut gpu, &cfg, &st, 31);
        let e = [rel_err(&gd, &cd), rel_err(&gg, &cg), rel_err(&gs, &cs)];
        println!("{sets:?}: relative error grad_D {:.2e}, grad_G {:.2e}, stats {:.2e}", e[0], e[1], e[2]);
        assert!(e[0] < 2e-2 && e[1] < 2e-2 && e[2] < 2e-2, "{sets:?}: relative errors {e:?}");
    }
}

fn cuda_trainer(cfg: &Config, workers: usize) -> Trainer {
    let setup = trainer::setup(cfg).unwrap();
    let st = TrainState::init(cfg, &setup.game);
    let bes: Vec<Box<dyn Backend>> =
        (0..workers).map(|_| Box::new(CudaBackend::new(&setup, 0).unwrap()) as Box<dyn Backend>).collect();
    Trainer::new(cfg.clone(), setup.game, st, bes).unwrap()
}

#[test]
fn an_overflow_skips_the_step_and_halves_the_scale_and_a_clean_window_doubles_it() {
    let Some(_g) = gpu() else { return };
    let cfg = config("configs/mog-ring.toml", &["train.batch=256"]);
    let mut tr = cuda_trainer(&cfg, 1);
    // 2^40 overflows fp16 (max 65504) in the very first seed.
    tr.state.loss_scale.scale = 2f32.powi(40);
    let before = tr.state.clone();
    let rep = tr.step().unwrap();
    tr.sync().unwrap();
    assert!(rep.skipped, "an fp16 overflow must skip the step");
    assert_eq!(tr.state.loss_scale.scale, 2f32.powi(39));
    assert_eq!((&tr.state.gen, &tr.state.disc), (&before.gen, &before.disc), "a skipped step changes nothing");
    tr.state.loss_scale.scale = 1024.0;
    tr.state.loss_scale.clean = 0;
    for i in 0..loss_scale::WINDOW {
        assert!(!tr.step().unwrap().skipped, "step {i} at scale 1024 overflowed");
    }
    assert_eq!(tr.state.loss_scale.scale, 2048.0, "2000 clean steps double the scale");
}

#[test]
fn two_cuda_workers_give_bitwise_the_parameters_of_one() {
    let Some(_g) = gpu() else { return };
    let cfg = config("configs/mog-ring.toml", &[]);
    let mut one = cuda_trainer(&cfg, 1);
    let mut two = cuda_trainer(&cfg, 2);
    assert!(one.uses_device_step() && !two.uses_device_step());
    for _ in 0..50 {
        one.step().unwrap();
        two.step().unwrap();
    }
    one.sync().unwrap();
    assert_eq!(bits(&one.state.gen), bits(&two.state.gen), "generator");
    assert_eq!(bits(&one.state.disc), bits(&two.state.disc), "discriminator");
}

#[test]
fn mog_ring_trains_to_all_eight_modes_on_the_gpu() {
    let Some(_g) = gpu() else { return };
    let cfg = config("configs/mog-ring.toml", &[]);
    let mut tr = cuda_trainer(&cfg, 1);
    let t = std::time::Instant::now();
    for _ in 0..cfg.train.steps {
        tr.step().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    tr.sync().unwrap();
    let setup = trainer::setup(&cfg).unwrap();
    let samples = lockstep::eval::generate(&setup.game.gen, &tr.state.gen, cfg.log.eval_samples, cfg.train.seed, 2026);
    let points: Vec<[f32; 2]> = samples.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
    let score = lockstep::eval::score(setup.data.mixture().unwrap(), &points);
    println!(
        "mog-ring on the GPU: {} steps in {secs:.1} s ({:.0} steps/s), {} skipped, loss scale {}: {score:?}",
        cfg.train.steps,
        cfg.train.steps as f64 / secs,
        tr.state.skipped,
        tr.state.loss_scale.scale
    );
    assert_eq!(score.modes_covered, 8, "modes covered: {score:?}");
}

/// The whole step as one CUDA graph gives bit for bit what the host-driven
/// step gives on the same GPU: parameters, Adam's moments, the loss scale and
/// the skips, through an injected overflow, for eta > 0, eta = 0 and SGD.
#[test]
fn the_graph_step_matches_the_host_driven_step_bit_for_bit() {
    let Some(_g) = gpu() else { return };
    let cases: &[&[&str]] = &[&[], &["train.eta=0.0"], &["optimizer.kind=\"sgd\"", "optimizer.lr=0.01"]];
    for sets in cases {
        let cfg = config("configs/mog-ring.toml", sets);
        let mut graph = cuda_trainer(&cfg, 1);
        let mut host = cuda_trainer(&cfg, 1);
        host.set_device_step(false).unwrap();
        assert!(graph.uses_device_step() && !host.uses_device_step());
        for step in 0..120 {
            if step == 60 {
                // An overflow: both must skip, halve the scale and carry on alike.
                graph.state.loss_scale.scale = 2f32.powi(40);
                host.state.loss_scale.scale = 2f32.powi(40);
            }
            let (a, b) = (graph.step().unwrap(), host.step().unwrap());
            assert_eq!(a.skipped, b.skipped, "{sets:?} step {step}: skip");
            assert_eq!(a.value.to_bits(), b.value.to_bits(), "{sets:?} step {step}: V");
        }
        graph.sync().unwrap();
        let (g, h) = (&graph.state, &host.state);
        assert!(g.skipped >= 1, "{sets:?}: the injected overflow was not skipped");
        assert_eq!((g.skipped, g.loss_scale, g.opt_gen.t), (h.skipped, h.loss_scale, h.opt_gen.t), "{sets:?}");
        assert_eq!(bits(&g.gen), bits(&h.gen), "{sets:?}: generator");
        assert_eq!(bits(&g.disc), bits(&h.disc), "{sets:?}: discriminator");
        assert_eq!(bits(&g.opt_gen.m), bits(&h.opt_gen.m), "{sets:?}: Adam m");
        assert_eq!(bits(&g.opt_disc.v), bits(&h.opt_disc.v), "{sets:?}: Adam v");
        // Profiling (three graphs per step, timed) changes no result either.
        let p = graph.device_profile(5).unwrap().expect("a device step ran");
        for _ in 0..5 {
            host.step().unwrap();
        }
        graph.sync().unwrap();
        assert_eq!(bits(&graph.state.gen), bits(&host.state.gen), "{sets:?}: after profiled steps");
        println!(
            "{sets:?}: graph of {} nodes ({} kernels), phases {:?} ms",
            p.graph_nodes, p.graph_kernels, p.phase_ms
        );
        assert!(p.graph_kernels > 10 && p.graph_nodes >= p.graph_kernels);
        assert!(p.phase_ms.iter().all(|&ms| ms.is_finite() && ms >= 0.0), "{:?}", p.phase_ms);
    }
}
