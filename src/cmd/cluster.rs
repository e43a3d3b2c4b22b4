//! `lockstep coordinator` and `lockstep worker`: the cluster's two halves.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::train::{self, Summary, TrainOptions};
use crate::backend::BackendSpec;
use crate::dist::{auth, local, tls, worker};
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
    /// TLS: the certificate chain and its private key (PEM); plaintext without.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Listen beyond loopback without TLS (a network you trust).
    pub allow_plaintext: bool,
}

/// The coordinator's TLS, when both files are given.
fn server_tls(o: &CoordinatorOptions) -> Result<Option<tonic::transport::ServerTlsConfig>> {
    match (&o.tls_cert, &o.tls_key) {
        (Some(c), Some(k)) => Ok(Some(tls::server_config(c, k)?)),
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::input("--tls-cert needs --tls-key FILE (the certificate's private key, PEM)")),
        (None, Some(_)) => Err(Error::input("--tls-key needs --tls-cert FILE (the certificate chain, PEM)")),
    }
}

pub fn run_coordinator(o: &CoordinatorOptions) -> Result<Summary> {
    if o.min_workers == 0 {
        return Err(Error::input("--min-workers 0: give at least 1"));
    }
    if o.run.out.is_none() {
        return Err(Error::input("the coordinator needs --out DIR (where checkpoints and metrics go)"));
    }
    let token = o.token_file.as_deref().map(auth::read_token).transpose()?;
    let tls = server_tls(o)?;
    let addr = o
        .listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::input(format!("--listen {}: expected HOST:PORT, e.g. 0.0.0.0:7070", o.listen)))?;
    auth::check_listen(&addr, token.as_deref(), tls.is_some(), o.allow_plaintext)?;
    super::set_threads(o.run.threads)?;
    let p = train::prepare(&o.run)?;
    if o.phase_deadline.is_zero() {
        return Err(Error::input("--phase-deadline must be at least 1 second"));
    }
    let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
    let (server, lobby) = local::serve(&p.cfg, &o.listen, local::Access { token, tls }, o.phase_deadline)?;
    eprintln!("lockstep: coordinator listening on {} ({scheme}); waiting for {} worker(s)", server.addr, o.min_workers);
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
    /// TLS: the certificate to trust (PEM) and the server name to verify.
    pub tls_ca: Option<PathBuf>,
    pub tls_domain: Option<String>,
    /// This worker's copy of the dataset (default: the path in the coordinator's config).
    pub data_path: Option<String>,
}

/// Serves sessions until the coordinator ends one normally (training done),
/// reconnecting with backoff when the coordinator goes away.
pub fn run_worker(o: &WorkerOptions) -> Result<()> {
    super::set_threads(o.threads)?;
    if o.threads == 0 && o.backend.choice != crate::backend::BackendChoice::Synthetic {
        // rayon's default: std's available_parallelism, which counts the CPUs
        // of this process's affinity mask within its cgroup's CPU quota.
        eprintln!(
            "lockstep: worker: {} CPU threads (what this process's CPU affinity and quota allow; --threads to change)",
            rayon::current_num_threads()
        );
    }
    let token = o.token_file.as_deref().map(auth::read_token).transpose()?;
    let tls = match (&o.tls_ca, &o.tls_domain) {
        (Some(ca), d) => Some(tls::client_config(ca, d.as_deref())?),
        (None, Some(_)) => {
            return Err(Error::input("--tls-domain needs --tls-ca FILE (the certificate to trust, PEM)"))
        }
        (None, None) => None,
    };
    // One thread: the session reads a request, computes and writes its
    // result on it (see worker::run_session), with no hand-over between threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the gRPC runtime: {e}")))?;
    let mut backoff = Duration::from_secs(1);
    let mut failing_since: Option<Instant> = None;
    loop {
        let (mut connected, mut joined) = (false, false);
        let r = rt.block_on(async {
            let ch = worker::connect_with(&o.coordinator, tls.clone()).await?;
            connected = true;
            eprintln!("lockstep: worker connected to {}", o.coordinator);
            worker::run_session_noting(ch, o.backend, token.clone(), o.data_path.as_deref(), &mut joined).await
        });
        // Only a session that joined resets the retries: a coordinator that
        // accepts connections but never welcomes this worker is given up on.
        if joined {
            failing_since = None;
            backoff = Duration::from_secs(1);
        }
        let r = match r {
            // Connected but not welcomed, in plaintext: a TLS coordinator looks like this.
            Err(Error::Runtime(m)) if connected && !joined && tls.is_none() => Err(Error::runtime(format!(
                "{m} (if the coordinator serves TLS, started with --tls-cert, give this worker --tls-ca FILE)"
            ))),
            r => r,
        };
        match r {
            Ok(()) => {
                eprintln!("lockstep: the coordinator closed the session (training finished); worker exits");
                return Ok(());
            }
            Err(e @ (Error::Input(_) | Error::Evicted(_))) => return Err(e),
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
