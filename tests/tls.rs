//! TLS with certificate files: a coordinator serving TLS and workers trusting
//! its certificate train to bitwise the result of an in-process run; a worker
//! without the certificate, or with another, fails with a clear line; bad
//! certificate files are exit code 2 naming the flag.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

use lockstep::checkpoint;

mod common;

use common::{bin, finish, free_port, params};

/// A self-signed certificate for "localhost" and its key, as PEM files in
/// `d` named `name.pem` and `name.key`.
fn self_signed(d: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (d.join(format!("{name}.pem")), d.join(format!("{name}.key")));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn tls_coordinator(port: u16, steps: &str, min_workers: &str, cert: &Path, key: &Path, out: &Path) -> Child {
    bin()
        .args(["coordinator", "--quiet", "--config", "tests/data/tiny-ring.toml", "--steps", steps])
        .args(["--min-workers", min_workers, "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A worker process dialing `url` with the extra `args`.
fn worker(url: &str, args: &[&str]) -> Child {
    bin()
        .args(["worker", "--coordinator", url, "--backend", "cpu"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_tls_coordinator_and_workers_match_an_in_process_run_bitwise() {
    let d = common::tmp("tls", "match");
    let (cert, key) = self_signed(&d, "coordinator");
    let local = common::local_run(&d, "60");

    let port = free_port();
    let run = d.join("cluster");
    let coord = tls_coordinator(port, "60", "2", &cert, &key, &run);
    let ca = cert.to_str().unwrap();
    // One dials the address and names the certificate's host; the other
    // dials the host itself (verified by default).
    let w1 = worker(&format!("http://127.0.0.1:{port}"), &["--tls-ca", ca, "--tls-domain", "localhost"]);
    let w2 = worker(&format!("https://localhost:{port}"), &["--tls-ca", ca]);
    let (err, summary) = common::finish_cluster(coord, vec![w1, w2]);
    assert!(err.contains("(TLS)"), "{err}");
    assert_eq!(summary["workers"], 2);
    assert_eq!(params(&local), params(&run));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_worker_without_the_certificate_fails_with_a_clear_line() {
    let d = common::tmp("tls", "refused");
    let (cert, key) = self_signed(&d, "coordinator");
    let (other, _) = self_signed(&d, "other");
    let port = free_port();
    let run = d.join("cluster");
    let coord = tls_coordinator(port, "20", "1", &cert, &key, &run);
    let plain = format!("http://127.0.0.1:{port}");

    // https without a certificate to trust: an input error at once.
    let o = finish(worker(&format!("https://127.0.0.1:{port}"), &[]));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("https needs --tls-ca FILE"), "{e}");
    // Plaintext against TLS: it retries, then gives up, saying why.
    let o = finish(worker(&plain, &["--retry-for", "1"]));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("--tls-ca"), "{e}");
    // Trusting another certificate: the handshake fails.
    let o =
        finish(worker(&plain, &["--retry-for", "1", "--tls-ca", other.to_str().unwrap(), "--tls-domain", "localhost"]));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("certificate"), "{e}");

    // The coordinator still serves a worker that trusts it.
    let w = worker(&plain, &["--tls-ca", cert.to_str().unwrap(), "--tls-domain", "localhost"]);
    let c = finish(coord);
    assert!(c.status.success(), "coordinator: {}", String::from_utf8_lossy(&c.stderr));
    assert!(finish(w).status.success());
    assert_eq!(checkpoint::load(&checkpoint::latest(&run).unwrap()).unwrap().state.step, 20);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_certificate_files_exit_2_naming_the_flag() {
    let d = common::tmp("tls", "files");
    let (cert, key) = self_signed(&d, "coordinator");
    let (_, other_key) = self_signed(&d, "other");
    let junk = d.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let missing = d.join("missing.pem");
    let out = d.join("run");
    let coordinator = |c: &Path, k: &Path| {
        bin()
            .args(["coordinator", "--config", "tests/data/tiny-ring.toml", "--listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(c)
            .arg("--tls-key")
            .arg(k)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let cases: [(Output, &[&str]); 6] = [
        (coordinator(&missing, &key), &["--tls-cert", "missing.pem", "cannot read"]),
        (coordinator(&junk, &key), &["--tls-cert", "junk.pem", "no certificate"]),
        (coordinator(&cert, &junk), &["--tls-key", "junk.pem", "no private key"]),
        (coordinator(&cert, &other_key), &["--tls-cert", "--tls-key", "belongs to the certificate"]),
        (
            bin()
                .args(["coordinator", "--config", "tests/data/tiny-ring.toml", "--tls-cert"])
                .arg(&cert)
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap(),
            &["--tls-key"],
        ),
        (
            bin().args(["worker", "--coordinator", "http://127.0.0.1:1", "--tls-ca"]).arg(&missing).output().unwrap(),
            &["--tls-ca", "missing.pem", "cannot read"],
        ),
    ];
    for (o, words) in cases {
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{e}");
        for w in words {
            assert!(e.contains(w), "{w:?} not in {e}");
        }
    }
    assert!(!out.exists(), "a refused coordinator wrote its run directory");
    std::fs::remove_dir_all(&d).unwrap();
}
