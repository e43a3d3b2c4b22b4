//! The game: the objective, the two phases of a step on a chunk, the
//! optimizers, and the trainer that drives steps and reduces partial sums.

pub mod objective;
pub mod optim;
pub mod phases;
pub mod trainer;
