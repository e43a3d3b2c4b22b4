//! `lockstep coordinator` and `lockstep worker`: the cluster's two halves.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::train::{self, Summary, TrainOptions};
use crate::backend::BackendSpec;
use crate::dist::{auth, local, worker};
use crate::error::{Error, Result};

pub struct CoordinatorOptions {
    /// The run: config, --out, --steps, --seed, --set, --resume (workers and transport unused).
    pub run: TrainOptions,
    pub listen: String,
    pub min_workers: usize,
    pub token_file: Option<PathBuf>,
    /// How long to wait for --min-workers before giving up.
    pub wait: Duration,
    /// How long a worker may take for one phase before it is evicted.
    pub phase_deadline: Duration,
}

pub fn run_coordinator(o: &CoordinatorOptions) -> Result<Summary> {
    if o.min_workers == 0 {
        return Err(Error::input("--min-workers 0: give at least 1"));
    }
    if o.run.out.is_none() {
        return Err(Error::input("the coordinator needs --out DIR (where checkpoints and metrics go)"));
    }
    let token = o.token_file.as_deref().map(auth::read_token).transpose()?;
    let addr = o
        .listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::input(format!("--listen {}: expected HOST:PORT, e.g. 0.0.0.0:7070", o.listen)))?;
    auth::check_listen(&addr, token.as_deref())?;
    super::set_threads(o.run.threads)?;
    let p = train::prepare(&o.run)?;
    if o.phase_deadline.is_zero() {
        return Err(Error::input("--phase-deadline must be at least 1 second"));
    }
    let (server, lobby) = local::serve(&p.cfg, &o.listen, token, o.phase_deadline)?;
    eprintln!("lockstep: coordinator listening on {}; waiting for {} worker(s)", server.addr, o.min_workers);
    let workers = lobby.wait_for(o.min_workers, o.wait)?;
    let workers = workers.into_iter().map(|w| Box::new(w) as Box<dyn crate::backend::Backend>).collect();
    let joiner = Box::new(move || {
        lobby.take_waiting().into_iter().map(|w| Box::new(w) as Box<dyn crate::backend::Backend>).collect()
    });
    let summary = train::train_on(p, workers, Some(joiner), o.run.quiet)?;
    drop(server);
    Ok(summary)
}

pub struct WorkerOptions {
    pub coordinator: String,
    pub backend: BackendSpec,
    pub token_file: Option<PathBuf>,
    pub threads: usize,
    /// How long to keep trying to reach the coordinator after the last session.
    pub retry_for: Duration,
}

/// Serves sessions until the coordinator ends one normally (training done),
/// reconnecting with backoff when the coordinator goes away.
pub fn run_worker(o: &WorkerOptions) -> Result<()> {
    super::set_threads(o.threads)?;
    let token = o.token_file.as_deref().map(auth::read_token).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the gRPC runtime: {e}")))?;
    let mut backoff = Duration::from_secs(1);
    let mut failing_since: Option<Instant> = None;
    loop {
        let mut connected = false;
        let r = rt.block_on(async {
            let ch = worker::connect(&o.coordinator).await?;
            connected = true;
            eprintln!("lockstep: worker connected to {}", o.coordinator);
            worker::run_session(ch, o.backend, token.clone()).await
        });
        if connected {
            failing_since = None;
            backoff = Duration::from_secs(1);
        }
        match r {
            Ok(()) => {
                eprintln!("lockstep: the coordinator closed the session (training finished); worker exits");
                return Ok(());
            }
            Err(e @ Error::Input(_)) => return Err(e),
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > o.retry_for {
                    return Err(Error::runtime(format!(
                        "{e}; gave up after {:.0} s of retries (--retry-for)",
                        o.retry_for.as_secs_f64()
                    )));
                }
                eprintln!("lockstep: worker: {e}; retrying in {} s", backoff.as_secs());
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
