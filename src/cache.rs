//! The on-disk cache of compiled Hyperscan databases, for callers that want one (the CLI does;
//! a library user gets none unless it passes one to
//! [`EngineBuilder::database_cache`](crate::engine::EngineBuilder::database_cache)).
//!
//! Location: `GUARD_CACHE_DIR`, else `$XDG_CACHE_HOME/guard`, else `~/.cache/guard`. Writes are
//! atomic (temp file + rename) and best effort: a read-only directory only costs a recompile.

use std::path::{Path, PathBuf};

use crate::engine::{CachedBytes, DatabaseCache};

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

/// At most this many databases are kept; storing one more removes the least recently used
/// (each rule or `guard.toml` change makes a new 4 MB database, and a cache that only grows
/// filled hundreds of MB on a developer's machine).
pub const KEEP: usize = 64;

impl DirCache {
    /// Removes the least recently used databases beyond [`KEEP`] (by modification time, which
    /// `load` refreshes). Best effort, like every write to the cache.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut dbs: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("hs-") && n.ends_with(".db")
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if dbs.len() <= KEEP {
            return;
        }
        dbs.sort_unstable_by_key(|d| std::cmp::Reverse(d.0));
        for (_, path) in dbs.drain(KEEP..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl DatabaseCache for DirCache {
    /// Maps the file rather than reading it: the catalogue's database is 4 MB, and a copy into
    /// fresh memory cost a millisecond of every start-up in page faults. Another guard replaces
    /// a database by rename, never in place, so the mapping stays whole.
    fn load(&self, key: &str) -> Option<CachedBytes> {
        let file = std::fs::File::open(self.path(key)?).ok()?;
        // SAFETY: the file is only ever replaced by rename (see `store`), never truncated or
        // written in place, so the mapped bytes do not change under the reader.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        // Recently used databases survive `prune`.
        let _ = file.set_modified(std::time::SystemTime::now());
        Some(Box::new(map))
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
        self.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn key(i: usize) -> String {
        format!("hs-{i:032x}.db")
    }

    #[test]
    fn keeps_the_most_recently_used_databases_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = DirCache::new(dir.path());
        let old = SystemTime::now() - Duration::from_secs(3600);
        for i in 0..KEEP + 5 {
            let p = dir.path().join(key(i));
            std::fs::write(&p, format!("db {i}")).expect("write");
            let f = std::fs::File::options().write(true).open(&p).expect("open");
            f.set_modified(old + Duration::from_secs(i as u64))
                .expect("set mtime");
        }
        std::fs::write(dir.path().join("notes.txt"), "not a database").expect("write");
        // The oldest database is used, so it is now the most recently used.
        let got = cache.load(&key(0)).expect("cached");
        assert_eq!(&got[..], b"db 0");
        drop(got);
        cache.store(&key(1000), b"new");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), KEEP + 1, "{KEEP} databases and the other file");
        assert!(left.contains(&"notes.txt".to_string()));
        assert!(left.contains(&key(0)), "the one just loaded stays");
        assert!(left.contains(&key(1000)), "the one just stored stays");
        // KEEP + 6 databases: the 6 least recently used go.
        for i in 1..=6 {
            assert!(
                !left.contains(&key(i)),
                "least recently used {i} is removed"
            );
        }
        assert!(left.contains(&key(7)));
        assert!(cache.load("../escape").is_none());
    }
}
