//! `guard mcp`: the Model Context Protocol over stdio (the `rmcp` crate), so an AI agent's MCP
//! client can use guard with one line of configuration.
//!
//! Tools: `scan_text` (findings, redacted), `redact_text` (the text with every secret
//! replaced), `secrets_list` (names, contexts, versions and rotation settings from the vault
//! daemon — never a value) and `secrets_exec`: the daemon runs the command with the secrets in
//! its environment, on pipes of this process, writing its output redacted (rules and every
//! encoding of the injected values); a command a human has not approved gets
//! `approval_required`, and no tool approves anything. Every result passes the engine again
//! before it leaves. Not yet: `secrets_request_access`, per-call audit of the client and purpose.

use std::sync::Arc;

use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{tool, tool_handler, tool_router, ErrorData, ServerHandler, ServiceExt};
use serde::Deserialize;

use crate::engine::Engine;
use crate::finding::{Finding, FindingOptions, Origin};
use crate::redact::{BlockRedactor, RedactOptions};

/// Text tools refuse more than this (the agent's context is not a bulk scanner's input).
const MAX_TEXT: usize = 1 << 20;

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
struct TextRequest {
    /// The text to look at (at most 1 MiB).
    text: String,
}

/// One secret to inject.
#[derive(Deserialize, schemars::JsonSchema)]
struct ExecToolSecret {
    /// Its name in the vault.
    name: String,
    /// The environment variable the command reads it from.
    env: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct ExecToolRequest {
    /// The command and its arguments (no shell unless the command is one).
    argv: Vec<String>,
    /// Directory to run in [default: guard mcp's working directory].
    cwd: Option<std::path::PathBuf>,
    /// Secrets to inject into the command's environment.
    #[serde(default)]
    secrets: Vec<ExecToolSecret>,
    /// Vault context [default: "default"].
    context: Option<String>,
}

/// Output kept per stream; the rest is counted, not returned.
const MAX_OUTPUT: usize = 256 * 1024;

#[derive(Deserialize, schemars::JsonSchema)]
struct ListRequest {
    /// One context; all when absent.
    context: Option<String>,
}

#[derive(Clone)]
struct GuardMcp {
    engine: Arc<Engine>,
    vault: crate::vault::VaultPaths,
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

impl GuardMcp {
    /// `text` with every secret the engine finds replaced: what leaves this server.
    fn redacted(&self, text: &str) -> Result<String, ErrorData> {
        let r = BlockRedactor::new(&self.engine, None, RedactOptions::default())
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let out = r
            .redact(text.as_bytes())
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(String::from_utf8_lossy(&out.0).into_owned())
    }

    fn ok(&self, v: serde_json::Value) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(
            self.redacted(&v.to_string())?,
        )]))
    }
}

#[tool_router]
impl GuardMcp {
    /// Secrets in text the agent is about to write, commit or send: each finding's rule, line
    /// and column, with the secret redacted.
    #[tool(
        description = "Find secrets (API keys, tokens, passwords, private keys) in a text before \
                       you write, commit or send it. Returns each finding's rule, line and \
                       column; the secret itself is redacted."
    )]
    async fn scan_text(
        &self,
        Parameters(r): Parameters<TextRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        let text = text_of(&r)?;
        let origin = Origin::Stream {
            path: "mcp:scan_text".into(),
        };
        let mut found: Vec<Finding> = Vec::new();
        let mut scratch = self
            .engine
            .scratch()
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        crate::source::scan_bytes_decoded(
            &self.engine,
            &mut scratch,
            &origin,
            text,
            &FindingOptions {
                decode: true,
                ..FindingOptions::default()
            },
            &mut |f| found.push(f),
        )
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let findings: Vec<serde_json::Value> = found
            .iter()
            .map(|f| {
                serde_json::json!({
                    "rule": f.rule.0, "name": f.rule_name, "confidence": f.confidence.as_str(),
                    "line": f.location.line, "column": f.location.column,
                    "secret": crate::finding::redact(f.secret.expose_secret()),
                    "encoding": f.encoding,
                })
            })
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
        Parameters(r): Parameters<TextRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        text_of(&r)?;
        Ok(CallToolResult::success(vec![ContentBlock::text(
            self.redacted(&r.text)?,
        )]))
    }

    /// Runs a command with stored secrets injected by the vault daemon; the agent gets the exit
    /// code and the output, redacted (rules and every encoding of the injected values).
    #[tool(
        description = "Run a command with secrets from the guard vault injected into its \
                       environment (you never see them). Returns the exit code and stdout/stderr \
                       with every secret redacted. A command's first use of a secret needs a \
                       human's approval at their terminal: the answer then says \
                       approval_required; call again once they approved."
    )]
    async fn secrets_exec(
        &self,
        Parameters(r): Parameters<ExecToolRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        if r.argv.is_empty() {
            return Err(ErrorData::invalid_params("argv is empty", None));
        }
        let cwd = match r.cwd {
            Some(c) => c,
            None => std::env::current_dir()
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?,
        };
        let request = crate::vault::api::ExecRequest {
            context: r.context.unwrap_or_else(|| "default".into()),
            secrets: r
                .secrets
                .into_iter()
                .map(|s| crate::vault::api::ExecSecret {
                    name: s.name,
                    env: s.env,
                    ttl: None,
                })
                .collect(),
            argv: r.argv,
            cwd,
            env: super::vault::environment(&[]),
            pass_env: Vec::new(),
            umask: None,
        };
        let paths = self.vault.clone();
        let ran = tokio::task::spawn_blocking(move || exec_captured(&paths, &request))
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        match ran {
            Ok(v) => self.ok(v),
            Err(e) => Err(ErrorData::internal_error(e, None)),
        }
    }

    /// The vault's secrets: names, contexts, versions, rotation settings; never a value.
    #[tool(
        description = "List the secrets stored in the guard vault (names, contexts, versions, \
                       rotation settings). Values are never returned: commands get them \
                       injected by guard."
    )]
    async fn secrets_list(
        &self,
        Parameters(r): Parameters<ListRequest>,
    ) -> Result<CallToolResult, ErrorData> {
        let paths = self.vault.clone();
        let params = serde_json::json!({ "context": r.context });
        let answer = tokio::task::spawn_blocking(move || {
            crate::vault::client::Client::connect_or_start(&paths)?.call("list", params)
        })
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        match answer {
            Ok(env) => self.ok(env["data"].clone()),
            Err(e) => Err(ErrorData::internal_error(e.to_string(), None)),
        }
    }
}

/// Runs `request` through the daemon on pipes of ours (the daemon redacts what it writes into
/// them), reading both while it runs; the reply with the output, or why not.
fn exec_captured(
    paths: &crate::vault::VaultPaths,
    request: &crate::vault::api::ExecRequest,
) -> Result<serde_json::Value, String> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let err = |e: std::io::Error| e.to_string();
    let (in_r, in_w) = std::io::pipe().map_err(err)?;
    drop(in_w); // the command's stdin is at its end at once
    let (out_r, out_w) = std::io::pipe().map_err(err)?;
    let (err_r, err_w) = std::io::pipe().map_err(err)?;
    let read = |mut r: std::io::PipeReader| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut total = 0u64;
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = r.read(&mut buf) {
                total += n as u64;
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            (kept, total)
        })
    };
    let (out_t, err_t) = (read(out_r), read(err_r));
    let params = serde_json::to_value(request).map_err(|e| e.to_string())?;
    let reply = crate::vault::client::Client::connect_or_start(paths).and_then(|mut c| {
        c.call_with_fds(
            "exec",
            params,
            &[in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
        )
    });
    drop((in_r, out_w, err_w));
    let (out, out_n) = out_t.join().map_err(|_| "lost the output reader")?;
    let (errb, err_n) = err_t.join().map_err(|_| "lost the output reader")?;
    let env = reply.map_err(|e| e.to_string())?;
    let data = &env["data"];
    if data["status"] == "approval_required" {
        return Ok(serde_json::json!({
            "status": "approval_required",
            "request": data["request"],
            "message": "a human must approve this command's use of these secrets at their \
                        terminal (guard asks there, or `guard vault pending` lists the \
                        request); call secrets_exec again once they have",
        }));
    }
    Ok(serde_json::json!({
        "exit_code": data["exit_code"],
        "signal": data["signal"],
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
    let server = GuardMcp {
        engine: Arc::new(engine),
        vault: crate::vault::VaultPaths::resolve(a.vault_dir.as_deref()),
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
