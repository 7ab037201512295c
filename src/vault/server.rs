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

pub mod leak;

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
        json!({"request": id, "context": self.context, "secrets": self.secrets,
               "command": self.command.display})
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

fn default_ctx() -> String {
    "default".into()
}

fn secret_string(v: Option<SecretValue>) -> Option<SecretString> {
    v.filter(|v| !v.is_empty())
        .map(|v| SecretString::from(v.expose_secret().to_string()))
}

#[derive(Deserialize)]
struct AddP {
    #[serde(default = "default_ctx")]
    context: String,
    name: String,
    value: SecretValue,
    rotate_via: Option<String>,
    rotate_shell: Option<bool>,
    rotate_every: Option<String>,
    on_leak: Option<store::LeakPolicy>,
    #[serde(default)]
    revoke_prefix: Option<String>,
}
#[derive(Deserialize)]
struct NameP {
    #[serde(default = "default_ctx")]
    context: String,
    name: String,
}
#[derive(Deserialize)]
struct ListP {
    context: Option<String>,
}
#[derive(Deserialize)]
struct ExecSecret {
    name: String,
    env: String,
    ttl: Option<String>,
}
#[derive(Deserialize)]
struct ExecP {
    #[serde(default = "default_ctx")]
    context: String,
    secrets: Vec<ExecSecret>,
    argv: Vec<String>,
    cwd: PathBuf,
    #[serde(default)]
    env: Vec<(String, String)>,
    /// The project's pass-through variables (`env = [...]`).
    #[serde(default)]
    pass_env: Vec<String>,
    umask: Option<u32>,
}
#[derive(Deserialize)]
struct RequestP {
    request: String,
}
#[derive(Deserialize)]
struct ApproveP {
    request: String,
    allow: bool,
    passphrase: Option<SecretValue>,
}
#[derive(Deserialize)]
struct GrantP {
    #[serde(default = "default_ctx")]
    context: String,
    names: Vec<String>,
    argv: Vec<String>,
    cwd: PathBuf,
    #[serde(default)]
    env: Vec<(String, String)>,
    #[serde(default)]
    pass_env: Vec<String>,
    passphrase: Option<SecretValue>,
    #[serde(default)]
    deny: bool,
}
#[derive(Deserialize)]
struct PrintP {
    #[serde(default = "default_ctx")]
    context: String,
    name: String,
    version: Option<u32>,
    passphrase: Option<SecretValue>,
}
#[derive(Deserialize)]
struct UnlockP {
    passphrase: Option<SecretValue>,
    ttl: Option<String>,
    /// Sent by `guard vault init` only: seal an audit chain that has no seal yet.
    #[serde(default)]
    seal_first: bool,
}
#[derive(Deserialize)]
struct RevokeP {
    lease: Option<String>,
    #[serde(default)]
    all: bool,
}
#[derive(Deserialize)]
struct KillP {
    #[serde(default)]
    rotate: bool,
    #[serde(default)]
    wipe: bool,
}
#[derive(Deserialize)]
struct SignalP {
    signal: i32,
}

fn env_name_syntax(env: &str) -> bool {
    !env.is_empty()
        && env.len() <= 256
        && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !env.as_bytes()[0].is_ascii_digit()
}

fn check_pass_env(names: &[String]) -> Result<(), RpcError> {
    match names.iter().find(|n| !env_name_syntax(n)) {
        Some(n) => Err(RpcError::new(
            rpc::INVALID_PARAMS,
            format!(
                "invalid pass-through variable name {:?}",
                command::printable(n)
            ),
        )),
        None => Ok(()),
    }
}

fn valid_env_name(env: &str) -> bool {
    !env.is_empty()
        && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !env.as_bytes()[0].is_ascii_digit()
        && !command::is_code_env(env)
        && env != "PATH"
}

impl Daemon {
    async fn dispatch(&self, req: Request, conn: &mut FrameReader) -> Result<Reply, RpcError> {
        let p = req.params;
        match req.method.as_str() {
            "hello" | "ping" => reply(
                json!({"server": "guard-vault", "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id()}),
                vec![],
            ),
            "status" => self.status(),
            "add" => self.add(params(p)?),
            "list" => self.list(params(p)?),
            "fingerprints" => self.fingerprints(params(p)?),
            "rm" => self.rm(params(p)?),
            "exec" => self.exec(params(p)?, conn).await,
            "await_approval" => self.await_approval(params(p)?).await,
            "approve" => self.approve(params(p)?).await,
            "pending" => self.pending(),
            "grant" => self.grant(params(p)?).await,
            "print" => self.print(params(p)?, conn).await,
            "unlock" => self.unlock(params(p)?).await,
            "lock" => {
                let mut s = self.lock();
                s.keys.lock();
                let _ = s.audit.append(&Event {
                    op: "lock",
                    outcome: "ok",
                    ..Default::default()
                });
                reply(json!({"locked": true}), vec![])
            }
            "revoke" => self.revoke(params(p)?),
            "audit_verify" => self.audit_verify(),
            "rotate" => {
                let n: NameP = params(p)?;
                let v = self.rotate(&n.context, &n.name, "manual").await?;
                reply(
                    json!({"context": n.context, "name": n.name, "version": v}),
                    vec![next(
                        format!("guard vault list --context {}", n.context),
                        "see versions",
                    )],
                )
            }
            "killswitch" => {
                let k: KillP = params(p)?;
                let data = self.killswitch(k.rotate, k.wipe, "manual").await;
                reply(
                    data,
                    vec![next("guard vault status", "confirm no leases remain")],
                )
            }
            "shutdown" => {
                self.shutdown.notify_one();
                reply(json!({"stopping": true}), vec![])
            }
            m => Err(RpcError::new(
                rpc::METHOD_NOT_FOUND,
                format!("unknown method {m:?}"),
            )),
        }
    }

    /// Check the vault passphrase (the proof of a human) for `what`: rate-limited, audited, one
    /// check at a time. A correct one (re)unlocks the identities for `ttl`.
    async fn human(
        &self,
        passphrase: Option<SecretValue>,
        what: &str,
        ttl: Option<Duration>,
        seal_first: bool,
    ) -> Result<(), RpcError> {
        let pass = secret_string(passphrase).ok_or_else(|| {
            let mut s = self.lock();
            let _ = s.audit.append(&Event {
                op: "passphrase",
                outcome: "missing",
                detail: Some(what),
                ..Default::default()
            });
            human_required(what)
        })?;
        let _one_at_a_time = self.human.lock().await;
        if crate::vault::tty::tracer_pid(None) != Some(0) {
            return Err(RpcError::new(
                rpc::FAILED,
                "refused: this daemon is being traced; stop it and start a new one",
            ));
        }
        let paths = {
            let mut s = self.lock();
            if let Err(left) = s.attempts.check() {
                let _ = s.audit.append(&Event {
                    op: "passphrase",
                    outcome: "locked-out",
                    detail: Some(what),
                    ..Default::default()
                });
                return Err(RpcError::new(
                    rpc::LOCKED_OUT,
                    format!(
                        "too many wrong passphrases: passphrase checks are refused for another {} s",
                        left.as_secs() + 1
                    ),
                ));
            }
            s.paths.clone()
        };
        let checked = tokio::task::spawn_blocking(move || keys::unlock_all(&paths, &pass))
            .await
            .map_err(|_| RpcError::new(rpc::INTERNAL, "passphrase check failed"))?;
        let mut s = self.lock();
        match checked {
            Ok(u) => {
                // The chain is checked against its seal before the keys are taken: a chain
                // rewritten without the vault key keeps the vault locked.
                let paths = s.paths.clone();
                if let Err(e) = s.audit.unseal(&paths, &u.ids, u.seal_required, seal_first) {
                    s.attempts.succeeded();
                    eprintln!("guard vault daemon: not unlocked: {e}");
                    return Err(RpcError::new(
                        rpc::AUDIT_FAILED,
                        format!(
                            "{e}. The vault stays locked: a human looks at it (`guard vault \
                             audit --tail 20`), stops the daemon and runs `guard vault audit \
                             acknowledge` at a terminal"
                        ),
                    ));
                }
                s.audit
                    .append(&Event {
                        op: "passphrase",
                        outcome: "ok",
                        detail: Some(what),
                        ..Default::default()
                    })
                    .map_err(audit_err)?;
                s.attempts.succeeded();
                s.seal_required = u.seal_required;
                s.keys.unlock(u.ids, ttl.unwrap_or(self.limits.unlock_ttl));
                Ok(())
            }
            Err(KeyError::WrongPassphrase) => {
                let left = s.attempts.failed();
                let _ = s.audit.append(&Event {
                    op: "passphrase",
                    outcome: if left == 0 { "lockout" } else { "wrong" },
                    detail: Some(what),
                    ..Default::default()
                });
                Err(RpcError::new(
                    rpc::DENIED,
                    if left == 0 {
                        format!(
                            "wrong passphrase; passphrase checks are now refused for {} s",
                            self.limits.passphrase_lockout.as_secs()
                        )
                    } else {
                        format!("wrong passphrase ({left} more before a lockout)")
                    },
                ))
            }
            Err(e) => Err(RpcError::new(rpc::FAILED, e.to_string())),
        }
    }

    /// The audit chain, its head and its seal, checked with the unlocked identities.
    fn audit_verify(&self) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let mut ids = std::collections::BTreeMap::new();
        for c in store::list_contexts(&s.paths) {
            match s.keys.get(&c) {
                Some(id) => {
                    ids.insert(c, id.clone());
                }
                None => return Err(locked()),
            }
        }
        let report = crate::vault::audit::verify_sealed(&s.paths, &ids, s.seal_required)
            .map_err(|e| RpcError::new(rpc::AUDIT_FAILED, e.to_string()))?;
        reply(json!(report), vec![])
    }

    fn status(&self) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let contexts = store::list_contexts(&s.paths);
        let leases = s.leases.active();
        let pending: Vec<Value> = s.pending.iter().map(|(id, p)| p.info(id)).collect();
        let unlocked_for = s.keys.expires_in().map(|d| d.as_secs());
        let lockout = s.attempts.locked_out_for().map(|d| d.as_secs());
        let mut acts = vec![
            next("guard vault list", "list stored secrets"),
            next("guard vault audit --tail 20", "recent audit records"),
        ];
        if !pending.is_empty() {
            acts.push(next(
                "guard vault pending",
                "requests waiting for a human's approval",
            ));
        }
        reply(
            json!({"running": true, "pid": std::process::id(), "started": s.started,
                   "vault_dir": s.paths.root(), "contexts": contexts,
                   "unlocked": unlocked_for.is_some(), "unlocked_for_secs": unlocked_for,
                   "passphrase_lockout_secs": lockout,
                   "active_leases": leases.len(), "leases": leases, "pending_approvals": pending,
                   "running_commands": s.running.len(), "heartbeat": s.heartbeat,
                   "dumpable": crate::vault::tty::is_dumpable(),
                   "traced_by": crate::vault::tty::tracer_pid(None)}),
            acts,
        )
    }

    fn add(&self, a: AddP) -> Result<Reply, RpcError> {
        if let Some(e) = &a.rotate_every {
            config::parse_duration(e)
                .map_err(|e| RpcError::new(rpc::INVALID_PARAMS, e.to_string()))?;
        }
        store::check_name("secret", &a.name).map_err(store_err)?;
        let mut s = self.lock();
        let mut st = s.open_store(&a.context)?;
        let version = st
            .put(
                &a.name,
                a.value,
                PutOptions {
                    rotate_via: a.rotate_via,
                    rotate_shell: a.rotate_shell,
                    rotate_every: a.rotate_every,
                    on_leak: a.on_leak,
                    revoke_prefix: a.revoke_prefix,
                },
            )
            .map_err(store_err)?;
        s.audit
            .append(&Event {
                op: "add",
                outcome: "ok",
                context: Some(&a.context),
                secret: Some(&a.name),
                version: Some(version),
                ..Default::default()
            })
            .map_err(audit_err)?;
        if let Err(e) = st.save() {
            let _ = s.audit.append(&Event {
                op: "add",
                outcome: "error",
                context: Some(&a.context),
                secret: Some(&a.name),
                ..Default::default()
            });
            return Err(store_err(e));
        }
        publish_fingerprints(&mut s);
        reply(
            json!({"context": a.context, "name": a.name, "version": version}),
            vec![next(
                "guard exec -- CMD",
                "run a command with the secret injected (declare it in .guard/secrets.toml); \
                 a human approves its first use",
            )],
        )
    }

    fn list(&self, l: ListP) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let contexts = match l.context {
            Some(c) => vec![c],
            None => store::list_contexts(&s.paths),
        };
        let mut out = Vec::new();
        for c in contexts {
            let mut st = s.open_store(&c)?;
            let secrets = st.infos().map_err(store_err)?;
            out.push(json!({"context": c, "backend": st.backend(), "secrets": secrets}));
        }
        reply(
            json!({"contexts": out}),
            vec![next(
                "guard vault add NAME",
                "store a secret (value from a no-echo prompt or stdin)",
            )],
        )
    }

    /// The fingerprints of every version of every secret (in one context, or all): what a
    /// redactor needs to recognise stored values, without the values. Rotated-out versions stay
    /// in, so they keep being redacted. Values too short to fingerprint are named in `skipped`.
    fn fingerprints(&self, l: ListP) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let contexts = match l.context {
            Some(c) => vec![c],
            None => store::list_contexts(&s.paths),
        };
        let (set, skipped) = fingerprint_set(&mut s, &contexts)?;
        s.audit
            .append(&Event {
                op: "fingerprints",
                outcome: "ok",
                ..Default::default()
            })
            .map_err(audit_err)?;
        reply(
            json!({"set": set, "skipped": skipped}),
            vec![next(
                "guard redact --fingerprints FILE",
                "redact every stored value from a stream or a command's output",
            )],
        )
    }

    fn rm(&self, n: NameP) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let mut st = s.open_store(&n.context)?;
        st.remove(&n.name).map_err(store_err)?;
        s.audit
            .append(&Event {
                op: "rm",
                outcome: "ok",
                context: Some(&n.context),
                secret: Some(&n.name),
                ..Default::default()
            })
            .map_err(audit_err)?;
        st.save().map_err(store_err)?;
        let revoked = s
            .leases
            .revoke_where(|l| l.context == n.context && l.secret == n.name);
        publish_fingerprints(&mut s);
        reply(
            json!({"removed": n.name, "revoked_leases": revoked}),
            vec![next("guard vault list", "remaining secrets")],
        )
    }

    /// Launch `e.argv` with the approved secrets on the caller's stdio; answer with its exit.
    async fn exec(&self, e: ExecP, conn: &mut FrameReader) -> Result<Reply, RpcError> {
        let stdio: [OwnedFd; 3] = conn
            .take_fds(3)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| {
                RpcError::new(
                    rpc::INVALID_PARAMS,
                    "exec needs the caller's stdin, stdout and stderr passed with the request",
                )
            })?;
        if e.argv.is_empty() {
            return Err(RpcError::new(rpc::INVALID_PARAMS, "empty command"));
        }
        check_pass_env(&e.pass_env)?;
        let mut ttls = Vec::new();
        for sec in &e.secrets {
            store::check_name("secret", &sec.name).map_err(store_err)?;
            if !valid_env_name(&sec.env) {
                return Err(RpcError::new(
                    rpc::INVALID_PARAMS,
                    format!(
                        "{:?} cannot carry a secret (invalid, or it chooses code)",
                        sec.env
                    ),
                ));
            }
            ttls.push(match &sec.ttl {
                Some(t) => Some(
                    config::parse_duration(t)
                        .map_err(|e| RpcError::new(rpc::INVALID_PARAMS, e.to_string()))?,
                ),
                None => None,
            });
        }
        let (cmd, secrets, lease_ids, exec_no) = {
            let mut s = self.lock();
            let mut st = s.open_store(&e.context)?;
            let (cmd, key) = s.command_and_key(&e.context, &e.argv, &e.cwd, &e.env, &e.pass_env)?;
            let mut missing = Vec::new();
            for sec in &e.secrets {
                st.value(&sec.name, None).map_err(store_err)?;
                let scope = Scope {
                    context: e.context.clone(),
                    secret: sec.name.clone(),
                    command: cmd.fingerprint.clone(),
                };
                match s.approvals.get(&scope, &key) {
                    Some(Decision::Allow) => {}
                    Some(Decision::Deny) => {
                        s.audit
                            .append(&scope.event("exec", "denied", None))
                            .map_err(audit_err)?;
                        return Err(denied(
                            &e.context,
                            &sec.name,
                            &cmd.display,
                            "a human denied it",
                        ));
                    }
                    None => missing.push(sec.name.clone()),
                }
            }
            if !missing.is_empty() {
                return request_approval(&mut s, &e.context, missing, cmd);
            }
            let mut secrets = Vec::new();
            let mut lease_ids = Vec::new();
            for (sec, ttl) in e.secrets.iter().zip(ttls) {
                let granted = s
                    .leases
                    .grant(&LeaseRequest {
                        context: &e.context,
                        secret: &sec.name,
                        version: None,
                        command: &cmd.display,
                        ttl,
                    })
                    .map_err(|err| RpcError::new(rpc::INVALID_PARAMS, err.to_string()));
                let lease = match granted {
                    Ok(l) => l,
                    Err(err) => {
                        revoke_leases(&mut s, &lease_ids);
                        return Err(err);
                    }
                };
                lease_ids.push(lease.id.clone());
                let (version, value) = st.value(&sec.name, None).map_err(store_err)?;
                if let Err(err) = s.audit.append(&Event {
                    op: "access",
                    outcome: "ok",
                    context: Some(&e.context),
                    secret: Some(&sec.name),
                    client: Some(&cmd.fingerprint),
                    lease: Some(&lease.id),
                    version: Some(version),
                    ..Default::default()
                }) {
                    revoke_leases(&mut s, &lease_ids);
                    return Err(audit_err(err));
                }
                secrets.push(crate::vault::exec::Injected {
                    env: sec.env.clone(),
                    id: leak::fingerprint_id(&e.context, &sec.name),
                    version,
                    value,
                });
            }
            s.next_exec += 1;
            (cmd, secrets, lease_ids, s.next_exec)
        };
        let launched = crate::vault::exec::launch(crate::vault::exec::Launch {
            cmd: &cmd,
            argv: &e.argv,
            secrets,
            stdio,
            umask: e.umask,
            spool: self
                .leak_spool
                .clone()
                .map(|d| (d, format!("exec:{}", e.argv[0]))),
        });
        let running = match launched {
            Ok(r) => r,
            Err(err) => {
                revoke_leases(&mut self.lock(), &lease_ids);
                return Err(RpcError::new(
                    rpc::FAILED,
                    format!("cannot run {:?}: {err}", e.argv[0]),
                ));
            }
        };
        let pgid = running.pid();
        {
            // Registered and checked under one lock: a killswitch (or heartbeat failure) that
            // revoked the leases while the command was being launched stops it now.
            let mut s = self.lock();
            s.running.insert(exec_no, pgid);
            if let Some(h) = crate::vault::lease::Holder::of(pgid) {
                s.leases.hold(&lease_ids, h);
            }
            if lease_ids.iter().any(|id| s.leases.check(id).is_err()) {
                kill_group(pgid, libc::SIGTERM);
            }
        }
        let mut wait = tokio::task::spawn_blocking(move || running.wait());
        let mut caller_here = true;
        let status = loop {
            if !caller_here {
                // Given a moment to stop on SIGTERM; then it is killed.
                match tokio::time::timeout(CALLER_GONE_GRACE, &mut wait).await {
                    Ok(r) => break r,
                    Err(_) => {
                        kill_group(pgid, libc::SIGKILL);
                        break (&mut wait).await;
                    }
                }
            }
            tokio::select! {
                r = &mut wait => break r,
                f = conn.frame(self.limits.max_frame_bytes) => match f {
                    Ok(Some(line)) => {
                        let sig = serde_json::from_slice::<Request>(&line)
                            .ok()
                            .filter(|r| r.method == "signal")
                            .and_then(|r| params::<SignalP>(r.params).ok())
                            .map(|p| p.signal)
                            .filter(|s| crate::vault::exec::FORWARDED_SIGNALS.contains(s));
                        if let Some(sig) = sig {
                            kill_group(pgid, sig);
                        }
                    }
                    // The caller is gone (killed, however) or broke the protocol: its
                    // leases end now, and its command goes too.
                    _ => {
                        revoke_leases(&mut self.lock(), &lease_ids);
                        kill_group(pgid, libc::SIGTERM);
                        caller_here = false;
                    }
                },
            }
        };
        {
            let mut s = self.lock();
            s.running.remove(&exec_no);
            revoke_leases(&mut s, &lease_ids);
        }
        use std::os::unix::process::ExitStatusExt;
        match status {
            Ok(Ok(st)) => reply(
                json!({"exit_code": st.code(), "signal": st.signal()}),
                vec![],
            ),
            _ => Err(RpcError::new(rpc::INTERNAL, "lost track of the command")),
        }
    }

    async fn await_approval(&self, r: RequestP) -> Result<Reply, RpcError> {
        let (mut rx, context, secret, command) = {
            let s = self.lock();
            let p = s.pending.get(&r.request).ok_or_else(|| {
                RpcError::new(rpc::NOT_FOUND, format!("no pending request {}", r.request))
            })?;
            (
                p.tx.subscribe(),
                p.context.clone(),
                p.secrets.join(", "),
                p.command.display.clone(),
            )
        };
        let waited =
            tokio::time::timeout(self.limits.approval_timeout, rx.wait_for(|d| d.is_some())).await;
        let decision = match waited {
            Ok(Ok(d)) => *d,
            _ => None,
        };
        match decision {
            Some(Decision::Allow) => {
                reply(json!({"request": r.request, "decision": "allow"}), vec![])
            }
            Some(Decision::Deny) => Err(denied(&context, &secret, &command, "a human denied it")),
            None => {
                let mut s = self.lock();
                if let Some(p) = s.pending.remove(&r.request) {
                    for scope in p.scopes() {
                        let _ = s.audit.append(&scope.event(
                            "approval",
                            "timeout-denied",
                            Some(&r.request),
                        ));
                    }
                }
                Err(denied(
                    &context,
                    &secret,
                    &command,
                    "no human approved it before the approval timeout",
                ))
            }
        }
    }

    async fn approve(&self, a: ApproveP) -> Result<Reply, RpcError> {
        if !self.lock().pending.contains_key(&a.request) {
            return Err(
                RpcError::new(rpc::NOT_FOUND, format!("no pending request {}", a.request))
                    .with(next("guard vault pending", "list pending requests")),
            );
        }
        if a.allow {
            self.human(a.passphrase, "approve", None, false).await?;
        }
        let mut s = self.lock();
        let p = s.pending.remove(&a.request).ok_or_else(|| {
            RpcError::new(rpc::NOT_FOUND, format!("no pending request {}", a.request))
        })?;
        let d = if a.allow {
            Decision::Allow
        } else {
            Decision::Deny
        };
        let outcome = if a.allow { "approved" } else { "denied" };
        // A denial is remembered when the keys are at hand; without them it only answers now.
        let key = s.keys.get(&p.context).map(keys::approval_key);
        for scope in p.scopes() {
            let ev = scope.event("approval", outcome, Some(&a.request));
            let done = match &key {
                Some(k) => s.decide(ev, &scope, d, &p.command.display, k),
                None => s.audit.append(&ev).map_err(audit_err),
            };
            if let Err(e) = done {
                let _ = p.tx.send(Some(Decision::Deny));
                return Err(e);
            }
        }
        let _ = p.tx.send(Some(d));
        reply(
            json!({"request": a.request, "decision": d, "context": p.context,
                   "secrets": p.secrets, "command": p.command.display}),
            vec![],
        )
    }

    fn pending(&self) -> Result<Reply, RpcError> {
        let s = self.lock();
        let v: Vec<Value> = s.pending.iter().map(|(id, p)| p.info(id)).collect();
        reply(json!({"pending": v}), vec![])
    }

    async fn grant(&self, g: GrantP) -> Result<Reply, RpcError> {
        if g.names.is_empty() || g.argv.is_empty() {
            return Err(RpcError::new(
                rpc::INVALID_PARAMS,
                "grant needs secret names and a command",
            ));
        }
        check_pass_env(&g.pass_env)?;
        self.human(g.passphrase, "grant", None, false).await?;
        let mut s = self.lock();
        let mut st = s.open_store(&g.context)?;
        for n in &g.names {
            st.meta(n).map_err(store_err)?;
        }
        let (cmd, key) = s.command_and_key(&g.context, &g.argv, &g.cwd, &g.env, &g.pass_env)?;
        let (d, outcome) = if g.deny {
            (Decision::Deny, "deny")
        } else {
            (Decision::Allow, "allow")
        };
        for n in &g.names {
            let scope = Scope {
                context: g.context.clone(),
                secret: n.clone(),
                command: cmd.fingerprint.clone(),
            };
            s.decide(
                scope.event("grant", outcome, None),
                &scope,
                d,
                &cmd.display,
                &key,
            )?;
        }
        reply(
            json!({"context": g.context, "secrets": g.names, "command": cmd.display,
                   "fingerprint": cmd.fingerprint, "decision": d}),
            vec![],
        )
    }

    /// Write one value to the caller's stdout descriptor, after a passphrase check.
    async fn print(&self, p: PrintP, conn: &mut FrameReader) -> Result<Reply, RpcError> {
        let out = conn.take_fds(1).and_then(|mut v| v.pop()).ok_or_else(|| {
            RpcError::new(
                rpc::INVALID_PARAMS,
                "print needs the caller's stdout passed with the request",
            )
        })?;
        self.human(p.passphrase, "print", None, false).await?;
        let (version, value) = {
            let mut s = self.lock();
            let mut st = s.open_store(&p.context)?;
            let (version, value) = st.value(&p.name, p.version).map_err(store_err)?;
            s.audit
                .append(&Event {
                    op: "print",
                    outcome: "ok",
                    context: Some(&p.context),
                    secret: Some(&p.name),
                    version: Some(version),
                    ..Default::default()
                })
                .map_err(audit_err)?;
            (version, value)
        };
        let written = tokio::task::spawn_blocking(move || write_value(out, &value)).await;
        match written {
            Ok(Ok(())) => reply(
                json!({"context": p.context, "name": p.name, "version": version}),
                vec![],
            ),
            _ => Err(RpcError::new(
                rpc::FAILED,
                "could not write to the caller's stdout",
            )),
        }
    }

    async fn unlock(&self, u: UnlockP) -> Result<Reply, RpcError> {
        let ttl = match &u.ttl {
            Some(t) => Some(
                config::parse_duration(t)
                    .map_err(|e| RpcError::new(rpc::INVALID_PARAMS, e.to_string()))?
                    .min(config::MAX_UNLOCK),
            ),
            None => None,
        };
        self.human(u.passphrase, "unlock", ttl, u.seal_first)
            .await?;
        let mut s = self.lock();
        publish_fingerprints(&mut s);
        let secs = s.keys.expires_in().map(|d| d.as_secs());
        reply(
            json!({"unlocked": true, "contexts": store::list_contexts(&s.paths),
                   "unlocked_for_secs": secs}),
            vec![next("guard vault lock", "forget the keys now")],
        )
    }

    fn revoke(&self, r: RevokeP) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let n = if r.all {
            let n = s.leases.revoke_where(|_| true);
            let _ = s.audit.append(&Event {
                op: "revoke",
                outcome: "all",
                detail: Some(&format!("{n} leases")),
                ..Default::default()
            });
            n
        } else if let Some(id) = r.lease {
            if revoke_leases(&mut s, std::slice::from_ref(&id)) == 0 {
                return Err(RpcError::new(rpc::NOT_FOUND, format!("no live lease {id}")));
            }
            1
        } else {
            return Err(RpcError::new(
                rpc::INVALID_PARAMS,
                "give a lease id or all=true",
            ));
        };
        reply(
            json!({"revoked": n}),
            vec![next("guard vault status", "see remaining leases")],
        )
    }
    /// Rotates a secret unless a rotation of it is running already (then that one is the
    /// rotation: one new version, not two).
    async fn rotate(&self, context: &str, name: &str, why: &str) -> Result<u32, RpcError> {
        let token = {
            let mut s = self.lock();
            self.rotation_token(&mut s, context, name)
        };
        let Some(token) = token else {
            return Err(RpcError::new(
                rpc::FAILED,
                format!("{name:?} in {context:?} is being rotated already"),
            ));
        };
        self.rotate_holding(&token, why).await
    }

    /// The right to rotate `context`/`name` until dropped; `None` while another holds it.
    fn rotation_token(&self, s: &mut State, context: &str, name: &str) -> Option<RotationToken> {
        let key = (context.to_string(), name.to_string());
        s.rotating.insert(key.clone()).then(|| RotationToken {
            state: self.state.clone(),
            key,
        })
    }

    /// Runs the secret's hook and stores its output as the next version.
    async fn rotate_holding(&self, token: &RotationToken, why: &str) -> Result<u32, RpcError> {
        let (context, name) = (token.key.0.as_str(), token.key.1.as_str());
        let (cmd, shell) = {
            let mut s = self.lock();
            let mut st = s.open_store(context)?;
            let e = st.meta(name).map_err(store_err)?;
            let cmd = e.rotate_via.clone().ok_or_else(|| {
                RpcError::new(
                    rpc::FAILED,
                    rotate::RotateError::NoHook { name: name.into() }.to_string(),
                )
            })?;
            (cmd, e.rotate_shell)
        };
        let hook = rotate::Hook {
            context,
            name,
            command: &cmd,
            shell,
            timeout: self.limits.rotation_timeout,
        };
        let value = match rotate::run_hook(&hook).await {
            Ok(v) => v,
            Err(e) => {
                let mut s = self.lock();
                let _ = s.audit.append(&Event {
                    op: "rotate",
                    outcome: "error",
                    context: Some(context),
                    secret: Some(name),
                    detail: Some(why),
                    ..Default::default()
                });
                return Err(RpcError::new(rpc::FAILED, e.to_string()));
            }
        };
        let mut s = self.lock();
        let mut st = s.open_store(context)?;
        let v = st
            .put(name, value, PutOptions::default())
            .map_err(store_err)?;
        s.audit
            .append(&Event {
                op: "rotate",
                outcome: "ok",
                context: Some(context),
                secret: Some(name),
                version: Some(v),
                detail: Some(why),
                ..Default::default()
            })
            .map_err(audit_err)?;
        st.save().map_err(store_err)?;
        publish_fingerprints(&mut s);
        Ok(v)
    }

    async fn killswitch(&self, rotate_all: bool, wipe: bool, why: &str) -> Value {
        let revoked = {
            let mut s = self.lock();
            let n = s.leases.revoke_where(|_| true);
            for (_, p) in s.pending.drain() {
                let _ = p.tx.send(Some(Decision::Deny));
            }
            // Running commands hold values already: stop them.
            for pgid in s.running.values() {
                kill_group(*pgid, libc::SIGTERM);
            }
            let _ = s.audit.append(&Event {
                op: "killswitch",
                outcome: "revoked",
                detail: Some(&format!("{why}: {n} leases")),
                ..Default::default()
            });
            n
        };
        let mut rotated = Vec::new();
        let mut errors = Vec::new();
        if rotate_all {
            let targets = secrets_where(&mut self.lock(), |e| e.rotate_via.is_some());
            for (c, n) in targets {
                match self.rotate(&c, &n, why).await {
                    Ok(v) => rotated.push(json!({"context": c, "name": n, "version": v})),
                    Err(e) => errors.push(json!({"context": c, "name": n, "error": e.message})),
                }
            }
        }
        if wipe {
            let mut s = self.lock();
            let _ = s.audit.append(&Event {
                op: "killswitch",
                outcome: "wipe",
                detail: Some(why),
                ..Default::default()
            });
            let dir = s.paths.contexts();
            wipe_dir(&dir);
            let _ = s.approvals.forget_all();
            s.keys.lock();
        }
        json!({"revoked": revoked, "rotated": rotated, "rotate_errors": errors, "wiped": wipe})
    }
}

/// Overwrite files with zeros before unlinking (best effort; the identity is what matters).
fn wipe_dir(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            wipe_dir(&p);
        } else if let Ok(m) = std::fs::metadata(&p) {
            let _ = std::fs::write(&p, vec![0u8; m.len() as usize]);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Open (or join) a request for a human's approval of `cmd` using `secrets`.
fn request_approval(
    s: &mut State,
    context: &str,
    secrets: Vec<String>,
    cmd: Resolved,
) -> Result<Reply, RpcError> {
    let existing = s.pending.iter().find(|(_, p)| {
        p.context == context && p.secrets == secrets && p.command.fingerprint == cmd.fingerprint
    });
    let (id, info) = match existing {
        Some((id, p)) => (id.clone(), p.info(id)),
        None => {
            let id = crate::vault::random_id("req");
            let (tx, _rx) = watch::channel(None);
            let p = Pending {
                context: context.to_string(),
                secrets,
                command: cmd,
                tx,
            };
            for scope in p.scopes() {
                s.audit
                    .append(&scope.event("approval", "requested", Some(&id)))
                    .map_err(audit_err)?;
            }
            let info = p.info(&id);
            s.pending.insert(id.clone(), p);
            (id, info)
        }
    };
    let mut data = info;
    data["status"] = json!("approval_required");
    data["request"] = json!(id);
    reply(
        data,
        vec![next(
            "guard vault pending",
            "what waits for a human's approval (a human approves with the vault passphrase)",
        )],
    )
}

/// Revoke the live leases among `ids`, auditing each; returns how many were revoked.
fn revoke_leases(s: &mut State, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        if s.leases.check(id).is_err() {
            continue;
        }
        if let Ok(l) = s.leases.revoke(id) {
            n += 1;
            let _ = s.audit.append(&Event {
                op: "revoke",
                outcome: "ok",
                lease: Some(id),
                context: Some(&l.context),
                secret: Some(&l.secret),
                ..Default::default()
            });
        }
    }
    n
}

fn kill_group(pgid: u32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the child's own process group only.
        unsafe { libc::kill(-(pgid as i32), sig) };
    }
}

/// Write a value to a descriptor the caller passed (a newline after it on a terminal).
fn write_value(fd: OwnedFd, value: &SecretValue) -> std::io::Result<()> {
    use std::io::Write;
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(fd.as_raw_fd()) } == 1;
    let mut f = std::fs::File::from(fd);
    f.write_all(value.expose_secret().as_bytes())?;
    if tty {
        f.write_all(b"\n")?;
    }
    f.flush()
}

enum FrameError {
    TooLarge,
    Io,
}

/// Reads `\n`-terminated frames with `recvmsg`, queueing the descriptors that come with them.
struct FrameReader {
    r: tokio::net::unix::OwnedReadHalf,
    buf: Zeroizing<Vec<u8>>,
    fds: Vec<OwnedFd>,
}

impl FrameReader {
    async fn fill(&mut self) -> std::io::Result<usize> {
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
    async fn frame(&mut self, max: usize) -> Result<Option<Zeroizing<Vec<u8>>>, FrameError> {
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
    fn take_fds(&mut self, n: usize) -> Option<Vec<OwnedFd>> {
        if self.fds.len() != n {
            self.fds.clear();
            return None;
        }
        Some(std::mem::take(&mut self.fds))
    }
}

async fn write_frame(w: &mut tokio::net::unix::OwnedWriteHalf, v: &Value) -> std::io::Result<()> {
    let mut b = serde_json::to_vec(v).expect("a frame should serialize");
    b.push(b'\n');
    w.write_all(&b).await
}

/// Accept errors go to the log at most once per minute, with how many were not shown.
#[derive(Default)]
struct AcceptErrors {
    last: Option<std::time::Instant>,
    quiet: u64,
}

impl AcceptErrors {
    fn report(&mut self, e: &std::io::Error) {
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

/// The fingerprints of every version of every value in `contexts` (fingerprint ids per
/// [`leak::fingerprint_id`]), and the versions too short to fingerprint.
fn fingerprint_set(
    s: &mut State,
    contexts: &[String],
) -> Result<(crate::engine::known::KnownSet, Vec<String>), RpcError> {
    let key = crate::fingerprint::random_key()
        .map_err(|e| RpcError::new(rpc::FAILED, format!("no random key: {e}")))?;
    let mut set = crate::engine::known::KnownSet::new(key);
    let mut skipped = Vec::new();
    for c in contexts {
        let mut st = s.open_store(c)?;
        for info in st.infos().map_err(store_err)? {
            for v in info.versions {
                let (id, value) = st.value(&info.name, Some(v)).map_err(store_err)?;
                let fid = leak::fingerprint_id(c, &info.name);
                if set.add(&fid, id, value.expose_secret().as_bytes()).is_err() {
                    skipped.push(format!("{c}/{} v{id}", info.name));
                }
            }
        }
    }
    Ok((set, skipped))
}

/// Writes `fingerprints.fp` in the vault directory — every version of every stored value, for
/// `guard redact --fingerprints` — after the values changed. Only with every context unlocked
/// (a partial set would stop redacting the rest); a failure is logged, never fatal.
fn publish_fingerprints(s: &mut State) {
    let contexts = store::list_contexts(&s.paths);
    if contexts.iter().any(|c| s.keys.get(c).is_none()) {
        return;
    }
    let path = s.paths.root().join("fingerprints.fp");
    match fingerprint_set(s, &contexts) {
        Ok((set, _)) => {
            if let Err(e) = crate::fingerprint::save(&path, &set) {
                eprintln!("guard vault daemon: publishing fingerprints: {e}");
            }
        }
        Err(e) => eprintln!("guard vault daemon: publishing fingerprints: {}", e.message),
    }
}

/// A secret's rotation in progress (`State::rotating`); dropping it ends it.
struct RotationToken {
    state: Arc<Mutex<State>>,
    key: (String, String),
}

impl Drop for RotationToken {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.lock() {
            s.rotating.remove(&self.key);
        }
    }
}

/// Leases a previous daemon left live (recovered revoked): audited, and the commands that held
/// them — running with values, their `guard exec` connections gone with that daemon — are sent
/// SIGTERM, then SIGKILL after [`CALLER_GONE_GRACE`].
fn stop_orphans(audit: &mut AuditLog, orphaned: &[crate::vault::lease::Lease]) {
    if orphaned.is_empty() {
        return;
    }
    let _ = audit.append(&Event {
        op: "revoke",
        outcome: "daemon-restart",
        detail: Some(&format!(
            "{} lease(s) live when the previous daemon stopped",
            orphaned.len()
        )),
        ..Default::default()
    });
    let mut holders: Vec<crate::vault::lease::Holder> =
        orphaned.iter().filter_map(|l| l.holder).collect();
    holders.sort_by_key(|h| h.pgid);
    holders.dedup();
    holders.retain(|h| h.alive());
    if holders.is_empty() {
        return;
    }
    eprintln!(
        "guard vault daemon: stopping {} command(s) the previous daemon ran",
        holders.len()
    );
    for h in &holders {
        kill_group(h.pgid, libc::SIGTERM);
    }
    std::thread::spawn(move || {
        std::thread::sleep(CALLER_GONE_GRACE);
        for h in holders.iter().filter(|h| h.alive()) {
            kill_group(h.pgid, libc::SIGKILL);
        }
    });
}

/// How long a command whose `guard exec` died has to stop on SIGTERM before SIGKILL.
const CALLER_GONE_GRACE: Duration = Duration::from_secs(3);

async fn connection(d: Daemon, stream: UnixStream) {
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

trait ClassifyStr {
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

fn unsafe_getuid() -> u32 {
    // SAFETY: getuid(2) cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

/// Run the daemon in the foreground until SIGTERM/SIGINT or a `shutdown` request.
pub fn run_daemon(paths: VaultPaths) -> Result<(), ServerError> {
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
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(paths.pid_file());
    let _ = d.lock().audit.append(&Event {
        op: "daemon",
        outcome: "stop",
        ..Default::default()
    });
    eprintln!("guard vault daemon: stopped");
    Ok(())
}

/// `(context, name)` of every stored secret whose entry satisfies `keep`, across the unlocked
/// contexts.
fn secrets_where(
    s: &mut State,
    keep: impl Fn(&backend::SecretMeta) -> bool,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for c in store::list_contexts(&s.paths) {
        let Ok(mut st) = s.open_store(&c) else {
            continue;
        };
        for n in st.names().unwrap_or_default() {
            if st.meta(&n).is_ok_and(|m| keep(&m)) {
                out.push((c.clone(), n));
            }
        }
    }
    out
}

async fn maintenance(d: Daemon) {
    let mut tick = tokio::time::interval(d.limits.maintenance_interval);
    loop {
        tick.tick().await;
        let due: Vec<(String, String)> = {
            let mut s = d.lock();
            s.leases.prune();
            s.keys.is_unlocked(); // forgets the identities once their time is over
            let now = now_unix();
            secrets_where(&mut s, |e| {
                let due = || {
                    let every = config::parse_duration(e.rotate_every.as_deref()?).ok()?;
                    e.rotate_via.as_ref()?;
                    Some(rotate::due(e.version(None)?.created, every, now))
                };
                due().unwrap_or(false)
            })
        };
        for (c, n) in due {
            if let Err(e) = d.rotate(&c, &n, "scheduled").await {
                eprintln!(
                    "guard vault daemon: scheduled rotation of {n:?} in {c:?} failed: {}",
                    e.message
                );
            }
        }
    }
}

async fn heartbeat_loop(d: Daemon, hb: HeartbeatConfig) {
    let (interval, timeout) = match (
        config::parse_duration(&hb.interval),
        config::parse_duration(&hb.timeout),
    ) {
        (Ok(i), Ok(t)) => (i.max(Duration::from_millis(10)), t),
        _ => {
            eprintln!("guard vault daemon: invalid heartbeat interval/timeout; heartbeat disabled");
            return;
        }
    };
    let mut armed = true;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match crate::vault::heartbeat::probe(&hb.url, timeout).await {
            Ok(()) => {
                armed = true;
                d.lock().heartbeat = Some("alive".into());
            }
            Err(e) => {
                d.lock().heartbeat = Some(format!("down: {e}"));
                if !armed {
                    continue;
                }
                armed = false;
                eprintln!("guard vault daemon: {e}; running the fail action");
                {
                    let mut s = d.lock();
                    let _ = s.audit.append(&Event {
                        op: "heartbeat",
                        outcome: "failed",
                        detail: Some(&e.to_string()),
                        ..Default::default()
                    });
                }
                let fa = &hb.fail_action;
                if fa.revoke_all || fa.rotate_all || fa.wipe_store {
                    d.killswitch(fa.rotate_all, fa.wipe_store, "heartbeat")
                        .await;
                }
            }
        }
    }
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
