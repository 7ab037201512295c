//! The vault's typed requests: what each RPC method takes. The daemon deserialises exactly
//! these (unknown fields refused where a typo could change meaning), the CLI builds them, and
//! the MCP server derives its tool inputs from them. No type here implements `Debug`: several
//! carry a value or a passphrase.

use crate::vault::store::LeakPolicy;
use crate::vault::SecretValue;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

fn default_ctx() -> String {
    "default".into()
}

/// `add`: store `value` as the next version of `name` (created if new).
#[derive(Serialize, Deserialize)]
pub struct AddRequest {
    #[serde(default = "default_ctx")]
    pub context: String,
    pub name: String,
    pub value: SecretValue,
    pub rotate_via: Option<String>,
    pub rotate_shell: Option<bool>,
    pub rotate_every: Option<String>,
    pub on_leak: Option<LeakPolicy>,
    #[serde(default)]
    pub revoke_prefix: Option<String>,
    /// What the secret is for (shown by `list`, also to agents).
    #[serde(default)]
    pub description: Option<String>,
}
/// `rm`, `rotate`: one secret.
#[derive(Serialize, Deserialize)]
pub struct NameRequest {
    #[serde(default = "default_ctx")]
    pub context: String,
    pub name: String,
}
/// `list`, `fingerprints`: one context, or all.
#[derive(Serialize, Deserialize)]
pub struct ListRequest {
    pub context: Option<String>,
}
/// One secret `exec` injects: into variable `env`, under a lease of `ttl`.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "mcp", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ExecSecret {
    /// Its name in the vault.
    pub name: String,
    /// The environment variable the command reads it from.
    pub env: String,
    /// How long the lease may last (`30s`, `5m`) [default: the vault's]; it ends with the
    /// command in any case.
    pub ttl: Option<String>,
}
/// Who asks and why, as an agent (an MCP client) states it. Not authenticated: the agent names
/// itself. Audited with what it asked for, and shown to the human who approves.
#[derive(Serialize, Deserialize, Clone, Default)]
pub struct Caller {
    pub agent: String,
    pub purpose: Option<String>,
}

impl Caller {
    /// Longest agent name and purpose kept (the rest is cut).
    pub const MAX_AGENT: usize = 64;
    pub const MAX_PURPOSE: usize = 300;

    /// Bounded, on one line, no control characters: safe to put in a record or on a terminal.
    pub fn cleaned(&self) -> Caller {
        fn clean(s: &str, max: usize) -> String {
            s.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(max)
                .collect()
        }
        Caller {
            agent: clean(&self.agent, Self::MAX_AGENT),
            purpose: self.purpose.as_deref().map(|p| clean(p, Self::MAX_PURPOSE)),
        }
    }
}
impl<'a> crate::vault::audit::Event<'a> {
    /// The event with the agent and purpose of `caller`, if an agent asked.
    pub fn asked_by(mut self, caller: Option<&'a Caller>) -> Self {
        if let Some(c) = caller {
            self.agent = Some(&c.agent);
            self.purpose = c.purpose.as_deref();
        }
        self
    }
}
/// `exec`: run `argv` in `cwd` with the secrets injected, on the caller's stdio (passed with the request); the reply is its exit.
#[derive(Serialize, Deserialize)]
pub struct ExecRequest {
    #[serde(default = "default_ctx")]
    pub context: String,
    pub secrets: Vec<ExecSecret>,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The project's pass-through variables (`env = [...]`).
    #[serde(default)]
    pub pass_env: Vec<String>,
    pub umask: Option<u32>,
    /// The agent that asked (through `guard mcp`), for the audit records.
    #[serde(default)]
    pub caller: Option<Caller>,
}
/// What an approval names: `names` used by `argv` run in `cwd` (with the project's
/// pass-through variables), in `context`.
#[derive(Serialize, Deserialize)]
pub struct CommandScope {
    #[serde(default = "default_ctx")]
    pub context: String,
    pub names: Vec<String>,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub pass_env: Vec<String>,
}
/// `request_access`: ask a human to approve a command's use of secrets without running it
/// (what `exec` does for a command that is not approved yet).
#[derive(Serialize, Deserialize)]
pub struct AccessRequest {
    #[serde(flatten)]
    pub scope: CommandScope,
    #[serde(default)]
    pub caller: Option<Caller>,
}
/// `note`: an audit record of an agent's call that touches no secret (`scan_text`, …).
#[derive(Serialize, Deserialize)]
pub struct NoteRequest {
    pub tool: String,
    pub caller: Caller,
}
/// `await_approval`: a pending request's id; wait at most `wait_ms` (bounded by the vault's
/// approval timeout), after which the request is still pending.
#[derive(Serialize, Deserialize)]
pub struct RequestRef {
    pub request: String,
    #[serde(default)]
    pub wait_ms: Option<u64>,
}
/// `approve`: a human's decision on a pending request (the passphrase proves the human).
#[derive(Serialize, Deserialize)]
pub struct ApproveRequest {
    pub request: String,
    pub allow: bool,
    pub passphrase: Option<SecretValue>,
}
/// `grant`: a human pre-approves (or denies) `argv` in `cwd` for `names`.
#[derive(Serialize, Deserialize)]
pub struct GrantRequest {
    #[serde(flatten)]
    pub scope: CommandScope,
    pub passphrase: Option<SecretValue>,
    #[serde(default)]
    pub deny: bool,
}
/// `print`: write one value to the caller's stdout (passed with the request), after the passphrase.
#[derive(Serialize, Deserialize)]
pub struct PrintRequest {
    #[serde(default = "default_ctx")]
    pub context: String,
    pub name: String,
    pub version: Option<u32>,
    pub passphrase: Option<SecretValue>,
}
/// `unlock`: the passphrase unlocks the identities for `ttl`.
#[derive(Serialize, Deserialize)]
pub struct UnlockRequest {
    pub passphrase: Option<SecretValue>,
    pub ttl: Option<String>,
    /// Sent by `guard vault init` only: seal an audit chain that has no seal yet.
    #[serde(default)]
    pub seal_first: bool,
}
/// `revoke`: one lease, or `all`.
#[derive(Serialize, Deserialize)]
pub struct RevokeRequest {
    pub lease: Option<String>,
    #[serde(default)]
    pub all: bool,
}
/// `killswitch`: revoke everything, optionally rotate all and wipe.
#[derive(Serialize, Deserialize)]
pub struct KillswitchRequest {
    #[serde(default)]
    pub rotate: bool,
    #[serde(default)]
    pub wipe: bool,
}
/// `signal` (on an `exec` connection): forward a signal to the command.
#[derive(Serialize, Deserialize)]
pub struct SignalRequest {
    pub signal: i32,
}

// ---- Replies: what each method answers in `data` (the envelope adds `next_actions`). ----

/// `add`, `rotate`, `print`: the version written (or printed).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion {
    pub context: String,
    pub name: String,
    pub version: u32,
}

/// One context in a `list` reply.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ContextSecrets {
    pub context: String,
    /// `local` or `openbao`.
    pub backend: String,
    pub secrets: Vec<crate::vault::store::SecretInfo>,
}

/// `list`: names, versions and rotation settings; never values.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ListReply {
    pub contexts: Vec<ContextSecrets>,
}

/// `rm`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RmReply {
    pub removed: String,
    pub revoked_leases: usize,
}

/// `exec`: how the command ended (or `status: approval_required` with a request, see the
/// daemon's approval flow).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ExecReply {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

/// `revoke`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RevokeReply {
    pub revoked: usize,
}

/// A rotation the killswitch could not do.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RotateFailure {
    pub context: String,
    pub name: String,
    pub error: String,
}

/// `killswitch`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct KillswitchReply {
    pub revoked: usize,
    pub rotated: Vec<SecretVersion>,
    pub rotate_errors: Vec<RotateFailure>,
    pub wiped: bool,
}
