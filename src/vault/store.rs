//! One age-encrypted store file per context, and the identity that opens it.
//!
//! Design decision: the store is a plain JSON document encrypted with age to the context's own
//! X25519 identity, so `age -d -i contexts/<ctx>/identity.age contexts/<ctx>/store.age` shows it
//! (the `age` CLI asks for the vault passphrase that protects the identity, see
//! [`crate::vault::keys`]) and a file written by the `age` CLI loads (interop is tested both ways).
//! Separate identities per context mean a process holding the `dev` key cannot open `prod`. The
//! store never reads an identity from disk itself: the caller passes the unlocked one. Every write is temp file +
//! fsync + rename + fsync(dir): a `kill -9` at any instant leaves either the old or the new store,
//! never a torn one. Decrypted plaintext only lives in `Zeroizing` buffers.

use crate::vault::backend::{PutOptions, SecretMeta, VersionMeta};
use crate::vault::{now_unix, valid_name, SecretValue, VaultPaths};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("context {context:?} is not initialised (run `guard vault init --context {context}`)")]
    NoContext { context: String },
    #[error("invalid identity file {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error("cannot decrypt {path}: {reason}")]
    Decrypt { path: PathBuf, reason: String },
    #[error("cannot encrypt store for context {context:?}: {reason}")]
    Encrypt { context: String, reason: String },
    #[error("store {path} is not a guard store: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("no secret {name:?} in context {context:?}")]
    NotFound { context: String, name: String },
    #[error("secret {name:?} has no version {version}")]
    NoVersion { name: String, version: u32 },
    #[error("invalid {what} name {name:?} (letters, digits, '_', '-', '.')")]
    InvalidName { what: &'static str, name: String },
    #[error("a secret value must not be empty")]
    EmptyValue,
    #[error(
        "a value of {len} bytes is too short to store: guard redacts stored values from output, \
         and one shorter than {min} bytes would redact ordinary text (and be easy to guess)"
    )]
    TooShort { len: usize, min: usize },
    #[error("a value of {len} bytes is too long: values may be at most {max} bytes (256 KiB)")]
    TooLong { len: usize, max: usize },
    #[error(
        "context {context:?} already has a store ({path}) but its identity file is missing, so the \
         store cannot be opened; nothing was changed. Restore identity.age from a backup, or move \
         the store aside (`mv {path} {path}.orphaned`) to start this context empty"
    )]
    OrphanedStore { context: String, path: PathBuf },
    #[error(
        "context {context:?}: its backend binding {path} does not verify under the context's key \
         ({reason}); it was not written by `guard vault backend`, so the context is not served. \
         A human runs `guard vault backend` at a terminal to bind it again"
    )]
    Binding {
        context: String,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} needs an OpenBao-backed context (`guard vault backend openbao`)")]
    LocalOnly { what: &'static str },
    #[error("OpenBao at {address}: {op}: {reason}")]
    Backend {
        address: String,
        op: String,
        reason: String,
    },
    #[error(
        "OpenBao at {address}: {name:?} changed while guard wrote it (another writer); nothing \
         was overwritten, try again"
    )]
    Conflict { address: String, name: String },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

#[derive(Serialize, Deserialize)]
pub struct StoreData {
    #[serde(default = "one")]
    pub format: u32,
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretEntry>,
}
fn one() -> u32 {
    1
}

#[derive(Serialize, Deserialize)]
pub struct SecretEntry {
    /// Version id in use; defaults to the highest.
    #[serde(default)]
    pub current: Option<u32>,
    #[serde(default)]
    pub rotate_via: Option<String>,
    /// Run `rotate_via` through `/bin/sh -c` (off by default: argv, no shell).
    #[serde(default)]
    pub rotate_shell: bool,
    #[serde(default)]
    pub rotate_every: Option<String>,
    /// What the daemon does when a version of it leaks (default: rotate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_leak: Option<LeakPolicy>,
    /// What it is for, in a human's words (shown by `list` and to agents; never a value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub versions: Vec<Version>,
}

/// The response to a leaked version of a secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum LeakPolicy {
    /// Revoke its leases and rotate it (when the leaked version is current and it has a hook).
    #[default]
    Rotate,
    /// Revoke its leases; a human rotates it.
    RevokeOnly,
    /// Record the incident only.
    ReportOnly,
}

#[derive(Serialize, Deserialize)]
pub struct Version {
    pub id: u32,
    pub value: SecretValue,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub compromised: bool,
}

impl SecretEntry {
    pub fn current_id(&self) -> Option<u32> {
        self.current
            .or_else(|| self.versions.iter().map(|v| v.id).max())
    }
    pub fn version(&self, id: Option<u32>) -> Option<&Version> {
        let id = id.or_else(|| self.current_id())?;
        self.versions.iter().find(|v| v.id == id)
    }
    /// Everything but the values.
    pub fn meta(&self) -> SecretMeta {
        SecretMeta {
            rotate_via: self.rotate_via.clone(),
            rotate_shell: self.rotate_shell,
            rotate_every: self.rotate_every.clone(),
            on_leak: self.on_leak,
            description: self.description.clone(),
            revoke_prefix: None,
            versions: self
                .versions
                .iter()
                .map(|v| VersionMeta {
                    id: v.id,
                    created: v.created,
                    compromised: v.compromised,
                })
                .collect(),
        }
    }
}

/// Metadata about a secret, safe to print.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    pub current_version: Option<u32>,
    pub versions: Vec<u32>,
    /// When the current version was written (Unix seconds).
    pub created: u64,
    /// When it was last replaced by a new version (Unix seconds): the current version's time,
    /// if it has an older one.
    pub last_rotation: Option<u64>,
    pub description: Option<String>,
    pub rotate_via: bool,
    pub rotate_every: Option<String>,
}

/// A loaded context: identity + decrypted data.
pub struct ContextStore {
    context: String,
    path: PathBuf,
    identity: age::x25519::Identity,
    pub data: StoreData,
}

pub fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// Create `dir` (and parents) with mode 0700, and force 0700 if it existed.
pub fn private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("mkdir", dir))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(io("chmod", dir))
}

/// Removes the temp files of [`atomic_write`]s that were killed before their rename (their
/// writer's pid is gone), in the vault root and every context directory; returns how many.
pub fn remove_stale_temps(paths: &VaultPaths) -> usize {
    let mut dirs = vec![paths.root().to_path_buf()];
    dirs.extend(
        std::fs::read_dir(paths.contexts())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    );
    let mut removed = 0;
    for dir in dirs {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((_, rest)) = name.split_once(".tmp-") else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            // SAFETY: kill with signal 0 only checks whether the process exists.
            let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
            if name.starts_with('.') && !alive && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Write `bytes` to `path` atomically: temp file (0600) in the same dir, fsync, rename, fsync dir.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        crate::vault::random_id("w")
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io("rename", path))?;
        let d = std::fs::File::open(dir).map_err(io("open", dir))?;
        d.sync_all().map_err(io("fsync", dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Create a context's 0700 directory and an empty store for `identity`. The caller has written
/// the (passphrase-encrypted) identity file.
pub fn init_context(
    paths: &VaultPaths,
    context: &str,
    identity: &age::x25519::Identity,
) -> Result<(), StoreError> {
    check_name("context", context)?;
    refuse_orphaned_store(paths, context)?;
    private_dir(paths.root())?;
    private_dir(&paths.contexts())?;
    private_dir(&paths.context_dir(context))?;
    let store = ContextStore {
        context: context.to_string(),
        path: paths.store(context),
        identity: identity.clone(),
        data: StoreData {
            format: 1,
            secrets: BTreeMap::new(),
        },
    };
    store.save()
}

/// Longest value a secret may hold: values travel in one RPC frame (1 MiB by default, and JSON
/// escaping can take up to six bytes per byte), and every value is fingerprinted for redaction.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;

/// Values must be long enough to redact ([`crate::engine::known::MIN_VALUE_LEN`]) and fit a
/// frame ([`MAX_VALUE_BYTES`]).
pub fn check_value_len(len: usize) -> Result<(), StoreError> {
    let min = crate::engine::known::MIN_VALUE_LEN;
    match len {
        0 => Err(StoreError::EmptyValue),
        l if l < min => Err(StoreError::TooShort { len, min }),
        l if l > MAX_VALUE_BYTES => Err(StoreError::TooLong {
            len,
            max: MAX_VALUE_BYTES,
        }),
        _ => Ok(()),
    }
}

/// `init` never replaces a store: one without its identity is refused, with what to do.
pub fn refuse_orphaned_store(paths: &VaultPaths, context: &str) -> Result<(), StoreError> {
    let path = paths.store(context);
    if path.exists() {
        return Err(StoreError::OrphanedStore {
            context: context.to_string(),
            path,
        });
    }
    Ok(())
}

/// Names of the initialised contexts.
pub fn list_contexts(paths: &VaultPaths) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(paths.contexts())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.path().join("identity.age").exists() || e.path().join("identity.txt").exists()
        })
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

impl ContextStore {
    /// Decrypt the context's store with its (unlocked) identity.
    pub fn open(
        paths: &VaultPaths,
        context: &str,
        identity: &age::x25519::Identity,
    ) -> Result<Self, StoreError> {
        check_name("context", context)?;
        if !paths.context_dir(context).is_dir() {
            return Err(StoreError::NoContext {
                context: context.to_string(),
            });
        }
        let identity = identity.clone();
        let path = paths.store(context);
        let data = match std::fs::File::open(&path) {
            Ok(f) => decrypt_store(&path, f, &identity)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreData {
                format: 1,
                secrets: BTreeMap::new(),
            },
            Err(e) => {
                return Err(StoreError::Io {
                    op: "open",
                    path,
                    source: e,
                })
            }
        };
        Ok(Self {
            context: context.to_string(),
            path,
            identity,
            data,
        })
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    pub fn save(&self) -> Result<(), StoreError> {
        let plain = Zeroizing::new(serde_json::to_vec_pretty(&self.data).map_err(|e| {
            StoreError::Encrypt {
                context: self.context.clone(),
                reason: e.to_string(),
            }
        })?);
        let out = age_encrypt(&self.identity, &plain, &self.context)?;
        atomic_write(&self.path, &out)
    }

    pub fn entry(&self, name: &str) -> Result<&SecretEntry, StoreError> {
        self.data
            .secrets
            .get(name)
            .ok_or_else(|| StoreError::NotFound {
                context: self.context.clone(),
                name: name.to_string(),
            })
    }

    /// Marks version `id` of `name` compromised (a leak was seen); `save` to keep it.
    pub fn mark_compromised(&mut self, name: &str, id: u32) -> Result<(), StoreError> {
        let ctx = self.context.clone();
        let entry = self
            .data
            .secrets
            .get_mut(name)
            .ok_or(StoreError::NotFound {
                context: ctx,
                name: name.to_string(),
            })?;
        let v = entry
            .versions
            .iter_mut()
            .find(|v| v.id == id)
            .ok_or_else(|| StoreError::NoVersion {
                name: name.to_string(),
                version: id,
            })?;
        v.compromised = true;
        Ok(())
    }

    /// The value of `name` at `version` (current when `None`).
    pub fn value(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(u32, &SecretValue), StoreError> {
        let e = self.entry(name)?;
        let v = e.version(version).ok_or(StoreError::NoVersion {
            name: name.to_string(),
            version: version.or(e.current_id()).unwrap_or(0),
        })?;
        Ok((v.id, &v.value))
    }

    /// Add a value as a new version (creating the secret if needed); returns the version id.
    /// Options replace the old ones only when given. `save` to keep it.
    pub fn put(
        &mut self,
        name: &str,
        value: SecretValue,
        opts: PutOptions,
    ) -> Result<u32, StoreError> {
        check_name("secret", name)?;
        check_value_len(value.len())?;
        if opts.revoke_prefix.is_some() {
            return Err(StoreError::LocalOnly {
                what: "an OpenBao lease prefix to revoke",
            });
        }
        let entry = self
            .data
            .secrets
            .entry(name.to_string())
            .or_insert_with(|| SecretEntry {
                current: None,
                rotate_via: None,
                rotate_shell: false,
                rotate_every: None,
                on_leak: None,
                description: None,
                versions: Vec::new(),
            });
        let id = entry.versions.iter().map(|v| v.id).max().unwrap_or(0) + 1;
        entry.versions.push(Version {
            id,
            value,
            created: now_unix(),
            compromised: false,
        });
        entry.current = Some(id);
        let mut meta = entry.meta();
        opts.apply(&mut meta);
        entry.rotate_via = meta.rotate_via;
        entry.rotate_shell = meta.rotate_shell;
        entry.rotate_every = meta.rotate_every;
        entry.on_leak = meta.on_leak;
        entry.description = meta.description;
        Ok(id)
    }

    pub fn remove(&mut self, name: &str) -> Result<(), StoreError> {
        self.data
            .secrets
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| StoreError::NotFound {
                context: self.context.clone(),
                name: name.to_string(),
            })
    }

    pub fn infos(&self) -> Vec<SecretInfo> {
        self.data
            .secrets
            .iter()
            .map(|(name, e)| e.meta().info(name))
            .collect()
    }
}

fn decrypt_store(
    path: &Path,
    file: std::fs::File,
    identity: &age::x25519::Identity,
) -> Result<StoreData, StoreError> {
    let plain = age_decrypt(path, file, identity)?;
    // serde_json errors carry a position, never the input text.
    serde_json::from_slice(&plain).map_err(|e| StoreError::Format {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// The plaintext of the age file `path` (open as `file`), decrypted with `identity`.
pub(crate) fn age_decrypt(
    path: &Path,
    file: std::fs::File,
    identity: &age::x25519::Identity,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let err = |reason: String| StoreError::Decrypt {
        path: path.into(),
        reason,
    };
    let dec = age::Decryptor::new_buffered(std::io::BufReader::new(file))
        .map_err(|e| err(e.to_string()))?;
    let mut r = dec
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| err(e.to_string()))?;
    let mut plain = Zeroizing::new(Vec::new());
    r.read_to_end(&mut plain).map_err(|e| err(e.to_string()))?;
    Ok(plain)
}

/// `plain` age-encrypted to `identity`'s recipient (for context `context`'s files).
pub(crate) fn age_encrypt(
    identity: &age::x25519::Identity,
    plain: &[u8],
    context: &str,
) -> Result<Vec<u8>, StoreError> {
    let err = |reason: String| StoreError::Encrypt {
        context: context.to_string(),
        reason,
    };
    let recipient = identity.to_public();
    let enc = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
        .map_err(|e| err(e.to_string()))?;
    let mut out = Vec::with_capacity(plain.len() + 256);
    let mut w = enc.wrap_output(&mut out).map_err(|e| err(e.to_string()))?;
    w.write_all(plain)
        .and_then(|_| w.finish().map(|_| ()))
        .map_err(|e| err(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_refuses_an_orphaned_store_and_stale_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = VaultPaths::new(dir.path().join("v"));
        init_context(&paths, "dev", &age::x25519::Identity::generate()).unwrap();
        let before = std::fs::read(paths.store("dev")).unwrap();
        let again = init_context(&paths, "dev", &age::x25519::Identity::generate());
        assert!(matches!(again, Err(StoreError::OrphanedStore { .. })));
        assert_eq!(std::fs::read(paths.store("dev")).unwrap(), before);
        // A temp file of a writer that is gone goes; one of a live writer (this process) stays.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let ctx = paths.context_dir("dev");
        let stale = ctx.join(format!(".store.age.tmp-{dead}-w1"));
        let live = ctx.join(format!(".store.age.tmp-{}-w2", std::process::id()));
        let other = ctx.join("notes.tmp-1-x");
        for f in [&stale, &live, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(&paths), 1);
        assert!(!stale.exists() && live.exists() && other.exists());
        assert_eq!(std::fs::read(paths.store("dev")).unwrap(), before);
    }

    #[test]
    fn roundtrip_versions_and_isolation() {
        let dir = tempfile::tempdir().unwrap();
        let paths = VaultPaths::new(dir.path().join("v"));
        let (dev, prod) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        init_context(&paths, "dev", &dev).unwrap();
        init_context(&paths, "prod", &prod).unwrap();
        let mut s = ContextStore::open(&paths, "dev", &dev).unwrap();
        assert_eq!(
            s.put(
                "tok",
                SecretValue::new("fake-dev-1".into()),
                Default::default()
            )
            .unwrap(),
            1
        );
        assert_eq!(
            s.put(
                "tok",
                SecretValue::new("fake-dev-2".into()),
                Default::default()
            )
            .unwrap(),
            2
        );
        s.save().unwrap();
        let s = ContextStore::open(&paths, "dev", &dev).unwrap();
        assert_eq!(
            s.value("tok", None).unwrap().1.expose_secret(),
            "fake-dev-2"
        );
        assert_eq!(
            s.value("tok", Some(1)).unwrap().1.expose_secret(),
            "fake-dev-1"
        );
        let p = ContextStore::open(&paths, "prod", &prod).unwrap();
        assert!(matches!(
            p.value("tok", None),
            Err(StoreError::NotFound { .. })
        ));
        // the prod identity cannot open the dev store
        assert!(ContextStore::open(&paths, "dev", &prod).is_err());
    }

    #[test]
    fn modes_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = VaultPaths::new(dir.path().join("v"));
        let id = age::x25519::Identity::generate();
        init_context(&paths, "default", &id).unwrap();
        let pass = age::secrecy::SecretString::from("fake passphrase".to_string());
        crate::vault::keys::write_identity(&paths.identity("default"), &id, &pass, 10).unwrap();
        let m = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m(paths.root()), 0o700);
        assert_eq!(m(&paths.context_dir("default")), 0o700);
        assert_eq!(m(&paths.identity("default")), 0o600);
        assert_eq!(m(&paths.store("default")), 0o600);
    }
}
