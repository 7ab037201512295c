//! The on-disk cache of compiled Hyperscan databases, for callers that want one (the CLI does;
//! a library user gets none unless it passes one to
//! [`EngineBuilder::database_cache`](crate::engine::EngineBuilder::database_cache)).
//!
//! Location: `GUARD_CACHE_DIR`, else `$XDG_CACHE_HOME/guard`, else `~/.cache/guard`. Writes are
//! atomic (temp file + rename) and best effort: a read-only directory only costs a recompile.

use std::path::{Path, PathBuf};

use crate::engine::DatabaseCache;

pub struct DirCache {
    dir: PathBuf,
}

impl DirCache {
    pub fn new(dir: impl Into<PathBuf>) -> DirCache {
        DirCache { dir: dir.into() }
    }

    /// The cache directory named by the environment, if any can be found.
    pub fn from_env() -> Option<DirCache> {
        if let Some(d) = std::env::var_os("GUARD_CACHE_DIR") {
            return Some(DirCache::new(d));
        }
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| DirCache::new(d.join("guard")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        // Keys are hex digests with a fixed prefix; anything else never names a file.
        key.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            .then(|| self.dir.join(key))
    }
}

impl DatabaseCache for DirCache {
    fn load(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(key)?).ok()
    }

    fn store(&self, key: &str, bytes: &[u8]) {
        let Some(path) = self.path(key) else { return };
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let tmp = self.dir.join(format!(".tmp-{}-{key}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}
