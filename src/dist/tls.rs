//! TLS with certificate files (rustls through tonic, ring for the
//! cryptography): the coordinator's certificate and private key, and the
//! certificate a worker trusts.  Every problem with a file is an input error
//! (exit code 2) that names the flag, the file and the fix.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, Server, ServerTlsConfig};

use crate::error::{Error, Result};

/// Reads the PEM file given to `flag`.
fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::input(format!("{flag} {}: cannot read it: {e}; give the path of a PEM file", path.display()))
    })
}

/// Checks that `pem` holds at least one certificate.
fn check_certificates(flag: &str, path: &Path, pem: &[u8]) -> Result<()> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<std::result::Result<Vec<_>, _>>().map_err(|e| {
        Error::input(format!(
            "{flag} {}: not a valid PEM certificate file ({e}); give the certificate in PEM",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(Error::input(format!(
            "{flag} {}: holds no certificate (no -----BEGIN CERTIFICATE----- block); give the certificate in PEM",
            path.display()
        )));
    }
    Ok(())
}

/// Checks that `pem` holds a private key.
fn check_private_key(flag: &str, path: &Path, pem: &[u8]) -> Result<()> {
    PrivateKeyDer::from_pem_slice(pem).map(|_| ()).map_err(|e| {
        Error::input(format!(
            "{flag} {}: holds no private key in PEM ({e}); give the key of --tls-cert (-----BEGIN PRIVATE KEY-----)",
            path.display()
        ))
    })
}

/// The coordinator's TLS from `--tls-cert` (PEM, the certificate chain) and
/// `--tls-key` (PEM, its private key), checked: the files parse and the key
/// belongs to the certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerTlsConfig> {
    let c = read_pem("--tls-cert", cert)?;
    check_certificates("--tls-cert", cert, &c)?;
    let k = read_pem("--tls-key", key)?;
    check_private_key("--tls-key", key, &k)?;
    let cfg = ServerTlsConfig::new().identity(Identity::from_pem(c, k));
    Server::builder().tls_config(cfg.clone()).map_err(|e| {
        Error::input(format!(
            "--tls-cert {} with --tls-key {}: rustls cannot use them ({}); give a key that belongs to the certificate",
            cert.display(),
            key.display(),
            source_chain(&e)
        ))
    })?;
    Ok(cfg)
}

/// A worker's TLS from `--tls-ca` (PEM: the CA or the self-signed
/// certificate the coordinator's chains to) and `--tls-domain` (the name to
/// verify; default the host of `--coordinator`).
pub fn client_config(ca: &Path, domain: Option<&str>) -> Result<ClientTlsConfig> {
    let c = read_pem("--tls-ca", ca)?;
    check_certificates("--tls-ca", ca, &c)?;
    let cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(c));
    Ok(match domain {
        Some(d) => cfg.domain_name(d),
        None => cfg,
    })
}

/// An error and its sources, in one line (a source that repeats the one
/// before it, as wrapped I/O errors do, is said once).
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut last = s.clone();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if t != last {
            s.push_str(": ");
            s.push_str(&t);
        }
        last = t;
        cur = c.source();
    }
    s
}
