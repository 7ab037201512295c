//! The vault: an age-encrypted local secret store, served by a daemon over a Unix socket, that
//! injects values into commands a human approved and never hands a value to a client — with
//! leases, a hash-chained audit log, rotation hooks, a killswitch and a heartbeat dead-man.
//! What it guarantees against an agent running as the same user, and what it cannot, is
//! THREAT_MODEL.md at the repository root.
//!
//! Design decision: one long-running daemon owns every piece of mutable state (stores, leases,
//! pending approvals, the audit chain head) and the CLI is stateless. That makes the store a
//! single-writer file (no cross-process locking), lets a lease be revoked in one place, and keeps
//! the audit chain linear. The daemon is autostarted by CLI commands (as gpg-agent is) unless
//! `GUARD_NO_AUTOSTART=1`.
//!
//! Layout of a vault directory (default `~/.local/share/guard/vault`, 0700):
//! ```text
//! config.toml            VaultConfig (optional)
//! audit.jsonl audit.head audit.key   hash-chained audit log, its head anchor, its HMAC key (0600)
//! approvals.json         remembered approval decisions per scope, each MAC'd (see approval)
//! contexts/<ctx>/identity.age  age X25519 identity encrypted under the vault passphrase
//!                              (scrypt; `age -d -i identity.age store.age` asks for it)
//! contexts/<ctx>/store.age     the context's secrets, age-encrypted JSON
//! contexts/<ctx>/backend.age   where its values live if not in store.age (OpenBao), encrypted
//!                              to the context's identity and MAC'd under it (see backend)
//! run/daemon.sock run/daemon.pid  (run/ is 0700, the socket 0600)
//! ```
//!
//! Submodules: [`secret`] (the zeroizing value type), [`config`], [`store`] (the local age
//! store), [`backend`] (what the daemon reads values through: local or OpenBao KV v2), [`keys`] (identity at
//! rest, unlock, passphrase rate limit), [`tty`] (the human channel), [`command`] (what an
//! approval names), [`audit`], [`lease`], [`approval`], [`rotate`], [`heartbeat`], [`rpc`] (wire
//! format), [`fdpass`] (stdio over the socket), [`server`] (the daemon), [`client`] (the
//! synchronous CLI side), [`exec`] (project files, output masking, launching the child).

pub mod api;
pub mod approval;
pub mod audit;
pub mod backend;
pub mod client;
pub mod command;
pub mod config;
pub mod exec;
pub mod fdpass;
pub mod heartbeat;
pub mod keys;
pub mod lease;
pub mod rotate;
pub mod rpc;
pub mod secret;
pub mod server;
pub mod store;
pub mod tty;

pub use config::{VaultConfig, VaultPaths};
pub use secret::SecretValue;

pub use crate::random::fill_random;

/// A random identifier like `lease_3f9a…` (16 random bytes, hex).
pub fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b).expect("the kernel CSPRNG should be available");
    format!("{prefix}_{}", hex::encode(b))
}

/// Seconds since the Unix epoch (wall clock, for records meant for humans).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Names of secrets, contexts and clients end up in paths, audit HMACs and env: keep them tame.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !s.starts_with('.')
}
