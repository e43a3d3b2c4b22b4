//! One error type for the whole crate.
//!
//! Errors fall in classes that map to exit codes: bad input from the user
//! (a config, a flag, a checkpoint or a dataset; exit code 2), failures of
//! the run itself (I/O, a backend; exit code 1), and a worker the
//! coordinator evicted (exit code 3, so that a supervisor can tell it).  Every message is
//! one line that names what is wrong and, where possible, how to fix it.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a config key, a flag value, a corrupt file.  Exit code 2.
    #[error("{0}")]
    Input(String),
    /// The run failed for a reason that is not the user's input.  Exit code 1.
    #[error("{0}")]
    Runtime(String),
    /// The coordinator evicted this worker (the message says why and what to do).  Exit code 3.
    #[error("{0}")]
    Evicted(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }

    pub fn runtime(msg: impl Into<String>) -> Self {
        Error::Runtime(msg.into())
    }

    /// An I/O failure on `path`, phrased for a person.
    pub fn io(path: &Path, what: &str, e: std::io::Error) -> Self {
        Error::Runtime(format!("{}: cannot {what}: {e}", path.display()))
    }

    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => 2,
            Error::Runtime(_) => 1,
            Error::Evicted(_) => 3,
        }
    }
}
