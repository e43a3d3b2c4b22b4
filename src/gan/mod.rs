//! The game: the objective, the two phases of a step on a chunk, the
//! optimizers, loss scaling, and the trainer that drives steps and reduces partial sums.

pub mod loss_scale;
pub mod objective;
pub mod optim;
pub mod phases;
pub mod trainer;
