//! Vault configuration (`config.toml` in the vault dir) and the paths of everything in it.
//!
//! Design decision: durations are human strings (`30m`, `24h`, `500ms`) as in agent-secrets'
//! config, parsed once here; every limit that a test needs short (approval timeout, handshake
//! timeout, heartbeat interval, rotation timeout) is configurable so tests never sleep long.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("invalid duration {value:?} (use e.g. 500ms, 30s, 15m, 1h, 30d)")]
    Duration { value: String },
}

/// Parse `500ms`, `30s`, `15m`, `1h`, `30d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let t = s.trim();
    let err = || ConfigError::Duration {
        value: s.to_string(),
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(err)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(err)?),
        "d" => Duration::from_secs(n.checked_mul(86400).ok_or_else(err)?),
        _ => return Err(err()),
    };
    Ok(d)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    pub default_lease_ttl: String,
    pub max_lease_ttl: String,
    /// How long a request without a decision waits before it is denied.
    pub approval_timeout: String,
    /// A connection must send its first complete frame within this time (at most 60s).
    pub handshake_timeout: String,
    /// A connection that sends no request for this long is closed (at most 10m).
    pub idle_timeout: String,
    /// Connections served at once; more wait until one closes (at most 1024).
    pub max_connections: usize,
    /// Largest JSON-RPC frame accepted; bigger → error and the connection is closed.
    pub max_frame_bytes: usize,
    pub rotation_timeout: String,
    /// How often the daemon prunes expired leases and runs scheduled rotations.
    pub maintenance_interval: String,
    /// How long the identities stay unlocked after `guard vault unlock` (at most 24h).
    pub unlock_ttl: String,
    /// Consecutive wrong passphrases before the lockout.
    pub passphrase_attempts: u32,
    /// How long every passphrase check is refused after too many wrong ones.
    pub passphrase_lockout: String,
    /// scrypt work factor (N = 2^kdf_log_n) for identities written by `init`; 10..=22. Read when
    /// a context is created: an existing identity keeps the factor it was written with.
    pub kdf_log_n: u8,
    pub heartbeat: Option<HeartbeatConfig>,
    /// Where the daemon takes leak events from (`guard redact --spool`) [default:
    /// `$XDG_STATE_HOME/guard/leaks`].
    pub leak_spool: Option<String>,
    /// A command (argv, no shell) run for each leak response with the incident as JSON on its
    /// stdin (names, versions, outcome; never a value) — to tell a person.
    pub leak_notify: Option<Vec<String>>,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            default_lease_ttl: "1h".into(),
            max_lease_ttl: "24h".into(),
            approval_timeout: "120s".into(),
            handshake_timeout: "5s".into(),
            idle_timeout: "60s".into(),
            max_connections: 128,
            max_frame_bytes: 1 << 20,
            rotation_timeout: "30s".into(),
            maintenance_interval: "60s".into(),
            unlock_ttl: "8h".into(),
            passphrase_attempts: 5,
            passphrase_lockout: "15m".into(),
            kdf_log_n: 18,
            heartbeat: None,
            leak_spool: None,
            leak_notify: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// `http://host:port/path` (plain HTTP; a 2xx answer means alive).
    pub url: String,
    #[serde(default = "default_interval")]
    pub interval: String,
    #[serde(default = "default_hb_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub fail_action: FailAction,
}
fn default_interval() -> String {
    "1m".into()
}
fn default_hb_timeout() -> String {
    "10s".into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailAction {
    pub revoke_all: bool,
    pub rotate_all: bool,
    pub wipe_store: bool,
}
impl Default for FailAction {
    fn default() -> Self {
        Self {
            revoke_all: true,
            rotate_all: false,
            wipe_store: false,
        }
    }
}

/// The same config with durations parsed (done once at daemon start; errors surface there).
#[derive(Clone, Debug)]
pub struct Limits {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub approval_timeout: Duration,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_frame_bytes: usize,
    pub rotation_timeout: Duration,
    pub maintenance_interval: Duration,
    pub unlock_ttl: Duration,
    pub passphrase_attempts: u32,
    pub passphrase_lockout: Duration,
}

/// The longest a vault stays unlocked.
pub const MAX_UNLOCK: Duration = Duration::from_secs(24 * 3600);
/// `config.toml` is writable by the agent: the limits that bound passphrase guessing are clamped
/// to these, whatever it says. (`kdf_log_n` is checked against 10..=22 when an identity is made;
/// offline guessing against `identity.age` is bounded by that factor, not by these.)
pub const MAX_PASSPHRASE_ATTEMPTS: u32 = 10;
pub const MIN_PASSPHRASE_LOCKOUT: Duration = Duration::from_secs(60);

impl VaultConfig {
    pub fn load(paths: &VaultPaths) -> Result<Self, ConfigError> {
        let path = paths.config();
        match std::fs::read_to_string(&path) {
            Ok(s) => toml::from_str(&s).map_err(|e| ConfigError::Parse {
                path,
                reason: e.message().to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Where leak events are taken from: `leak_spool`, else the default spool of `guard redact`.
    pub fn leak_spool_dir(&self) -> Option<std::path::PathBuf> {
        self.leak_spool
            .as_deref()
            .map(std::path::PathBuf::from)
            .or_else(crate::redact::spool::Spool::default_dir)
    }

    pub fn limits(&self) -> Result<Limits, ConfigError> {
        Ok(Limits {
            default_ttl: parse_duration(&self.default_lease_ttl)?,
            max_ttl: parse_duration(&self.max_lease_ttl)?,
            approval_timeout: parse_duration(&self.approval_timeout)?,
            // Writable by the agent: clamped, so it cannot hold connections open at will.
            handshake_timeout: parse_duration(&self.handshake_timeout)?
                .clamp(Duration::from_millis(100), Duration::from_secs(60)),
            idle_timeout: parse_duration(&self.idle_timeout)?
                .clamp(Duration::from_millis(100), Duration::from_secs(600)),
            max_connections: self.max_connections.clamp(8, 1024),
            max_frame_bytes: self.max_frame_bytes.max(1024),
            rotation_timeout: parse_duration(&self.rotation_timeout)?,
            maintenance_interval: parse_duration(&self.maintenance_interval)?
                .max(Duration::from_millis(50)),
            unlock_ttl: parse_duration(&self.unlock_ttl)?.min(MAX_UNLOCK),
            passphrase_attempts: self.passphrase_attempts.clamp(1, MAX_PASSPHRASE_ATTEMPTS),
            passphrase_lockout: parse_duration(&self.passphrase_lockout)?
                .clamp(MIN_PASSPHRASE_LOCKOUT, MAX_UNLOCK),
        })
    }

    /// The scrypt work factor for new identities, checked.
    pub fn kdf_log_n(&self) -> Result<u8, ConfigError> {
        if (10..=22).contains(&self.kdf_log_n) {
            Ok(self.kdf_log_n)
        } else {
            Err(ConfigError::Parse {
                path: PathBuf::from("config.toml"),
                reason: format!("kdf_log_n {} is outside 10..=22", self.kdf_log_n),
            })
        }
    }
}

/// Every path inside a vault directory.
#[derive(Clone, Debug)]
pub struct VaultPaths {
    root: PathBuf,
}

impl VaultPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// `--vault-dir`, else `GUARD_VAULT_DIR`, else `~/.local/share/guard/vault`.
    pub fn resolve(explicit: Option<&Path>) -> Self {
        if let Some(p) = explicit {
            return Self::new(p);
        }
        if let Some(p) = std::env::var_os("GUARD_VAULT_DIR").filter(|p| !p.is_empty()) {
            return Self::new(PathBuf::from(p));
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/".into());
        Self::new(home.join(".local/share/guard/vault"))
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn audit(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }
    pub fn audit_head(&self) -> PathBuf {
        self.root.join("audit.head")
    }
    pub fn audit_key(&self) -> PathBuf {
        self.root.join("audit.key")
    }
    pub fn approvals(&self) -> PathBuf {
        self.root.join("approvals.json")
    }
    pub fn contexts(&self) -> PathBuf {
        self.root.join("contexts")
    }
    pub fn context_dir(&self, ctx: &str) -> PathBuf {
        self.contexts().join(ctx)
    }
    /// The context's identity, encrypted under the vault passphrase.
    pub fn identity(&self, ctx: &str) -> PathBuf {
        self.context_dir(ctx).join("identity.age")
    }
    /// Where guard before the passphrase kept the identity in plaintext (migrated by `init`).
    pub fn legacy_identity(&self, ctx: &str) -> PathBuf {
        self.context_dir(ctx).join("identity.txt")
    }
    pub fn store(&self, ctx: &str) -> PathBuf {
        self.context_dir(ctx).join("store.age")
    }
    /// The context's backend binding ([`crate::vault::backend::binding`]); none means local.
    pub fn backend(&self, ctx: &str) -> PathBuf {
        self.context_dir(ctx).join("backend.age")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("daemon.sock")
    }
    /// Persisted leases ([`crate::vault::lease`]).
    pub fn leases(&self) -> PathBuf {
        self.run_dir().join("leases.json")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("daemon.pid")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }
    /// The fingerprints of every stored value the daemon publishes for redactors.
    pub fn fingerprints(&self) -> PathBuf {
        self.root.join("fingerprints.fp")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guessing_limits_are_clamped_whatever_config_toml_says() {
        let c: VaultConfig = toml::from_str(
            "passphrase_attempts = 1000000\npassphrase_lockout = \"0s\"\nunlock_ttl = \"3650d\"\n",
        )
        .unwrap();
        let l = c.limits().unwrap();
        assert_eq!(l.passphrase_attempts, MAX_PASSPHRASE_ATTEMPTS);
        assert_eq!(l.passphrase_lockout, MIN_PASSPHRASE_LOCKOUT);
        assert_eq!(l.unlock_ttl, MAX_UNLOCK);
        let weak: VaultConfig = toml::from_str("kdf_log_n = 4\n").unwrap();
        assert!(weak.kdf_log_n().is_err());
    }
    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
    }
}
