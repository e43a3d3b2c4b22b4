//! Layers and sequential networks with their four passes (forward, backward,
//! jvp, jvp_backward) on the CPU, generic over f32 and f64, and the
//! orthogonal initialisation.

pub mod conv;
pub mod float;
pub mod init;
pub mod layer;
pub mod network;
pub mod shape;

pub use float::Float;
pub use layer::{Activation, LayerSpec};
pub use network::{Network, ParamTensor, Workspace};
pub use shape::Shape;
