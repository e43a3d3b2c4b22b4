//! The shared token: required whenever the coordinator listens beyond
//! loopback, sent by workers as `authorization: Bearer <token>`.

use std::net::SocketAddr;
use std::path::Path;

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::error::{Error, Result};

/// Reads a token file (surrounding whitespace ignored; at least 16 characters).
pub fn read_token(path: &Path) -> Result<String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| Error::input(format!("--token-file {}: cannot read it: {e}", path.display())))?;
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

/// Refuses to listen beyond loopback without a token.
pub fn check_listen(addr: &SocketAddr, token: Option<&str>) -> Result<()> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(Error::input(format!(
            "--listen {addr} accepts workers from the network: give --token-file F (the workers pass the same file)"
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
