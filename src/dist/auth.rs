//! The shared token: required whenever the coordinator listens beyond
//! loopback, sent by workers as `authorization: Bearer <token>`.

use std::net::SocketAddr;
use std::path::Path;

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::error::{Error, Result};

/// Reads a token file (surrounding whitespace ignored; at least 16
/// characters).  As ssh does with keys, a file that group or others may
/// read or write is refused, with the `chmod 600` that fixes it.
pub fn read_token(path: &Path) -> Result<String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| Error::input(format!("--token-file {}: cannot read it: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| Error::io(path, "read the mode of", e))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::input(format!(
                "--token-file {}: the token is open to other users (mode {:03o}); restrict it with `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            )));
        }
    }
    let t = t.trim().to_string();
    if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::input(format!(
            "--token-file {}: the token must be at least 16 printable characters (e.g. `openssl rand -hex 32 > {}`)",
            path.display(),
            path.display()
        )));
    }
    Ok(t)
}

/// Refuses to listen beyond loopback without a token, and without TLS
/// unless `allow_plaintext` (the token and the traffic would cross the
/// network in clear).
pub fn check_listen(addr: &SocketAddr, token: Option<&str>, tls: bool, allow_plaintext: bool) -> Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if token.is_none() {
        return Err(Error::input(format!(
            "--listen {addr} accepts workers from the network: give --token-file F (the workers pass the same file)"
        )));
    }
    if !tls && !allow_plaintext {
        return Err(Error::input(format!(
            "--listen {addr} is reachable from the network without TLS, so the token would travel in clear: give --tls-cert FILE --tls-key FILE (deploy/README.md makes a self-signed pair), or --allow-plaintext on a network you trust"
        )));
    }
    Ok(())
}

/// The server's check of every request.
#[derive(Clone)]
pub struct Check {
    expected: Option<String>,
}

impl Check {
    pub fn new(token: Option<String>) -> Check {
        Check { expected: token.map(|t| format!("Bearer {t}")) }
    }
}

impl tonic::service::Interceptor for Check {
    fn call(&mut self, req: Request<()>) -> std::result::Result<Request<()>, Status> {
        let Some(want) = &self.expected else { return Ok(req) };
        let got = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        // Compare in constant time.
        let ok = got.is_some_and(|g| {
            g.len() == want.len() && g.bytes().zip(want.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        if ok {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong token: start the worker with the coordinator's --token-file"))
        }
    }
}

/// The worker's side: attaches the token to every request.
#[derive(Clone)]
pub struct Attach {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Attach {
    pub fn new(token: Option<String>) -> Result<Attach> {
        let header = match token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| Error::input("the token holds characters a header cannot carry"))?,
            ),
            None => None,
        };
        Ok(Attach { header })
    }
}

impl tonic::service::Interceptor for Attach {
    fn call(&mut self, mut req: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}
