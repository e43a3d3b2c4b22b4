//! lockstep: a GAN trainer implementing Nagarajan & Kolter's locally stable
//! gradient descent (NeurIPS 2017).
//!
//! Data flows one way: `config` → `gan::trainer` (the coordinator's loop) →
//! `backend` (a replica computing the two phases on chunks, `gan::phases`
//! over `nn`) → per-chunk partial sums → reduction in chunk order →
//! `gan::optim` → `checkpoint` / `telemetry`.

pub mod backend;
pub mod checkpoint;
pub mod cmd;
pub mod config;
pub mod data;
pub mod dist;
pub mod error;
pub mod eval;
pub mod f32le;
pub mod fsutil;
pub mod gan;
pub mod nn;
pub mod npy;
pub mod plot;
pub mod rng;
pub mod stability;
pub mod telemetry;
pub mod toy;

pub use error::{Error, Result};
