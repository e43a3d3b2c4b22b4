//! Distribution over gRPC: the coordinator's service, the worker's session,
//! and `RemoteWorker`, which makes a worker across the wire look like any
//! other `Backend` to the trainer.  Local mode with `--transport grpc` runs
//! the same over loopback.

pub mod auth;
pub mod coordinator;
pub mod local;
pub mod remote;
pub mod tls;
pub mod validate;
pub mod wire;
pub mod worker;

/// The generated protocol (proto/lockstep.proto).
pub mod proto {
    tonic::include_proto!("lockstep.v1");
}

/// How the status of an eviction (ABORTED) begins, for the worker to tell it.
pub const EVICTED: &str = "evicted this worker";

/// Bumped whenever the messages change meaning; a worker of another version is refused.
pub const PROTOCOL_VERSION: u32 = 5;
