//! The audit log: append-only JSONL, hash-chained, identifiers HMAC'd, never a value.
//!
//! Design decision: each record carries `prev` = SHA-256 of the previous line's exact bytes
//! (genesis: 64 zeros) and a dense `seq`; `audit.head` stores the seq and hash of the last record,
//! so an edit, a deletion (even of the tail), an insertion or a reorder all break verification.
//! Secret names, client ids and contexts are HMAC-SHA256'd under a per-vault key (`audit.key`,
//! 0600) so the log can be shipped without revealing what is stored, yet a holder of the key can
//! still answer "was secret X touched?". Operations write their audit record *first*; if that
//! write fails, the operation is refused (fail closed, as Vault does).

use crate::vault::{fill_random, now_unix, VaultPaths};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit key {path} is invalid")]
    Key { path: PathBuf },
    #[error("audit log broken at line {line}: {reason}")]
    Broken { line: u64, reason: String },
}

/// One audited event. Identifier fields are plaintext here and HMAC'd when written.
#[derive(Default, Clone)]
pub struct Event<'a> {
    pub op: &'a str,
    pub outcome: &'a str,
    pub context: Option<&'a str>,
    pub secret: Option<&'a str>,
    pub client: Option<&'a str>,
    pub lease: Option<&'a str>,
    pub request: Option<&'a str>,
    pub version: Option<u32>,
    pub purpose: Option<&'a str>,
    /// Free text for humans; callers must never put a value here.
    pub detail: Option<&'a str>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub ts: u64,
    pub op: String,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lease: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub purpose: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    pub prev: String,
}

pub struct AuditLog {
    path: PathBuf,
    head: PathBuf,
    key: Zeroizing<Vec<u8>>,
    last_hash: String,
    next_seq: u64,
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Load (or create, 0600) the 32-byte HMAC key.
pub fn load_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, AuditError> {
    match std::fs::read(path) {
        Ok(k) if k.len() == 32 => Ok(Zeroizing::new(k)),
        Ok(_) => Err(AuditError::Key { path: path.into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut k = Zeroizing::new(vec![0u8; 32]);
            fill_random(&mut k).map_err(|source| AuditError::Io {
                op: "random",
                path: path.into(),
                source,
            })?;
            crate::vault::store::atomic_write(path, &k).map_err(|e| AuditError::Io {
                op: "write key",
                path: path.into(),
                source: std::io::Error::other(e.to_string()),
            })?;
            Ok(k)
        }
        Err(source) => Err(AuditError::Io {
            op: "read key",
            path: path.into(),
            source,
        }),
    }
}

/// Keyed identifier: `HMAC-SHA256(key, kind ‖ 0 ‖ value)`, first 16 bytes, hex.
pub fn hmac_id(key: &[u8], kind: &str, value: &str) -> String {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC should accept any key length");
    m.update(kind.as_bytes());
    m.update(&[0]);
    m.update(value.as_bytes());
    hex::encode(&m.finalize().into_bytes()[..16])
}

impl AuditLog {
    pub fn open(paths: &VaultPaths) -> Result<Self, AuditError> {
        let key = load_key(&paths.audit_key())?;
        let path = paths.audit();
        let (mut last_hash, mut next_seq) = (GENESIS.to_string(), 0);
        match std::fs::File::open(&path) {
            Ok(f) => {
                for line in std::io::BufReader::new(f).split(b'\n') {
                    let line = line.map_err(|source| AuditError::Io {
                        op: "read",
                        path: path.clone(),
                        source,
                    })?;
                    if line.is_empty() {
                        continue;
                    }
                    last_hash = sha_hex(&line);
                    next_seq += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(AuditError::Io {
                    op: "open",
                    path,
                    source,
                })
            }
        }
        Ok(Self {
            path,
            head: paths.audit_head(),
            key,
            last_hash,
            next_seq,
        })
    }

    pub fn id(&self, kind: &str, value: &str) -> String {
        hmac_id(&self.key, kind, value)
    }

    /// Append one record. On error nothing is considered written and the chain head is unchanged;
    /// the caller must refuse the operation.
    pub fn append(&mut self, ev: &Event<'_>) -> Result<(), AuditError> {
        let rec = Record {
            seq: self.next_seq,
            ts: now_unix(),
            op: ev.op.to_string(),
            outcome: ev.outcome.to_string(),
            context: ev.context.map(|c| self.id("context", c)),
            secret: ev.secret.map(|s| self.id("secret", s)),
            client: ev.client.map(|c| self.id("client", c)),
            lease: ev.lease.map(str::to_string),
            request: ev.request.map(str::to_string),
            version: ev.version,
            purpose: ev.purpose.map(str::to_string),
            detail: ev.detail.map(str::to_string),
            prev: self.last_hash.clone(),
        };
        let mut line = serde_json::to_vec(&rec).expect("a record should always serialize");
        let hash = sha_hex(&line);
        line.push(b'\n');
        let err = |op| {
            let path = self.path.clone();
            move |source| AuditError::Io { op, path, source }
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(err("open"))?;
        f.write_all(&line).map_err(err("append"))?;
        f.flush().map_err(err("flush"))?;
        self.last_hash = hash;
        self.next_seq += 1;
        // The head anchor makes tail truncation detectable; its failure is a failed write too.
        std::fs::write(
            &self.head,
            format!("{} {}\n", self.next_seq, self.last_hash),
        )
        .map_err(|source| AuditError::Io {
            op: "write head",
            path: self.head.clone(),
            source,
        })?;
        Ok(())
    }
}

/// Result of `audit verify`.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub records: u64,
    pub head_checked: bool,
}

/// Verify the chain of `paths.audit()` against itself and `audit.head`.
pub fn verify(paths: &VaultPaths) -> Result<VerifyReport, AuditError> {
    let path = paths.audit();
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(VerifyReport {
                records: 0,
                head_checked: false,
            })
        }
        Err(source) => {
            return Err(AuditError::Io {
                op: "open",
                path,
                source,
            })
        }
    };
    let mut prev = GENESIS.to_string();
    let mut n = 0u64;
    for line in std::io::BufReader::new(f).split(b'\n') {
        let line = line.map_err(|source| AuditError::Io {
            op: "read",
            path: path.clone(),
            source,
        })?;
        let lineno = n + 1;
        if line.is_empty() {
            return Err(AuditError::Broken {
                line: lineno,
                reason: "empty line".into(),
            });
        }
        let rec: Record = serde_json::from_slice(&line).map_err(|e| AuditError::Broken {
            line: lineno,
            reason: format!("not a record: {e}"),
        })?;
        if rec.seq != n {
            return Err(AuditError::Broken {
                line: lineno,
                reason: format!(
                    "sequence {} where {n} was expected (deleted, inserted or reordered)",
                    rec.seq
                ),
            });
        }
        if rec.prev != prev {
            return Err(AuditError::Broken {
                line: lineno,
                reason: "previous-record hash mismatch (a record was edited, removed or moved)"
                    .into(),
            });
        }
        prev = sha_hex(&line);
        n += 1;
    }
    let head_checked = match std::fs::read_to_string(paths.audit_head()) {
        Ok(h) => {
            let want = format!("{n} {prev}");
            if h.trim() != want {
                return Err(AuditError::Broken {
                    line: n,
                    reason: "log does not end at the recorded head (tail truncated or last record edited)".into(),
                });
            }
            true
        }
        Err(_) => false,
    };
    Ok(VerifyReport {
        records: n,
        head_checked,
    })
}

/// The last `n` records (all when `None`), unverified.
pub fn tail(paths: &VaultPaths, n: Option<usize>) -> Result<Vec<Record>, AuditError> {
    let path = paths.audit();
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AuditError::Io {
                op: "read",
                path,
                source,
            })
        }
    };
    let mut recs: Vec<Record> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    if let Some(n) = n {
        let skip = recs.len().saturating_sub(n);
        recs.drain(..skip);
    }
    Ok(recs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: usize) -> (tempfile::TempDir, VaultPaths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = VaultPaths::new(dir.path());
        let mut log = AuditLog::open(&paths).unwrap();
        for i in 0..n {
            let name = format!("secret{i}");
            log.append(&Event {
                op: "add",
                outcome: "ok",
                secret: Some(&name),
                ..Default::default()
            })
            .unwrap();
        }
        (dir, paths)
    }
    fn lines(p: &VaultPaths) -> Vec<String> {
        std::fs::read_to_string(p.audit())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
    fn write(p: &VaultPaths, l: &[String]) {
        std::fs::write(p.audit(), l.join("\n") + "\n").unwrap();
    }

    #[test]
    fn intact_log_verifies_and_reopens_onto_the_chain() {
        let (_d, p) = log_with(3);
        assert_eq!(verify(&p).unwrap().records, 3);
        let mut log = AuditLog::open(&p).unwrap();
        log.append(&Event {
            op: "x",
            outcome: "ok",
            ..Default::default()
        })
        .unwrap();
        assert_eq!(verify(&p).unwrap().records, 4);
        assert!(
            !std::fs::read_to_string(p.audit())
                .unwrap()
                .contains("secret1"),
            "names are HMAC'd"
        );
    }

    #[test]
    fn edit_delete_insert_reorder_truncate_are_detected() {
        let (_d, p) = log_with(4);
        let orig = lines(&p);
        let mut edited = orig.clone();
        edited[1] = edited[1].replace("\"add\"", "\"rm\"");
        write(&p, &edited);
        assert!(verify(&p).is_err(), "edit");
        let mut deleted = orig.clone();
        deleted.remove(1);
        write(&p, &deleted);
        assert!(verify(&p).is_err(), "delete");
        let mut inserted = orig.clone();
        inserted.insert(2, orig[1].clone());
        write(&p, &inserted);
        assert!(verify(&p).is_err(), "insert");
        let mut reordered = orig.clone();
        reordered.swap(1, 2);
        write(&p, &reordered);
        assert!(verify(&p).is_err(), "reorder");
        write(&p, &orig[..3]);
        assert!(verify(&p).is_err(), "tail truncation");
        let mut last_edit = orig.clone();
        last_edit[3] = last_edit[3].replace("\"ok\"", "\"no\"");
        write(&p, &last_edit);
        assert!(verify(&p).is_err(), "edit of the last record");
        write(&p, &orig);
        assert!(verify(&p).is_ok());
    }

    #[test]
    fn failed_write_leaves_chain_unchanged() {
        let (_d, p) = log_with(1);
        let mut log = AuditLog::open(&p).unwrap();
        std::fs::remove_file(p.audit()).unwrap();
        std::os::unix::fs::symlink("/dev/full", p.audit()).unwrap();
        assert!(log
            .append(&Event {
                op: "add",
                outcome: "ok",
                ..Default::default()
            })
            .is_err());
    }
}
