//! Heartbeat dead-man: if the configured endpoint stops answering, run the fail action.
//!
//! Design decision: a plain HTTP/1.0 GET over a `TcpStream` (no HTTP client crate, no TLS — point
//! it at a local sidecar or monitoring agent); "alive" means a 2xx status line within the
//! timeout. The daemon probes every `interval` and fires the fail action once per outage (it
//! re-arms after a successful probe), so a dead endpoint costs at most one interval + timeout of
//! exposure.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("heartbeat url {url:?} is not http://host:port/path")]
    BadUrl { url: String },
    #[error("heartbeat to {url} failed: {reason}")]
    Down { url: String, reason: String },
}

/// (host, port, path) of an `http://` URL.
pub fn parse_url(url: &str) -> Result<(String, u16, String), HeartbeatError> {
    let bad = || HeartbeatError::BadUrl {
        url: url.to_string(),
    };
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
        None => (hostport, 80),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// One probe: Ok if the endpoint answers 2xx within `timeout`.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), HeartbeatError> {
    let (host, port, path) = parse_url(url)?;
    let down = |reason: String| HeartbeatError::Down {
        url: url.to_string(),
        reason,
    };
    let work = async {
        let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| down(e.to_string()))?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| down(e.to_string()))?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let k = s
                .read(&mut buf[n..])
                .await
                .map_err(|e| down(e.to_string()))?;
            if k == 0 {
                break;
            }
            n += k;
        }
        let line = String::from_utf8_lossy(&buf[..n]);
        let code = line.split_whitespace().nth(1).unwrap_or("");
        if line.starts_with("HTTP/") && code.starts_with('2') {
            Ok(())
        } else {
            Err(down(format!("status {code:?}")))
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(down(format!("no answer within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/hb").unwrap(),
            ("127.0.0.1".into(), 8080, "/hb".into())
        );
        assert_eq!(parse_url("http://example").unwrap().1, 80);
        assert!(parse_url("https://x").is_err());
    }
}
