//! `guard mcp`: the Model Context Protocol over stdio (the `rmcp` crate), so an AI agent's MCP
//! client can use guard with one line of configuration.
//!
//! Tools: `scan_text` (findings, redacted), `redact_text` (the text with every secret
//! replaced), `secrets_list` (names, contexts, versions and rotation settings from the vault
//! daemon — never a value), `secrets_exec` (the daemon runs the command with the secrets in its
//! environment, on pipes of this process, writing its output redacted: rules and every encoding
//! of the injected values) and `secrets_request_access` (opens a request a human approves at
//! their terminal). No tool approves anything: approval takes the vault passphrase at a
//! terminal, which an agent does not have. Every result passes the engine again (rules and the
//! vault's fingerprints) before it leaves, and every call is audited in the vault's log with the
//! client's name (as it gave it at `initialize`) and the purpose it stated.

use std::sync::{Arc, Mutex};

use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{
    tool, tool_handler, tool_router, ErrorData, Peer, RoleServer, ServerHandler, ServiceExt,
};
use serde::Deserialize;

use crate::engine::known::KnownMatcher;
use crate::engine::Engine;
use crate::finding::{Finding, FindingOptions, Origin, Reveal};
use crate::redact::{BlockRedactor, RedactOptions};
use crate::vault::api;

/// Text tools refuse more than this (the agent's context is not a bulk scanner's input).
const MAX_TEXT: usize = 1 << 20;
/// Output kept per stream; the rest is counted, not returned.
const MAX_OUTPUT: usize = 256 * 1024;
/// Longest a command may run [default and upper bound of `timeout_seconds`].
const DEFAULT_TIMEOUT_S: u64 = 60;
const MAX_TIMEOUT_S: u64 = 600;
/// Longest `secrets_request_access` waits for the human's answer.
const MAX_WAIT_S: u64 = 300;

#[derive(clap::Args)]
#[command(
    after_help = "Add guard to an MCP client (it speaks MCP on stdin/stdout):\n  claude mcp add guard -- guard mcp\n  codex mcp add guard -- guard mcp\n  Cursor / others: {\"mcpServers\": {\"guard\": {\"command\": \"guard\", \"args\": [\"mcp\"]}}}"
)]
pub struct McpArgs {
    /// Vault directory [default: ~/.local/share/guard/vault]
    #[arg(long, env = "GUARD_VAULT_DIR")]
    vault_dir: Option<std::path::PathBuf>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TextRequest {
    /// The text to look at (at most 1 MiB).
    text: String,
    /// Why you are asking (recorded in the vault's audit log).
    purpose: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ExecToolRequest {
    /// The command and its arguments (no shell unless the command is one).
    argv: Vec<String>,
    /// Directory to run in [default: guard mcp's working directory].
    cwd: Option<std::path::PathBuf>,
    /// Secrets to inject into the command's environment.
    #[serde(default)]
    secrets: Vec<api::ExecSecret>,
    /// Vault context [default: "default"].
    context: Option<String>,
    /// Seconds the command may run before it is stopped [default: 60, at most 600].
    timeout_seconds: Option<u64>,
    /// Why you run it (recorded in the vault's audit log and shown to the human who approves).
    purpose: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct AccessToolRequest {
    /// The secrets the command needs (names in the vault).
    secrets: Vec<String>,
    /// The exact command that will use them (approval is for this command in this directory).
    argv: Vec<String>,
    /// Directory it will run in [default: guard mcp's working directory].
    cwd: Option<std::path::PathBuf>,
    /// Vault context [default: "default"].
    context: Option<String>,
    /// Why you need them (shown to the human who decides, and audited).
    purpose: String,
    /// Seconds to wait for the human's answer [default: 0, answer at once; at most 300].
    wait_seconds: Option<u64>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListToolRequest {
    /// One context; all when absent.
    context: Option<String>,
    /// Why you are asking (recorded in the vault's audit log).
    purpose: Option<String>,
}

#[derive(Clone)]
struct GuardMcp {
    engine: Arc<Engine>,
    vault: crate::vault::VaultPaths,
    /// The vault's fingerprints (stored values), reloaded when the daemon rewrites them.
    known: Arc<Mutex<(crate::fingerprint::Watch, Option<Arc<KnownMatcher>>)>>,
    #[allow(dead_code)] // read by the tool_handler macro
    tool_router: ToolRouter<Self>,
}

fn text_of(r: &TextRequest) -> Result<&[u8], ErrorData> {
    if r.text.len() > MAX_TEXT {
        return Err(ErrorData::invalid_params(
            format!(
                "text of {} bytes: at most {MAX_TEXT} bytes per call",
                r.text.len()
            ),
            None,
        ));
    }
    Ok(r.text.as_bytes())
}

fn internal(e: impl std::fmt::Display) -> ErrorData {
    ErrorData::internal_error(e.to_string(), None)
}

impl GuardMcp {
    /// The vault's current fingerprint set, if it has one.
    fn known(&self) -> Option<Arc<KnownMatcher>> {
        let mut k = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(newer) = k.0.newer() {
            k.1 = Some(newer);
        }
        k.1.clone()
    }

    /// `text` with every secret the engine finds replaced: what leaves this server.
    fn redacted(&self, text: &str) -> Result<String, ErrorData> {
        let r = BlockRedactor::new(&self.engine, self.known(), RedactOptions::default())
            .map_err(internal)?;
        let out = r.redact(text.as_bytes()).map_err(internal)?;
        Ok(String::from_utf8_lossy(&out.0).into_owned())
    }

    fn ok(&self, v: serde_json::Value) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(
            self.redacted(&v.to_string())?,
        )]))
    }

    /// Who calls (the client's name from `initialize`) and the purpose it gave, redacted.
    fn caller(
        &self,
        peer: &Peer<RoleServer>,
        purpose: Option<&str>,
    ) -> Result<api::Caller, ErrorData> {
        let agent = peer.peer_info().map_or_else(
            || "unknown MCP client".to_string(),
            |i| format!("{} {}", i.client_info.name, i.client_info.version),
        );
        Ok(api::Caller {
            agent: self.redacted(&agent)?,
            purpose: purpose.map(|p| self.redacted(p)).transpose()?,
        }
        .cleaned())
    }

    /// Audits a call (the tool, the client's name, the purpose it gave) before it is served.
    /// Text tools answer without a vault (nothing to audit into) and when it cannot be reached;
    /// the secrets tools need the vault anyway, so for them an audit that fails fails the call.
    async fn note(&self, tool: &str, caller: api::Caller) -> Result<(), ErrorData> {
        if !self.vault.contexts().exists() {
            return Ok(());
        }
        let params = serde_json::to_value(api::NoteRequest {
            tool: tool.into(),
            caller,
        })
        .map_err(internal)?;
        self.call("note", params).await.map(drop)
    }

    /// The caller of a secrets tool, once its call is audited (a call that cannot be audited
    /// is not served).
    async fn audited(
        &self,
        tool: &str,
        peer: &Peer<RoleServer>,
        purpose: &str,
    ) -> Result<api::Caller, ErrorData> {
        let caller = self.caller(peer, Some(purpose))?;
        self.note(tool, caller.clone()).await?;
        Ok(caller)
    }

    /// One daemon call off the async runtime.
    async fn call(
        &self,
        method: &'static str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, ErrorData> {
        let paths = self.vault.clone();
        tokio::task::spawn_blocking(move || {
            crate::vault::client::Client::connect_or_start(&paths)?.call(method, params)
        })
        .await
        .map_err(internal)?
        .map_err(internal)
    }
}

/// `value` (or `default`) if it lies in `range`, else an invalid-params error naming `what`.
fn bounded(
    what: &str,
    value: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ErrorData> {
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(ErrorData::invalid_params(
            format!("{what} must be {} to {}", range.start(), range.end()),
            None,
        ))
    }
}

fn cwd_or_here(cwd: Option<std::path::PathBuf>) -> Result<std::path::PathBuf, ErrorData> {
    match cwd {
        Some(c) => Ok(c),
        None => std::env::current_dir().map_err(internal),
    }
}

#[tool_router]
impl GuardMcp {
    /// Secrets in text the agent is about to write, commit or send: each finding's rule, line
    /// and column, with the secret redacted.
    #[tool(
        description = "Find secrets (API keys, tokens, passwords, private keys, values stored in \
                       the guard vault) in a text before you write, commit or send it. Returns \
                       each finding's rule, line and column; the secret itself is redacted."
    )]
    async fn scan_text(
        &self,
        peer: Peer<RoleServer>,
        Parameters(r): Parameters<TextRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        let text = text_of(&r)?;
        let _ = self
            .note("scan_text", self.caller(&peer, r.purpose.as_deref())?)
            .await;
        let origin = Origin::Stream {
            path: "mcp:scan_text".into(),
        };
        let mut found: Vec<Finding> = Vec::new();
        let mut scratch = self.engine.scratch().map_err(internal)?;
        crate::source::scan_bytes_decoded(
            &self.engine,
            &mut scratch,
            &origin,
            text,
            &FindingOptions {
                decode: true,
                known: self.known(),
                ..FindingOptions::default()
            },
            &mut |f| found.push(f),
        )
        .map_err(internal)?;
        let findings: Vec<_> = found
            .iter()
            .map(|f| crate::report::JsonFinding::new(f, Reveal::Redacted))
            .collect();
        self.ok(serde_json::json!({ "findings": findings }))
    }

    /// The text with every secret replaced by `[REDACTED:rule]`.
    #[tool(
        description = "Return the text with every secret replaced by [REDACTED:<rule>]; use it \
                       on anything you are about to write to a file, a log, a commit or a \
                       message."
    )]
    async fn redact_text(
        &self,
        peer: Peer<RoleServer>,
        Parameters(r): Parameters<TextRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        text_of(&r)?;
        let _ = self
            .note("redact_text", self.caller(&peer, r.purpose.as_deref())?)
            .await;
        Ok(CallToolResult::success(vec![ContentBlock::text(
            self.redacted(&r.text)?,
        )]))
    }

    /// Runs a command with stored secrets injected by the vault daemon; the agent gets the exit
    /// code and the output, redacted (rules and every encoding of the injected values).
    #[tool(
        description = "Run a command with secrets from the guard vault injected into its \
                       environment (you never see them). Returns the exit code and stdout/stderr \
                       with every secret redacted. It answers once the command and whatever it \
                       started in the background have closed their output, or at \
                       timeout_seconds (then stopped). A command's first use of a secret needs a \
                       human's approval at their terminal: the answer then says \
                       approval_required; call again once they approved (or ask first with \
                       secrets_request_access)."
    )]
    async fn secrets_exec(
        &self,
        peer: Peer<RoleServer>,
        Parameters(r): Parameters<ExecToolRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        if r.argv.is_empty() {
            return Err(ErrorData::invalid_params("argv is empty", None));
        }
        let timeout = bounded(
            "timeout_seconds",
            r.timeout_seconds,
            DEFAULT_TIMEOUT_S,
            1..=MAX_TIMEOUT_S,
        )?;
        let caller = self.audited("secrets_exec", &peer, &r.purpose).await?;
        let request = api::ExecRequest {
            context: r.context.unwrap_or_else(|| "default".into()),
            secrets: r.secrets,
            argv: r.argv,
            cwd: cwd_or_here(r.cwd)?,
            env: super::vault::environment(&[]),
            pass_env: Vec::new(),
            umask: None,
            caller: Some(caller),
        };
        let paths = self.vault.clone();
        let limit = std::time::Duration::from_secs(timeout);
        let ran = tokio::task::spawn_blocking(move || exec_captured(&paths, &request, limit))
            .await
            .map_err(internal)?;
        match ran {
            Ok(v) => self.ok(v),
            Err(e) => Err(internal(e)),
        }
    }

    /// Opens a request for a human's approval of a command's use of secrets.
    #[tool(
        description = "Ask the human to let a command use secrets from the guard vault. Give \
                       the exact command and why. The human approves or denies at their own \
                       terminal with the vault passphrase; nothing you send can approve. \
                       Answers granted (already approved), approval_required (pending: the \
                       request id), approved or denied (when wait_seconds was given and the \
                       human answered in time). Then run it with secrets_exec."
    )]
    async fn secrets_request_access(
        &self,
        peer: Peer<RoleServer>,
        Parameters(r): Parameters<AccessToolRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        let wait = bounded("wait_seconds", r.wait_seconds, 0, 0..=MAX_WAIT_S)?;
        let caller = self
            .audited("secrets_request_access", &peer, &r.purpose)
            .await?;
        let request = api::AccessRequest {
            scope: api::CommandScope {
                context: r.context.unwrap_or_else(|| "default".into()),
                names: r.secrets,
                argv: r.argv,
                cwd: cwd_or_here(r.cwd)?,
                env: super::vault::environment(&[]),
                pass_env: Vec::new(),
            },
            caller: Some(caller),
        };
        let params = serde_json::to_value(&request).map_err(internal)?;
        let env = self.call("request_access", params.clone()).await?;
        let mut data = env["data"].clone();
        if data["status"] != "approval_required" || wait == 0 {
            if data["status"] == "approval_required" {
                data["message"] = serde_json::json!(PENDING_MESSAGE);
            }
            return self.ok(data);
        }
        let answer = self
            .call(
                "await_approval",
                serde_json::to_value(api::RequestRef {
                    request: data["request"].as_str().unwrap_or_default().to_string(),
                    wait_ms: Some(wait * 1000),
                })
                .map_err(internal)?,
            )
            .await;
        match answer {
            Ok(a) if a["data"]["decision"] == "allow" => data["status"] = "approved".into(),
            Ok(a) if a["data"]["decision"] == "pending" => {
                data["message"] = serde_json::json!(PENDING_MESSAGE)
            }
            // Decided before the wait began (or denied, or timed out): ask again what holds now.
            _ => match self.call("request_access", params).await {
                Ok(now) if now["data"]["status"] == "granted" => data["status"] = "approved".into(),
                Ok(now) => {
                    data = now["data"].clone();
                    data["message"] = serde_json::json!(PENDING_MESSAGE);
                }
                Err(e) => {
                    data["status"] = "denied".into();
                    data["message"] = e.message.into();
                }
            },
        }
        self.ok(data)
    }

    /// The vault's secrets: names, contexts, versions, rotation settings; never a value.
    #[tool(
        description = "List the secrets stored in the guard vault (names, contexts, versions, \
                       rotation settings). Values are never returned: commands get them \
                       injected by guard."
    )]
    async fn secrets_list(
        &self,
        peer: Peer<RoleServer>,
        Parameters(r): Parameters<ListToolRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        self.note("secrets_list", self.caller(&peer, r.purpose.as_deref())?)
            .await?;
        let env = self
            .call(
                "list",
                serde_json::to_value(api::ListRequest { context: r.context }).map_err(internal)?,
            )
            .await?;
        self.ok(env["data"].clone())
    }
}

const PENDING_MESSAGE: &str = "waiting for a human: ask the user to approve this request at \
    their own terminal (`guard vault pending` shows it to them); then call secrets_exec again";

/// Runs `request` through the daemon on pipes of ours (the daemon redacts what it writes into
/// them), reading both while it runs and stopping it after `limit`; the reply with the output,
/// or why not.
fn exec_captured(
    paths: &crate::vault::VaultPaths,
    request: &api::ExecRequest,
    limit: std::time::Duration,
) -> Result<serde_json::Value, String> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let err = |e: std::io::Error| e.to_string();
    let (in_r, in_w) = std::io::pipe().map_err(err)?;
    drop(in_w); // the command's stdin is at its end at once
    let (out_r, out_w) = std::io::pipe().map_err(err)?;
    let (err_r, err_w) = std::io::pipe().map_err(err)?;
    type Kept = Arc<Mutex<(Vec<u8>, u64)>>;
    let read = |mut r: std::io::PipeReader| {
        let kept: Kept = Arc::default();
        let k = kept.clone();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = r.read(&mut buf) {
                let mut k = k.lock().unwrap_or_else(|e| e.into_inner());
                k.1 += n as u64;
                let room = MAX_OUTPUT.saturating_sub(k.0.len());
                k.0.extend_from_slice(&buf[..n.min(room)]);
            }
        });
        (kept, t)
    };
    let ((out, out_t), (errb, err_t)) = (read(out_r), read(err_r));
    let params = serde_json::to_value(request).map_err(|e| e.to_string())?;
    let mut client =
        crate::vault::client::Client::connect_or_start(paths).map_err(|e| e.to_string())?;
    // Stops the command at the deadline: SIGTERM, then SIGKILL 2 s later.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let notifier = client.notifier().map_err(|e| e.to_string())?;
    let timer = std::thread::spawn(move || {
        let mut timed_out = false;
        for (wait, sig) in [
            (limit, libc::SIGTERM),
            (std::time::Duration::from_secs(2), libc::SIGKILL),
        ] {
            if done_rx.recv_timeout(wait) != Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                break;
            }
            timed_out = true;
            let _ = crate::vault::client::notify(
                &notifier,
                "signal",
                serde_json::json!({"signal": sig}),
            );
        }
        timed_out
    });
    let reply = client.call_with_fds(
        "exec",
        params,
        &[in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
    );
    let _ = done_tx.send(());
    let timed_out = timer.join().unwrap_or(false);
    drop((in_r, out_w, err_w));
    // The daemon writes the command's output (redacted) into these pipes until everything the
    // command started has closed it, and closes them before it answers; the readers should be
    // done. Wait for them a moment, never forever.
    let grace = std::time::Instant::now() + std::time::Duration::from_secs(1);
    for t in [out_t, err_t] {
        while !t.is_finished() && std::time::Instant::now() < grace {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    let env = reply.map_err(|e| e.to_string())?;
    let data = &env["data"];
    if data["status"] == "approval_required" {
        return Ok(serde_json::json!({
            "status": "approval_required",
            "request": data["request"],
            "message": PENDING_MESSAGE,
        }));
    }
    let (out, out_n) = out.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (errb, err_n) = errb.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(serde_json::json!({
        "exit_code": data["exit_code"],
        "signal": data["signal"],
        "timed_out": timed_out,
        "stdout": String::from_utf8_lossy(&out),
        "stderr": String::from_utf8_lossy(&errb),
        "stdout_bytes": out_n,
        "stderr_bytes": err_n,
        "truncated": out_n > MAX_OUTPUT as u64 || err_n > MAX_OUTPUT as u64,
    }))
}

#[tool_handler]
impl ServerHandler for GuardMcp {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new("guard", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "guard finds and redacts secrets, and runs commands with stored credentials \
             without ever showing them to you."
                .into(),
        );
        info
    }
}

pub fn run(a: McpArgs) -> anyhow::Result<i32> {
    let engine = super::redact_cmd::mcp_engine()?;
    let vault = crate::vault::VaultPaths::resolve(a.vault_dir.as_deref());
    let server = GuardMcp {
        engine: Arc::new(engine),
        known: Arc::new(Mutex::new((
            crate::fingerprint::Watch::new_unloaded(&vault.fingerprints()).quiet(),
            None,
        ))),
        vault,
        tool_router: GuardMcp::tool_router(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let service = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| anyhow::anyhow!("starting the MCP server: {e}"))?;
        service
            .waiting()
            .await
            .map_err(|e| anyhow::anyhow!("MCP server: {e}"))?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}
