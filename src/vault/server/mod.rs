//! The daemon: a tokio Unix-socket JSON-RPC server that owns every piece of vault state — and
//! the only process where secret values and the unlocked identities exist.
//!
//! Design decisions:
//! - The socket is bound inside `run/` (created 0700 first) with umask 0177, so it is 0600 from
//!   the instant it exists — before `listen` — and the peer's uid (SO_PEERCRED) must equal ours.
//!   That keeps other users out; it does not keep out an agent running as the user, so nothing
//!   below trusts the peer: the threat model is THREAT_MODEL.md.
//! - **No request returns a value.** `exec` launches the command itself, on the caller's stdio
//!   passed over the socket ([`crate::vault::fdpass`]), with the values in the child's
//!   environment and its output through the masker; `print` writes a value to the caller's
//!   stdout descriptor after a passphrase check. There is no `resolve`, and lease ids are never
//!   listed.
//! - **Only a human approves.** `approve`, `grant`, `print` and `unlock` carry the vault
//!   passphrase, which the CLI reads from `/dev/tty` only; the daemon checks it by decrypting the
//!   identities (scrypt), one check at a time, and locks every check out after
//!   `passphrase_attempts` failures ([`crate::vault::keys`]). A denial needs no proof.
//! - **The key needs the human too.** Identities are unlocked in memory for `unlock_ttl` after a
//!   correct passphrase and forgotten after; while locked nothing can be decrypted. The process is
//!   non-dumpable (`PR_SET_DUMPABLE 0`): no same-user ptrace, no `/proc/PID/mem`.
//! - **Approvals name what runs**: (context, secret, command fingerprint) — see
//!   [`crate::vault::command`] — MAC'd under a key derived from the identity.
//! - One frame per line, read through a bounded buffer: an oversize frame gets an error and the
//!   connection is closed; the first frame must arrive within the handshake timeout.
//! - State sits behind one `std::sync::Mutex` that is never held across an `.await`: rotation
//!   hooks, passphrase checks, children and approval waits run unlocked. Stores are decrypted per
//!   operation and dropped (~0.1 ms per call).
//! - Audit first: every operation appends its record before it takes effect and is refused if
//!   that append fails. Only revocations, locking and the killswitch go ahead regardless, since
//!   refusing to *reduce* exposure would be the wrong way to fail.
//! - SIGTERM/SIGINT or the `shutdown` method stop accepting, remove the socket and pid file,
//!   write a final audit record and exit 0.

// By what they do: `transport` (frames, connections, peer and deadlines), `ops` (one method per
// request: audit first, then the effect), `background` (scheduled rotation, heartbeat, commands
// a killed daemon left), `leak` (the leak loop); this file holds the state and starts it all.
// Requests are the typed structs of `crate::vault::api`.
mod background;
pub mod leak;
mod ops;
mod transport;

use background::{heartbeat_loop, maintenance, secrets_where, stop_orphans};
use ops::kill_group;
use transport::{connection, AcceptErrors, FrameReader};

use crate::vault::api;
use crate::vault::approval::{ApprovalStore, Decision, Scope};
use crate::vault::audit::{AuditLog, Event};
use crate::vault::backend::{self, PutOptions, SecretStore};
use crate::vault::command::{self, CommandSpec, HashCache, Resolved};
use crate::vault::config::{HeartbeatConfig, Limits, VaultConfig};
use crate::vault::keys::{self, Attempts, KeyError, Keyring};
use crate::vault::lease::{LeaseManager, LeaseRequest};
use crate::vault::rpc::{self, next, Reply, Request, RpcError};
use crate::vault::store::{self, StoreError};
use crate::vault::{config, now_unix, rotate, SecretValue, VaultPaths};
use age::secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{watch, Notify};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::vault::audit::AuditError),
    #[error(
        "{reason}. The daemon does not start on a broken audit chain: a human looks at it \
         (`guard vault audit verify`, `guard vault audit --tail 20`) and then runs \
         `guard vault audit acknowledge` at a terminal"
    )]
    AuditBroken { reason: String },
    #[error(transparent)]
    Approval(#[from] crate::vault::approval::ApprovalError),
    #[error("a daemon is already listening on {socket}")]
    AlreadyRunning { socket: PathBuf },
    #[error(
        "refusing to run with {var} set: a library injected into the daemon would see every key"
    )]
    Injected { var: String },
    #[error(
        "refusing to run: process {tracer} traces this one and would see every key and passphrase"
    )]
    Traced { tracer: u32 },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A request for a human's approval: this command, these secrets.
struct Pending {
    context: String,
    secrets: Vec<String>,
    command: Resolved,
    /// The agent that asked and its stated purpose (shown to the approving human).
    caller: Option<crate::vault::api::Caller>,
    tx: watch::Sender<Option<Decision>>,
}

impl Pending {
    fn scopes(&self) -> impl Iterator<Item = Scope> + '_ {
        self.secrets.iter().map(|s| Scope {
            context: self.context.clone(),
            secret: s.clone(),
            command: self.command.fingerprint.clone(),
        })
    }
    fn info(&self, id: &str) -> Value {
        let mut v = json!({"request": id, "context": self.context, "secrets": self.secrets,
               "command": self.command.display});
        if let Some(c) = &self.caller {
            v["agent"] = json!(c.agent);
            v["purpose"] = json!(c.purpose);
        }
        v
    }
    /// An audit event of this request for `scope`, with the agent and purpose it came with.
    fn event<'a>(
        &'a self,
        scope: &'a Scope,
        outcome: &'a str,
        request: Option<&'a str>,
    ) -> crate::vault::audit::Event<'a> {
        scope
            .event("approval", outcome, request)
            .asked_by(self.caller.as_ref())
    }
}

struct State {
    paths: VaultPaths,
    audit: AuditLog,
    leases: LeaseManager,
    approvals: ApprovalStore,
    pending: HashMap<String, Pending>,
    keys: Keyring,
    attempts: Attempts,
    hashes: HashCache,
    /// Process groups of the commands `exec` is running, by exec number.
    running: HashMap<u64, u32>,
    /// Secrets (context, name) being rotated ([`RotationToken`]): one rotation at a time each;
    /// their leak events wait.
    rotating: std::collections::HashSet<(String, String)>,
    next_exec: u64,
    /// The vault's identities demand a sealed audit chain (known after an unlock).
    seal_required: bool,
    started: u64,
    heartbeat: Option<String>,
}

impl State {
    /// Records a decision: audited first (an unaudited decision does not happen), then stored.
    fn decide(
        &mut self,
        event: Event<'_>,
        scope: &Scope,
        d: Decision,
        label: &str,
        key: &[u8; 32],
    ) -> Result<(), RpcError> {
        self.audit.append(&event).map_err(audit_err)?;
        self.approvals
            .set(scope.clone(), d, label, key)
            .map_err(|e| RpcError::new(rpc::FAILED, e.to_string()))
    }

    /// The unlocked identity of `ctx`, or why there is none.
    fn identity(&mut self, ctx: &str) -> Result<age::x25519::Identity, RpcError> {
        store::check_name("context", ctx).map_err(store_err)?;
        if let Some(id) = self.keys.get(ctx) {
            return Ok(id.clone());
        }
        if !self.paths.context_dir(ctx).is_dir() {
            return Err(store_err(StoreError::NoContext {
                context: ctx.to_string(),
            }));
        }
        Err(locked())
    }

    /// What `argv` resolves to, and the key that MACs approvals in `ctx`.
    fn command_and_key(
        &mut self,
        ctx: &str,
        argv: &[String],
        cwd: &std::path::Path,
        env: &[(String, String)],
        pass_env: &[String],
    ) -> Result<(Resolved, Zeroizing<[u8; 32]>), RpcError> {
        let spec = CommandSpec {
            argv,
            cwd,
            env,
            pass_env,
        };
        let cmd = command::resolve(&spec, &mut self.hashes).map_err(|e| {
            let code = match e {
                command::CommandError::NotFound { .. } => rpc::COMMAND_NOT_FOUND,
                _ => rpc::FAILED,
            };
            RpcError::new(code, e.to_string())
        })?;
        Ok((cmd, keys::approval_key(&self.identity(ctx)?)))
    }

    /// Context `ctx` on its backend, for one operation.
    fn open_store(&mut self, ctx: &str) -> Result<Box<dyn SecretStore>, RpcError> {
        let id = self.identity(ctx)?;
        backend::open(&self.paths, ctx, &id).map_err(store_err)
    }
}

#[derive(Clone)]
struct Daemon {
    state: Arc<Mutex<State>>,
    shutdown: Arc<Notify>,
    /// Serialises passphrase checks: parallel guesses must not multiply the attempt budget.
    human: Arc<tokio::sync::Mutex<()>>,
    limits: Limits,
    /// Where leak events are taken from (and where `exec` reports a value seen in its output).
    leak_spool: Option<PathBuf>,
    /// Run for each incident (`leak_notify`).
    leak_notify: Option<Vec<String>>,
}

impl Daemon {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; keep serving rather than cascade.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn audit_err(e: crate::vault::audit::AuditError) -> RpcError {
    RpcError::new(
        rpc::AUDIT_FAILED,
        format!("refused: the audit record could not be written ({e})"),
    )
    .with(next(
        "guard vault audit verify",
        "check the audit log and its directory",
    ))
}

fn store_err(e: StoreError) -> RpcError {
    match e {
        StoreError::NotFound { .. } | StoreError::NoVersion { .. } => {
            RpcError::new(rpc::NOT_FOUND, e.to_string())
                .with(next("guard vault list", "see which secrets exist"))
        }
        StoreError::NoContext { .. } => RpcError::new(rpc::NOT_FOUND, e.to_string()),
        StoreError::InvalidName { .. }
        | StoreError::LocalOnly { .. }
        | StoreError::EmptyValue
        | StoreError::TooShort { .. }
        | StoreError::TooLong { .. } => RpcError::new(rpc::INVALID_PARAMS, e.to_string()),
        other => RpcError::new(rpc::FAILED, other.to_string()),
    }
}

fn locked() -> RpcError {
    RpcError::new(
        rpc::LOCKED,
        "the vault is locked: its keys are encrypted under the vault passphrase, and a human \
         unlocks them at a terminal with `guard vault unlock`",
    )
}

fn human_required(what: &str) -> RpcError {
    RpcError::new(
        rpc::HUMAN_REQUIRED,
        format!(
            "{what} needs proof of a human: the vault passphrase, typed at a terminal \
             (guard reads it from /dev/tty only)"
        ),
    )
}

fn denied(context: &str, secret: &str, command: &str, why: &str) -> RpcError {
    RpcError::new(
        rpc::DENIED,
        format!(
            "denied: {command} may not use secret {secret:?} in context {context:?} ({why}). \
             Only a human can approve this, with the vault passphrase at a terminal — for \
             example by running this same command there, which asks them."
        ),
    )
}

fn params<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, RpcError> {
    let v = if v.is_null() { json!({}) } else { v };
    serde_json::from_value(v).map_err(|e| {
        RpcError::new(
            rpc::INVALID_PARAMS,
            format!("invalid params: {}", without_values(&e.to_string())),
        )
    })
}

/// serde's message with every quoted or backquoted part (a value it may echo, as in "invalid
/// type: string \"…\"") replaced by `…`; only the field named by "missing field" is kept.
fn without_values(msg: &str) -> String {
    if msg.starts_with("missing field `") {
        return msg.to_string();
    }
    let mut out = String::with_capacity(msg.len());
    let mut quote: Option<char> = None;
    for c in msg.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '`' || c == '"' => {
                quote = Some(c);
                out.push('…');
            }
            None => out.push(c),
        }
    }
    out
}

fn reply(data: Value, next_actions: Vec<rpc::NextAction>) -> Result<Reply, RpcError> {
    Ok(Reply { data, next_actions })
}

/// A typed reply ([`crate::vault::api`]) as the envelope's `data`.
fn typed<T: serde::Serialize>(
    data: &T,
    next_actions: Vec<rpc::NextAction>,
) -> Result<Reply, RpcError> {
    let data = serde_json::to_value(data)
        .map_err(|_| RpcError::new(rpc::INTERNAL, "a reply did not serialise"))?;
    reply(data, next_actions)
}

fn secret_string(v: Option<SecretValue>) -> Option<SecretString> {
    v.filter(|v| !v.is_empty())
        .map(|v| SecretString::from(v.expose_secret().to_string()))
}

/// How long a command whose `guard exec` died has to stop on SIGTERM before SIGKILL.
const CALLER_GONE_GRACE: Duration = Duration::from_secs(3);

/// Run the daemon in the foreground until SIGTERM/SIGINT or a `shutdown` request.
pub fn run_daemon(paths: VaultPaths) -> Result<(), ServerError> {
    // A client that goes away (`guard exec -- cmd | head`) must cost a write error, not the
    // daemon: the CLI restores SIGPIPE's default for itself, so ignore it here, before any
    // thread starts. Commands get the default back (std resets it in every child).
    // SAFETY: setting a signal disposition; no other thread exists yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // The keys will live in this process: no core dumps, no same-user ptrace or /proc/PID/mem.
    crate::vault::tty::set_non_dumpable();
    // A tracer attached before that call stays attached: refuse to hold keys under it.
    match crate::vault::tty::tracer_pid(None) {
        Some(0) => {}
        Some(tracer) => return Err(ServerError::Traced { tracer }),
        None => return Err(ServerError::Traced { tracer: u32::MAX }),
    }
    // Compile (or load) the output redactor's databases now, not on the first `guard exec`.
    crate::vault::exec::warm_redaction();
    for var in ["LD_PRELOAD", "LD_AUDIT"] {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            return Err(ServerError::Injected { var: var.into() });
        }
    }
    let config = VaultConfig::load(&paths)?;
    let limits = config.limits()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| ServerError::Io {
            op: "start runtime",
            path: paths.root().into(),
            source,
        })?;
    let leak = (
        config.leak_spool_dir(),
        config.leak_notify.filter(|a| !a.is_empty()),
    );
    rt.block_on(serve(paths, limits, config.heartbeat, leak))
}
async fn serve(
    paths: VaultPaths,
    limits: Limits,
    heartbeat: Option<HeartbeatConfig>,
    (leak_spool, leak_notify): (Option<PathBuf>, Option<Vec<String>>),
) -> Result<(), ServerError> {
    store::private_dir(paths.root())?;
    store::private_dir(&paths.run_dir())?;
    let sock = paths.socket();
    // Signal handlers before the socket exists: a SIGTERM sent as soon as the socket appears
    // must shut down cleanly, not kill the process with the socket and pid file left behind.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| ServerError::Io {
            op: "signal",
            path: sock.clone(),
            source,
        })?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|source| ServerError::Io {
            op: "signal",
            path: sock.clone(),
            source,
        })?;
    if sock.exists() {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            return Err(ServerError::AlreadyRunning { socket: sock });
        }
        let _ = std::fs::remove_file(&sock);
    }
    // Writes killed before their rename leave temp files (values, encrypted): removed now.
    let stale = store::remove_stale_temps(&paths);
    if stale > 0 {
        eprintln!("guard vault daemon: removed {stale} unfinished temp file(s)");
    }
    let audit = AuditLog::open(&paths).map_err(|e| match e {
        crate::vault::audit::AuditError::Broken { .. } => ServerError::AuditBroken {
            reason: e.to_string(),
        },
        other => other.into(),
    })?;
    let approvals = ApprovalStore::open(paths.approvals())?;
    let (leases, orphaned) =
        LeaseManager::recover(limits.default_ttl, limits.max_ttl, paths.leases()).map_err(
            |source| ServerError::Io {
                op: "read",
                path: paths.leases(),
                source,
            },
        )?;
    let mut audit = audit;
    stop_orphans(&mut audit, &orphaned);
    // Before the socket exists: a CLI that connects checks the peer against this file.
    std::fs::write(paths.pid_file(), format!("{}\n", std::process::id())).map_err(|source| {
        ServerError::Io {
            op: "write",
            path: paths.pid_file(),
            source,
        }
    })?;
    // SAFETY: umask(2) only swaps the process file-mode mask; restored right after bind.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(&sock);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let std_listener = bound.map_err(|source| ServerError::Io {
        op: "bind",
        path: sock.clone(),
        source,
    })?;
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(
        |source| ServerError::Io {
            op: "chmod",
            path: sock.clone(),
            source,
        },
    )?;
    std_listener
        .set_nonblocking(true)
        .map_err(|source| ServerError::Io {
            op: "nonblocking",
            path: sock.clone(),
            source,
        })?;
    let listener =
        tokio::net::UnixListener::from_std(std_listener).map_err(|source| ServerError::Io {
            op: "listen",
            path: sock.clone(),
            source,
        })?;

    let state = State {
        paths: paths.clone(),
        audit,
        leases,
        approvals,
        pending: HashMap::new(),
        keys: Keyring::default(),
        attempts: Attempts::new(limits.passphrase_attempts, limits.passphrase_lockout)
            .persisted(paths.run_dir().join("attempts.json")),
        hashes: HashCache::default(),
        running: HashMap::new(),
        rotating: Default::default(),
        next_exec: 0,
        seal_required: false,
        started: now_unix(),
        heartbeat: heartbeat.as_ref().map(|_| "starting".to_string()),
    };
    let d = Daemon {
        state: Arc::new(Mutex::new(state)),
        shutdown: Arc::new(Notify::new()),
        human: Arc::new(tokio::sync::Mutex::new(())),
        limits: limits.clone(),
        leak_spool: leak_spool.clone(),
        leak_notify,
    };
    d.lock().audit.append(&Event {
        op: "daemon",
        outcome: "start",
        ..Default::default()
    })?;
    eprintln!(
        "guard vault daemon: listening on {} (pid {})",
        sock.display(),
        std::process::id()
    );

    tokio::spawn(maintenance(d.clone()));
    if let Some(dir) = leak_spool {
        eprintln!("guard vault daemon: leak events from {}", dir.display());
        tokio::spawn(d.clone().leak_loop(dir));
    }
    if let Some(hb) = heartbeat {
        tokio::spawn(heartbeat_loop(d.clone(), hb));
    }
    // At most `max_connections` at once: past that, connections wait in the listen queue (they
    // hold no descriptor of ours) until one closes — idle ones close on their own.
    let slots = Arc::new(tokio::sync::Semaphore::new(d.limits.max_connections));
    let mut accept_errors = AcceptErrors::default();
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = d.shutdown.notified() => break,
        };
        tokio::select! {
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    let d = d.clone();
                    tokio::spawn(async move {
                        connection(d, stream).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    accept_errors.report(&e);
                    // Out of descriptors: give connections time to close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = d.shutdown.notified() => break,
        }
    }
    drop(listener);
    {
        // The last record first, and the log closed to every task still running: once the
        // socket is gone (what `daemon --stop` waits for) the log is final.
        let mut s = d.lock();
        let _ = s.audit.append(&Event {
            op: "daemon",
            outcome: "stop",
            ..Default::default()
        });
        s.audit.close();
        let _ = std::fs::remove_file(&sock);
        let _ = std::fs::remove_file(paths.pid_file());
    }
    eprintln!("guard vault daemon: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_params_never_echo_a_value() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct P {
            name: String,
            version: Option<u32>,
            kind: Option<Kind>,
        }
        #[derive(Deserialize, Debug)]
        enum Kind {
            A,
        }
        let value = "fake-secret-value-0123456789";
        for bad in [
            json!({"name": "x", "version": value}),
            json!({"name": "x", "kind": value}),
            json!({"name": ["fake", value]}),
            json!({"name": 1234567890123u64}),
        ] {
            let e = params::<P>(bad).unwrap_err();
            assert!(
                !e.message.contains(value) && !e.message.contains("1234567890123"),
                "{}",
                e.message
            );
            assert!(e.message.starts_with("invalid params: "), "{}", e.message);
        }
        let e = params::<P>(json!({})).unwrap_err();
        assert!(e.message.contains("missing field `name`"), "{}", e.message);
    }
}
