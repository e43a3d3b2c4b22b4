//! The `lockstep` command line: flags in, one library call out.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lockstep::backend::{BackendChoice, BackendSpec};
use lockstep::cmd::{bench, cluster, eval, plot, train};
use lockstep::{toy, Result};

#[derive(Parser)]
#[command(name = "lockstep", version, about = "GAN training made locally stable (Nagarajan & Kolter, 2017)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What defines a run, for `train` and `coordinator` alike.
#[derive(clap::Args)]
struct RunArgs {
    /// The config file, e.g. configs/mog-ring.toml (optional with --resume).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The run directory (default runs/<name>-<timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Total steps (overrides train.steps).
    #[arg(long)]
    steps: Option<u64>,
    /// Seed (overrides train.seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Override a config key, e.g. --set train.eta=0 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue the run in --out (or the newest run of the config) from its newest checkpoint.
    #[arg(long)]
    resume: bool,
    /// CPU threads; with --workers N each in-process worker gets this many
    /// of its own (0: one per core, shared by the workers).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    /// Serve Prometheus metrics on HOST:PORT.
    #[arg(long)]
    metrics_listen: Option<String>,
}

impl RunArgs {
    fn options(self, workers: usize, backend: BackendSpec, transport: train::Transport) -> train::TrainOptions {
        let RunArgs { config, out, steps, seed, sets, resume, threads, quiet, metrics_listen: _ } = self;
        train::TrainOptions { config, out, steps, seed, sets, resume, backend, workers, transport, threads, quiet }
    }
}

/// Which backend computes, for `train`, `worker` and `bench`.
#[derive(clap::Args)]
struct BackendArgs {
    /// auto, cpu or cuda; or synthetic: pseudo-gradients of the model's size
    /// after --synthetic-ms, a load test of the control plane that trains nothing.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// The GPU to use (cuda, or auto when it picks CUDA).
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// With --backend synthetic: the milliseconds one phase takes on the
    /// whole minibatch (a shard takes its share).
    #[arg(long, value_name = "MS", default_value_t = lockstep::backend::synthetic::DEFAULT_MS)]
    synthetic_ms: f64,
}

impl BackendArgs {
    fn spec(&self) -> Result<BackendSpec> {
        if !(self.synthetic_ms.is_finite() && self.synthetic_ms >= 0.0) {
            return Err(lockstep::Error::input(format!(
                "--synthetic-ms {}: give a number of milliseconds, 0 or more",
                self.synthetic_ms
            )));
        }
        let mut spec = BackendSpec::new(self.backend, self.device);
        spec.synthetic = std::time::Duration::from_secs_f64(self.synthetic_ms * 1e-3);
        Ok(spec)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train in local mode: an embedded coordinator and its workers in one process.
    Train {
        #[command(flatten)]
        run: RunArgs,
        /// Number of workers.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// inproc (direct calls) or grpc (the same over loopback gRPC).
        #[arg(long, default_value = "inproc")]
        transport: train::Transport,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Cluster coordinator: serves workers over gRPC and trains.
    Coordinator {
        #[command(flatten)]
        run: RunArgs,
        /// HOST:PORT to listen on; beyond loopback a --token-file is required.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// Workers to wait for before the first step.
        #[arg(long, default_value_t = 1)]
        min_workers: usize,
        /// Seconds to wait for --min-workers.
        #[arg(long, default_value_t = 600)]
        wait_seconds: u64,
        /// A file holding the shared token (at least 16 characters).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Seconds a worker may take for one phase before it is evicted.
        #[arg(long, default_value_t = 60)]
        phase_deadline: u64,
        /// Serve TLS only, with this certificate chain (PEM); needs --tls-key.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Listen beyond loopback without TLS: the token and the traffic
        /// cross the network in clear (only on a network you trust).
        #[arg(long, conflicts_with = "tls_cert")]
        allow_plaintext: bool,
    },
    /// Cluster worker: dials the coordinator and computes its shards.
    Worker {
        /// The coordinator's URL, e.g. http://10.0.0.1:7070.
        #[arg(long)]
        coordinator: String,
        #[command(flatten)]
        backend: BackendArgs,
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// CPU threads (0: as many as this process may run on: its CPU
        /// affinity, as taskset or Slurm's --cpus-per-task set it, within its
        /// cgroup's CPU quota, as a Kubernetes CPU limit sets it).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Seconds to keep reconnecting when the coordinator is unreachable.
        #[arg(long, default_value_t = 600)]
        retry_for: u64,
        /// Dial over TLS (https), trusting this CA or self-signed certificate (PEM).
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
        /// The server name to verify (default: the host of --coordinator).
        #[arg(long, value_name = "NAME", requires = "tls_ca")]
        tls_domain: Option<String>,
        /// Serve Prometheus metrics on HOST:PORT.
        #[arg(long)]
        metrics_listen: Option<String>,
        /// This worker's copy of the dataset (default: data.path of the coordinator's config); it
        /// must have the coordinator's digest.
        #[arg(long, value_name = "DIR")]
        data_path: Option<String>,
    },
    /// The paper's toy systems: trajectory, Jacobian eigenvalues, plot.
    Toy {
        /// wgan-quadratic or dirac.
        #[arg(long)]
        system: toy::ToySystem,
        /// gan or wgan.
        #[arg(long, default_value = "wgan")]
        objective: toy::ToyObjective,
        /// Regularizer weight.
        #[arg(long)]
        eta: f64,
        /// Integration steps.
        #[arg(long)]
        steps: Option<usize>,
        /// Step size.
        #[arg(long)]
        dt: Option<f64>,
        /// rk4 (the gradient flow) or euler (discrete simultaneous gradient descent).
        #[arg(long, default_value = "rk4")]
        integrator: toy::Integrator,
        /// Where trajectory.png and toy.json go.
        #[arg(long, default_value = "runs/toy")]
        out: PathBuf,
    },
    /// Score a checkpoint, or with --real the floor of the image scores (one JSON line on stdout).
    Eval {
        #[arg(long, required_unless_present = "real", conflicts_with = "real")]
        checkpoint: Option<PathBuf>,
        /// Samples to score (default: the config's log.eval_samples).
        #[arg(long)]
        n: Option<usize>,
        /// Score the real training split against the test split: the floor
        /// of FD, KID, precision and recall (and modes, for stacked data).
        #[arg(long)]
        real: bool,
        /// With --real: whose data (default: fashion-mnist from its default folder).
        #[arg(long, requires = "real")]
        config: Option<PathBuf>,
    },
    /// The game Jacobian's leading eigenvalues at a checkpoint (local
    /// stability): one JSON line at the run's eta (or --eta), one at
    /// --compare-eta, on the same parameters and minibatch.
    Stability {
        #[arg(long)]
        checkpoint: PathBuf,
        /// How many rightmost and how many largest-modulus eigenvalues.
        #[arg(long, default_value_t = 6)]
        k: usize,
        /// The eta of the first estimate (default: the run's train.eta).
        #[arg(long)]
        eta: Option<f64>,
        /// The eta of the second estimate, or `none`.
        #[arg(long, default_value = "0")]
        compare_eta: String,
        /// The minibatch (default: the run's train.batch; the step's own draw).
        #[arg(long)]
        batch: Option<usize>,
        /// The Krylov dimension (at least 4k + 4).
        #[arg(long, default_value_t = 40)]
        krylov: usize,
        /// At most this many products J·u per estimate (each two gradient evaluations).
        #[arg(long, default_value_t = 2000)]
        max_matvecs: usize,
        /// Converged when each residual is at most tol × the largest |λ|.
        #[arg(long, default_value_t = 1e-8)]
        tol: f64,
        /// Draw the eigenvalues in the complex plane into this .png.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// CPU threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Draw samples from a checkpoint's generator into a .png plot or a .csv file.
    Sample {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value_t = 2500)]
        n: usize,
        #[arg(long)]
        out: PathBuf,
        /// Seed of the latents (default: the run's seed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Train the feature network of the image scores (a CNN classifier of
    /// Fashion-MNIST) and write it as safetensors; prints one JSON line.
    Classifier {
        #[arg(long, default_value = "configs/fashion-mnist-classifier.toml")]
        config: PathBuf,
        /// Where the trained network goes (the shipped one is assets/fmnist-classifier.safetensors).
        #[arg(long)]
        out: PathBuf,
        /// Override a config key (repeatable), e.g. --set epochs=2.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// CPU threads (0: one per core; the result is the same on any count).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Redraw a run's pictures (curves.png, the newest checkpoint's samples); prints their paths.
    Plot {
        /// The run directory (the --out of `train`).
        #[arg(long, required_unless_present = "stability", conflicts_with = "stability")]
        run: Option<PathBuf>,
        /// Instead: the spectral abscissa along training of these runs (run
        /// with log.stability_every), in one picture (--out).
        #[arg(long, num_args = 1.., requires = "out")]
        stability: Vec<PathBuf>,
        /// Where the --stability picture goes (.png).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Time training steps; prints one JSON line.
    Bench {
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        backend: BackendArgs,
        /// Timed steps (after the warm-up).
        #[arg(long, default_value_t = 300)]
        steps: u64,
        #[arg(long, default_value_t = 10)]
        warmup: u64,
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// inproc or grpc.
        #[arg(long, default_value = "inproc")]
        transport: train::Transport,
        /// CPU threads; with --workers N each worker gets this many of its
        /// own (0: one per core, shared by the workers).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Override a config key (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Drive each step from the host even where the backend runs whole steps as one CUDA graph.
        #[arg(long)]
        host_step: bool,
        /// Also report where a timed step's time goes (phase 1, phase 2, the
        /// optimizer, the workers' compute) and the bytes per step on the
        /// wire, from the trainer's metrics.
        #[arg(long)]
        breakdown: bool,
    },
}

fn serve_metrics(addr: Option<String>) -> Result<()> {
    match addr {
        Some(a) => lockstep::telemetry::serve_prometheus(&a),
        None => Ok(()),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train { run, workers, transport, backend } => {
            serve_metrics(run.metrics_listen.clone())?;
            let backend = backend.spec()?;
            let summary = train::run(&run.options(workers, backend, transport))?;
            println!("{summary}");
        }
        Command::Coordinator {
            run,
            listen,
            min_workers,
            wait_seconds,
            token_file,
            phase_deadline,
            tls_cert,
            tls_key,
            allow_plaintext,
        } => {
            serve_metrics(run.metrics_listen.clone())?;
            let o = cluster::CoordinatorOptions {
                run: run.options(1, BackendSpec::cpu(), train::Transport::Grpc),
                listen,
                min_workers,
                token_file,
                wait: std::time::Duration::from_secs(wait_seconds),
                phase_deadline: std::time::Duration::from_secs(phase_deadline),
                tls_cert,
                tls_key,
                allow_plaintext,
            };
            println!("{}", cluster::run_coordinator(&o)?);
        }
        Command::Worker {
            coordinator,
            backend,
            token_file,
            threads,
            retry_for,
            metrics_listen,
            tls_ca,
            tls_domain,
            data_path,
        } => {
            serve_metrics(metrics_listen)?;
            let o = cluster::WorkerOptions {
                coordinator,
                backend: backend.spec()?,
                token_file,
                threads,
                retry_for: std::time::Duration::from_secs(retry_for),
                tls_ca,
                tls_domain,
                data_path,
            };
            cluster::run_worker(&o)?;
        }
        Command::Toy { system, objective, eta, steps, dt, integrator, out } => {
            let mut o = toy::ToyOptions::new(system, objective, eta);
            o.integrator = integrator;
            if let Some(s) = steps {
                o.steps = s;
            }
            if let Some(d) = dt {
                o.dt = d;
            }
            let report = toy::run(&o, &out)?;
            println!("{}", serde_json::to_string(&report).expect("report serializes"));
        }
        Command::Eval { checkpoint: Some(c), n, .. } => println!("{}", eval::run_eval(&c, n)?),
        Command::Eval { checkpoint: None, config, n, .. } => println!("{}", eval::run_floor(config.as_deref(), n)?),
        Command::Stability { checkpoint, k, eta, compare_eta, batch, krylov, max_matvecs, tol, plot, threads } => {
            lockstep::cmd::set_threads(threads)?;
            let options =
                lockstep::stability::Options { k, krylov, max_matvecs, tol, seed: 0, vectors: false, split: 0 };
            let compare_eta = lockstep::cmd::stability::parse_compare(&compare_eta)
                .map_err(|m| lockstep::Error::input(format!("--compare-eta: {m}")))?;
            let o = lockstep::cmd::stability::StabilityOptions {
                checkpoint,
                eta,
                compare_eta,
                batch,
                options,
                plot,
                quiet: false,
            };
            for e in lockstep::cmd::stability::run(&o)? {
                println!("{}", serde_json::to_string(&e).expect("estimate serializes"));
            }
        }
        Command::Sample { checkpoint, n, out, seed } => eval::run_sample(&checkpoint, n, &out, seed)?,
        Command::Classifier { config, out, sets, threads } => {
            lockstep::cmd::set_threads(threads)?;
            let cfg = lockstep::eval::classifier::ClassifierConfig::load(&config, &sets)?;
            println!("{}", lockstep::eval::classifier::train(&cfg, &out, false)?);
        }
        Command::Plot { run: Some(run), .. } => {
            for p in plot::run(&run)? {
                println!("{}", p.display());
            }
        }
        Command::Plot { run: None, stability, out, .. } => {
            let out = out.expect("clap requires --out");
            plot::stability(&stability, &out)?;
            println!("{}", out.display());
        }
        Command::Bench { config, backend, steps, warmup, workers, transport, threads, sets, host_step, breakdown } => {
            let backend = backend.spec()?;
            let o = bench::BenchOptions {
                config: &config,
                backend,
                steps,
                warmup,
                workers,
                transport,
                threads,
                sets,
                host_step,
                breakdown,
            };
            println!("{}", bench::run(&o)?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockstep: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
