//! The CUDA C sources in `kernels/`, embedded, compiled to PTX by NVRTC for
//! the device's architecture and loaded once per device.  One module per op
//! family; each kernel has a CPU twin named in its file's header, and
//! `tests/cuda.rs` compares every kernel with its twin.
//!
//! | family       | kernels                                          | CPU twin                                   |
//! |--------------|--------------------------------------------------|--------------------------------------------|
//! | `activation` | act_forward, act_backward, act_jvp_backward,     | `nn::layer::Activation`                    |
//! |              | bias_act_forward, bias_act_jvp (fused pairs)     | `Linear` bias + `Activation`               |
//! | `linear`     | bias_cast, colsum_chunks                         | `nn::layer::{Linear, column_sums}`         |
//! | `objective`  | phase1_seeds, gen_loss_seeds, phase2_seeds       | `gan::phases::{phase1_seeds, ...}`         |
//! | `rng`        | normals_f16/f32, mixture_f16/f32                 | `rng::Stream::normals`, `data::Mixture`    |
//! | `cast`       | f32_to_f16, f16_to_f32                           | `half::f16`                                |
//! | `loss_scale` | unscale_check                                    | `gan::loss_scale::unscale_check`           |
//! | `optim`      | adam_players, sgd_players (both players)         | `gan::optim::Optimizer::step`              |
//! | `reduce`     | reduce_unscale, step_report                      | `gan::trainer::{reduce_rows, sum_sq}`,     |
//! |              |                                                  | `gan::loss_scale::unscale_check`           |

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::error::{Error, Result};

/// What every family's source is prefixed with (types, the row layout).
const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// One `kernels/<name>.cu` file and the kernels it defines.
pub struct Family {
    pub name: &'static str,
    pub source: &'static str,
    pub kernels: &'static [&'static str],
}

pub const FAMILIES: &[Family] = &[
    Family {
        name: "activation",
        source: include_str!("../../../kernels/activation.cu"),
        kernels: &["act_forward", "act_backward", "act_jvp_backward", "bias_act_forward", "bias_act_jvp"],
    },
    Family {
        name: "linear",
        source: include_str!("../../../kernels/linear.cu"),
        kernels: &["bias_cast", "colsum_chunks"],
    },
    Family {
        name: "objective",
        source: include_str!("../../../kernels/objective.cu"),
        kernels: &["phase1_seeds", "gen_loss_seeds", "phase2_seeds"],
    },
    Family {
        name: "rng",
        source: include_str!("../../../kernels/rng.cu"),
        kernels: &["normals_f16", "normals_f32", "mixture_f16", "mixture_f32"],
    },
    Family { name: "cast", source: include_str!("../../../kernels/cast.cu"), kernels: &["f32_to_f16", "f16_to_f32"] },
    Family { name: "loss_scale", source: include_str!("../../../kernels/loss_scale.cu"), kernels: &["unscale_check"] },
    Family {
        name: "optim",
        source: include_str!("../../../kernels/optim.cu"),
        kernels: &["adam_players", "sgd_players"],
    },
    Family {
        name: "reduce",
        source: include_str!("../../../kernels/reduce.cu"),
        kernels: &["reduce_unscale", "step_report"],
    },
];

/// Threads per block of the objective's per-chunk reductions (HEAD_THREADS in objective.cu).
pub const HEAD_THREADS: u32 = 256;

/// The folder holding `cuda_fp16.h` for NVRTC: `$CUDA_HOME/include`, by
/// default `/usr/local/cuda/include`.
pub fn include_dir() -> Result<PathBuf> {
    include_dir_of(std::env::var_os("CUDA_HOME").map(PathBuf::from))
}

/// `include_dir` for a given CUDA_HOME (None: the default).
pub fn include_dir_of(cuda_home: Option<PathBuf>) -> Result<PathBuf> {
    let home = cuda_home.unwrap_or_else(|| PathBuf::from("/usr/local/cuda"));
    let dir = home.join("include");
    if dir.join("cuda_fp16.h").is_file() {
        Ok(dir)
    } else {
        Err(Error::input(format!(
            "NVRTC needs cuda_fp16.h to compile lockstep's kernels, and {} has none; set CUDA_HOME to the CUDA \
             toolkit (the folder whose include/ holds cuda_fp16.h), or use --backend cpu",
            dir.display()
        )))
    }
}

/// Compiles one family to PTX for `arch` (e.g. "compute_90").  The options
/// keep IEEE division and sqrt and forbid FMA contraction, so the RNG and
/// the optimizers reproduce the CPU's floats exactly.
pub fn compile(family: &Family, arch: &str) -> Result<String> {
    let include = include_dir()?;
    let opts = CompileOptions {
        ftz: Some(false),
        prec_sqrt: Some(true),
        prec_div: Some(true),
        fmad: Some(false),
        include_paths: vec![include.display().to_string()],
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some(format!("{}.cu", family.name)),
        ..Default::default()
    };
    let src = format!("{COMMON}\n#line 1 \"{}.cu\"\n{}", family.name, family.source);
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(src, opts)
        .map_err(|e| Error::runtime(format!("NVRTC could not compile kernels/{}.cu for {arch}: {e}", family.name)))?;
    Ok(ptx.to_src())
}

/// Whether NVRTC's library can be loaded (probed before any NVRTC call:
/// cudarc panics when it is missing).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Every family's PTX for `arch`, compiled once per process.
fn ptx_for(arch: &str) -> Result<Arc<Vec<String>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Vec<String>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache.lock().expect("ptx cache").get(arch) {
        return Ok(p.clone());
    }
    let ptx = Arc::new(FAMILIES.iter().map(|f| compile(f, arch)).collect::<Result<Vec<_>>>()?);
    cache.lock().expect("ptx cache").insert(arch.to_string(), ptx.clone());
    Ok(ptx)
}

/// The loaded kernels of one device, by name.
pub struct Kernels {
    functions: HashMap<&'static str, CudaFunction>,
}

impl Kernels {
    /// Compiles (once per process) and loads every family into `ctx`.
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Kernels> {
        let (major, minor) = ctx.compute_capability().map_err(|e| Error::runtime(format!("CUDA: {e}")))?;
        let arch = format!("compute_{major}{minor}");
        let ptx = ptx_for(&arch)?;
        let mut functions = HashMap::new();
        for (family, src) in FAMILIES.iter().zip(ptx.iter()) {
            let module = ctx.load_module(Ptx::from_src(src.clone())).map_err(|e| {
                Error::runtime(format!("CUDA could not load the PTX of kernels/{}.cu: {e}", family.name))
            })?;
            for &k in family.kernels {
                let f = module
                    .load_function(k)
                    .map_err(|e| Error::runtime(format!("kernels/{}.cu has no kernel {k}: {e}", family.name)))?;
                functions.insert(k, f);
            }
        }
        Ok(Kernels { functions })
    }

    pub fn get(&self, name: &str) -> &CudaFunction {
        self.functions.get(name).unwrap_or_else(|| panic!("no kernel named {name} in kernels/*.cu"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_cuda_fp16_h_is_a_clear_input_error() {
        let home = std::env::temp_dir().join(format!("lockstep-no-cuda-{}", std::process::id()));
        std::fs::create_dir_all(home.join("include")).unwrap();
        let e = include_dir_of(Some(home.clone())).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let m = e.to_string();
        assert!(m.contains("cuda_fp16.h") && m.contains("CUDA_HOME") && m.contains("--backend cpu"), "{m}");
        std::fs::write(home.join("include/cuda_fp16.h"), "").unwrap();
        assert_eq!(include_dir_of(Some(home.clone())).unwrap(), home.join("include"));
        std::fs::remove_dir_all(&home).unwrap();
    }
}
