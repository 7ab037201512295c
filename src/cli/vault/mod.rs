//! `guard vault …` and `guard exec`: the stateless CLI over the vault daemon.
//!
//! Design decisions:
//! - Every command builds the same envelope the daemon returns (`{ok, data|error,
//!   next_actions}`); `--json` prints it verbatim, otherwise a short human rendering.
//! - No value ever passes through this process (except the one being stored by `vault add`):
//!   `guard exec` hands its stdin/stdout/stderr to the daemon, which launches the command, and
//!   `guard vault print` has the daemon write the value to our stdout descriptor.
//! - Proof of a human — the vault passphrase — is read from the controlling terminal only
//!   (`/dev/tty`, no echo): never from stdin, an argument or the environment, which an agent
//!   drives. `init`, `unlock`, `approve`, `grant` and `print` need it; without a terminal they
//!   refuse. When the daemon is locked and a terminal is there, any command offers to unlock.

use crate::vault::client::{start_daemon, Client, ClientError};
use crate::vault::command::shell_word;
use crate::vault::exec::ProjectFile;
use crate::vault::rpc::{self, NextAction};
use crate::vault::{audit, keys, store, tty, SecretValue, VaultConfig, VaultPaths};
use age::secrecy::{ExposeSecret, SecretString};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use zeroize::Zeroizing;

mod backend;
mod exec;

pub(crate) use exec::environment;
pub use exec::{run_exec, ExecArgs};

const EXIT_DENIED: i32 = 1;
const EXIT_ERROR: i32 = 2;

#[derive(Args)]
#[command(
    after_help = "Examples:\n  guard vault init                         # sets the vault passphrase (typed on the terminal)\n  printf %s \"$TOKEN\" | guard vault add api_token --rotate-via 'gh auth token'\n  guard vault grant api_token -- ./deploy.sh   # a human pre-approves a command\n  guard vault audit verify"
)]
pub struct VaultArgs {
    /// Vault directory [default: ~/.local/share/guard/vault]
    #[arg(long, global = true, env = "GUARD_VAULT_DIR")]
    vault_dir: Option<PathBuf>,
    /// Print the `{ok, data|error, next_actions}` envelope as JSON
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: VaultCmd,
}

#[derive(Subcommand)]
enum VaultCmd {
    /// Create the vault (or a context): an age identity encrypted under the vault passphrase, typed
    /// on the terminal, and an empty store (0600 files, 0700 dirs)
    #[command(after_help = "Examples:\n  guard vault init\n  guard vault init --context prod")]
    Init {
        #[arg(long, default_value = "default")]
        context: String,
    },
    /// Store a secret (value from a no-echo terminal prompt, or from stdin)
    #[command(
        after_help = "Examples:\n  guard vault add api_token                 # prompts without echo\n  guard vault add db_pass --context prod --description 'orders DB, read-write' < pass.txt\n  guard vault add gh --rotate-via 'gh auth token' --rotate-every 30d"
    )]
    Add {
        name: String,
        #[arg(long, default_value = "default")]
        context: String,
        /// Command whose stdout is the next version (argv, no shell)
        #[arg(long)]
        rotate_via: Option<String>,
        /// Run --rotate-via through /bin/sh -c
        #[arg(long)]
        rotate_shell: bool,
        /// Rotate on a schedule, e.g. 30d
        #[arg(long)]
        rotate_every: Option<String>,
        /// When a version leaks: rotate (the default: revoke its leases, then run the hook),
        /// revoke-only, or report-only
        #[arg(long, value_enum)]
        on_leak: Option<store::LeakPolicy>,
        /// OpenBao-backed contexts: leases under this prefix (dynamic credentials issued with
        /// the value, e.g. database/creds/app) are revoked when it leaks
        #[arg(long, value_name = "PREFIX")]
        revoke_prefix: Option<String>,
        /// What the secret is for: shown by `list` (and to agents through `guard mcp`), so
        /// never a value
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// Where a context's values live: the local age store, or an OpenBao / Vault KV v2 engine
    /// (a human sets it, with the vault passphrase at the terminal)
    #[command(
        after_help = "Examples:\n  BAO_TOKEN=… guard vault backend openbao --address https://bao.example.com:8200\n  guard vault backend local --context prod"
    )]
    Backend {
        #[command(subcommand)]
        cmd: backend::BackendCmd,
    },
    /// List secrets (names and versions, never values)
    #[command(after_help = "Example:\n  guard vault list --context prod --json")]
    List {
        #[arg(long)]
        context: Option<String>,
    },
    /// Export the fingerprints of every stored value (every version) for `guard redact`
    #[command(
        after_help = "Example:\n  guard vault fingerprints --file ~/.config/guard/vault.fp\n  app 2>&1 | guard redact --fingerprints ~/.config/guard/vault.fp\n\nThe file holds keyed hashes, never a value (created 0600); values shorter than 8 bytes\ncannot be fingerprinted and are listed."
    )]
    Fingerprints {
        /// Where to write the fingerprint file
        #[arg(long, value_name = "FP")]
        file: std::path::PathBuf,
        #[arg(long)]
        context: Option<String>,
    },
    /// Remove a secret and revoke its leases
    #[command(after_help = "Example:\n  guard vault rm old_token")]
    Rm {
        name: String,
        #[arg(long, default_value = "default")]
        context: String,
    },
    /// Daemon status: locked or not, contexts, leases (without ids), pending approvals
    #[command(after_help = "Example:\n  guard vault status --json")]
    Status,
    /// Leaks of stored secrets the daemon responded to, and the outcome (rotated, revoked,
    /// failed and why, duplicate); events still waiting (vault locked) are counted
    #[command(after_help = "Example:\n  guard vault incidents --json")]
    Incidents,
    /// Show (`--tail N`) or verify (`audit verify`) the hash-chained audit log
    #[command(
        after_help = "Examples:\n  guard vault audit --tail 20\n  guard vault audit verify\n  guard vault audit acknowledge   # a human, at the terminal, after a broken chain"
    )]
    Audit {
        #[command(subcommand)]
        cmd: Option<AuditCmd>,
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Run a secret's rotation hook now; its stdout becomes the next version
    #[command(after_help = "Example:\n  guard vault rotate gh --context default")]
    Rotate {
        name: String,
        #[arg(long, default_value = "default")]
        context: String,
    },
    /// Print a value to stdout — asks for the vault passphrase on the terminal every time
    #[command(after_help = "Example:\n  export TOKEN=\"$(guard vault print api_token)\"")]
    Print {
        name: String,
        #[arg(long, default_value = "default")]
        context: String,
        /// An older version by its id (rollback)
        #[arg(long, value_name = "ID")]
        version_id: Option<u32>,
    },
    /// Unlock the vault's keys in the daemon (vault passphrase, on the terminal)
    #[command(after_help = "Examples:\n  guard vault unlock\n  guard vault unlock --for 30m")]
    Unlock {
        /// How long the keys stay unlocked [default: unlock_ttl in config.toml, 8h; at most 24h]
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
    },
    /// Forget the unlocked keys now
    #[command(after_help = "Example:\n  guard vault lock")]
    Lock,
    /// Revoke one lease, or all of them
    #[command(after_help = "Examples:\n  guard vault revoke --all")]
    Revoke {
        lease: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Emergency: revoke every lease, stop running commands, optionally rotate all and wipe
    #[command(after_help = "Example:\n  guard vault killswitch --rotate")]
    Killswitch {
        #[arg(long)]
        rotate: bool,
        #[arg(long)]
        wipe: bool,
    },
    /// A human approves (or `--deny`s) a pending request; asks for the vault passphrase
    #[command(after_help = "Example:\n  guard vault pending\n  guard vault approve req_0c1d…")]
    Approve {
        request: String,
        #[arg(long)]
        deny: bool,
    },
    /// List requests waiting for a human's approval
    #[command(after_help = "Example:\n  guard vault pending")]
    Pending,
    /// A human pre-approves a command (as it will run, in this directory) for secrets; asks for
    /// the vault passphrase
    #[command(
        after_help = "Examples:\n  guard vault grant api_token -- ./deploy.sh --prod\n  guard vault grant db_pass api_token --cwd ~/src/app -- make migrate"
    )]
    Grant {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long, default_value = "default")]
        context: String,
        /// The directory the command runs in [default: the current directory]
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(long)]
        deny: bool,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run the daemon (foreground by default)
    #[command(
        after_help = "Examples:\n  guard vault daemon --detach\n  guard vault daemon --stop"
    )]
    Daemon {
        #[arg(long)]
        detach: bool,
        #[arg(long, conflicts_with = "detach")]
        stop: bool,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain: detects edited, deleted, inserted and reordered records
    Verify,
    /// After a broken chain (the daemon will not start on one): keep the broken log aside and
    /// start a new chain that records the break. Needs the vault passphrase at the terminal,
    /// and the daemon stopped.
    Acknowledge,
}

struct Out {
    json: bool,
}

fn exit_code_for(code: i64) -> i32 {
    if code == rpc::COMMAND_NOT_FOUND {
        return 127;
    }
    if matches!(
        code,
        rpc::DENIED | rpc::HUMAN_REQUIRED | rpc::LOCKED | rpc::LOCKED_OUT
    ) {
        EXIT_DENIED
    } else {
        EXIT_ERROR
    }
}

impl Out {
    fn ok(&self, env: &Value, human: impl FnOnce(&Value) -> String) -> i32 {
        if self.json {
            println!("{env}");
        } else {
            let text = human(env.get("data").unwrap_or(&Value::Null));
            if !text.is_empty() {
                println!("{text}");
            }
        }
        0
    }
    fn err(&self, e: &ClientError) -> i32 {
        let (code, actions) = match e {
            ClientError::Rpc {
                code, next_actions, ..
            } => (*code, next_actions.clone()),
            ClientError::NotRunning { .. } => (
                rpc::FAILED,
                vec![rpc::next("guard vault daemon --detach", "start the daemon")],
            ),
            ClientError::NotInitialised { .. } => (
                rpc::FAILED,
                vec![rpc::next("guard vault init", "create the vault")],
            ),
            _ => (rpc::FAILED, vec![]),
        };
        if self.json {
            println!("{}", rpc::err_envelope(code, &e.to_string(), &actions));
        } else {
            eprintln!("guard: {e}");
            for a in &actions {
                eprintln!("  next: {}  ({})", a.command, a.description);
            }
        }
        exit_code_for(code)
    }
}

fn envelope(data: Value, next_actions: Vec<NextAction>) -> Value {
    json!({"ok": true, "data": data, "next_actions": next_actions})
}

fn rpc_err(code: i64, message: impl Into<String>) -> ClientError {
    ClientError::Rpc {
        code,
        message: message.into(),
        next_actions: vec![],
    }
}

fn other(e: impl std::fmt::Display) -> ClientError {
    ClientError::Local(e.to_string())
}

/// The vault passphrase from the terminal, checked here against context `ctx`'s identity.
fn vault_passphrase(paths: &VaultPaths, ctx: &str) -> Result<SecretString, ClientError> {
    let pass = passphrase("vault passphrase: ")?;
    match keys::read_identity(&paths.identity(ctx), &pass) {
        Ok(_) => Ok(pass),
        Err(keys::KeyError::WrongPassphrase) => Err(rpc_err(rpc::DENIED, "wrong passphrase")),
        Err(e) => Err(other(e)),
    }
}

/// The vault passphrase from the terminal, or the reason there is none (no terminal: an agent).
fn passphrase(prompt: &str) -> Result<SecretString, ClientError> {
    tty::passphrase(prompt).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            rpc_err(rpc::HUMAN_REQUIRED, tty::NO_TTY)
        } else {
            rpc_err(rpc::HUMAN_REQUIRED, e.to_string())
        }
    })
}

/// `params` plus the passphrase (as a JSON string; the frame is wiped once sent).
fn with_passphrase(mut params: Value, pass: &SecretString) -> Value {
    params["passphrase"] = Value::String(pass.expose_secret().to_string());
    params
}

/// Call `method`; if the daemon is locked and a human is at the terminal, offer to unlock first.
fn call_on(c: &mut Client, method: &str, params: Value) -> Result<Value, ClientError> {
    match c.call(method, params.clone()) {
        Err(ClientError::Rpc { code, .. }) if code == rpc::LOCKED && tty::available() => {
            unlock_here(c, None)?;
            c.call(method, params)
        }
        r => r,
    }
}

fn call(paths: &VaultPaths, method: &str, params: Value) -> Result<Value, ClientError> {
    call_on(&mut Client::connect_or_start(paths)?, method, params)
}

/// Ask the human for the passphrase on the terminal and unlock the daemon.
fn unlock_here(c: &mut Client, duration: Option<&str>) -> Result<Value, ClientError> {
    c.verify_peer()?;
    let pass = passphrase("guard: the vault is locked. vault passphrase: ")?;
    c.call("unlock", with_passphrase(json!({"ttl": duration}), &pass))
}

pub fn run_vault(a: VaultArgs) -> anyhow::Result<i32> {
    let paths = VaultPaths::resolve(a.vault_dir.as_deref());
    let out = Out { json: a.json };
    let r = vault_cmd(&paths, &out, a.cmd);
    Ok(match r {
        Ok(code) => code,
        Err(e) => out.err(&e),
    })
}

/// `guard vault init`: a new vault asks for a new passphrase (twice); a new context in an existing
/// vault asks for the vault passphrase and checks it. Identities left unencrypted by an older
/// guard are encrypted under the passphrase and their plaintext files wiped.
fn init(paths: &VaultPaths, context: &str) -> Result<(Value, bool), ClientError> {
    store::check_name("context", context).map_err(other)?;
    let config = VaultConfig::load(paths).map_err(other)?;
    let log_n = config.kdf_log_n().map_err(other)?;
    let contexts = store::list_contexts(paths);
    let encrypted: Vec<&String> = contexts
        .iter()
        .filter(|c| paths.identity(c).exists())
        .collect();
    let legacy: Vec<&String> = contexts
        .iter()
        .filter(|c| !paths.identity(c).exists())
        .collect();
    if paths.identity(context).exists() && legacy.is_empty() {
        return Ok((
            json!({"vault_dir": paths.root(), "context": context}),
            false,
        ));
    }
    // Before asking for anything: a store whose identity is gone is never replaced.
    if !paths.identity(context).exists() && !paths.legacy_identity(context).exists() {
        store::refuse_orphaned_store(paths, context).map_err(other)?;
    }
    let pass = match encrypted.first() {
        Some(c) => vault_passphrase(paths, c)?,
        None => {
            tty::set_non_dumpable();
            tty::new_passphrase(6).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    rpc_err(rpc::HUMAN_REQUIRED, tty::NO_TTY)
                } else {
                    rpc_err(rpc::INVALID_PARAMS, e.to_string())
                }
            })?
        }
    };
    let mut migrated = Vec::new();
    for c in legacy {
        let old = paths.legacy_identity(c);
        let text = Zeroizing::new(std::fs::read_to_string(&old).map_err(other)?);
        let id = keys::parse_identity(&text)
            .ok_or_else(|| other(format!("{}: no AGE-SECRET-KEY line", old.display())))?;
        keys::write_identity(&paths.identity(c), &id, &pass, log_n).map_err(other)?;
        let _ = std::fs::write(&old, vec![0u8; text.len()]);
        std::fs::remove_file(&old).map_err(other)?;
        migrated.push(c.clone());
    }
    let created = !paths.identity(context).exists();
    if created {
        let id = age::x25519::Identity::generate();
        store::private_dir(&paths.context_dir(context)).map_err(other)?;
        keys::write_identity(&paths.identity(context), &id, &pass, log_n).map_err(other)?;
        store::init_context(paths, context, &id).map_err(other)?;
    }
    audit::load_key(&paths.audit_key()).map_err(other)?;
    // A running daemon learns the new keys now (it would otherwise need another unlock), and
    // seals the audit chain if it has no seal yet; with no daemon, the seal is written here.
    if let Ok(mut c) = Client::connect(paths) {
        c.call(
            "unlock",
            with_passphrase(json!({"seal_first": true}), &pass),
        )?;
    } else {
        let id = keys::read_identity(&paths.identity(context), &pass).map_err(other)?;
        audit::seal_head(paths, audit::SealKey::of(context, &id)).map_err(other)?;
    }
    Ok((
        json!({"vault_dir": paths.root(), "context": context, "identity": paths.identity(context),
               "migrated": migrated}),
        created,
    ))
}

fn vault_cmd(paths: &VaultPaths, out: &Out, cmd: VaultCmd) -> Result<i32, ClientError> {
    match cmd {
        VaultCmd::Init { context } => {
            let (mut data, created) = init(paths, &context)?;
            data["created"] = json!(created);
            let env = envelope(
                data,
                vec![rpc::next(
                    format!("guard vault add NAME --context {context}"),
                    "store a secret",
                )],
            );
            Ok(out.ok(&env, |d| {
                format!(
                    "{} context {} in {}",
                    if created {
                        "created"
                    } else {
                        "already initialised:"
                    },
                    d["context"].as_str().unwrap_or(""),
                    paths.root().display()
                )
            }))
        }
        VaultCmd::Add {
            name,
            context,
            rotate_via,
            rotate_shell,
            rotate_every,
            on_leak,
            revoke_prefix,
            description,
        } => {
            let value = read_value(&name)?;
            let request = crate::vault::api::AddRequest {
                context,
                name,
                value,
                rotate_via,
                rotate_shell: rotate_shell.then_some(true),
                rotate_every,
                on_leak,
                revoke_prefix,
                description,
            };
            let env = call(paths, "add", serde_json::to_value(&request).map_err(other)?)?;
            Ok(out.ok(&env, |d| {
                format!(
                    "stored {} version {} in context {}",
                    d["name"].as_str().unwrap_or(""),
                    d["version"],
                    d["context"].as_str().unwrap_or("")
                )
            }))
        }
        VaultCmd::Backend { cmd } => backend::run(paths, out, cmd),
        VaultCmd::List { context } => {
            let env = call(paths, "list", json!({"context": context}))?;
            Ok(out.ok(&env, |d| {
                let mut s = String::new();
                for c in d["contexts"].as_array().into_iter().flatten() {
                    s.push_str(&format!(
                        "[{}]{}\n",
                        c["context"].as_str().unwrap_or(""),
                        match c["backend"].as_str() {
                            Some("openbao") => "  (OpenBao)",
                            _ => "",
                        }
                    ));
                    for e in c["secrets"].as_array().into_iter().flatten() {
                        s.push_str(&format!(
                            "  {}  v{}{}{}\n",
                            e["name"].as_str().unwrap_or(""),
                            e["current_version"],
                            if e["rotate_via"].as_bool() == Some(true) {
                                "  (rotatable)"
                            } else {
                                ""
                            },
                            e["description"]
                                .as_str()
                                .map(|d| format!("  {d}"))
                                .unwrap_or_default()
                        ));
                    }
                }
                s.trim_end().to_string()
            }))
        }
        VaultCmd::Fingerprints { file, context } => {
            let env = call(paths, "fingerprints", json!({"context": context}))?;
            if let Some(d) = env.get("data") {
                let local = |message: String| ClientError::Rpc {
                    code: 1,
                    message,
                    next_actions: Vec::new(),
                };
                let set: crate::engine::known::KnownSet = serde_json::from_value(d["set"].clone())
                    .map_err(|_| local("the daemon sent a malformed fingerprint set".into()))?;
                set.validate()
                    .map_err(|e| local(format!("the daemon sent a bad fingerprint set: {e}")))?;
                crate::fingerprint::save(&file, &set).map_err(|e| local(e.to_string()))?;
            }
            Ok(out.ok(&env, |d| {
                let mut s = format!("fingerprints written to {}", file.display());
                for k in d["skipped"].as_array().into_iter().flatten() {
                    s.push_str(&format!(
                        "\n  skipped {} (shorter than 8 bytes: cannot be redacted reliably)",
                        k.as_str().unwrap_or("")
                    ));
                }
                s
            }))
        }
        VaultCmd::Rm { name, context } => {
            let env = call(paths, "rm", json!({"context": context, "name": name}))?;
            Ok(out.ok(&env, |d| {
                format!(
                    "removed {} ({} leases revoked)",
                    d["removed"].as_str().unwrap_or(""),
                    d["revoked_leases"]
                )
            }))
        }
        VaultCmd::Incidents => {
            use crate::vault::server::leak;
            let incidents = leak::incidents(paths);
            let spool = VaultConfig::load(paths).map_err(other)?.leak_spool_dir();
            let waiting = spool
                .as_deref()
                .and_then(|d| crate::redact::spool::Spool::read_all(d).ok())
                .map_or(0, |(ok, _)| ok.len());
            let env = envelope(
                json!({"incidents": incidents, "waiting": waiting, "spool": spool}),
                vec![],
            );
            Ok(out.ok(&env, |d| {
                let mut lines: Vec<String> = d["incidents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| {
                        format!(
                            "{} {}/{} v{} {} in {}: {}{}{}",
                            i["at"],
                            i["context"].as_str().unwrap_or(""),
                            i["secret"].as_str().unwrap_or(""),
                            i["version"],
                            i["encoding"].as_str().unwrap_or(""),
                            i["source"].as_str().unwrap_or(""),
                            i["outcome"].as_str().unwrap_or(""),
                            i["new_version"]
                                .as_u64()
                                .map_or(String::new(), |v| format!(" → v{v}")),
                            i["detail"]
                                .as_str()
                                .map_or(String::new(), |t| format!(" ({t})")),
                        )
                    })
                    .collect();
                lines.push(format!("{} event(s) waiting", d["waiting"]));
                lines.join("\n")
            }))
        }
        VaultCmd::Status => {
            let env = match Client::connect_or_start(paths) {
                Ok(mut c) => c.call("status", json!({}))?,
                Err(ClientError::NotRunning { .. }) => envelope(
                    json!({"running": false, "vault_dir": paths.root()}),
                    vec![rpc::next("guard vault daemon --detach", "start the daemon")],
                ),
                Err(e) => return Err(e),
            };
            Ok(out.ok(&env, |d| {
                if d["running"].as_bool() != Some(true) {
                    return "daemon: not running".into();
                }
                let keys = match d["unlocked_for_secs"].as_u64() {
                    Some(s) => format!("unlocked for another {s} s"),
                    None => "locked".into(),
                };
                let traced = match d["traced_by"].as_u64() {
                    Some(0) => String::new(),
                    Some(t) => format!(" — TRACED by process {t}: do not unlock it"),
                    None => " — tracer unknown".into(),
                };
                format!("daemon: running (pid {}){traced}\nkeys: {keys}\ncontexts: {}\nactive leases: {}\nrunning commands: {}\npending approvals: {}\nheartbeat: {}",
                    d["pid"], d["contexts"], d["active_leases"], d["running_commands"],
                    d["pending_approvals"].as_array().map_or(0, |a| a.len()),
                    d["heartbeat"].as_str().unwrap_or("off"))
            }))
        }
        VaultCmd::Audit {
            cmd: Some(AuditCmd::Verify),
            ..
        } => match verify_audit(paths) {
            Ok(r) => {
                let env = envelope(r, vec![]);
                Ok(out.ok(&env, |d| {
                    format!(
                        "audit log intact: {} records{}; {}",
                        d["records"],
                        if d["head_checked"].as_bool() == Some(true) {
                            ", head matches"
                        } else {
                            ""
                        },
                        match (d["seal_checked"].as_bool(), d["sealed"].as_u64()) {
                            (Some(true), Some(n)) => format!("seal verified over {n} records"),
                            (Some(true), None) => "not sealed yet".to_string(),
                            _ => "seal not checked (it needs the unlocked daemon: \
                                  `guard vault unlock`)"
                                .to_string(),
                        }
                    )
                }))
            }
            Err((msg, broken)) => {
                if out.json {
                    println!("{}", rpc::err_envelope(rpc::FAILED, &msg, &[]));
                } else {
                    eprintln!("guard: {msg}");
                }
                Ok(if broken { 1 } else { EXIT_ERROR })
            }
        },
        VaultCmd::Audit {
            cmd: Some(AuditCmd::Acknowledge),
            ..
        } => {
            // Without the keys: the chain and its head.
            let why = match audit::verify(paths) {
                Ok(_) => None,
                Err(e @ audit::AuditError::Broken { .. }) => Some(e.to_string()),
                Err(e) => return Err(other(e)),
            };
            if Client::connect(paths).is_ok() {
                return Err(other(
                    "the daemon is running: stop it first (`guard vault daemon --stop`)",
                ));
            }
            // A human's decision: an agent that broke the chain must not be able to bury it.
            let contexts = store::list_contexts(paths);
            let Some(ctx) = contexts.iter().find(|c| paths.identity(c).exists()) else {
                return Err(other("no context to check the vault passphrase against"));
            };
            let pass = vault_passphrase(paths, ctx)?;
            let u = keys::unlock_all(paths, &pass).map_err(other)?;
            // With the keys, a chain that only its seal shows rewritten is a break too.
            let why = match why {
                Some(w) => w,
                None => match audit::verify_sealed(paths, &u.ids, u.seal_required) {
                    Ok(_) => {
                        return Err(other(
                            "the audit chain and its seal verify: there is no break to \
                             acknowledge",
                        ))
                    }
                    Err(e @ audit::AuditError::Broken { .. }) => e.to_string(),
                    Err(e) => return Err(other(e)),
                },
            };
            let seal = u.ids.get(ctx).map(|id| audit::SealKey::of(ctx, id));
            let kept = audit::acknowledge_break(paths, &why, seal).map_err(other)?;
            let env = envelope(json!({"kept": kept, "break": why}), vec![]);
            Ok(out.ok(&env, |d| {
                format!(
                    "new audit chain started; the broken log is kept as {}",
                    d["kept"].as_str().unwrap_or("?")
                )
            }))
        }
        VaultCmd::Audit { cmd: None, tail } => {
            let recs = audit::tail(paths, Some(tail.unwrap_or(50))).map_err(|e| {
                ClientError::Autostart {
                    reason: e.to_string(),
                }
            })?;
            let env = envelope(
                json!({"records": recs}),
                vec![rpc::next(
                    "guard vault audit verify",
                    "verify the hash chain",
                )],
            );
            Ok(out.ok(&env, |d| {
                d["records"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        format!(
                            "{:>5} {} {:<10} {:<14} {}{}{}",
                            r["seq"],
                            r["ts"],
                            r["op"].as_str().unwrap_or(""),
                            r["outcome"].as_str().unwrap_or(""),
                            r["secret"]
                                .as_str()
                                .map(|s| format!("secret={s} "))
                                .unwrap_or_default(),
                            r["lease"]
                                .as_str()
                                .map(|s| format!("lease={s} "))
                                .unwrap_or_default(),
                            r["detail"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }))
        }
        VaultCmd::Rotate { name, context } => {
            let env = call(paths, "rotate", json!({"context": context, "name": name}))?;
            Ok(out.ok(&env, |d| {
                format!(
                    "rotated {} to version {}",
                    d["name"].as_str().unwrap_or(""),
                    d["version"]
                )
            }))
        }
        VaultCmd::Print {
            name,
            context,
            version_id,
        } => {
            let mut c = Client::connect_or_start(paths)?;
            c.verify_peer()?;
            let pass = passphrase(&format!("guard: print secret {name:?}? vault passphrase: "))?;
            let params = with_passphrase(
                json!({"context": context, "name": name, "version": version_id}),
                &pass,
            );
            // The daemon writes the value to our stdout descriptor; nothing else goes there.
            let env = c.call_with_fds("print", params, &[1])?;
            if out.json {
                eprintln!("{env}");
            }
            Ok(0)
        }
        VaultCmd::Unlock { duration } => {
            let mut c = Client::connect_or_start(paths)?;
            c.verify_peer()?;
            let pass = passphrase("vault passphrase: ")?;
            let env = c.call("unlock", with_passphrase(json!({"ttl": duration}), &pass))?;
            Ok(out.ok(&env, |d| {
                format!(
                    "unlocked {} for {} s",
                    d["contexts"], d["unlocked_for_secs"]
                )
            }))
        }
        VaultCmd::Lock => {
            let env = Client::connect(paths)?.call("lock", json!({}))?;
            Ok(out.ok(&env, |_| "locked".into()))
        }
        VaultCmd::Revoke { lease, all } => {
            let env = call(paths, "revoke", json!({"lease": lease, "all": all}))?;
            Ok(out.ok(&env, |d| format!("revoked {} lease(s)", d["revoked"])))
        }
        VaultCmd::Killswitch { rotate, wipe } => {
            let env = call(paths, "killswitch", json!({"rotate": rotate, "wipe": wipe}))?;
            Ok(out.ok(&env, |d| {
                format!(
                    "killswitch: revoked {} lease(s), rotated {}, wiped: {}",
                    d["revoked"],
                    d["rotated"].as_array().map_or(0, |a| a.len()),
                    d["wiped"]
                )
            }))
        }
        VaultCmd::Approve { request, deny } => {
            let mut c = Client::connect_or_start(paths)?;
            let params = json!({"request": request, "allow": !deny});
            let params = if deny {
                params
            } else {
                // Show the human what they approve before asking for the passphrase.
                let p = c.call("pending", json!({}))?;
                let req = p["data"]["pending"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["request"] == request.as_str())
                    .cloned()
                    .ok_or_else(|| {
                        rpc_err(rpc::NOT_FOUND, format!("no pending request {request}"))
                    })?;
                tty::say(&format!(
                    "guard: approve {} to use secret(s) {} (context {}){}",
                    req["command"].as_str().unwrap_or(""),
                    req["secrets"],
                    req["context"],
                    requested_by(&req)
                ))
                .map_err(|_| rpc_err(rpc::HUMAN_REQUIRED, tty::NO_TTY))?;
                c.verify_peer()?;
                with_passphrase(params, &passphrase("vault passphrase: ")?)
            };
            let env = c.call("approve", params)?;
            Ok(out.ok(&env, |d| {
                format!(
                    "{}: {}",
                    d["request"].as_str().unwrap_or(""),
                    d["decision"].as_str().unwrap_or("")
                )
            }))
        }
        VaultCmd::Pending => {
            let env = call(paths, "pending", json!({}))?;
            Ok(out.ok(&env, |d| {
                d["pending"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        format!(
                            "{}  secrets={} context={}\n    {}{}",
                            p["request"].as_str().unwrap_or(""),
                            p["secrets"],
                            p["context"],
                            p["command"].as_str().unwrap_or(""),
                            requested_by(p)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }))
        }
        VaultCmd::Grant {
            names,
            context,
            cwd,
            deny,
            command,
        } => {
            let cwd = match cwd {
                Some(d) => d,
                None => std::env::current_dir()?,
            };
            let mut c = Client::connect_or_start(paths)?;
            // The project's pass-through variables are part of what is approved.
            let pass_env = ProjectFile::find(&cwd).map(|p| p.env).unwrap_or_default();
            let shown: String = pass_env
                .iter()
                .map(|k| match std::env::var(k) {
                    Ok(v) => format!("{}={} ", shell_word(k), shell_word(&v)),
                    Err(_) => format!("(no {}) ", shell_word(k)),
                })
                .collect();
            tty::say(&format!(
                "guard: {} `{shown}{}` in {} to use secret(s) {} (context {context})",
                if deny { "deny" } else { "approve" },
                command
                    .iter()
                    .map(|a| shell_word(a))
                    .collect::<Vec<_>>()
                    .join(" "),
                shell_word(&cwd.to_string_lossy()),
                names.join(", ")
            ))
            .map_err(|_| rpc_err(rpc::HUMAN_REQUIRED, tty::NO_TTY))?;
            c.verify_peer()?;
            let pass = passphrase("vault passphrase: ")?;
            let env = c.call(
                "grant",
                with_passphrase(
                    json!({"context": context, "names": names, "argv": command, "cwd": cwd,
                           "env": environment(&pass_env), "pass_env": pass_env, "deny": deny}),
                    &pass,
                ),
            )?;
            Ok(out.ok(&env, |d| {
                format!(
                    "{} {} for {}",
                    if deny { "denied" } else { "approved" },
                    d["secrets"],
                    d["command"].as_str().unwrap_or("")
                )
            }))
        }
        VaultCmd::Daemon { detach, stop } => {
            if stop {
                let mut c = Client::connect(paths)?;
                let env = c.call("shutdown", json!({}))?;
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while paths.socket().exists() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                return Ok(out.ok(&env, |_| "daemon stopped".into()));
            }
            if detach {
                if let Ok(mut c) = Client::connect(paths) {
                    let env = c.call("hello", json!({}))?;
                    return Ok(out.ok(&env, |d| {
                        format!("daemon already running (pid {})", d["pid"])
                    }));
                }
                let mut c = start_daemon(paths)?;
                let env = c.call("hello", json!({}))?;
                return Ok(out.ok(&env, |d| format!("daemon started (pid {})", d["pid"])));
            }
            match crate::vault::server::run_daemon(paths.clone()) {
                Ok(()) => Ok(0),
                Err(e) => {
                    eprintln!("guard vault daemon: {e}");
                    Ok(EXIT_ERROR)
                }
            }
        }
    }
}

/// `audit verify`: through the daemon when it runs unlocked (the seal checked with the keys),
/// else here (chain and head; the seal unchecked). Err: the message, and whether it is a break.
fn verify_audit(paths: &VaultPaths) -> Result<Value, (String, bool)> {
    if let Ok(mut c) = Client::connect(paths) {
        match c.call("audit_verify", json!({})) {
            Ok(env) => return Ok(env["data"].clone()),
            Err(ClientError::Rpc { code, message, .. }) if code == rpc::AUDIT_FAILED => {
                return Err((message, true))
            }
            Err(_) => {} // locked, or an older daemon: check here
        }
    }
    match audit::verify(paths) {
        Ok(r) => Ok(json!(r)),
        Err(e) => Err((e.to_string(), matches!(e, audit::AuditError::Broken { .. }))),
    }
}

/// Read a new value: a no-echo prompt on the terminal, or all of stdin (one trailing newline cut).
fn read_value(name: &str) -> Result<SecretValue, ClientError> {
    let mut buf = Zeroizing::new(Vec::new());
    if std::io::stdin().is_terminal() {
        let v = tty::prompt_no_echo(&format!("value for {name}: "))
            .map_err(|e| other(format!("reading the value from the terminal: {e}")))?;
        buf.extend_from_slice(v.as_bytes());
    } else {
        // A little past the limit is enough to say it is too long.
        std::io::stdin()
            .take(store::MAX_VALUE_BYTES as u64 + 3)
            .read_to_end(&mut buf)
            .map_err(|e| other(format!("reading the value from stdin: {e}")))?;
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    // Checked here too: a value too long for a frame would otherwise end in a broken pipe.
    store::check_value_len(buf.len()).map_err(other)?;
    let s = String::from_utf8(std::mem::take(&mut *buf)).map_err(|e| {
        let mut b = e.into_bytes();
        zeroize::Zeroize::zeroize(&mut b);
        other("the value is not UTF-8")
    })?;
    Ok(SecretValue::new(s))
}

/// "asked by" lines for a pending request an agent opened (its own words, marked as such).
fn requested_by(req: &Value) -> String {
    match req["agent"].as_str() {
        Some(agent) => format!(
            "\n    asked by {agent:?} (as the agent names itself), saying: {:?}",
            req["purpose"].as_str().unwrap_or("")
        ),
        None => String::new(),
    }
}
