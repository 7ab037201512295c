//! The daemon: a tokio Unix-socket JSON-RPC server that owns every piece of vault state.
//!
//! Design decisions:
//! - The socket is bound inside `run/` (created 0700 first) with umask 0177, so it is 0600 from
//!   the instant it exists — before `listen` — and the peer's uid (SO_PEERCRED) must equal ours.
//! - One frame per line, read through a `take(max+1)` window: an oversize frame gets an error and
//!   the connection is closed without buffering it; the first frame must arrive within the
//!   handshake timeout, so idle connections cannot pile up.
//! - State sits behind one `std::sync::Mutex` that is never held across an `.await`: rotation
//!   hooks and approval waits run unlocked. Stores are decrypted per operation and dropped (the
//!   plaintext lives only for the duration of a use), which costs ~0.1 ms per call.
//! - Audit first: every operation appends its record before it takes effect and is refused if
//!   that append fails. Only revocations and the killswitch go ahead regardless, since refusing to
//!   *reduce* exposure would be the wrong way to fail.
//! - SIGTERM/SIGINT or the `shutdown` method stop accepting, remove the socket and pid file,
//!   write a final audit record and exit 0.

use crate::vault::approval::{ApprovalStore, Decision, Scope};
use crate::vault::audit::{AuditLog, Event};
use crate::vault::config::{HeartbeatConfig, Limits, VaultConfig};
use crate::vault::lease::{LeaseManager, LeaseRequest};
use crate::vault::rpc::{self, next, Reply, Request, RpcError};
use crate::vault::store::{self, ContextStore, StoreError};
use crate::vault::{config, now_unix, rotate, SecretValue, VaultPaths};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{watch, Notify};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::vault::audit::AuditError),
    #[error(transparent)]
    Approval(#[from] crate::vault::approval::ApprovalError),
    #[error("a daemon is already listening on {socket}")]
    AlreadyRunning { socket: PathBuf },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

struct Pending {
    scope: Scope,
    tx: watch::Sender<Option<Decision>>,
}

struct State {
    paths: VaultPaths,
    audit: AuditLog,
    leases: LeaseManager,
    approvals: ApprovalStore,
    pending: HashMap<String, Pending>,
    started: u64,
    heartbeat: Option<String>,
}

impl State {
    /// Records a decision: audited first (an unaudited decision does not happen), then stored.
    fn decide(&mut self, event: Event<'_>, scope: &Scope, d: Decision) -> Result<(), RpcError> {
        self.audit.append(&event).map_err(audit_err)?;
        self.approvals
            .set(scope.clone(), d)
            .map_err(|e| RpcError::new(rpc::FAILED, e.to_string()))
    }
}

#[derive(Clone)]
struct Daemon {
    state: Arc<Mutex<State>>,
    shutdown: Arc<Notify>,
    limits: Limits,
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
        StoreError::NoContext { ref context } => {
            let c = context.clone();
            RpcError::new(rpc::NOT_FOUND, e.to_string()).with(next(
                format!("guard vault init --context {c}"),
                "create the context",
            ))
        }
        StoreError::InvalidName { .. } | StoreError::EmptyValue => {
            RpcError::new(rpc::INVALID_PARAMS, e.to_string())
        }
        other => RpcError::new(rpc::FAILED, other.to_string()),
    }
}

fn params<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, RpcError> {
    let v = if v.is_null() { json!({}) } else { v };
    serde_json::from_value(v)
        .map_err(|e| RpcError::new(rpc::INVALID_PARAMS, format!("invalid params: {e}")))
}

fn reply(data: Value, next_actions: Vec<rpc::NextAction>) -> Result<Reply, RpcError> {
    Ok(Reply { data, next_actions })
}

fn default_ctx() -> String {
    "default".into()
}
fn default_purpose() -> String {
    "use".into()
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
struct LeaseP {
    #[serde(default = "default_ctx")]
    context: String,
    name: String,
    client: String,
    #[serde(default = "default_purpose")]
    purpose: String,
    ttl: Option<String>,
    version: Option<u32>,
}
#[derive(Deserialize)]
struct RequestP {
    request: String,
}
#[derive(Deserialize)]
struct ApproveP {
    request: String,
    allow: bool,
}
#[derive(Deserialize)]
struct GrantP {
    #[serde(default = "default_ctx")]
    context: String,
    name: String,
    client: String,
    #[serde(default = "default_purpose")]
    purpose: String,
    #[serde(default)]
    deny: bool,
}
#[derive(Deserialize)]
struct ResolveP {
    leases: Vec<String>,
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

impl Daemon {
    async fn dispatch(&self, req: Request) -> Result<Reply, RpcError> {
        let p = req.params;
        match req.method.as_str() {
            "hello" | "ping" => reply(
                json!({"server": "guard-vault", "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id()}),
                vec![],
            ),
            "status" => self.status(),
            "add" => self.add(params(p)?),
            "list" => self.list(params(p)?),
            "rm" => self.rm(params(p)?),
            "lease" => self.lease(params(p)?),
            "await_approval" => self.await_approval(params(p)?).await,
            "approve" => self.approve(params(p)?),
            "pending" => self.pending(),
            "grant" => self.grant(params(p)?),
            "resolve" => self.resolve(params(p)?),
            "revoke" => self.revoke(params(p)?),
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

    fn status(&self) -> Result<Reply, RpcError> {
        let s = self.lock();
        let contexts = store::list_contexts(&s.paths);
        let leases = s.leases.active();
        let pending: Vec<Value> = s
            .pending
            .iter()
            .map(|(id, p)| json!({"request": id, "scope": p.scope}))
            .collect();
        reply(
            json!({"running": true, "pid": std::process::id(), "started": s.started,
                   "vault_dir": s.paths.root(), "contexts": contexts,
                   "active_leases": leases.len(), "leases": leases, "pending_approvals": pending,
                   "heartbeat": s.heartbeat}),
            vec![
                next("guard vault list", "list stored secrets"),
                next("guard vault audit --tail 20", "recent audit records"),
            ],
        )
    }

    fn add(&self, a: AddP) -> Result<Reply, RpcError> {
        if let Some(e) = &a.rotate_every {
            config::parse_duration(e)
                .map_err(|e| RpcError::new(rpc::INVALID_PARAMS, e.to_string()))?;
        }
        store::check_name("secret", &a.name).map_err(store_err)?;
        let mut s = self.lock();
        let mut st = ContextStore::open(&s.paths, &a.context).map_err(store_err)?;
        let version = st
            .put(
                &a.name,
                a.value,
                a.rotate_via,
                a.rotate_shell,
                a.rotate_every,
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
        reply(
            json!({"context": a.context, "name": a.name, "version": version}),
            vec![
                next(
                    format!(
                        "guard vault grant {} --client CLIENT --context {}",
                        a.name, a.context
                    ),
                    "pre-approve a client",
                ),
                next(
                    "guard exec -- CMD",
                    "run a command with the secret injected (declare it in .guard/secrets.toml)",
                ),
            ],
        )
    }

    fn list(&self, l: ListP) -> Result<Reply, RpcError> {
        let s = self.lock();
        let contexts = match l.context {
            Some(c) => vec![c],
            None => store::list_contexts(&s.paths),
        };
        let mut out = Vec::new();
        for c in contexts {
            let st = ContextStore::open(&s.paths, &c).map_err(store_err)?;
            out.push(json!({"context": c, "secrets": st.infos()}));
        }
        reply(
            json!({"contexts": out}),
            vec![next(
                "guard vault add NAME",
                "store a secret (value from a no-echo prompt or stdin)",
            )],
        )
    }

    fn rm(&self, n: NameP) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let mut st = ContextStore::open(&s.paths, &n.context).map_err(store_err)?;
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
        reply(
            json!({"removed": n.name, "revoked_leases": revoked}),
            vec![next("guard vault list", "remaining secrets")],
        )
    }

    fn lease(&self, r: LeaseP) -> Result<Reply, RpcError> {
        if r.client.is_empty() || r.client.len() > 4096 || r.client.chars().any(char::is_control) {
            return Err(RpcError::new(
                rpc::INVALID_PARAMS,
                "invalid client id (1-4096 printable characters)",
            ));
        }
        if r.purpose != "use" && r.purpose != "print" {
            return Err(RpcError::new(
                rpc::INVALID_PARAMS,
                "purpose must be \"use\" or \"print\"",
            ));
        }
        let ttl = match &r.ttl {
            Some(t) => Some(
                config::parse_duration(t)
                    .map_err(|e| RpcError::new(rpc::INVALID_PARAMS, e.to_string()))?,
            ),
            None => None,
        };
        let mut s = self.lock();
        {
            let st = ContextStore::open(&s.paths, &r.context).map_err(store_err)?;
            st.value(&r.name, r.version).map_err(store_err)?;
        }
        let scope = Scope {
            context: r.context.clone(),
            secret: r.name.clone(),
            client: r.client.clone(),
            purpose: r.purpose.clone(),
        };
        let ev = |op, outcome| Event {
            op,
            outcome,
            context: Some(&r.context),
            secret: Some(&r.name),
            client: Some(&r.client),
            purpose: Some(&r.purpose),
            ..Default::default()
        };
        match s.approvals.get(&scope) {
            Some(Decision::Allow) => {
                let lease = s
                    .leases
                    .grant(&LeaseRequest {
                        context: &r.context,
                        secret: &r.name,
                        version: r.version,
                        client: &r.client,
                        purpose: &r.purpose,
                        ttl,
                    })
                    .map_err(|e| RpcError::new(rpc::INVALID_PARAMS, e.to_string()))?;
                if let Err(e) = s.audit.append(&Event {
                    lease: Some(&lease.id),
                    version: r.version,
                    ..ev("lease", "granted")
                }) {
                    let _ = s.leases.revoke(&lease.id);
                    return Err(audit_err(e));
                }
                let secs = (lease.expires - lease.granted).as_secs();
                reply(
                    json!({"status": "granted", "lease": lease.id, "ttl_secs": secs, "context": r.context, "name": r.name}),
                    vec![next(
                        format!("guard vault revoke {}", lease.id),
                        "revoke this lease when done",
                    )],
                )
            }
            Some(Decision::Deny) => {
                s.audit.append(&ev("lease", "denied")).map_err(audit_err)?;
                Err(denied(
                    &r.context,
                    &r.name,
                    &r.client,
                    &r.purpose,
                    "denied by a remembered decision",
                ))
            }
            None => {
                if let Some((id, _)) = s.pending.iter().find(|(_, p)| p.scope == scope) {
                    let id = id.clone();
                    return approval_reply(&id, &scope);
                }
                let id = crate::vault::random_id("req");
                s.audit
                    .append(&Event {
                        request: Some(&id),
                        ..ev("approval", "requested")
                    })
                    .map_err(audit_err)?;
                let (tx, _rx) = watch::channel(None);
                s.pending.insert(
                    id.clone(),
                    Pending {
                        scope: scope.clone(),
                        tx,
                    },
                );
                approval_reply(&id, &scope)
            }
        }
    }

    async fn await_approval(&self, r: RequestP) -> Result<Reply, RpcError> {
        let (mut rx, scope) = {
            let s = self.lock();
            let p = s.pending.get(&r.request).ok_or_else(|| {
                RpcError::new(rpc::NOT_FOUND, format!("no pending request {}", r.request))
            })?;
            (p.tx.subscribe(), p.scope.clone())
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
            Some(Decision::Deny) => Err(denied(
                &scope.context,
                &scope.secret,
                &scope.client,
                &scope.purpose,
                "denied by the user",
            )),
            None => {
                let mut s = self.lock();
                s.pending.remove(&r.request);
                let _ =
                    s.audit
                        .append(&scope.event("approval", "timeout-denied", Some(&r.request)));
                Err(denied(
                    &scope.context,
                    &scope.secret,
                    &scope.client,
                    &scope.purpose,
                    "no decision before the approval timeout",
                ))
            }
        }
    }

    fn approve(&self, a: ApproveP) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let scope = s
            .pending
            .get(&a.request)
            .map(|p| p.scope.clone())
            .ok_or_else(|| {
                RpcError::new(rpc::NOT_FOUND, format!("no pending request {}", a.request))
                    .with(next("guard vault pending", "list pending requests"))
            })?;
        let d = if a.allow {
            Decision::Allow
        } else {
            Decision::Deny
        };
        let outcome = if a.allow { "approved" } else { "denied" };
        s.decide(
            scope.event("approval", outcome, Some(&a.request)),
            &scope,
            d,
        )?;
        if let Some(p) = s.pending.remove(&a.request) {
            let _ = p.tx.send(Some(d));
        }
        reply(
            json!({"request": a.request, "decision": d, "scope": scope}),
            vec![],
        )
    }

    fn pending(&self) -> Result<Reply, RpcError> {
        let s = self.lock();
        let v: Vec<Value> = s
            .pending
            .iter()
            .map(|(id, p)| json!({"request": id, "scope": p.scope}))
            .collect();
        let acts = s
            .pending
            .keys()
            .map(|id| {
                next(
                    format!("guard vault approve {id}"),
                    "approve this request (or --deny)",
                )
            })
            .collect();
        reply(json!({"pending": v}), acts)
    }

    fn grant(&self, g: GrantP) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        {
            let st = ContextStore::open(&s.paths, &g.context).map_err(store_err)?;
            st.entry(&g.name).map_err(store_err)?;
        }
        let scope = Scope {
            context: g.context.clone(),
            secret: g.name.clone(),
            client: g.client.clone(),
            purpose: g.purpose.clone(),
        };
        let d = if g.deny {
            Decision::Deny
        } else {
            Decision::Allow
        };
        let outcome = if g.deny { "deny" } else { "allow" };
        s.decide(scope.event("grant", outcome, None), &scope, d)?;
        reply(
            json!({"scope": scope, "decision": d}),
            vec![next("guard exec -- CMD", "use the secret")],
        )
    }

    fn resolve(&self, r: ResolveP) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let mut leases = Vec::new();
        for id in &r.leases {
            let l = s.leases.check(id).map_err(|e| {
                RpcError::new(rpc::LEASE_INVALID, e.to_string())
                    .with(next("guard vault lease NAME", "take a new lease"))
            })?;
            leases.push(l.clone());
        }
        let mut stores: HashMap<String, ContextStore> = HashMap::new();
        let mut out = Vec::new();
        for l in &leases {
            if !stores.contains_key(&l.context) {
                let st = ContextStore::open(&s.paths, &l.context).map_err(store_err)?;
                stores.insert(l.context.clone(), st);
            }
            let st = stores.get(&l.context).expect("store was just inserted");
            let (version, value) = st.value(&l.secret, l.version).map_err(store_err)?;
            s.audit
                .append(&Event {
                    op: "access",
                    outcome: "ok",
                    context: Some(&l.context),
                    secret: Some(&l.secret),
                    client: Some(&l.client),
                    lease: Some(&l.id),
                    version: Some(version),
                    purpose: Some(&l.purpose),
                    ..Default::default()
                })
                .map_err(audit_err)?;
            out.push(json!({"lease": l.id, "name": l.secret, "version": version, "value": value}));
        }
        reply(json!({"values": out}), vec![])
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
            let l = s
                .leases
                .revoke(&id)
                .map_err(|e| RpcError::new(rpc::NOT_FOUND, e.to_string()))?;
            let _ = s.audit.append(&Event {
                op: "revoke",
                outcome: "ok",
                lease: Some(&id),
                context: Some(&l.context),
                secret: Some(&l.secret),
                client: Some(&l.client),
                ..Default::default()
            });
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

    async fn rotate(&self, context: &str, name: &str, why: &str) -> Result<u32, RpcError> {
        let (cmd, shell) = {
            let s = self.lock();
            let st = ContextStore::open(&s.paths, context).map_err(store_err)?;
            let e = st.entry(name).map_err(store_err)?;
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
        let mut st = ContextStore::open(&s.paths, context).map_err(store_err)?;
        let v = st.put(name, value, None, None, None).map_err(store_err)?;
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
        Ok(v)
    }

    async fn killswitch(&self, rotate_all: bool, wipe: bool, why: &str) -> Value {
        let revoked = {
            let mut s = self.lock();
            let n = s.leases.revoke_where(|_| true);
            for (_, p) in s.pending.drain() {
                let _ = p.tx.send(Some(Decision::Deny));
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
            let targets = secrets_where(&self.lock().paths, |e| e.rotate_via.is_some());
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

fn approval_reply(id: &str, scope: &Scope) -> Result<Reply, RpcError> {
    reply(
        json!({"status": "approval_required", "request": id, "scope": scope}),
        vec![
            next(
                format!("guard vault approve {id}"),
                "the user approves this request (or --deny)",
            ),
            next(
                format!(
                    "guard vault grant {} --client {} --context {}{}",
                    scope.secret,
                    shell_word(&scope.client),
                    scope.context,
                    if scope.purpose == "print" {
                        " --print"
                    } else {
                        ""
                    }
                ),
                "the user pre-approves this scope",
            ),
        ],
    )
}

fn shell_word(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-./:@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn denied(context: &str, name: &str, client: &str, purpose: &str, why: &str) -> RpcError {
    let print = if purpose == "print" { " --print" } else { "" };
    let cmd = format!(
        "guard vault grant {name} --client {} --context {context}{print}",
        shell_word(client)
    );
    RpcError::new(rpc::DENIED, format!("access to secret {name:?} in context {context:?} for client {client:?} denied ({why}); to allow it, the user runs: {cmd}"))
        .with(next(cmd, "pre-approve this client for this secret"))
}

/// Read one `\n`-terminated frame of at most `max` bytes.
async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(max as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|_| FrameError::Io)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > max {
        return Err(FrameError::TooLarge);
    }
    if buf.len() > max {
        return Err(FrameError::TooLarge);
    }
    Ok(Some(buf))
}

enum FrameError {
    TooLarge,
    Io,
}

async fn write_frame(w: &mut tokio::net::unix::OwnedWriteHalf, v: &Value) -> std::io::Result<()> {
    let mut b = serde_json::to_vec(v).expect("a frame should serialize");
    b.push(b'\n');
    w.write_all(&b).await
}

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
    let mut r = BufReader::new(r);
    let mut first = true;
    loop {
        let frame = if first {
            first = false;
            match tokio::time::timeout(
                d.limits.handshake_timeout,
                read_frame(&mut r, d.limits.max_frame_bytes),
            )
            .await
            {
                Ok(f) => f,
                Err(_) => {
                    let e = RpcError::new(
                        rpc::HANDSHAKE_TIMEOUT,
                        "no request within the handshake timeout",
                    );
                    let _ = write_frame(&mut w, &rpc::err_frame(&Value::Null, &e)).await;
                    return;
                }
            }
        } else {
            read_frame(&mut r, d.limits.max_frame_bytes).await
        };
        let line = match frame {
            Ok(Some(l)) => l,
            Ok(None) | Err(FrameError::Io) => return,
            Err(FrameError::TooLarge) => {
                let e = RpcError::new(
                    rpc::FRAME_TOO_LARGE,
                    format!(
                        "frame larger than {} bytes; closing",
                        d.limits.max_frame_bytes
                    ),
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
                match d.dispatch(req).await {
                    Ok(r) => rpc::ok_frame(&id, r),
                    Err(e) => rpc::err_frame(&id, &e),
                }
            }
        };
        if write_frame(&mut w, &resp).await.is_err() {
            return;
        }
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
    rt.block_on(serve(paths, limits, config.heartbeat))
}

async fn serve(
    paths: VaultPaths,
    limits: Limits,
    heartbeat: Option<HeartbeatConfig>,
) -> Result<(), ServerError> {
    store::private_dir(paths.root())?;
    store::private_dir(&paths.run_dir())?;
    let sock = paths.socket();
    if sock.exists() {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            return Err(ServerError::AlreadyRunning { socket: sock });
        }
        let _ = std::fs::remove_file(&sock);
    }
    let audit = AuditLog::open(&paths)?;
    let approvals = ApprovalStore::open(paths.approvals())?;
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
    std::fs::write(paths.pid_file(), format!("{}\n", std::process::id())).map_err(|source| {
        ServerError::Io {
            op: "write",
            path: paths.pid_file(),
            source,
        }
    })?;

    let state = State {
        paths: paths.clone(),
        audit,
        leases: LeaseManager::new(limits.default_ttl, limits.max_ttl),
        approvals,
        pending: HashMap::new(),
        started: now_unix(),
        heartbeat: heartbeat.as_ref().map(|_| "starting".to_string()),
    };
    let d = Daemon {
        state: Arc::new(Mutex::new(state)),
        shutdown: Arc::new(Notify::new()),
        limits: limits.clone(),
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
    if let Some(hb) = heartbeat {
        tokio::spawn(heartbeat_loop(d.clone(), hb));
    }
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
    loop {
        tokio::select! {
            acc = listener.accept() => match acc {
                Ok((stream, _)) => { tokio::spawn(connection(d.clone(), stream)); }
                Err(e) => { eprintln!("guard vault daemon: accept: {e}"); tokio::time::sleep(Duration::from_millis(10)).await; }
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

/// `(context, name)` of every stored secret whose entry satisfies `keep`, across all contexts.
fn secrets_where(
    paths: &VaultPaths,
    keep: impl Fn(&store::SecretEntry) -> bool,
) -> Vec<(String, String)> {
    store::list_contexts(paths)
        .into_iter()
        .flat_map(|c| {
            ContextStore::open(paths, &c)
                .map(|st| {
                    st.data
                        .secrets
                        .iter()
                        .filter(|(_, e)| keep(e))
                        .map(|(n, _)| (c.clone(), n.clone()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect()
}

async fn maintenance(d: Daemon) {
    let mut tick = tokio::time::interval(d.limits.maintenance_interval);
    loop {
        tick.tick().await;
        let due: Vec<(String, String)> = {
            let mut s = d.lock();
            s.leases.prune();
            let now = now_unix();
            secrets_where(&s.paths, |e| {
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
