//! Hyperscan prefilter: all rules in one database, compiled once, cached by the caller.
//!
//! Patterns are compiled with `HS_FLAG_PREFILTER`: Hyperscan may replace a pattern by a looser
//! approximation (which is what lets it accept our large bounded repeats such as PEM bodies) but
//! never misses a true match end, and the exact regex-automata confirm stage throws the extra
//! hits away. Hyperscan reports only match *ends*; the engine turns them into windows
//! `[end - max_len, end]` per rule.
//!
//! Measured (ARCHITECTURE.md, "The engine"): compiling the builtin catalogue takes ~10 s, loading
//! its cached 4 MB database a few ms — so the database is serialized into the caller's
//! [`DatabaseCache`] (the CLI's is `$XDG_CACHE_HOME/guard/`) keyed by the patterns' hash, and a
//! pre-commit hook never recompiles. A rule Hyperscan rejects is dropped from
//! the database (with a warning naming it) and confirmed by a full regex-automata search instead.

use hyperscan::prelude::*;
use hyperscan::Serialized;
use sha2::{Digest, Sha256};

use super::DatabaseCache;

/// Block (files, blobs) or streaming (stdin, logs) database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Block,
    Stream,
}

/// A compiled database plus the rule indices Hyperscan could not take.
pub struct Compiled<T> {
    /// `None` when Hyperscan rejected every rule (all are then confirmed by full search).
    pub db: Option<Database<T>>,
    /// Rule index → is in the database.
    pub in_db: Vec<bool>,
    /// (rule index, Hyperscan's reason) for every rule left out of the database.
    pub rejected: Vec<(usize, String)>,
    pub from_cache: bool,
}

pub type Error = String;

/// Hyperscan's own spelling of a pattern: it accepts `(?<name>…)`, not Rust's `(?P<name>…)`.
fn hs_expression(pattern: &str) -> String {
    pattern.replace("(?P<", "(?<")
}

fn cache_key(patterns: &[(usize, &str)], mode: Mode) -> String {
    let mut h = Sha256::new();
    h.update(b"guard-hs-cache-v1\0");
    h.update(hyperscan::version_str().to_bytes());
    h.update(format!("{mode:?}\0").as_bytes());
    for (i, p) in patterns {
        h.update(i.to_le_bytes());
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("hs-{}.db", hex::encode(&h.finalize()[..16]))
}

const MAGIC: &[u8; 8] = b"GUARDHS1";

fn encode_cache(in_db: &[bool], db: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(db.len() + in_db.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(in_db.len() as u32).to_le_bytes());
    out.extend(in_db.iter().map(|&b| b as u8));
    out.extend_from_slice(db);
    out
}

fn decode_cache(bytes: &[u8], n_rules: usize) -> Option<(Vec<bool>, &[u8])> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    if n != n_rules {
        return None;
    }
    let flags = rest.get(4..4 + n)?;
    Some((flags.iter().map(|&b| b == 1).collect(), rest.get(4 + n..)?))
}

/// Compiles (or loads from the cache) the database for the `patterns` (indexed by rule) whose
/// `include` flag is set; the others are neither in the database nor listed as rejected.
pub fn build<T: hyperscan::Mode>(
    patterns: &[&str],
    include: &[bool],
    mode: Mode,
    cache: Option<&dyn DatabaseCache>,
) -> Result<Compiled<T>, Error> {
    let indexed: Vec<(usize, &str)> = patterns
        .iter()
        .copied()
        .enumerate()
        .filter(|&(i, _)| include[i])
        .collect();
    let key = cache_key(&indexed, mode);
    if let Some(cache) = cache {
        if let Some(bytes) = cache.load(&key) {
            if let Some((in_db, raw)) = decode_cache(&bytes, patterns.len()) {
                if let Ok(db) = raw.deserialize::<T>() {
                    let rejected = rejected(&in_db, include, None);
                    return Ok(Compiled {
                        db: Some(db),
                        in_db,
                        rejected,
                        from_cache: true,
                    });
                }
            }
        }
    }
    let mut in_db = include.to_vec();
    let mut reasons: Vec<Option<String>> = vec![None; patterns.len()];
    let db = loop {
        let pats: Patterns = indexed
            .iter()
            .filter(|(i, _)| in_db[*i])
            .map(|(i, p)| Pattern {
                expression: hs_expression(p),
                flags: CompileFlags::PREFILTER,
                id: Some(*i),
                ext: Default::default(),
                som: None,
            })
            .collect();
        if pats.is_empty() {
            break None;
        }
        let positions: Vec<usize> = indexed
            .iter()
            .filter(|(i, _)| in_db[*i])
            .map(|(i, _)| *i)
            .collect();
        match pats.build::<T>() {
            Ok(db) => break Some(db),
            Err(hyperscan::Error::Hyperscan(hyperscan::HsError::CompileError(ce))) => {
                match ce.expression().and_then(|k| positions.get(k).copied()) {
                    Some(rule) => {
                        in_db[rule] = false;
                        reasons[rule] = Some(ce.message().to_string());
                    }
                    None => {
                        return Err(format!(
                            "Hyperscan cannot compile the rule set: {}",
                            ce.message()
                        ))
                    }
                }
            }
            Err(e) => return Err(format!("Hyperscan cannot compile the rule set: {e}")),
        }
    };
    if let (Some(cache), Some(db)) = (cache, &db) {
        if let Ok(raw) = db.serialize() {
            cache.store(&key, &encode_cache(&in_db, &raw));
        }
    }
    let rejected = rejected(&in_db, include, Some(&reasons));
    Ok(Compiled {
        db,
        in_db,
        rejected,
        from_cache: false,
    })
}

fn rejected(
    in_db: &[bool],
    include: &[bool],
    reasons: Option<&[Option<String>]>,
) -> Vec<(usize, String)> {
    (0..in_db.len())
        .filter(|&i| include[i] && !in_db[i])
        .map(|i| {
            let why = reasons.and_then(|r| r[i].clone());
            (
                i,
                why.unwrap_or_else(|| "rejected when the cached database was compiled".into()),
            )
        })
        .collect()
}
