//! Wire format between the CLI and the daemon: JSON-RPC 2.0, one frame per line.
//!
//! Design decision: every successful `result` is the agent-secrets envelope
//! `{ok: true, data, next_actions}`, and every error carries `next_actions` in `error.data`, so
//! the CLI's `--json` output is the daemon's answer passed through and an agent always learns what
//! it can do next — except how to approve or grant itself: no message or `next_action` names a
//! command that approves, grants or prints; denials say that a human must approve, and how. Error codes: the JSON-RPC standard ones plus a small application range.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL: i64 = -32603;
/// Application errors.
pub const DENIED: i64 = -32001;
pub const NOT_FOUND: i64 = -32002;
pub const AUDIT_FAILED: i64 = -32003;
pub const FRAME_TOO_LARGE: i64 = -32004;
pub const LEASE_INVALID: i64 = -32005;
pub const HANDSHAKE_TIMEOUT: i64 = -32006;
pub const PEER_REJECTED: i64 = -32007;
/// The identities are not unlocked in the daemon: a human must run `guard vault unlock`.
pub const LOCKED: i64 = -32008;
/// Too many wrong passphrases: every check is refused for a while.
pub const LOCKED_OUT: i64 = -32009;
/// The operation needs proof of a human (the vault passphrase) and none was given.
pub const HUMAN_REQUIRED: i64 = -32010;
/// No request for the idle timeout: the connection is closed.
pub const IDLE_TIMEOUT: i64 = -32012;
/// `exec`: the command was not found (`guard exec` exits 127, as a shell does).
pub const COMMAND_NOT_FOUND: i64 = -32013;
pub const FAILED: i64 = -32000;

#[derive(Serialize, Deserialize, Debug)]
pub struct Request {
    pub jsonrpc: String,
    #[serde(default)]
    pub id: Value,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

/// A suggested follow-up command for the caller.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NextAction {
    pub command: String,
    pub description: String,
}

pub fn next(command: impl Into<String>, description: impl Into<String>) -> NextAction {
    NextAction {
        command: command.into(),
        description: description.into(),
    }
}

/// A handler's success.
pub struct Reply {
    pub data: Value,
    pub next_actions: Vec<NextAction>,
}

/// A handler's failure. `message` must never contain a secret value.
#[derive(Debug)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub next_actions: Vec<NextAction>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            next_actions: Vec::new(),
        }
    }
    pub fn with(mut self, a: NextAction) -> Self {
        self.next_actions.push(a);
        self
    }
}

pub fn ok_frame(id: &Value, r: Reply) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {"ok": true, "data": r.data, "next_actions": r.next_actions}})
}

pub fn err_frame(id: &Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id,
           "error": {"code": e.code, "message": e.message, "data": {"next_actions": e.next_actions}}})
}

/// The CLI envelope for an error.
pub fn err_envelope(code: i64, message: &str, next_actions: &[NextAction]) -> Value {
    json!({"ok": false, "error": {"code": code, "message": message}, "next_actions": next_actions})
}
