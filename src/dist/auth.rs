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
    refusals: std::sync::Arc<RefusalLog>,
}

impl Check {
    pub fn new(token: Option<String>) -> Check {
        Check { expected: token.map(|t| format!("Bearer {t}")), refusals: Default::default() }
    }
}

/// Refused attempts, logged at most once a second per source address with
/// their count (a flood of bad connections gives a line a second, not a
/// line an attempt).  At most `MAX_SOURCES` addresses are tracked.
#[derive(Default)]
pub struct RefusalLog {
    sources: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u64)>>,
}

impl RefusalLog {
    pub const MAX_SOURCES: usize = 4096;

    /// Counts one refusal from `from` (`why` says what was wrong); returns
    /// the line logged, when one is due.
    pub fn refused(&self, from: Option<std::net::IpAddr>, why: &str) -> Option<String> {
        let from = from.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let now = std::time::Instant::now();
        let mut m = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= Self::MAX_SOURCES && !m.contains_key(&from) {
            // Forget the addresses not heard from for the longest.
            let oldest = m.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| *k);
            if let Some(k) = oldest {
                m.remove(&k);
            }
        }
        let e = m.entry(from).or_insert((now - std::time::Duration::from_secs(2), 0));
        e.1 += 1;
        if now.duration_since(e.0) < std::time::Duration::from_secs(1) {
            return None;
        }
        let line = format!("lockstep: refused {} request(s) from {from} since the last report: {why}", e.1);
        *e = (now, 0);
        Some(line)
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
            if let Some(line) = self.refusals.refused(req.remote_addr().map(|a| a.ip()), "missing or wrong token") {
                eprintln!("{line}");
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_once_a_second_per_address_with_their_count() {
        let log = RefusalLog::default();
        let a = Some("10.0.0.1".parse().unwrap());
        let b = Some("10.0.0.2".parse().unwrap());
        let first = log.refused(a, "bad token").expect("the first refusal is reported");
        assert!(first.contains("refused 1 request(s) from 10.0.0.1") && first.contains("bad token"), "{first}");
        assert!((0..1000).all(|_| log.refused(a, "bad token").is_none()), "within the second: counted, not logged");
        assert!(log.refused(b, "bad token").is_some(), "another address has its own second");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let next = log.refused(a, "bad token").unwrap();
        assert!(next.contains("refused 1001 request(s)"), "{next}");
        for i in 0..RefusalLog::MAX_SOURCES + 10 {
            log.refused(Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(i as u32))), "x");
        }
        assert!(log.sources.lock().unwrap().len() <= RefusalLog::MAX_SOURCES);
    }
}
