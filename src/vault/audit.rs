//! The audit log: append-only JSONL, hash-chained, identifiers HMAC'd, never a value.
//!
//! Design decision: each record carries `prev` = SHA-256 of the previous line's exact bytes
//! (genesis: 64 zeros) and a dense `seq`; `audit.head` stores the seq and hash of the last record,
//! so an edit, a deletion (even of the tail), an insertion or a reorder all break verification.
//! Secret names, client ids and contexts are HMAC-SHA256'd under a per-vault key (`audit.key`,
//! 0600) so the log can be shipped without revealing what is stored, yet a holder of the key can
//! still answer "was secret X touched?". Operations write their audit record *first*; if that
//! write fails, the operation is refused (fail closed, as Vault does).
//!
//! **The seal.** The chain itself is unkeyed, and `audit.key` is a plain 0600 file the daemon
//! needs while locked, so a process that writes the vault directory could rebuild a whole forged
//! chain and its head. Once a human has unlocked the daemon, every head it writes also carries a
//! seal: `HMAC(key, records, last hash, context)` under a key derived from that context's
//! identity ([`SealKey`]), which exists only in the daemon after the passphrase. At each unlock
//! the daemon checks the seal against the log before it takes the keys: a rewritten record,
//! inserted or deleted one, or truncation below the seal fails, and the vault stays locked until
//! a human acknowledges the break. Identities written by this guard carry a marker
//! ([`crate::vault::keys`]) that makes the seal mandatory, so removing it does not turn a vault
//! back into an unsealed one. What the seal cannot cover: records appended while locked after the
//! last seal (they are chained, not sealed, until the next unlock seals them).

use crate::vault::{fill_random, now_unix, VaultPaths};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The most records one append writes ([`AuditLog::append_all`]); a head this far behind the
/// log is that append's crash window.
pub const MAX_BATCH: usize = 16;

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
    /// The agent (MCP client) that asked, as it named itself: not authenticated.
    pub agent: Option<&'a str>,
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
    pub agent: Option<String>,
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
    /// The last seal written to the head (kept while no seal key is held).
    seal: Option<Seal>,
    /// Held after the first unlock: every head written is sealed with it.
    seal_key: Option<SealKey>,
    /// After the daemon's last record: every append is refused.
    closed: bool,
}

/// A MAC over the chain's state: `seq` records whose last hash is `hash`, keyed by context `by`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Seal {
    pub seq: u64,
    pub hash: String,
    pub by: String,
    #[serde(skip)]
    pub mac: String,
}

/// The key that seals the chain: derived from context `by`'s identity.
pub struct SealKey {
    pub by: String,
    key: Zeroizing<[u8; 32]>,
}

impl SealKey {
    pub fn of(by: &str, identity: &age::x25519::Identity) -> SealKey {
        SealKey {
            by: by.to_string(),
            key: crate::vault::keys::derived_key(identity, b"guard audit seal v1"),
        }
    }
    fn mac(&self, seq: u64, hash: &str) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&*self.key)
            .expect("HMAC should accept any key length");
        m.update(format!("{seq} {hash} {}", self.by).as_bytes());
        hex::encode(m.finalize().into_bytes())
    }
    fn seal(&self, seq: u64, hash: &str) -> Seal {
        Seal {
            seq,
            hash: hash.to_string(),
            by: self.by.clone(),
            mac: self.mac(seq, hash),
        }
    }
}

impl Seal {
    fn parse(words: &[&str]) -> Option<Seal> {
        match words {
            ["seal", seq, hash, by, mac] => Some(Seal {
                seq: seq.parse().ok()?,
                hash: hash.to_string(),
                by: by.to_string(),
                mac: mac.to_string(),
            }),
            _ => None,
        }
    }
}

/// What the seal says about the log, checked with the keys of the unlocked contexts.
#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SealState {
    /// The log up to the seal is what the key holder wrote.
    Verified { sealed: u64 },
    /// No seal yet (a vault that was never unlocked since sealing existed).
    Unsealed,
}

/// Checks `chain`'s seal with `keys` (identities by context); `required`: the vault's
/// identities demand a seal (a missing one is then a break, unless the log is empty).
fn check_seal(
    chain: &Chain,
    keys: &std::collections::BTreeMap<String, age::x25519::Identity>,
    required: bool,
) -> Result<SealState, AuditError> {
    let broken = |reason: String| AuditError::Broken {
        line: chain.records,
        reason,
    };
    let Some(seal) = &chain.seal else {
        if required && chain.records > 0 {
            return Err(broken(
                "the audit seal is missing from audit.head (this vault seals its chain: the \
                 head was rewritten without the vault key)"
                    .into(),
            ));
        }
        return Ok(SealState::Unsealed);
    };
    let Some(id) = keys.get(&seal.by) else {
        return Err(broken(format!(
            "the audit seal names context {:?}, which this vault does not have",
            seal.by
        )));
    };
    let key = SealKey::of(&seal.by, id);
    let same = key.mac(seal.seq, &seal.hash) == seal.mac;
    if !same || chain.sealed_hash.as_deref() != Some(seal.hash.as_str()) {
        return Err(broken(format!(
            "the audit chain does not match its seal: the first {} records are not what the \
             daemon wrote (rewritten, removed or truncated without the vault key)",
            seal.seq
        )));
    }
    Ok(SealState::Verified { sealed: seal.seq })
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
    /// Opens the log for appending, after verifying its chain and its head. A chain that does
    /// not verify is never re-anchored: the daemon refuses to start until a human has looked
    /// (`guard vault audit verify`) and acknowledged it ([`acknowledge_break`]). The one case
    /// accepted is the crash window: the last append's records written, its head not yet.
    pub fn open(paths: &VaultPaths) -> Result<Self, AuditError> {
        let key = load_key(&paths.audit_key())?;
        let chain = scan(paths)?;
        chain.check(true)?;
        if chain.head == Head::Behind {
            eprintln!(
                "guard vault daemon: audit head was behind the log by the last append (a write \
                 interrupted before its head); anchored to record {}",
                chain.records
            );
        }
        let mut log = Self {
            path: paths.audit(),
            head: paths.audit_head(),
            key,
            last_hash: chain.last_hash,
            next_seq: chain.records,
            seal: chain.seal,
            seal_key: None,
            closed: false,
        };
        if chain.head == Head::Behind {
            log.write_head()?;
        }
        Ok(log)
    }

    /// At an unlock: checks the seal against the log with the unlocked identities (`required`:
    /// their marker demands one), then holds a seal key — the sealing context's, else
    /// `default`'s, else the first — and seals the head now. An error means the chain was
    /// rewritten without the vault key: the caller keeps the vault locked.
    /// `first`: a human's `init` asks to seal a chain that has none yet (trust on first use of a
    /// chain that verifies without the key).
    pub fn unseal(
        &mut self,
        paths: &VaultPaths,
        keys: &std::collections::BTreeMap<String, age::x25519::Identity>,
        required: bool,
        first: bool,
    ) -> Result<SealState, AuditError> {
        let chain = scan(paths)?;
        chain.check(false)?;
        let state = check_seal(&chain, keys, required && !(first && chain.seal.is_none()))?;
        if self.seal_key.is_none() {
            let by = chain
                .seal
                .as_ref()
                .map(|s| s.by.clone())
                .filter(|b| keys.contains_key(b))
                .or_else(|| keys.contains_key("default").then(|| "default".to_string()))
                .or_else(|| keys.keys().next().cloned());
            if let Some(by) = by {
                self.seal_key = Some(SealKey::of(&by, &keys[&by]));
            }
        }
        self.write_head()?;
        Ok(state)
    }

    /// Refuses every later append (the daemon wrote its last record).
    pub fn close(&mut self) {
        self.closed = true;
    }

    pub fn id(&self, kind: &str, value: &str) -> String {
        hmac_id(&self.key, kind, value)
    }

    /// Append one record. On error nothing is considered written and the chain head is unchanged;
    /// the caller must refuse the operation.
    pub fn append(&mut self, ev: &Event<'_>) -> Result<(), AuditError> {
        self.append_all(std::slice::from_ref(ev))
    }

    /// Append several records, [`MAX_BATCH`] at a time with one write, one `fdatasync` and one
    /// head: an operation that records one event per secret (`exec` of five) pays for the disk
    /// once. On error the records of the failed batch are not written, as [`AuditLog::append`].
    pub fn append_all(&mut self, evs: &[Event<'_>]) -> Result<(), AuditError> {
        for batch in evs.chunks(MAX_BATCH) {
            self.append_batch(batch)?;
        }
        Ok(())
    }

    fn append_batch(&mut self, evs: &[Event<'_>]) -> Result<(), AuditError> {
        if self.closed {
            return Err(AuditError::Io {
                op: "append",
                path: self.path.clone(),
                source: std::io::Error::other("the daemon is stopping"),
            });
        }
        let (mut seq, mut hash) = (self.next_seq, self.last_hash.clone());
        let mut lines = Vec::new();
        for ev in evs {
            let rec = Record {
                seq,
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
                agent: ev.agent.map(str::to_string),
                detail: ev.detail.map(str::to_string),
                prev: hash,
            };
            let line = serde_json::to_vec(&rec).expect("a record should always serialize");
            hash = sha_hex(&line);
            lines.extend_from_slice(&line);
            lines.push(b'\n');
            seq += 1;
        }
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
        f.write_all(&lines).map_err(err("append"))?;
        // On disk before the operation it records goes ahead.
        f.sync_data().map_err(err("fsync"))?;
        self.last_hash = hash;
        self.next_seq = seq;
        // The head anchor makes tail truncation detectable; its failure is a failed write too.
        self.write_head()
    }

    /// Replaces `audit.head` atomically (temp file, fsync, rename), sealed when a seal key is
    /// held (else with the last seal).
    fn write_head(&mut self) -> Result<(), AuditError> {
        if let Some(k) = &self.seal_key {
            self.seal = Some(k.seal(self.next_seq, &self.last_hash));
        }
        let text = match &self.seal {
            Some(s) => format!(
                "{} {} seal {} {} {} {}\n",
                self.next_seq, self.last_hash, s.seq, s.hash, s.by, s.mac
            ),
            None => format!("{} {}\n", self.next_seq, self.last_hash),
        };
        crate::vault::store::atomic_write(&self.head, text.as_bytes()).map_err(|e| AuditError::Io {
            op: "write head",
            path: self.head.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }
}

/// Seals the head of a chain that verifies without the key (`guard vault init`, no daemon
/// running): from here on the seal is checked at every unlock.
pub fn seal_head(paths: &VaultPaths, key: SealKey) -> Result<(), AuditError> {
    let mut log = AuditLog::open(paths)?;
    if log.seal.is_some() {
        return Ok(());
    }
    log.seal_key = Some(key);
    log.write_head()
}

/// Result of `audit verify`.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub records: u64,
    pub head_checked: bool,
    /// Records the head's seal covers (checked only with the keys: [`verify_sealed`]).
    pub sealed: Option<u64>,
    /// Whether the seal was checked (it needs the unlocked keys).
    pub seal_checked: bool,
}

/// How `audit.head` relates to the log.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Matches,
    Missing,
    /// It names an earlier record, within the last append's batch ([`MAX_BATCH`]): that
    /// append's head write did not happen.
    Behind,
    Mismatch,
}

/// A chain that verified record by record, and how its head relates to it.
struct Chain {
    records: u64,
    last_hash: String,
    head: Head,
    /// The seal the head carries, if any…
    seal: Option<Seal>,
    /// …and the log's own hash after that many records (none: the log is shorter).
    sealed_hash: Option<String>,
}

impl Chain {
    /// Whether the head matches the log (`Ok(false)`: no head, no records); a lagging head is
    /// accepted only when `crash_window` (reopening after an interrupted append).
    fn check(&self, crash_window: bool) -> Result<bool, AuditError> {
        let reason = match self.head {
            Head::Matches => return Ok(true),
            Head::Missing if self.records == 0 => return Ok(false),
            Head::Behind if crash_window => return Ok(true),
            Head::Missing => "the head file (audit.head) is missing",
            Head::Behind | Head::Mismatch => {
                "log does not end at the recorded head (tail truncated or last record edited)"
            }
        };
        Err(AuditError::Broken {
            line: self.records,
            reason: reason.into(),
        })
    }
}

/// Walks the log: every record must parse, carry the next `seq` and the previous line's hash.
fn scan(paths: &VaultPaths) -> Result<Chain, AuditError> {
    let path = paths.audit();
    let head_text = match std::fs::read_to_string(paths.audit_head()) {
        Ok(h) => Some(h),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(AuditError::Io {
                op: "read head",
                path: paths.audit_head(),
                source,
            })
        }
    };
    let words: Vec<&str> = head_text
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let seal = words.get(2..).and_then(Seal::parse);
    let head_pair = words.get(..2).map(|w| w.join(" "));
    let mut sealed_hash = seal
        .as_ref()
        .filter(|s| s.seq == 0)
        .map(|_| GENESIS.to_string());
    let mut prev = GENESIS.to_string();
    // The hashes after each of the last MAX_BATCH records (and before them), for the crash window.
    let mut recent: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut n = 0u64;
    match std::fs::File::open(&path) {
        Ok(f) => {
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
                // Only the shape is reported: serde's text could quote the line.
                let rec: Record =
                    serde_json::from_slice(&line).map_err(|_| AuditError::Broken {
                        line: lineno,
                        reason: "not a record".into(),
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
                        reason:
                            "previous-record hash mismatch (a record was edited, removed or moved)"
                                .into(),
                    });
                }
                recent.push_back(std::mem::replace(&mut prev, sha_hex(&line)));
                if recent.len() > MAX_BATCH {
                    recent.pop_front();
                }
                n += 1;
                if seal.as_ref().is_some_and(|s| s.seq == n) {
                    sealed_hash = Some(prev.clone());
                }
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
    let head = match (&head_text, head_pair) {
        (None, _) => Head::Missing,
        (Some(_), Some(h)) if h == format!("{n} {prev}") => Head::Matches,
        (Some(_), Some(h))
            if recent
                .iter()
                .rev()
                .enumerate()
                .any(|(k, hash)| h == format!("{} {hash}", n - 1 - k as u64)) =>
        {
            Head::Behind
        }
        (Some(_), _) => Head::Mismatch,
    };
    Ok(Chain {
        records: n,
        last_hash: prev,
        head,
        seal,
        sealed_hash,
    })
}

/// Verify the chain of `paths.audit()` against itself and `audit.head` (the seal unchecked: it
/// needs the keys).
pub fn verify(paths: &VaultPaths) -> Result<VerifyReport, AuditError> {
    verify_with(paths, None)
}

/// [`verify`], and the seal checked with the unlocked identities (the daemon's `audit_verify`).
pub fn verify_sealed(
    paths: &VaultPaths,
    keys: &std::collections::BTreeMap<String, age::x25519::Identity>,
    required: bool,
) -> Result<VerifyReport, AuditError> {
    verify_with(paths, Some((keys, required)))
}

fn verify_with(
    paths: &VaultPaths,
    keys: Option<(
        &std::collections::BTreeMap<String, age::x25519::Identity>,
        bool,
    )>,
) -> Result<VerifyReport, AuditError> {
    let chain = scan(paths)?;
    let head_checked = chain.check(false)?;
    let sealed = match keys {
        None => chain.seal.as_ref().map(|s| s.seq),
        Some((keys, required)) => match check_seal(&chain, keys, required)? {
            SealState::Verified { sealed } => Some(sealed),
            SealState::Unsealed => None,
        },
    };
    Ok(VerifyReport {
        records: chain.records,
        head_checked,
        sealed,
        seal_checked: keys.is_some(),
    })
}

/// After a human saw a broken chain: the log and its head are moved aside (kept, named with
/// the time) and a new chain starts with a record saying so. Returns the kept log's path.
pub fn acknowledge_break(
    paths: &VaultPaths,
    why: &str,
    seal: Option<SealKey>,
) -> Result<PathBuf, AuditError> {
    let stamp = now_unix();
    let kept = paths.root().join(format!("audit.broken-{stamp}.jsonl"));
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Io { op, path, source }
    };
    std::fs::rename(paths.audit(), &kept).map_err(io("move aside", &paths.audit()))?;
    match std::fs::rename(
        paths.audit_head(),
        paths.root().join(format!("audit.broken-{stamp}.head")),
    ) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("move aside", &paths.audit_head())(e)),
    }
    let mut log = AuditLog::open(paths)?;
    log.seal_key = seal;
    let detail = format!(
        "a human acknowledged a broken chain ({why}); the old log is kept as {}",
        kept.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    );
    log.append(&Event {
        op: "audit",
        outcome: "chain-restarted",
        detail: Some(&detail),
        ..Default::default()
    })?;
    Ok(kept)
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
    fn a_broken_chain_is_never_reopened_only_the_crash_window_is() {
        let (_d, p) = log_with(4);
        let orig = lines(&p);
        let head = std::fs::read_to_string(p.audit_head()).unwrap();
        // Tail truncated (the head still names record 4): refused, never re-anchored.
        write(&p, &orig[..3]);
        assert!(matches!(AuditLog::open(&p), Err(AuditError::Broken { .. })));
        assert_eq!(std::fs::read_to_string(p.audit_head()).unwrap(), head);
        assert!(
            verify(&p).is_err(),
            "and still broken after the refused open"
        );
        // Both the tail and the head gone: refused too.
        std::fs::remove_file(p.audit_head()).unwrap();
        assert!(matches!(AuditLog::open(&p), Err(AuditError::Broken { .. })));
        // The crash window: the last record written, the head one behind → accepted.
        let (_d2, q) = log_with(3);
        let head3 = std::fs::read_to_string(q.audit_head()).unwrap();
        let mut log = AuditLog::open(&q).unwrap();
        log.append(&Event {
            op: "x",
            outcome: "ok",
            ..Default::default()
        })
        .unwrap();
        std::fs::write(q.audit_head(), &head3).unwrap();
        assert!(verify(&q).is_err(), "verify alone reports the lagging head");
        let log = AuditLog::open(&q).unwrap();
        assert_eq!(log.next_seq, 4);
        assert_eq!(verify(&q).unwrap().records, 4, "re-anchored forward");
        drop(log);
        // A whole batch written, its head not: accepted; a head further back than one batch
        // can be is not a crash window.
        let head4 = std::fs::read_to_string(q.audit_head()).unwrap();
        let mut log = AuditLog::open(&q).unwrap();
        let evs: Vec<Event> = (0..MAX_BATCH)
            .map(|_| Event {
                op: "access",
                outcome: "ok",
                ..Default::default()
            })
            .collect();
        log.append_all(&evs).unwrap();
        drop(log);
        std::fs::write(q.audit_head(), &head4).unwrap();
        assert_eq!(AuditLog::open(&q).unwrap().next_seq, 4 + MAX_BATCH as u64);
        std::fs::write(q.audit_head(), &head3).unwrap();
        assert!(AuditLog::open(&q).is_err(), "a head {} back", MAX_BATCH + 1);
    }

    #[test]
    fn acknowledging_a_break_keeps_the_old_log_and_starts_a_chain_that_says_so() {
        let (_d, p) = log_with(4);
        let orig = lines(&p);
        write(&p, &orig[..2]);
        let why = verify(&p).unwrap_err().to_string();
        let id = age::x25519::Identity::generate();
        let kept = acknowledge_break(&p, &why, Some(SealKey::of("default", &id))).unwrap();
        assert_eq!(std::fs::read_to_string(&kept).unwrap().lines().count(), 2);
        let r = verify(&p).unwrap();
        assert!(r.head_checked && r.records == 1);
        // The new chain is sealed by the human's key.
        let keys = std::collections::BTreeMap::from([("default".to_string(), id)]);
        assert_eq!(verify_sealed(&p, &keys, true).unwrap().sealed, Some(1));
        let text = std::fs::read_to_string(p.audit()).unwrap();
        assert!(
            text.contains("chain-restarted") && text.contains("broken"),
            "{text}"
        );
        AuditLog::open(&p).unwrap();
    }

    /// Re-chains `lines` as a forger without the key would: renumbered, every `prev` rehashed,
    /// and a head that matches (its seal words, if any, kept).
    fn rechain(p: &VaultPaths, lines: &[String]) {
        let mut prev = GENESIS.to_string();
        let mut out = String::new();
        for (i, l) in lines.iter().enumerate() {
            let mut r: Record = serde_json::from_str(l).unwrap();
            r.seq = i as u64;
            r.prev = prev.clone();
            let l = serde_json::to_string(&r).unwrap();
            prev = sha_hex(l.as_bytes());
            out.push_str(&l);
            out.push('\n');
        }
        std::fs::write(p.audit(), out).unwrap();
        let old = std::fs::read_to_string(p.audit_head()).unwrap();
        let seal: Vec<&str> = old.split_whitespace().skip(2).collect();
        let head = format!("{} {prev} {}", lines.len(), seal.join(" "));
        std::fs::write(p.audit_head(), head.trim_end()).unwrap();
    }

    #[test]
    fn the_seal_catches_a_chain_rebuilt_without_the_key() {
        let (_d, p) = log_with(3);
        let id = age::x25519::Identity::generate();
        let keys = std::collections::BTreeMap::from([("default".to_string(), id)]);
        let mut log = AuditLog::open(&p).unwrap();
        // Never sealed: accepted (and sealed now) unless the vault demands a seal.
        assert!(log.unseal(&p, &keys, true, false).is_err());
        assert_eq!(
            log.unseal(&p, &keys, false, false).unwrap(),
            SealState::Unsealed
        );
        log.append(&Event {
            op: "x",
            outcome: "ok",
            ..Default::default()
        })
        .unwrap();
        drop(log);
        let r = verify_sealed(&p, &keys, true).unwrap();
        assert_eq!((r.records, r.sealed), (4, Some(4)));
        // Appends by a daemon that holds no key (restarted, still locked) keep the last seal.
        let mut log = AuditLog::open(&p).unwrap();
        log.append(&Event {
            op: "y",
            outcome: "ok",
            ..Default::default()
        })
        .unwrap();
        assert_eq!(verify_sealed(&p, &keys, true).unwrap().sealed, Some(4));
        let orig = lines(&p);
        let orig_head = std::fs::read_to_string(p.audit_head()).unwrap();
        // Rebuilt with a record removed (seal kept, or stripped): the keyless check passes,
        // the seal does not.
        for strip in [false, true] {
            let mut forged = orig.clone();
            forged.remove(1);
            rechain(&p, &forged);
            if strip {
                let h = std::fs::read_to_string(p.audit_head()).unwrap();
                let w: Vec<&str> = h.split_whitespace().take(2).collect();
                std::fs::write(p.audit_head(), w.join(" ")).unwrap();
            }
            assert!(verify(&p).is_ok(), "keyless verify sees a consistent chain");
            assert!(verify_sealed(&p, &keys, true).is_err(), "strip {strip}");
            assert!(AuditLog::open(&p)
                .unwrap()
                .unseal(&p, &keys, true, false)
                .is_err());
        }
        // The record added after the seal (while locked) is chained, not sealed: accepted.
        std::fs::write(p.audit_head(), &orig_head).unwrap();
        rechain(&p, &orig);
        assert!(verify_sealed(&p, &keys, true).is_ok());
        // Another key (a forger's identity) does not verify the seal.
        let other = std::collections::BTreeMap::from([(
            "default".to_string(),
            age::x25519::Identity::generate(),
        )]);
        assert!(verify_sealed(&p, &other, true).is_err());
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
