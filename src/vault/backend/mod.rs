//! Where a context's secret values live: the `local` age store (the default) or an `openbao`
//! server's KV v2 engine. The daemon works through [`SecretStore`] only, so the leak loop,
//! leases, approvals, rotation and `guard exec` behave the same on either.
//!
//! Design decisions:
//! - **One unit of work per operation.** [`open`] returns a store for one context; reads happen
//!   at once, writes (`put`, `mark_compromised`, `remove`) are staged and applied by `save`, after
//!   the operation's audit record was written (audit first). A `put` returns the id the new
//!   version *will* get: the local store knows it, and OpenBao writes with check-and-set on the
//!   version it read, so a concurrent writer makes `save` fail instead of shifting ids.
//! - **The binding is under the human's key.** Which backend a context uses (and the OpenBao
//!   address, mount and token) is `contexts/<ctx>/backend.age`: age-encrypted to the context's
//!   identity and MAC'd with a key derived from it ([`binding`]). It is written by
//!   `guard vault backend` after the vault passphrase was typed at a terminal. A same-user agent
//!   can neither read the token nor point the daemon at a server of its own: a file it forges
//!   fails the MAC, and the daemon refuses to serve that context rather than fall back.
//! - Values never appear in errors: a backend error names the operation, the secret and the
//!   server's own message.

pub mod binding;
pub mod local;
pub mod openbao;

use crate::vault::store::{self, LeakPolicy, SecretInfo, StoreError};
use crate::vault::{SecretValue, VaultPaths};

pub use binding::Binding;

/// One version of a secret, without its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionMeta {
    pub id: u32,
    /// Unix seconds.
    pub created: u64,
    /// A leak of this version was seen.
    pub compromised: bool,
}

/// What the daemon knows about a secret besides its values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretMeta {
    pub rotate_via: Option<String>,
    pub rotate_shell: bool,
    pub rotate_every: Option<String>,
    pub on_leak: Option<LeakPolicy>,
    pub description: Option<String>,
    /// Live versions, oldest first; the last is current.
    pub versions: Vec<VersionMeta>,
    /// OpenBao only: the lease prefix a leak revokes upstream (`sys/leases/revoke-prefix`).
    pub revoke_prefix: Option<String>,
}

impl SecretMeta {
    pub fn current_id(&self) -> Option<u32> {
        self.versions.iter().map(|v| v.id).max()
    }
    pub fn version(&self, id: Option<u32>) -> Option<&VersionMeta> {
        let id = id.or_else(|| self.current_id())?;
        self.versions.iter().find(|v| v.id == id)
    }
    pub fn info(&self, name: &str) -> SecretInfo {
        SecretInfo {
            name: name.to_string(),
            current_version: self.current_id(),
            versions: self.versions.iter().map(|v| v.id).collect(),
            created: self.version(None).map(|v| v.created).unwrap_or(0),
            last_rotation: (self.versions.len() > 1)
                .then(|| self.version(None).map(|v| v.created))
                .flatten(),
            description: self.description.clone(),
            rotate_via: self.rotate_via.is_some(),
            rotate_every: self.rotate_every.clone(),
        }
    }
}

/// Options a `put` sets; `None` keeps what the secret has.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    pub rotate_via: Option<String>,
    pub rotate_shell: Option<bool>,
    pub rotate_every: Option<String>,
    pub on_leak: Option<LeakPolicy>,
    pub revoke_prefix: Option<String>,
    pub description: Option<String>,
}

impl PutOptions {
    pub(crate) fn apply(self, m: &mut SecretMeta) {
        if self.rotate_via.is_some() {
            m.rotate_via = self.rotate_via;
        }
        if let Some(s) = self.rotate_shell {
            m.rotate_shell = s;
        }
        if self.rotate_every.is_some() {
            m.rotate_every = self.rotate_every;
        }
        if self.on_leak.is_some() {
            m.on_leak = self.on_leak;
        }
        if self.revoke_prefix.is_some() {
            m.revoke_prefix = self.revoke_prefix;
        }
        if self.description.is_some() {
            m.description = self.description;
        }
    }
}

/// One context's secrets, for the length of one operation.
pub trait SecretStore: Send {
    /// `local` or `openbao`.
    fn backend(&self) -> &'static str;
    /// Every secret's name, sorted.
    fn names(&mut self) -> Result<Vec<String>, StoreError>;
    fn meta(&mut self, name: &str) -> Result<SecretMeta, StoreError>;
    /// The value of `name` at `version` (current when `None`), with that version's id.
    fn value(&mut self, name: &str, version: Option<u32>)
        -> Result<(u32, SecretValue), StoreError>;
    /// Stages `value` as the next version of `name` (created if new); returns the version id it
    /// gets on `save`.
    fn put(&mut self, name: &str, value: SecretValue, opts: PutOptions) -> Result<u32, StoreError>;
    /// Stages marking version `id` of `name` compromised.
    fn mark_compromised(&mut self, name: &str, id: u32) -> Result<(), StoreError>;
    /// Stages removing `name` with every version.
    fn remove(&mut self, name: &str) -> Result<(), StoreError>;
    /// Applies what was staged.
    fn save(&mut self) -> Result<(), StoreError>;
    /// Revokes what the backend itself issued alongside `name` (OpenBao leases under the
    /// secret's lease prefix); the prefix revoked, if it has one.
    fn revoke_upstream(&mut self, _name: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    fn infos(&mut self) -> Result<Vec<SecretInfo>, StoreError> {
        let mut out = Vec::new();
        for n in self.names()? {
            out.push(self.meta(&n)?.info(&n));
        }
        Ok(out)
    }
}

/// Opens context `ctx` on the backend its binding names (the local store when it has none).
pub fn open(
    paths: &VaultPaths,
    ctx: &str,
    identity: &age::x25519::Identity,
) -> Result<Box<dyn SecretStore>, StoreError> {
    store::check_name("context", ctx)?;
    match binding::read(paths, ctx, identity)? {
        Binding::Local => Ok(Box::new(store::ContextStore::open(paths, ctx, identity)?)),
        Binding::OpenBao(cfg) => Ok(Box::new(openbao::OpenBaoStore::new(ctx, cfg))),
    }
}
