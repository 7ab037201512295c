//! Leak events: a known stored secret was seen (and redacted) somewhere. Each event is one JSON
//! file in a spool directory, written durably (temp file, fsync, rename, fsync of the directory)
//! before the process goes on, so an event survives a crash and a daemon that is down; the
//! leak-response side consumes and deletes them. An event names the secret, its version, the
//! encoding it was found in, where and at which offset — never the value.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakEvent {
    /// Format version of the event file.
    pub v: u32,
    pub secret: String,
    pub version: u32,
    pub encoding: String,
    /// Where it was seen: `redact:stdin`, `redact:stdout of <cmd>`, `rsyslog`, `exec:<cmd>`…
    pub source: String,
    /// Byte offset in that source.
    pub offset: u64,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

impl LeakEvent {
    /// The event for a redaction of a known value of `known` (`None` for a rule match); `base`
    /// is the offset of the redactor's input in the source.
    pub fn of(
        known: &crate::engine::known::KnownSet,
        r: &super::Redaction,
        source: &str,
        base: u64,
    ) -> Option<LeakEvent> {
        let super::Label::Known(i) = r.label else {
            return None;
        };
        let e = &known.entries()[i as usize];
        Some(LeakEvent {
            v: 1,
            secret: e.id.clone(),
            version: e.version,
            encoding: e.encoding.as_str().to_string(),
            source: source.to_string(),
            offset: base + r.start,
            at: now_secs(),
        })
    }
}

/// Writes events into one directory, once per (secret, version, encoding, source) per process.
pub struct Spool {
    dir: PathBuf,
    seen: HashSet<(String, u32, String, String)>,
    counter: u64,
}

impl Spool {
    /// Opens (creating, 0700) the spool directory.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            seen: HashSet::new(),
            counter: 0,
        })
    }

    /// The default place: `$XDG_STATE_HOME/guard/leaks`, else `~/.local/state/guard/leaks`.
    pub fn default_dir() -> Option<PathBuf> {
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
        Some(state.join("guard/leaks"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records `e` durably unless the same secret/version/encoding/source was recorded already
    /// by this process. Returns whether a file was written.
    pub fn record(&mut self, e: &LeakEvent) -> io::Result<bool> {
        let key = (
            e.secret.clone(),
            e.version,
            e.encoding.clone(),
            e.source.clone(),
        );
        if self.seen.contains(&key) {
            return Ok(false);
        }
        self.counter += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "{}-{:09}-{}-{}.json",
            now.as_secs(),
            now.subsec_nanos(),
            std::process::id(),
            self.counter
        );
        let tmp = self.dir.join(format!(".{name}.tmp"));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec(e).map_err(io::Error::other)?)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(&name))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        self.seen.insert(key);
        Ok(true)
    }

    /// Every event in `dir`, oldest first, and the files that do not parse (skipped, named).
    #[allow(clippy::type_complexity)]
    pub fn read_all(dir: &Path) -> io::Result<(Vec<(PathBuf, LeakEvent)>, Vec<PathBuf>)> {
        Spool::read_all_but(dir, &HashSet::new())
    }

    /// [`Spool::read_all`] without reading the files in `skip`.
    #[allow(clippy::type_complexity)]
    pub fn read_all_but(
        dir: &Path,
        skip: &HashSet<PathBuf>,
    ) -> io::Result<(Vec<(PathBuf, LeakEvent)>, Vec<PathBuf>)> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    && !skip.contains(p)
            })
            .collect();
        names.sort();
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for p in names {
            match std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<LeakEvent>(&b).ok())
            {
                Some(e) => ok.push((p, e)),
                None => bad.push(p),
            }
        }
        Ok((ok, bad))
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A spool opened on first use (the default spool when no directory is given); a failure to
/// write is reported once on stderr, unless quiet.
pub struct LazySpool {
    dir: Option<PathBuf>,
    spool: Option<Spool>,
    warned: bool,
    quiet: bool,
}

impl LazySpool {
    pub fn new(dir: Option<PathBuf>, quiet: bool) -> LazySpool {
        LazySpool {
            dir: dir.or_else(Spool::default_dir),
            spool: None,
            warned: false,
            quiet,
        }
    }

    /// Records `ev`; whether it was written.
    pub fn record(&mut self, ev: &LeakEvent) -> bool {
        let res = match (&mut self.spool, &self.dir) {
            (Some(s), _) => s.record(ev),
            (None, Some(d)) => Spool::open(d).and_then(|mut s| {
                let r = s.record(ev);
                self.spool = Some(s);
                r
            }),
            (None, None) => Err(io::Error::other("no spool directory (set --spool or HOME)")),
        };
        match res {
            Ok(_) => true,
            Err(e) => {
                if !self.warned && !self.quiet {
                    eprintln!(
                        "guard: warning: leak event for {} not recorded: {e}",
                        ev.secret
                    );
                }
                self.warned = true;
                false
            }
        }
    }
}

/// A [`crate::pipeline::FindingSink`] that turns stored-value findings (fingerprint hits of
/// `guard scan --fingerprints` and the git hooks) into leak events; other findings pass by.
pub struct SpoolSink {
    spool: LazySpool,
    /// `scan`, `hook:pre-commit`, …: the event's source is this and the finding's path.
    source: String,
}

impl SpoolSink {
    /// Events into `dir` (the default spool when `None`), their source named `source`.
    pub fn new(dir: Option<PathBuf>, source: &str) -> SpoolSink {
        SpoolSink {
            spool: LazySpool::new(dir, false),
            source: source.to_string(),
        }
    }
}

impl crate::pipeline::FindingSink for SpoolSink {
    fn finding(&mut self, f: &crate::finding::Finding) -> io::Result<()> {
        if let Some(stored) = &f.stored {
            self.spool.record(&LeakEvent {
                v: 1,
                secret: stored.id.clone(),
                version: stored.version,
                encoding: f.encoding.clone().unwrap_or_else(|| "raw".into()),
                source: format!("{}:{}", self.source, f.origin.path()),
                offset: f.location.start,
                at: now_secs(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_once_durably_and_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&d.path().join("leaks")).unwrap();
        let e = LeakEvent {
            v: 1,
            secret: "db".into(),
            version: 2,
            encoding: "base64".into(),
            source: "redact:stdin".into(),
            offset: 17,
            at: now_secs(),
        };
        assert!(s.record(&e).unwrap());
        assert!(!s
            .record(&LeakEvent {
                offset: 99,
                ..e.clone()
            })
            .unwrap());
        assert!(s
            .record(&LeakEvent {
                encoding: "raw".into(),
                ..e.clone()
            })
            .unwrap());
        let (events, bad) = Spool::read_all(s.dir()).unwrap();
        assert!(bad.is_empty());
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].1, e);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&events[0].0)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
