//! The socket side: frames read with their descriptors, written back, one task per
//! connection (peer check, handshake and idle deadlines), accept errors rate-limited.

use super::*;

pub(super) enum FrameError {
    TooLarge,
    Io,
}

/// Reads `\n`-terminated frames with `recvmsg`, queueing the descriptors that come with them.
pub(super) struct FrameReader {
    r: tokio::net::unix::OwnedReadHalf,
    buf: Zeroizing<Vec<u8>>,
    fds: Vec<OwnedFd>,
}

impl FrameReader {
    pub(super) async fn fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = Zeroizing::new([0u8; 16 * 1024]);
        loop {
            self.r.readable().await?;
            let Self { r, fds, .. } = self;
            let sock: &UnixStream = r.as_ref();
            let got = sock.try_io(tokio::io::Interest::READABLE, || {
                crate::vault::fdpass::recv_with_fds(sock.as_raw_fd(), &mut tmp[..], fds)
            });
            match got {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    if self.fds.len() > 4 * crate::vault::fdpass::MAX_FDS {
                        return Err(std::io::Error::other("too many descriptors queued"));
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next frame (at most `max` bytes); `None` at end of stream.
    pub(super) async fn frame(
        &mut self,
        max: usize,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, FrameError> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                if i > max {
                    return Err(FrameError::TooLarge);
                }
                let rest = self.buf[i + 1..].to_vec();
                let mut line = std::mem::replace(&mut *self.buf, rest);
                line.truncate(i);
                return Ok(Some(Zeroizing::new(line)));
            }
            if self.buf.len() > max {
                return Err(FrameError::TooLarge);
            }
            let n = self.fill().await.map_err(|_| FrameError::Io)?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let line = std::mem::take(&mut *self.buf);
                return Ok(Some(Zeroizing::new(line)));
            }
        }
    }

    /// Exactly `n` descriptors that came with the current frame, or none.
    pub(super) fn take_fds(&mut self, n: usize) -> Option<Vec<OwnedFd>> {
        if self.fds.len() != n {
            self.fds.clear();
            return None;
        }
        Some(std::mem::take(&mut self.fds))
    }
}

pub(super) async fn write_frame(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    v: &Value,
) -> std::io::Result<()> {
    let mut b = serde_json::to_vec(v).expect("a frame should serialize");
    b.push(b'\n');
    w.write_all(&b).await
}

/// Accept errors go to the log at most once per minute, with how many were not shown.
#[derive(Default)]
pub(super) struct AcceptErrors {
    last: Option<std::time::Instant>,
    quiet: u64,
}

impl AcceptErrors {
    pub(super) fn report(&mut self, e: &std::io::Error) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            self.quiet += 1;
            return;
        }
        if self.quiet > 0 {
            eprintln!(
                "guard vault daemon: accept: {e} (and {} more since the last report)",
                self.quiet
            );
        } else {
            eprintln!("guard vault daemon: accept: {e}");
        }
        self.last = Some(now);
        self.quiet = 0;
    }
}

pub(super) async fn connection(d: Daemon, stream: UnixStream) {
    let peer_ok = stream
        .peer_cred()
        .map(|c| c.uid() == unsafe_getuid())
        .unwrap_or(false);
    let (r, mut w) = stream.into_split();
    if !peer_ok {
        {
            let mut s = d.lock();
            let _ = s.audit.append(&Event {
                op: "connect",
                outcome: "peer-rejected",
                ..Default::default()
            });
        }
        let _ = write_frame(
            &mut w,
            &rpc::err_frame(
                &Value::Null,
                &RpcError::new(rpc::PEER_REJECTED, "peer uid does not own this vault"),
            ),
        )
        .await;
        return;
    }
    let mut r = FrameReader {
        r,
        buf: Zeroizing::new(Vec::new()),
        fds: Vec::new(),
    };
    // The first request must come within the handshake timeout (blank lines do not count),
    // each later one within the idle timeout: a connection cannot be held open for nothing.
    let mut deadline = tokio::time::Instant::now() + d.limits.handshake_timeout;
    let mut greeted = false;
    loop {
        let max = d.limits.max_frame_bytes;
        let frame = match tokio::time::timeout_at(deadline, r.frame(max)).await {
            Ok(f) => f,
            Err(_) => {
                let e = if greeted {
                    RpcError::new(rpc::IDLE_TIMEOUT, "no request within the idle timeout")
                } else {
                    RpcError::new(
                        rpc::HANDSHAKE_TIMEOUT,
                        "no request within the handshake timeout",
                    )
                };
                let _ = write_frame(&mut w, &rpc::err_frame(&Value::Null, &e)).await;
                return;
            }
        };
        let line = match frame {
            Ok(Some(l)) => l,
            Ok(None) | Err(FrameError::Io) => return,
            Err(FrameError::TooLarge) => {
                let e = RpcError::new(
                    rpc::FRAME_TOO_LARGE,
                    format!("frame larger than {max} bytes; closing"),
                );
                let _ = write_frame(&mut w, &rpc::err_frame(&Value::Null, &e)).await;
                return;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let resp = match serde_json::from_slice::<Request>(&line) {
            Err(e) => rpc::err_frame(
                &Value::Null,
                &RpcError::new(
                    rpc::PARSE_ERROR,
                    format!("invalid JSON-RPC frame: {}", e.classify_str()),
                ),
            ),
            Ok(req) if req.jsonrpc != "2.0" => rpc::err_frame(
                &req.id,
                &RpcError::new(rpc::INVALID_REQUEST, "jsonrpc must be \"2.0\""),
            ),
            Ok(req) => {
                let id = req.id.clone();
                match d.dispatch(req, &mut r).await {
                    Ok(rep) => rpc::ok_frame(&id, rep),
                    Err(e) => rpc::err_frame(&id, &e),
                }
            }
        };
        // Descriptors not claimed by the request they came with are closed.
        r.fds.clear();
        if write_frame(&mut w, &resp).await.is_err() {
            return;
        }
        greeted = true;
        deadline = tokio::time::Instant::now() + d.limits.idle_timeout;
    }
}

pub(super) trait ClassifyStr {
    fn classify_str(&self) -> &'static str;
}
impl ClassifyStr for serde_json::Error {
    // Never echo serde's message for a frame: it may quote input (e.g. an unknown variant value).
    fn classify_str(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong shape",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

pub(super) fn unsafe_getuid() -> u32 {
    // SAFETY: getuid(2) cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}
