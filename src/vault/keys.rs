//! The keys: each context's age identity at rest (encrypted under the vault passphrase), the
//! daemon's in-memory keyring, and the rate limit on passphrase guesses.
//!
//! Design decisions:
//! - `contexts/<ctx>/identity.age` is the identity text (`AGE-SECRET-KEY-1…`, as `age-keygen`
//!   writes it) encrypted with age's passphrase recipient (scrypt). The `age` CLI treats such a
//!   file as an encrypted identity, so `age -d -i identity.age store.age` still decrypts a store
//!   after asking for the passphrase: interop is kept, and a process that can read the vault
//!   directory learns nothing without the passphrase.
//! - The passphrase is never stored: checking it *is* decrypting the identities (scrypt, work
//!   factor `2^kdf_log_n`, 2^18 by default ≈ 0.5-1 s and 256 MiB per guess). A correct check
//!   leaves the identities unlocked in the daemon for `unlock_ttl`.
//! - Online guesses go through [`Attempts`]: after `passphrase_attempts` consecutive failures the
//!   daemon refuses every check, right or wrong, for `passphrase_lockout`. Offline guessing
//!   against `identity.age` is bounded by scrypt alone — a long passphrase is the defence there.
//! - Remembered approvals are MAC'd with a key derived from the context's identity
//!   ([`approval_key`]), so editing `approvals.json` without the passphrase forges nothing.

use crate::vault::store::{atomic_write, StoreError};
use crate::vault::VaultPaths;
use age::secrecy::{ExposeSecret, SecretString};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// The largest scrypt work factor guard accepts when decrypting an identity (2^22: ~4 GiB).
const MAX_LOG_N: u8 = 22;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("no context is initialised in {dir} (run `guard vault init`)")]
    NoContexts { dir: PathBuf },
    #[error("identity {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error(
        "context {context:?} still has an unencrypted identity ({path}); run `guard vault init` \
         at a terminal to encrypt it under the vault passphrase"
    )]
    Plaintext { context: String, path: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// In an identity's (encrypted) text: this vault seals its audit chain, so a head without a seal
/// is a break ([`crate::vault::audit`]). Only a human (the passphrase) writes identity files.
pub const SEALED_MARKER: &str = "# guard: audit chain sealed";

/// The identities of every context, and whether any demands a sealed audit chain.
pub struct Unlocked {
    pub ids: BTreeMap<String, age::x25519::Identity>,
    pub seal_required: bool,
}

/// The identity text as `age-keygen` writes it.
fn identity_text(identity: &age::x25519::Identity) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "# created by guard vault init\n# public key: {}\n{SEALED_MARKER}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    ))
}

/// Encrypt `identity` under `passphrase` (scrypt at `2^log_n`) and write it atomically, 0600.
pub fn write_identity(
    path: &Path,
    identity: &age::x25519::Identity,
    passphrase: &SecretString,
    log_n: u8,
) -> Result<(), KeyError> {
    let err = |reason: String| KeyError::Identity {
        path: path.into(),
        reason,
    };
    let mut r = age::scrypt::Recipient::new(passphrase.clone());
    r.set_work_factor(log_n);
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        .map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).map_err(|e| err(e.to_string()))?;
    w.write_all(identity_text(identity).as_bytes())
        .and_then(|_| w.finish().map(|_| ()))
        .map_err(|e| err(e.to_string()))?;
    Ok(atomic_write(path, &out)?)
}

/// Decrypt one identity file with `passphrase`.
pub fn read_identity(
    path: &Path,
    passphrase: &SecretString,
) -> Result<age::x25519::Identity, KeyError> {
    Ok(read_identity_sealed(path, passphrase)?.0)
}

/// [`read_identity`], and whether its text carries [`SEALED_MARKER`].
fn read_identity_sealed(
    path: &Path,
    passphrase: &SecretString,
) -> Result<(age::x25519::Identity, bool), KeyError> {
    let err = |reason: String| KeyError::Identity {
        path: path.into(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let dec =
        age::Decryptor::new_buffered(std::io::BufReader::new(f)).map_err(|e| err(e.to_string()))?;
    if !dec.is_scrypt() {
        return Err(err("not passphrase-encrypted".into()));
    }
    let mut id = age::scrypt::Identity::new(passphrase.clone());
    id.set_max_work_factor(MAX_LOG_N);
    let mut r = match dec.decrypt(std::iter::once(&id as &dyn age::Identity)) {
        Ok(r) => r,
        Err(
            age::DecryptError::DecryptionFailed
            | age::DecryptError::KeyDecryptionFailed
            | age::DecryptError::NoMatchingKeys,
        ) => return Err(KeyError::WrongPassphrase),
        Err(e) => return Err(err(e.to_string())),
    };
    let mut text = Zeroizing::new(String::new());
    r.read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    let id = parse_identity(&text).ok_or_else(|| err("no AGE-SECRET-KEY line".into()))?;
    Ok((id, text.lines().any(|l| l.trim() == SEALED_MARKER)))
}

/// The first key line of an identity file's text.
pub fn parse_identity(text: &str) -> Option<age::x25519::Identity> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?
        .parse()
        .ok()
}

/// Decrypt every context's identity with `passphrase` (the passphrase check).
pub fn unlock_all(paths: &VaultPaths, passphrase: &SecretString) -> Result<Unlocked, KeyError> {
    let mut out = BTreeMap::new();
    let mut seal_required = false;
    for ctx in crate::vault::store::list_contexts(paths) {
        let legacy = paths.legacy_identity(&ctx);
        if legacy.exists() && !paths.identity(&ctx).exists() {
            return Err(KeyError::Plaintext {
                context: ctx,
                path: legacy,
            });
        }
        let (id, sealed) = read_identity_sealed(&paths.identity(&ctx), passphrase)?;
        seal_required |= sealed;
        out.insert(ctx, id);
    }
    if out.is_empty() {
        return Err(KeyError::NoContexts {
            dir: paths.root().into(),
        });
    }
    Ok(Unlocked {
        ids: out,
        seal_required,
    })
}

/// The key that MACs remembered approvals of a context: HMAC(identity secret, label).
pub fn approval_key(identity: &age::x25519::Identity) -> Zeroizing<[u8; 32]> {
    derived_key(identity, b"guard approvals v1")
}

/// A key for `label` derived from a context's identity: HMAC(identity secret, label). Only a
/// holder of the unlocked identity (the daemon, or the CLI after the passphrase) can compute it.
pub fn derived_key(identity: &age::x25519::Identity, label: &[u8]) -> Zeroizing<[u8; 32]> {
    let secret = identity.to_string();
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC should accept any key length");
    m.update(label);
    Zeroizing::new(m.finalize().into_bytes().into())
}

/// The identities the daemon holds while unlocked, and until when.
#[derive(Default)]
pub struct Keyring {
    ids: BTreeMap<String, age::x25519::Identity>,
    until: Option<Instant>,
}

impl Keyring {
    pub fn unlock(&mut self, ids: BTreeMap<String, age::x25519::Identity>, ttl: Duration) {
        self.ids = ids;
        self.until = Some(Instant::now() + ttl);
    }
    /// Add one context's identity (a context created while unlocked) without moving the expiry.
    pub fn insert(&mut self, ctx: &str, id: age::x25519::Identity) {
        if self.is_unlocked() {
            self.ids.insert(ctx.to_string(), id);
        }
    }
    pub fn lock(&mut self) {
        self.ids.clear();
        self.until = None;
    }
    /// Drops the identities once the unlock time is over; true while unlocked.
    pub fn is_unlocked(&mut self) -> bool {
        match self.until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                self.lock();
                false
            }
            None => false,
        }
    }
    pub fn expires_in(&mut self) -> Option<Duration> {
        if self.is_unlocked() {
            self.until
                .map(|t| t.saturating_duration_since(Instant::now()))
        } else {
            None
        }
    }
    /// The identity of `ctx` if the vault is unlocked and knows it.
    pub fn get(&mut self, ctx: &str) -> Option<&age::x25519::Identity> {
        if self.is_unlocked() {
            self.ids.get(ctx)
        } else {
            None
        }
    }
}

/// Consecutive failed passphrase checks, and the lockout they trigger. Kept in a file of the run
/// directory too ([`Attempts::persisted`]), so restarting the daemon resets neither; an agent can
/// delete that file (THREAT_MODEL.md: offline guessing against `identity.age` is the real bound).
pub struct Attempts {
    failures: u32,
    locked_until: Option<Instant>,
    max: u32,
    lockout: Duration,
    file: Option<PathBuf>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct AttemptsFile {
    failures: u32,
    /// Unix seconds.
    locked_until: Option<u64>,
}

impl Attempts {
    pub fn new(max: u32, lockout: Duration) -> Self {
        Self {
            failures: 0,
            locked_until: None,
            max: max.max(1),
            lockout,
            file: None,
        }
    }
    /// Load the count and lockout from `path` (if any) and keep them there from now on.
    pub fn persisted(mut self, path: PathBuf) -> Self {
        if let Some(f) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<AttemptsFile>(&b).ok())
        {
            self.failures = f.failures.min(self.max);
            let now = crate::vault::now_unix();
            self.locked_until = f
                .locked_until
                .filter(|&t| t > now)
                .map(|t| Instant::now() + Duration::from_secs((t - now).min(24 * 3600)));
            if self.failures >= self.max && self.locked_until.is_none() && f.locked_until.is_none()
            {
                // A count at the limit without its lockout (a crash between the two): lock now.
                self.locked_until = Some(Instant::now() + self.lockout);
            }
        }
        self.file = Some(path);
        self
    }
    fn save(&self) {
        let Some(path) = &self.file else { return };
        let f = AttemptsFile {
            failures: self.failures,
            locked_until: self
                .locked_out_for()
                .map(|d| crate::vault::now_unix() + d.as_secs() + 1),
        };
        let b = serde_json::to_vec(&f).expect("attempts should serialize");
        let _ = atomic_write(path, &b);
    }
    /// `Err(remaining)` while locked out: no check may run, not even a correct one.
    pub fn check(&mut self) -> Result<(), Duration> {
        match self.locked_until {
            Some(t) if Instant::now() < t => Err(t - Instant::now()),
            Some(_) => {
                self.locked_until = None;
                self.failures = 0;
                self.save();
                Ok(())
            }
            None => Ok(()),
        }
    }
    /// Records a failure; returns how many attempts are left before the lockout (0 = locked).
    pub fn failed(&mut self) -> u32 {
        self.failures += 1;
        let left = if self.failures >= self.max {
            self.locked_until = Some(Instant::now() + self.lockout);
            0
        } else {
            self.max - self.failures
        };
        self.save();
        left
    }
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.locked_until = None;
        self.save();
    }
    pub fn locked_out_for(&self) -> Option<Duration> {
        self.locked_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_roundtrip_and_wrong_passphrase() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("identity.age");
        let id = age::x25519::Identity::generate();
        let pass = SecretString::from("correct horse".to_string());
        write_identity(&p, &id, &pass, 10).unwrap();
        let raw = std::fs::read(&p).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("AGE-SECRET-KEY"));
        let back = read_identity(&p, &pass).unwrap();
        assert_eq!(back.to_public().to_string(), id.to_public().to_string());
        let wrong = SecretString::from("battery staple".to_string());
        assert!(matches!(
            read_identity(&p, &wrong),
            Err(KeyError::WrongPassphrase)
        ));
        assert_eq!(*approval_key(&id), *approval_key(&back));
        assert_ne!(
            *approval_key(&id),
            *approval_key(&age::x25519::Identity::generate())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lockout_after_max_failures_then_expires() {
        let mut a = Attempts::new(3, Duration::from_secs(60));
        assert!(a.check().is_ok());
        assert_eq!(a.failed(), 2);
        assert_eq!(a.failed(), 1);
        assert_eq!(a.failed(), 0);
        assert!(a.check().is_err(), "locked out, even for a right guess");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(a.check().is_ok());
        assert_eq!(a.failed(), 2, "the count restarts after a lockout");
        a.succeeded();
        assert_eq!(a.failed(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn keyring_forgets_after_its_time() {
        let mut k = Keyring::default();
        assert!(k.get("default").is_none());
        let mut ids = BTreeMap::new();
        ids.insert("default".to_string(), age::x25519::Identity::generate());
        k.unlock(ids, Duration::from_secs(10));
        assert!(k.get("default").is_some());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(k.get("default").is_none());
        assert!(!k.is_unlocked());
    }
}
