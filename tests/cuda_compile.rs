//! The kernels compile with NVRTC for the GPUs lockstep targets.  Needs only
//! NVRTC and cuda_fp16.h, not a GPU; skips, saying why, without them.

use lockstep::backend::cuda::kernels::{compile, include_dir, nvrtc_present, FAMILIES};

#[test]
fn every_kernel_family_compiles_with_nvrtc() {
    if !nvrtc_present() {
        println!("skipped: NVRTC (libnvrtc) not found; set LD_LIBRARY_PATH to the CUDA toolkit's lib folder");
        return;
    }
    if let Err(e) = include_dir() {
        println!("skipped: {e}");
        return;
    }
    for arch in ["compute_80", "compute_90"] {
        for f in FAMILIES {
            let ptx = compile(f, arch).unwrap_or_else(|e| panic!("{e}"));
            for k in f.kernels {
                assert!(ptx.contains(&format!(".entry {k}(")), "kernels/{}.cu: no entry {k} in the PTX", f.name);
            }
        }
    }
}
