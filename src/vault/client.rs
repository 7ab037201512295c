//! The CLI side of the socket: a small synchronous JSON-RPC client, plus daemon autostart.
//!
//! Design decision: the CLI is short-lived and makes a handful of calls, so it uses blocking std
//! I/O (no tokio runtime to start: `guard exec -- true` must stay well under 15 ms). Autostart
//! spawns `guard vault daemon` detached (new session, stdio to `daemon.log`) and waits for the
//! socket, as gpg-agent does; `GUARD_NO_AUTOSTART=1` turns that off. Requests that need the
//! caller's stdio (`exec`, `print`) pass the descriptors with the frame (SCM_RIGHTS).

use crate::vault::rpc::NextAction;
use crate::vault::VaultPaths;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the vault daemon is not running (socket {socket}); start it with `guard vault daemon --detach`")]
    NotRunning { socket: PathBuf },
    #[error("the vault at {dir} is not initialised; run `guard vault init`")]
    NotInitialised { dir: PathBuf },
    #[error("could not start the vault daemon: {reason}")]
    Autostart { reason: String },
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    /// A failure on this side that has nothing to do with the daemon (a file, the terminal).
    #[error("{0}")]
    Local(String),
    #[error("the daemon sent an invalid frame")]
    Protocol,
    #[error(
        "refusing to send the vault passphrase: the process on {socket} is not a guard daemon \
         this CLI can vouch for ({reason}). Stop whatever listens there and start the daemon \
         yourself (`guard vault daemon --detach`)"
    )]
    UntrustedPeer { socket: PathBuf, reason: String },
    #[error("{message}")]
    Rpc {
        code: i64,
        message: String,
        next_actions: Vec<NextAction>,
    },
}

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    paths: VaultPaths,
    /// Set once the peer passed [`Client::verify_peer`].
    verified: bool,
}

/// (uid, pid) of the process that listens on the other end of `s` (SO_PEERCRED).
fn peer_cred(s: &UnixStream) -> std::io::Result<(u32, u32)> {
    use std::os::fd::AsRawFd;
    // SAFETY: ucred is plain data; getsockopt fills at most `len` bytes of it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid socket, out-pointer and length.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((cred.uid, cred.pid as u32))
}

/// Why the process `pid` is not a guard daemon we may send a passphrase to, if it is not.
pub fn untrusted_daemon(paths: &VaultPaths, uid: u32, pid: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid(2) cannot fail.
    if uid != unsafe { libc::getuid() } {
        return Some(format!("it runs as uid {uid}"));
    }
    match crate::vault::tty::tracer_pid(Some(pid)) {
        Some(0) => {}
        Some(t) => return Some(format!("process {t} traces it")),
        None => return Some(format!("cannot read /proc/{pid}/status")),
    }
    // The same program as this one: the same file (device, inode), as the kernel sees it.
    let me = match std::fs::metadata("/proc/self/exe") {
        Ok(m) => m,
        Err(e) => return Some(format!("/proc/self/exe: {e}")),
    };
    match std::fs::metadata(format!("/proc/{pid}/exe")) {
        Ok(m) if (m.dev(), m.ino()) == (me.dev(), me.ino()) => {}
        Ok(_) => return Some(format!("process {pid} runs another program")),
        // A non-dumpable process's exe is hidden from an unprivileged user: the real daemon
        // looks like this too. Only the weaker checks below remain (THREAT_MODEL.md).
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
        Err(e) => return Some(format!("/proc/{pid}/exe: {e}")),
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !cmdline.split(|&b| b == 0).any(|a| a == b"daemon") {
        return Some(format!("process {pid} is not `guard vault daemon`"));
    }
    let pidfile = std::fs::read_to_string(paths.pid_file()).unwrap_or_default();
    if pidfile.trim() != pid.to_string() {
        return Some(format!(
            "process {pid} is not the daemon recorded in {}",
            paths.pid_file().display()
        ));
    }
    None
}

impl Client {
    pub fn connect(paths: &VaultPaths) -> Result<Self, ClientError> {
        let s = UnixStream::connect(paths.socket()).map_err(|_| ClientError::NotRunning {
            socket: paths.socket(),
        })?;
        let writer = s.try_clone()?;
        Ok(Self {
            reader: BufReader::new(s),
            writer,
            next_id: 1,
            paths: paths.clone(),
            verified: false,
        })
    }

    /// Check that the process on the other end is the real daemon: same uid, not traced, the
    /// same `guard` executable as this process (dev+inode of `/proc/PID/exe`, when readable),
    /// running `daemon`, and the pid its pid file names. Done before any passphrase is sent.
    pub fn verify_peer(&mut self) -> Result<(), ClientError> {
        if self.verified {
            return Ok(());
        }
        let (uid, pid) = peer_cred(&self.writer)?;
        if let Some(reason) = untrusted_daemon(&self.paths, uid, pid) {
            return Err(ClientError::UntrustedPeer {
                socket: self.paths.socket(),
                reason,
            });
        }
        self.verified = true;
        Ok(())
    }

    /// Connect, starting the daemon first if needed and allowed.
    pub fn connect_or_start(paths: &VaultPaths) -> Result<Self, ClientError> {
        if let Ok(c) = Self::connect(paths) {
            return Ok(c);
        }
        if std::env::var("GUARD_NO_AUTOSTART").is_ok_and(|v| !v.is_empty() && v != "0") {
            return Err(ClientError::NotRunning {
                socket: paths.socket(),
            });
        }
        if !paths.contexts().exists() {
            return Err(ClientError::NotInitialised {
                dir: paths.root().into(),
            });
        }
        start_daemon(paths)
    }

    /// Call `method`; returns the envelope (`{ok, data, next_actions}`) or the RPC error.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.call_with_fds(method, params, &[])
    }

    /// Call `method`, passing `fds` (e.g. our stdin/stdout/stderr) along with the request.
    pub fn call_with_fds(
        &mut self,
        method: &str,
        params: Value,
        fds: &[std::os::fd::RawFd],
    ) -> Result<Value, ClientError> {
        if params.get("passphrase").is_some() {
            self.verify_peer()?;
        }
        let id = self.next_id;
        self.next_id += 1;
        // The frame may carry a passphrase or a value: wiped once sent.
        let mut frame = zeroize::Zeroizing::new(
            serde_json::to_vec(
                &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
            )
            .expect("a request should serialize"),
        );
        frame.push(b'\n');
        crate::vault::fdpass::send_with_fds(&self.writer, &frame, fds)?;
        drop(frame);
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line)? == 0 {
            return Err(ClientError::Protocol);
        }
        let v: Value = serde_json::from_slice(&line).map_err(|_| ClientError::Protocol)?;
        if let Some(r) = v.get("result") {
            return Ok(r.clone());
        }
        let e = v.get("error").ok_or(ClientError::Protocol)?;
        Err(ClientError::Rpc {
            code: e
                .get("code")
                .and_then(Value::as_i64)
                .unwrap_or(crate::vault::rpc::FAILED),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_string(),
            next_actions: e
                .pointer("/data/next_actions")
                .and_then(|n| serde_json::from_value(n.clone()).ok())
                .unwrap_or_default(),
        })
    }

    /// A second handle on the connection, for notifications sent while `call` waits (signals
    /// forwarded to the command `exec` runs).
    pub fn notifier(&self) -> Result<UnixStream, ClientError> {
        Ok(self.writer.try_clone()?)
    }
}

/// Send a notification (no reply expected) on a connection.
pub fn notify(w: &UnixStream, method: &str, params: Value) -> std::io::Result<()> {
    let mut f = serde_json::to_vec(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
        .expect("a notification should serialize");
    f.push(b'\n');
    (&*w).write_all(&f)
}

/// Starts the daemon ([`spawn_daemon`]) and connects once its socket is up. A daemon that exits
/// instead is reported with what it wrote to `daemon.log` (why it could not start).
pub fn start_daemon(paths: &VaultPaths) -> Result<Client, ClientError> {
    let log_from = std::fs::metadata(paths.daemon_log()).map_or(0, |m| m.len());
    let mut child = spawn_daemon(paths)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(c) = Client::connect(paths) {
            return Ok(c);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // One last look: it may have started and stopped at once (another daemon won).
            if let Ok(c) = Client::connect(paths) {
                return Ok(c);
            }
            return Err(ClientError::Autostart {
                reason: daemon_log_since(paths, log_from).unwrap_or_else(|| {
                    format!("it exited ({status}); see {}", paths.daemon_log().display())
                }),
            });
        }
        if Instant::now() > deadline {
            return Err(ClientError::Autostart {
                reason: format!("no socket after 10 s; see {}", paths.daemon_log().display()),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The last lines the daemon wrote to its log since offset `from` (at most 2 KiB), if any.
fn daemon_log_since(paths: &VaultPaths, from: u64) -> Option<String> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::open(paths.daemon_log()).ok()?;
    f.seek(std::io::SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    f.take(64 * 1024).read_to_string(&mut text).ok()?;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut from = text.len().saturating_sub(2048);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let tail = &text[from..];
    Some(tail.trim_start_matches("guard vault daemon: ").to_string())
}

/// Start `guard vault daemon` in its own session, detached from our terminal and stdio.
pub fn spawn_daemon(paths: &VaultPaths) -> Result<std::process::Child, ClientError> {
    let exe = std::env::current_exe().map_err(|e| ClientError::Autostart {
        reason: e.to_string(),
    })?;
    crate::vault::store::private_dir(paths.root()).map_err(|e| ClientError::Autostart {
        reason: e.to_string(),
    })?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.daemon_log())
        .map_err(|e| ClientError::Autostart {
            reason: e.to_string(),
        })?;
    let log2 = log.try_clone()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("vault")
        .arg("--vault-dir")
        .arg(paths.root())
        .arg("daemon")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    // The daemon will hold the keys: nothing that loads code into it comes from our environment.
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if crate::vault::command::is_code_env(k) {
                cmd.env_remove(k);
            }
        }
    }
    // SAFETY: setsid(2) is async-signal-safe; it detaches the daemon from our controlling tty
    // and process group so it outlives the CLI and never reads the user's terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| ClientError::Autostart {
        reason: e.to_string(),
    })
}
