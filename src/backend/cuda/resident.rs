//! The whole training step on the GPU, captured once as a CUDA graph and
//! replayed every step: the step's inputs copied from pinned host memory,
//! phase 1 on every chunk, the in-order reduction of the partial sums (which
//! also unscales them, counts non-finite sums and casts v to fp16), phase 2
//! and its reduction, both optimizers on the fp32 master weights in one
//! launch (gated on the device by the non-finite count), the report copied
//! back.  The host waits once per step, for the report (it decides the loss
//! scale and counts the skip).  The same arithmetic in the same order as the
//! host-driven step on this backend, so the results are bit for bit the same
//! (tests/cuda.rs).

use cudarc::driver::sys::{CUevent_flags, CUgraphInstantiate_flags, CUgraphNodeType, CUstreamCaptureMode};
use cudarc::driver::{CudaEvent, CudaGraph};

use super::device::{cuda_err, DevBuf, Pinned};
use super::{CudaBackend, StepIn, StepOut};
use crate::backend::{Draw, StepInput, StepOutput, StepProfile};
use crate::config::OptimizerKind;
use crate::error::{Error, Result};
use crate::gan::optim::Optimizer;
use crate::gan::phases::stat;

/// One player's optimizer as the kernels take it.
#[derive(Debug, Clone, Copy)]
struct OptSpec {
    adam: bool,
    b1: f32,
    b2: f32,
    eps: f32,
}

impl OptSpec {
    fn of(o: &Optimizer) -> OptSpec {
        OptSpec { adam: o.kind == OptimizerKind::Adam, b1: o.beta1 as f32, b2: o.beta2 as f32, eps: o.eps as f32 }
    }
}

/// A captured graph.
struct Captured(CudaGraph);

// SAFETY: a graph's handles may be used from any thread once its context is
// current there (cudarc binds it on launch); the backend owning it is used by
// one thread at a time.
unsafe impl Send for Captured {}

pub struct Resident {
    /// Adam's moments, in the layout of the master weights ([gen | pad | disc]).
    m: DevBuf<f32>,
    v: DevBuf<f32>,
    /// The reduced row of partial sums: [grad_D | grad_G | stats].
    sum: DevBuf<f32>,
    host_in: Pinned,
    host_out: Pinned,
    /// Both players' optimizer (one config: the kind, betas and eps are shared).
    opt: OptSpec,
    /// The whole step, or its three parts when profiling (None: an empty part).
    graphs: Vec<Option<Captured>>,
    /// Whether the graphs compute grad_G in phase 1 (eta = 0).
    with_gen_grad: bool,
    /// (nodes, kernel nodes) of the whole step's graph.
    counts: (usize, usize),
    profiling: bool,
    /// Recorded between the parts when profiling; summed milliseconds per part.
    events: [CudaEvent; 4],
    part_ms: [f64; 3],
    profiled_steps: u64,
}

impl CudaBackend {
    /// Enqueues part `part` of a step (what the graph captures): 0 the
    /// step's inputs and phase 1 with its reduction, 1 phase 2 with its
    /// reduction, 2 the optimizers and the report.
    fn enqueue_part(&mut self, part: usize, with_gen_grad: bool) -> Result<()> {
        let (k, stride, lay) = (self.setup.chunks, self.layout.stride(), self.layout);
        let sum = self.resident.as_ref().expect("loaded").sum.ptr;
        let (inv, one) = (self.step_in_at(StepIn::INV_SCALE), self.step_in_at(StepIn::ONE));
        let out = self.step_out.ptr;
        let flag = out + StepOut::NONFINITE;
        match part {
            0 => {
                let r = self.resident.as_ref().expect("loaded");
                self.gpu.copy_from_pinned(self.step_in.ptr, &r.host_in)?;
                self.gpu.zero(out, StepOut::WORDS * 4)?;
                self.enqueue_phase1(0..k, Draw::First, with_gen_grad, false)?;
                // grad_D (and grad_G when eta = 0) unscaled and added in chunk order, the stats
                // added; v in fp16 for phase 2; the non-finite sums counted.
                let grads = if with_gen_grad { 0..lay.n_disc + lay.n_gen } else { lay.disc() };
                let v16 = if with_gen_grad { 0 } else { self.v16.ptr };
                self.gpu.reduce_unscale(self.partials.ptr, stride, k, grads, inv, lay.stats(), one, sum, v16, flag)
            }
            1 if !with_gen_grad => {
                self.enqueue_phase2(k, None, false)?;
                self.gpu.reduce_unscale(self.partials.ptr, stride, k, lay.gen(), inv, 0..0, one, sum, 0, flag)
            }
            1 => Ok(()),
            _ => {
                let r = self.resident.as_ref().expect("loaded");
                let o = r.opt;
                let adam = o.adam.then_some((r.m.ptr, r.v.ptr, o.b1, o.b2, o.eps));
                let coefs = (self.step_in_at(StepIn::GEN), self.step_in_at(StepIn::DISC));
                let sizes = (lay.n_gen, lay.n_disc, self.disc_at);
                let (p, p16, bad) = (self.master.ptr, self.params.ptr, out + StepOut::BAD_PARAMS);
                // Both players, only when every sum is finite (the flag gates it on the device).
                self.gpu.players_step(adam, p, sum, p16, sizes, (lay.n_disc, 0), coefs, flag, bad)?;
                let (gsum, stats) = (r.sum.at(lay.n_disc), r.sum.at(lay.stats().start));
                let (sq_d, sq_g) = (out + StepOut::SQ_DISC, out + StepOut::SQ_GEN);
                self.gpu.step_report(
                    sum,
                    lay.n_disc,
                    gsum,
                    lay.n_gen,
                    sq_d,
                    sq_g,
                    stats,
                    out + StepOut::STATS,
                    stat::COUNT,
                )?;
                let r = self.resident.as_mut().expect("loaded");
                self.gpu.copy_to_pinned(&mut r.host_out, out)
            }
        }
    }

    /// Captures parts `parts` of the step into one graph (None: nothing to do, e.g. phase 2 when eta = 0).
    fn capture(&mut self, parts: std::ops::Range<usize>, with_gen_grad: bool) -> Result<Option<CudaGraph>> {
        self.gpu.sync()?;
        let stream = self.gpu.stream.clone();
        stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(cuda_err("capture"))?;
        let mut enqueued = Ok(());
        for p in parts {
            enqueued = enqueued.and_then(|_| self.enqueue_part(p, with_gen_grad));
        }
        let graph = stream.end_capture(CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH);
        enqueued?;
        graph.map_err(cuda_err("graph"))
    }

    /// The graphs of a step: the whole step as one graph, or, when
    /// profiling, its three parts as three graphs timed by events between
    /// them.  Shapes are fixed per run, so this runs once (again only when
    /// profiling is switched).
    fn ensure_captured(&mut self, with_gen_grad: bool) -> Result<()> {
        let r = self.resident.as_ref().expect("loaded");
        if !r.graphs.is_empty() && r.with_gen_grad == with_gen_grad {
            return Ok(());
        }
        let profiling = r.profiling;
        let whole =
            self.capture(0..3, with_gen_grad)?.ok_or_else(|| Error::runtime("CUDA: the captured step is empty"))?;
        let counts = count_nodes(&whole)?;
        let graphs = if profiling {
            (0..3).map(|p| self.capture(p..p + 1, with_gen_grad)).collect::<Result<Vec<_>>>()?
        } else {
            vec![Some(whole)]
        };
        let r = self.resident.as_mut().expect("loaded");
        r.graphs = graphs.into_iter().map(|g| g.map(Captured)).collect();
        r.with_gen_grad = with_gen_grad;
        r.counts = counts;
        Ok(())
    }
}

fn event(gpu: &super::device::Gpu) -> Result<CudaEvent> {
    gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(cuda_err("event"))
}

fn words_f64(w: &[u32], byte: u64) -> f64 {
    let i = byte as usize / 4;
    f64::from_bits(w[i] as u64 | (w[i + 1] as u64) << 32)
}

impl crate::backend::DeviceStep for CudaBackend {
    fn load(&mut self, gen: &[f32], disc: &[f32], opt: [&Optimizer; 2]) -> Result<()> {
        use crate::backend::Backend;
        let (a, b) = (OptSpec::of(opt[0]), OptSpec::of(opt[1]));
        if (a.adam, a.b1, a.b2, a.eps) != (b.adam, b.b1, b.b2, b.eps) {
            return Err(Error::runtime(
                "cuda backend: the device step needs one optimizer kind, betas and eps for both players",
            ));
        }
        self.set_params(gen, disc)?;
        let total = self.master.len();
        let gpu = &self.gpu;
        let mut r = Resident {
            m: gpu.alloc(total)?,
            v: gpu.alloc(total)?,
            sum: gpu.alloc(self.layout.stride())?,
            host_in: Pinned::new(gpu, StepIn::WORDS)?,
            host_out: Pinned::new(gpu, StepOut::WORDS)?,
            opt: OptSpec::of(opt[0]),
            graphs: Vec::new(),
            with_gen_grad: false,
            counts: (0, 0),
            profiling: false,
            events: [event(gpu)?, event(gpu)?, event(gpu)?, event(gpu)?],
            part_ms: [0.0; 3],
            profiled_steps: 0,
        };
        for (buf, [g, d]) in [(&mut r.m, [&opt[0].m, &opt[1].m]), (&mut r.v, [&opt[0].v, &opt[1].v])] {
            self.stage_players(g, d);
            self.gpu.upload(&self.staged, buf)?;
        }
        self.resident = Some(r);
        Ok(())
    }

    fn step(&mut self, input: &StepInput, with_gen_grad: bool) -> Result<StepOutput> {
        let r = self.resident.as_mut().ok_or_else(|| Error::runtime("cuda backend: device step before load"))?;
        let words = StepIn { step: input.step, loss_scale: input.loss_scale, gen: input.gen, disc: input.disc }.words();
        r.host_in.words_mut().copy_from_slice(&words);
        self.ensure_captured(with_gen_grad)?;
        let r = self.resident.as_mut().expect("loaded");
        let stream = &self.gpu.stream;
        for (i, g) in r.graphs.iter().enumerate() {
            if r.profiling {
                r.events[i].record(stream).map_err(cuda_err("event"))?;
            }
            if let Some(g) = g {
                g.0.launch().map_err(cuda_err("graph launch"))?;
            }
        }
        if r.profiling {
            r.events[3].record(stream).map_err(cuda_err("event"))?;
        }
        self.gpu.sync()?;
        if r.profiling {
            for i in 0..3 {
                r.part_ms[i] += r.events[i].elapsed_ms(&r.events[i + 1]).map_err(cuda_err("event timing"))? as f64;
            }
            r.profiled_steps += 1;
        }
        let w = r.host_out.words();
        let mut stats = [0.0f32; stat::COUNT];
        for (i, s) in stats.iter_mut().enumerate() {
            *s = f32::from_bits(w[StepOut::STATS as usize / 4 + i]);
        }
        Ok(StepOutput {
            nonfinite: w[StepOut::NONFINITE as usize / 4],
            bad_params: w[StepOut::BAD_PARAMS as usize / 4],
            stats,
            sq_norm_disc: words_f64(w, StepOut::SQ_DISC),
            sq_norm_gen: words_f64(w, StepOut::SQ_GEN),
        })
    }

    fn store(&mut self, gen: &mut [f32], disc: &mut [f32], opt: [&mut Optimizer; 2]) -> Result<()> {
        let r = self.resident.as_ref().ok_or_else(|| Error::runtime("cuda backend: store before load"))?;
        let mut host = vec![0.0f32; self.master.len()];
        let [og, od] = opt;
        self.gpu.download(&self.master, &mut host)?;
        let (g, d) = self.players(&host);
        gen.copy_from_slice(g);
        disc.copy_from_slice(d);
        // Adam's moments (SGD has none: empty vectors stay empty).
        for (buf, mg, md) in [(&r.m, &mut og.m, &mut od.m), (&r.v, &mut og.v, &mut od.v)] {
            if mg.is_empty() {
                continue;
            }
            self.gpu.download(buf, &mut host)?;
            let (g, d) = self.players(&host);
            mg.copy_from_slice(g);
            md.copy_from_slice(d);
        }
        Ok(())
    }

    fn set_profiling(&mut self, on: bool) -> Result<()> {
        let r = self.resident.as_mut().ok_or_else(|| Error::runtime("cuda backend: profiling before load"))?;
        if r.profiling != on {
            r.profiling = on;
            r.graphs.clear();
            r.part_ms = [0.0; 3];
            r.profiled_steps = 0;
        }
        Ok(())
    }

    fn profile(&mut self) -> Result<StepProfile> {
        let r = self.resident.as_ref().ok_or_else(|| Error::runtime("cuda backend: no device step yet"))?;
        let per = |i: usize| (r.part_ms[i] / r.profiled_steps.max(1) as f64) as f32;
        Ok(StepProfile {
            graph_nodes: r.counts.0,
            graph_kernels: r.counts.1,
            phase_ms: if r.profiled_steps > 0 { [per(0), per(1), per(2)] } else { [f32::NAN; 3] },
            device_memory_mib: self.gpu.allocated_bytes() as f64 / (1 << 20) as f64,
        })
    }
}

/// (all nodes, kernel nodes) of a captured graph.
fn count_nodes(g: &CudaGraph) -> Result<(usize, usize)> {
    use cudarc::driver::sys;
    let mut n = 0usize;
    // SAFETY: a null node array asks for the count only.
    unsafe { sys::cuGraphGetNodes(g.cu_graph(), std::ptr::null_mut(), &mut n) }
        .result()
        .map_err(cuda_err("graph nodes"))?;
    let mut nodes = vec![std::ptr::null_mut(); n];
    // SAFETY: `nodes` has room for `n` handles.
    unsafe { sys::cuGraphGetNodes(g.cu_graph(), nodes.as_mut_ptr(), &mut n) }
        .result()
        .map_err(cuda_err("graph nodes"))?;
    let mut kernels = 0;
    for node in nodes {
        let mut t = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
        // SAFETY: `node` is a node of the graph.
        unsafe { sys::cuGraphNodeGetType(node, &mut t) }.result().map_err(cuda_err("graph node"))?;
        kernels += (t == CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL) as usize;
    }
    Ok((n, kernels))
}
