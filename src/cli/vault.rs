//! `guard vault …` and `guard exec`: the stateless CLI over the vault daemon.
//!
//! Design decision: every command builds the same envelope the daemon returns
//! (`{ok, data|error, next_actions}`); `--json` prints it verbatim, otherwise a short human
//! rendering. Values never pass through this module except on their way into `guard exec`'s child
//! environment and output masker, or to stdout for an approved `lease --print`. Approval prompts
//! use the controlling terminal (`/dev/tty`), never stdin/stdout, which an agent drives.

use crate::vault::approval::ask_tty;
use crate::vault::client::{spawn_daemon, Client, ClientError};
use crate::vault::exec::{Masker, ProjectFile};
use crate::vault::rpc::{self, NextAction};
use crate::vault::{audit, store, SecretValue, VaultPaths};
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use zeroize::Zeroizing;

const EXIT_DENIED: i32 = 1;
const EXIT_ERROR: i32 = 2;

#[derive(Args)]
#[command(
    after_help = "Examples:\n  guard vault init\n  printf %s \"$TOKEN\" | guard vault add api_token --rotate-via 'gh auth token'\n  guard vault grant api_token --client ~/src/app\n  guard vault audit verify"
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
    /// Create the vault: an age identity and an empty store for a context (0600 files, 0700 dirs)
    #[command(after_help = "Example:\n  guard vault init --context prod")]
    Init {
        #[arg(long, default_value = "default")]
        context: String,
    },
    /// Store a secret (value from a no-echo terminal prompt, or from stdin)
    #[command(
        after_help = "Examples:\n  guard vault add api_token                 # prompts without echo\n  guard vault add db_pass --context prod < pass.txt\n  guard vault add gh --rotate-via 'gh auth token' --rotate-every 30d"
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
    },
    /// List secrets (names and versions, never values)
    #[command(after_help = "Example:\n  guard vault list --context prod --json")]
    List {
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
    /// Daemon status: contexts, active leases, pending approvals, heartbeat
    #[command(after_help = "Example:\n  guard vault status --json")]
    Status,
    /// Show (`--tail N`) or verify (`audit verify`) the hash-chained audit log
    #[command(after_help = "Examples:\n  guard vault audit --tail 20\n  guard vault audit verify")]
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
    /// Take a lease (prints the lease id; `--print` prints the value and needs approval)
    #[command(
        after_help = "Examples:\n  guard vault lease api_token --ttl 30m --client-id agent-task-123\n  export TOKEN=$(guard vault lease api_token --print)"
    )]
    Lease {
        name: String,
        #[arg(long, default_value = "default")]
        context: String,
        #[arg(long)]
        ttl: Option<String>,
        /// Client id recorded in the lease and the approval scope [default: current directory]
        #[arg(long)]
        client_id: Option<String>,
        /// Print the raw value (a separate approval scope)
        #[arg(long)]
        print: bool,
        /// Pin an older version by its id (rollback)
        #[arg(long, value_name = "ID")]
        version_id: Option<u32>,
    },
    /// Revoke one lease, or all of them
    #[command(
        after_help = "Examples:\n  guard vault revoke lease_3f9a…\n  guard vault revoke --all"
    )]
    Revoke {
        lease: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Emergency: revoke every lease, optionally rotate all and wipe the stores
    #[command(after_help = "Example:\n  guard vault killswitch --rotate")]
    Killswitch {
        #[arg(long)]
        rotate: bool,
        #[arg(long)]
        wipe: bool,
    },
    /// Approve (or `--deny`) a pending request; run this yourself, not through an agent
    #[command(after_help = "Example:\n  guard vault approve req_0c1d…")]
    Approve {
        request: String,
        #[arg(long)]
        deny: bool,
    },
    /// List pending approval requests
    #[command(after_help = "Example:\n  guard vault pending")]
    Pending,
    /// Pre-approve (or `--deny`) a client for a secret
    #[command(
        after_help = "Example:\n  guard vault grant api_token --client /home/me/src/app --context dev"
    )]
    Grant {
        name: String,
        #[arg(long)]
        client: String,
        #[arg(long, default_value = "default")]
        context: String,
        /// Approve printing the raw value (`lease --print`), not only injection
        #[arg(long)]
        print: bool,
        #[arg(long)]
        deny: bool,
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
}

#[derive(Args)]
#[command(
    after_help = "Example (.guard/secrets.toml):\n  [[secret]]\n  name = \"api_token\"\n  env = \"API_TOKEN\"\n  ttl = \"30m\"\n\n  guard exec -- ./deploy.sh"
)]
pub struct ExecArgs {
    #[arg(long, env = "GUARD_VAULT_DIR")]
    vault_dir: Option<PathBuf>,
    /// Context to read secrets from [default: the project file's, else "default"]
    #[arg(long)]
    context: Option<String>,
    /// Client id for leases and approvals [default: the project directory]
    #[arg(long)]
    client_id: Option<String>,
    /// Project file [default: nearest .guard/secrets.toml or .secrets.json]
    #[arg(long)]
    file: Option<PathBuf>,
    /// guard's own messages (errors, approval) as JSON envelopes on stderr
    #[arg(long)]
    json: bool,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

struct Out {
    json: bool,
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
        if code == rpc::DENIED {
            EXIT_DENIED
        } else {
            EXIT_ERROR
        }
    }
}

fn envelope(data: Value, next_actions: Vec<NextAction>) -> Value {
    json!({"ok": true, "data": data, "next_actions": next_actions})
}

fn default_client() -> String {
    std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "unknown".into())
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

fn call(paths: &VaultPaths, method: &str, params: Value) -> Result<Value, ClientError> {
    Client::connect_or_start(paths)?.call(method, params)
}

fn vault_cmd(paths: &VaultPaths, out: &Out, cmd: VaultCmd) -> Result<i32, ClientError> {
    match cmd {
        VaultCmd::Init { context } => {
            let created =
                store::init_context(paths, &context).map_err(|e| ClientError::Autostart {
                    reason: e.to_string(),
                })?;
            audit::load_key(&paths.audit_key()).map_err(|e| ClientError::Autostart {
                reason: e.to_string(),
            })?;
            let env = envelope(
                json!({"vault_dir": paths.root(), "context": context, "created": created, "identity": paths.identity(&context)}),
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
        } => {
            let value = read_value(&name)?;
            let mut c = Client::connect_or_start(paths)?;
            let env = c.call("add", json!({"context": context, "name": name, "value": value,
                "rotate_via": rotate_via, "rotate_shell": rotate_shell.then_some(true), "rotate_every": rotate_every}))?;
            Ok(out.ok(&env, |d| {
                format!(
                    "stored {} version {} in context {}",
                    d["name"].as_str().unwrap_or(""),
                    d["version"],
                    d["context"].as_str().unwrap_or("")
                )
            }))
        }
        VaultCmd::List { context } => {
            let env = call(paths, "list", json!({"context": context}))?;
            Ok(out.ok(&env, |d| {
                let mut s = String::new();
                for c in d["contexts"].as_array().into_iter().flatten() {
                    s.push_str(&format!("[{}]\n", c["context"].as_str().unwrap_or("")));
                    for e in c["secrets"].as_array().into_iter().flatten() {
                        s.push_str(&format!(
                            "  {}  v{}{}\n",
                            e["name"].as_str().unwrap_or(""),
                            e["current_version"],
                            if e["rotate_via"].as_bool() == Some(true) {
                                "  (rotatable)"
                            } else {
                                ""
                            }
                        ));
                    }
                }
                s.trim_end().to_string()
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
                format!("daemon: running (pid {})\ncontexts: {}\nactive leases: {}\npending approvals: {}\nheartbeat: {}",
                    d["pid"], d["contexts"], d["active_leases"], d["pending_approvals"].as_array().map_or(0, |a| a.len()),
                    d["heartbeat"].as_str().unwrap_or("off"))
            }))
        }
        VaultCmd::Audit {
            cmd: Some(AuditCmd::Verify),
            ..
        } => match audit::verify(paths) {
            Ok(r) => {
                let env = envelope(json!(r), vec![]);
                Ok(out.ok(&env, |d| {
                    format!(
                        "audit log intact: {} records{}",
                        d["records"],
                        if d["head_checked"].as_bool() == Some(true) {
                            ", head matches"
                        } else {
                            ""
                        }
                    )
                }))
            }
            Err(e) => {
                let msg = e.to_string();
                if out.json {
                    println!("{}", rpc::err_envelope(rpc::FAILED, &msg, &[]));
                } else {
                    eprintln!("guard: {msg}");
                }
                Ok(if matches!(e, audit::AuditError::Broken { .. }) {
                    1
                } else {
                    EXIT_ERROR
                })
            }
        },
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
        VaultCmd::Lease {
            name,
            context,
            ttl,
            client_id,
            print,
            version_id: version,
        } => {
            let client = client_id.unwrap_or_else(default_client);
            let mut c = Client::connect_or_start(paths)?;
            let purpose = if print { "print" } else { "use" };
            let data = lease_with_approval(
                paths,
                &mut c,
                json!({"context": context, "name": name, "client": client,
                "purpose": purpose, "ttl": ttl, "version": version}),
                out.json,
            )?;
            let lease = data["lease"].as_str().unwrap_or_default().to_string();
            if print {
                let vals: Resolved = call_typed(&mut c, "resolve", json!({"leases": [lease]}))?;
                let mut stdout = std::io::stdout().lock();
                for v in &vals.values {
                    stdout
                        .write_all(v.value.expose_secret().as_bytes())
                        .map_err(ClientError::Io)?;
                    if stdout.is_terminal() {
                        stdout.write_all(b"\n").map_err(ClientError::Io)?;
                    }
                }
                return Ok(0);
            }
            let env = envelope(
                data,
                vec![rpc::next(
                    format!("guard vault revoke {lease}"),
                    "revoke when done",
                )],
            );
            Ok(out.ok(&env, |d| d["lease"].as_str().unwrap_or("").to_string()))
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
            let env = call(
                paths,
                "approve",
                json!({"request": request, "allow": !deny}),
            )?;
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
                            "{}  client={} secret={} context={} purpose={}",
                            p["request"].as_str().unwrap_or(""),
                            p["scope"]["client"],
                            p["scope"]["secret"],
                            p["scope"]["context"],
                            p["scope"]["purpose"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }))
        }
        VaultCmd::Grant {
            name,
            client,
            context,
            print,
            deny,
        } => {
            let env = call(
                paths,
                "grant",
                json!({"context": context, "name": name, "client": client,
                "purpose": if print { "print" } else { "use" }, "deny": deny}),
            )?;
            Ok(out.ok(&env, |d| {
                format!(
                    "{} {} for {} on {}",
                    if deny { "denied" } else { "granted" },
                    d["scope"]["purpose"],
                    d["scope"]["client"],
                    d["scope"]["secret"]
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
                spawn_daemon(paths)?;
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                loop {
                    if let Ok(mut c) = Client::connect(paths) {
                        let env = c.call("hello", json!({}))?;
                        return Ok(out.ok(&env, |d| format!("daemon started (pid {})", d["pid"])));
                    }
                    if std::time::Instant::now() > deadline {
                        return Err(ClientError::Autostart {
                            reason: format!("see {}", paths.daemon_log().display()),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
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

/// Read a new value: a no-echo prompt on the terminal, or all of stdin (one trailing newline cut).
fn read_value(name: &str) -> Result<SecretValue, ClientError> {
    let mut buf = Zeroizing::new(Vec::new());
    if std::io::stdin().is_terminal() {
        let v = prompt_no_echo(&format!("value for {name}: ")).map_err(ClientError::Io)?;
        buf.extend_from_slice(v.as_bytes());
    } else {
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(ClientError::Io)?;
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    let s = String::from_utf8(std::mem::take(&mut *buf)).map_err(|e| {
        let mut b = e.into_bytes();
        zeroize::Zeroize::zeroize(&mut b);
        ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the value is not UTF-8",
        ))
    })?;
    Ok(SecretValue::new(s))
}

/// Read a line from /dev/tty with echo off (termios), restoring the terminal afterwards.
fn prompt_no_echo(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    use std::io::BufRead;
    use std::os::fd::AsRawFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it for a valid open fd.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the lifetime of `tty`; `old` is a valid out-pointer.
    if unsafe { libc::tcgetattr(fd, &mut old) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut noecho = old;
    noecho.c_lflag &= !libc::ECHO;
    noecho.c_lflag |= libc::ECHONL;
    // SAFETY: as above; restored below on every path.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &noecho) };
    let r = (|| {
        (&tty).write_all(prompt.as_bytes())?;
        let mut line = Zeroizing::new(String::new());
        std::io::BufReader::new(&tty).read_line(&mut line)?;
        while line.ends_with('\n') || line.ends_with('\r') {
            line.pop();
        }
        Ok(line)
    })();
    // SAFETY: restores the attributes read above on the same fd.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    r
}

#[derive(Deserialize)]
struct ResolvedValue {
    name: String,
    value: SecretValue,
}
#[derive(Deserialize)]
struct Resolved {
    values: Vec<ResolvedValue>,
}

/// Call a method whose data carries values: parsed straight from a zeroizing frame buffer.
fn call_typed<T: for<'de> Deserialize<'de>>(
    c: &mut Client,
    method: &str,
    params: Value,
) -> Result<T, ClientError> {
    let env = c.call(method, params)?;
    // The envelope `Value` holds the plaintext briefly; it is dropped at the end of this function.
    serde_json::from_value(env.get("data").cloned().unwrap_or(Value::Null))
        .map_err(|_| ClientError::Protocol)
}

/// `lease`, and if the scope is new, get a decision: the terminal if there is one, else wait for
/// `guard vault approve` (denied after the daemon's approval timeout).
fn lease_with_approval(
    paths: &VaultPaths,
    c: &mut Client,
    params: Value,
    json: bool,
) -> Result<Value, ClientError> {
    let env = c.call("lease", params.clone())?;
    let data = env.get("data").cloned().unwrap_or(Value::Null);
    if data["status"] == "granted" {
        return Ok(data);
    }
    let req = data["request"]
        .as_str()
        .ok_or(ClientError::Protocol)?
        .to_string();
    let s = &data["scope"];
    let question = format!(
        "guard: allow client {} to {} secret {} (context {})?",
        s["client"],
        if s["purpose"] == "print" {
            "PRINT"
        } else {
            "use"
        },
        s["secret"],
        s["context"]
    );
    match ask_tty(&question) {
        Some(allow) => {
            c.call("approve", json!({"request": req, "allow": allow}))?;
        }
        None => {
            let grant = env["next_actions"]
                .get(1)
                .and_then(|a| a["command"].as_str())
                .unwrap_or("guard vault grant")
                .to_string();
            if json {
                eprintln!(
                    "{}",
                    json!({"ok": false, "error": {"code": "approval_pending", "message": "approval required"},
                    "data": {"request": req}, "next_actions": env["next_actions"]})
                );
            } else {
                eprintln!("guard: approval required for secret {} (client {}, context {}): the user runs `guard vault approve {req}` \
                           (or pre-approves with `{grant}`); waiting…", s["secret"], s["client"], s["context"]);
            }
            // A second connection so this one is free for the final lease call.
            Client::connect(paths)?.call("await_approval", json!({"request": req}))?;
        }
    }
    let env = c.call("lease", params)?;
    let data = env.get("data").cloned().unwrap_or(Value::Null);
    if data["status"] == "granted" {
        Ok(data)
    } else {
        Err(ClientError::Protocol)
    }
}

pub fn run_exec(a: ExecArgs) -> anyhow::Result<i32> {
    let out = Out { json: a.json };
    match exec(a) {
        Ok(code) => Ok(code),
        Err(e) => {
            // Keep stdout for the child: exec reports its own errors on stderr even with --json.
            let code = if matches!(&e, ClientError::Rpc { code, .. } if *code == rpc::DENIED) {
                EXIT_DENIED
            } else {
                EXIT_ERROR
            };
            if out.json {
                let (c, acts) = match &e {
                    ClientError::Rpc {
                        code, next_actions, ..
                    } => (*code, next_actions.clone()),
                    _ => (rpc::FAILED, vec![]),
                };
                eprintln!("{}", rpc::err_envelope(c, &e.to_string(), &acts));
            } else {
                eprintln!("guard exec: {e}");
                if let ClientError::Rpc { next_actions, .. } = &e {
                    for n in next_actions {
                        eprintln!("  next: {}  ({})", n.command, n.description);
                    }
                }
            }
            Ok(code)
        }
    }
}

fn exec(a: ExecArgs) -> Result<i32, ClientError> {
    let paths = VaultPaths::resolve(a.vault_dir.as_deref());
    let cwd = std::env::current_dir()?;
    let pf = match &a.file {
        Some(f) => ProjectFile::load(f),
        None => ProjectFile::find(&cwd),
    }
    .map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
    let context = a
        .context
        .or(pf.context.clone())
        .unwrap_or_else(|| "default".into());
    let client = a
        .client_id
        .or(pf.client_id.clone())
        .unwrap_or_else(|| pf.root.display().to_string());
    let mut c = Client::connect_or_start(&paths)?;
    let mut leases = Vec::new();
    let result = (|| {
        for s in &pf.secrets {
            let ttl = s.ttl.map(|t| format!("{}ms", t.as_millis()));
            let data = lease_with_approval(
                &paths,
                &mut c,
                json!({"context": context, "name": s.name, "client": client,
                "purpose": "use", "ttl": ttl}),
                a.json,
            )?;
            leases.push(
                data["lease"]
                    .as_str()
                    .ok_or(ClientError::Protocol)?
                    .to_string(),
            );
        }
        let resolved: Resolved = call_typed(&mut c, "resolve", json!({"leases": leases}))?;
        run_child(&pf, &resolved, &a.command)
    })();
    for l in &leases {
        let _ = c.call("revoke", json!({"lease": l}));
    }
    result
}

fn run_child(pf: &ProjectFile, resolved: &Resolved, argv: &[String]) -> Result<i32, ClientError> {
    use std::os::unix::process::ExitStatusExt;
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for v in &resolved.values {
        let env = pf
            .secrets
            .iter()
            .find(|s| s.name == v.name)
            .map(|s| s.env.as_str())
            .ok_or(ClientError::Protocol)?;
        cmd.env(env, v.value.expose_secret());
    }
    let masker = Masker::new(
        resolved
            .values
            .iter()
            .map(|v| (v.name.as_str(), v.value.expose_secret().as_bytes())),
    );
    let mut child = cmd.spawn().map_err(|e| {
        ClientError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot run {:?}: {e}", argv[0]),
        ))
    })?;
    // Ctrl-C goes to the child (same process group); we stay alive to revoke the leases.
    // SAFETY: changing signal dispositions of this process only; restored default is not needed
    // because we exit right after the child.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let so = child.stdout.take().expect("stdout should be piped");
    let se = child.stderr.take().expect("stderr should be piped");
    let m2 = masker.clone();
    let t1 = std::thread::spawn(move || masker.filter(so, std::io::stdout()));
    let t2 = std::thread::spawn(move || m2.filter(se, std::io::stderr()));
    let status = child.wait()?;
    let _ = t1.join();
    let _ = t2.join();
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
