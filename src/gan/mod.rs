//! The game: the objective, the two phases of a step on a chunk, the
//! optimizers, loss scaling, the trainer that drives steps and reduces partial
//! sums, and the same step on one backend for a worker running whole steps.

pub mod host_step;
pub mod loss_scale;
pub mod objective;
pub mod optim;
pub mod phases;
pub mod reduce;
pub mod trainer;
