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
pub struct ExecSecret {
    pub name: String,
    pub env: String,
    pub ttl: Option<String>,
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
}
/// `await_approval`: a pending request's id.
#[derive(Serialize, Deserialize)]
pub struct RequestRef {
    pub request: String,
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
    #[serde(default = "default_ctx")]
    pub context: String,
    pub names: Vec<String>,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub pass_env: Vec<String>,
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
