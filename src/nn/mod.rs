//! Layers and sequential networks with their four passes (forward, backward,
//! jvp, jvp_backward) on the CPU, generic over f32, f64 and dual numbers,
//! and the orthogonal initialisation.

pub mod conv;
pub mod float;
pub mod init;
pub mod layer;
pub mod network;
pub mod shape;

pub use float::{Dual, Float};
pub use layer::{Activation, LayerSpec};
pub use network::{Network, ParamTensor, Workspace};
pub use shape::Shape;
