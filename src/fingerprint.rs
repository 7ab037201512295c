//! Fingerprint files: a [`KnownSet`] on disk, so a process that must recognise stored secrets
//! (`guard redact --fingerprints`, a log shipper on another host) never holds their values.
//!
//! Format: JSON `{"guard_fingerprints": 1, "set": {"key": …, "entries": […]}}`, created 0600,
//! replaced atomically (temp file, fsync, rename). A file of another format or version, or one
//! that does not validate, is refused with the reason: a redactor must not run with a set it
//! half understood.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::known::{KnownMatcher, KnownSet};
use std::sync::Arc;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct FileFormat {
    guard_fingerprints: u32,
    set: KnownSet,
}

#[derive(Debug, thiserror::Error)]
pub enum FingerprintFileError {
    #[error("cannot read fingerprint file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write fingerprint file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a guard fingerprint file ({why})")]
    Foreign { path: PathBuf, why: String },
    #[error("{path} is fingerprint format {found}; this guard reads format {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("fingerprint file {path} is damaged: {why}")]
    Damaged { path: PathBuf, why: String },
}

/// Reads and validates a fingerprint file.
pub fn load(path: &Path) -> Result<KnownSet, FingerprintFileError> {
    let bytes = std::fs::read(path).map_err(|source| FingerprintFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Only the shape is reported, never serde's text (it could quote file contents). The
    // whole file is parsed once; only a file that fails is looked at again, for the reason.
    let f: FileFormat = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => {
            #[derive(Deserialize)]
            struct Head {
                guard_fingerprints: u32,
            }
            let head: Head =
                serde_json::from_slice(&bytes).map_err(|_| FingerprintFileError::Foreign {
                    path: path.to_path_buf(),
                    why: "no `guard_fingerprints` version field".into(),
                })?;
            if head.guard_fingerprints != FORMAT_VERSION {
                return Err(FingerprintFileError::Version {
                    path: path.to_path_buf(),
                    found: head.guard_fingerprints,
                });
            }
            return Err(FingerprintFileError::Damaged {
                path: path.to_path_buf(),
                why: format!("malformed at line {} column {}", e.line(), e.column()),
            });
        }
    };
    if f.guard_fingerprints != FORMAT_VERSION {
        return Err(FingerprintFileError::Version {
            path: path.to_path_buf(),
            found: f.guard_fingerprints,
        });
    }
    f.set
        .validate()
        .map_err(|why| FingerprintFileError::Damaged {
            path: path.to_path_buf(),
            why,
        })?;
    Ok(f.set)
}

/// Writes `set` to `path` atomically, mode 0600.
pub fn save(path: &Path, set: &KnownSet) -> Result<(), FingerprintFileError> {
    let err = |source| FingerprintFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "fingerprints".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let body = serde_json::to_vec(&FileFormat {
        guard_fingerprints: FORMAT_VERSION,
        set: set.clone(),
    })
    .map_err(|e| err(std::io::Error::other(e)))?;
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.write_all(b"\n").map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

/// 32 bytes from the kernel's random source.
/// Watches a fingerprint file for a newer version (the vault daemon rewrites it after every
/// rotation): a running redactor asks [`Watch::newer`] after each read and switches sets at the
/// next line boundary. A look is one `stat` (~1 µs), so it is taken every time: a value rotated
/// and then printed at once must meet the new set. A file that changed but does not load keeps
/// the old set (and says so once per change).
pub struct Watch {
    path: PathBuf,
    stamp: Option<(u64, i64, i64, u64)>,
    /// Say nothing on stderr (the rsyslog adapter may write replies only).
    quiet: bool,
}

impl Watch {
    /// Watches `path`, whose current content is what the caller loaded.
    pub fn new(path: &Path) -> Watch {
        Watch {
            path: path.to_path_buf(),
            stamp: Self::stamp(path),
            quiet: false,
        }
    }

    /// Watches `path` with nothing loaded yet: the first [`Watch::newer`] loads it, if it exists.
    pub fn new_unloaded(path: &Path) -> Watch {
        Watch {
            path: path.to_path_buf(),
            stamp: None,
            quiet: false,
        }
    }

    /// A watch that never writes to stderr.
    pub fn quiet(mut self) -> Watch {
        self.quiet = true;
        self
    }

    fn stamp(path: &Path) -> Option<(u64, i64, i64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some((m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
    }

    /// The file's set, compiled, if it changed since the last look (and loads).
    pub fn newer(&mut self) -> Option<Arc<KnownMatcher>> {
        let stamp = Self::stamp(&self.path);
        if stamp.is_none() || stamp == self.stamp {
            return None;
        }
        self.stamp = stamp;
        match load_matcher(&self.path) {
            Ok(m) => Some(m),
            Err(e) => {
                if !self.quiet {
                    eprintln!("guard: keeping the fingerprints loaded before: {e}");
                }
                None
            }
        }
    }
}

/// The file's set, compiled for matching (what every reader of a fingerprint file wants).
pub fn load_matcher(path: &Path) -> Result<Arc<KnownMatcher>, FingerprintFileError> {
    Ok(Arc::new(KnownMatcher::new(load(path)?)))
}

pub fn random_key() -> std::io::Result<[u8; 32]> {
    let mut k = [0u8; 32];
    crate::random::fill_random(&mut k)?;
    Ok(k)
}

/// Loads `path`, or a new empty set with a fresh key if it does not exist.
pub fn load_or_new(path: &Path) -> Result<KnownSet, FingerprintFileError> {
    match load(path) {
        Err(FingerprintFileError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(KnownSet::new(random_key().map_err(|source| {
                FingerprintFileError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            })?))
        }
        other => other,
    }
}
