//! The commands behind the CLI (main.rs parses flags and calls these).

pub mod bench;
pub mod cluster;
pub mod eval;
pub mod plot;
pub mod stability;
pub mod train;

use crate::error::{Error, Result};

/// Sets the number of CPU threads (0: one per core).  Only the first call counts.
pub fn set_threads(threads: usize) -> Result<()> {
    if threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| Error::runtime(format!("cannot start {threads} threads: {e}")))?;
    }
    Ok(())
}
