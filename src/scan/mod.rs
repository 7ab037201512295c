//! Sources: files, directories and readers (stdin), all feeding the one [`Engine`].
//!
//! A source only moves bytes: small files are read whole, mid-size files are memory-mapped and
//! scanned in block mode, and anything larger (or any pipe) goes through the engine's stream mode
//! in 1 MiB reads, so a 1 GB file costs one buffer, not 1 GB of resident pages. Turning a match
//! into a [`Finding`] (line, column, id, redacted snippet) happens here, once, for every source.

pub mod stream;
pub mod walk;

use std::path::PathBuf;

use crate::engine::{Engine, LineCursor, Match, Scratch, View, CONTEXT};
use crate::finding::{redact, Finding, FindingId, Location, Reveal, Secret};

pub use walk::{scan_paths, ScanOptions, ScanSummary};

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no such file or directory")]
    Missing { path: PathBuf },
    #[error("{path}: {message}")]
    Walk { path: PathBuf, message: String },
}

/// How findings are rendered and identified.
#[derive(Clone, Debug)]
pub struct FindingOptions {
    pub reveal: Reveal,
    /// Key for finding ids (`GUARD_FINDING_KEY`); `None` uses the built-in key.
    pub id_key: Option<Vec<u8>>,
}

impl Default for FindingOptions {
    fn default() -> Self {
        FindingOptions {
            reveal: Reveal::Redacted,
            id_key: None,
        }
    }
}

/// Snippet width on each side of the match, within the line.
const SNIPPET_SIDE: usize = 80;

/// Builds the finding for match `m`, whose bytes are in `view` (block mode: the whole input).
pub fn make_finding(
    engine: &Engine,
    scratch: &mut Scratch,
    path: &str,
    m: &Match,
    view: &View,
    opts: &FindingOptions,
) -> Finding {
    let rel = |x: u64| (x - view.base) as usize;
    let hay = view.hay;
    let rule = engine.rule(m.rule);
    let secret = &hay[rel(m.secret_start)..rel(m.secret_end)];
    let matched = &hay[rel(m.start)..rel(m.end)];
    let newlines = memchr::memchr_iter(b'\n', matched).count() as u64;
    let end_column = match memchr::memrchr(b'\n', matched) {
        Some(p) => (matched.len() - p) as u64,
        None => view.cursor.column() + matched.len() as u64,
    };
    let location = Location {
        path: path.to_string(),
        line: view.cursor.line,
        column: view.cursor.column(),
        end_line: view.cursor.line + newlines,
        end_column,
        start: m.start,
        end: m.end,
    };
    Finding {
        id: FindingId::compute(opts.id_key.as_deref(), &rule.id, secret),
        rule: rule.id.clone(),
        rule_name: rule.spec.name.clone(),
        confidence: rule.spec.confidence,
        location,
        secret: Secret::new(secret.to_vec()),
        snippet: snippet(engine, scratch, hay, rel(m.start), rel(m.end), opts.reveal),
    }
}

/// The line around a match, clipped, with every secret the engine finds in it redacted —
/// including other secrets on the same line that belong to other findings.
fn snippet(
    engine: &Engine,
    scratch: &mut Scratch,
    hay: &[u8],
    start: usize,
    end: usize,
    reveal: Reveal,
) -> String {
    let (lo, hi) = crate::engine::allow::line_bounds(hay, start, end);
    let lo = lo.max(start.saturating_sub(SNIPPET_SIDE));
    let hi = hi.min(end + SNIPPET_SIDE);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    if reveal == Reveal::Redacted {
        let ctx_lo = start.saturating_sub(CONTEXT);
        let ctx_hi = (end + CONTEXT).min(hay.len());
        spans = engine
            .scan_block(scratch, &hay[ctx_lo..ctx_hi])
            .into_iter()
            .map(|x| {
                (
                    ctx_lo + x.secret_start as usize,
                    ctx_lo + x.secret_end as usize,
                )
            })
            .filter(|&(s, e)| e > lo && s < hi)
            .collect();
        spans.sort_unstable();
    }
    let mut out = String::new();
    let mut pos = lo;
    for (s, e) in spans {
        let s = s.max(pos);
        if s >= e {
            continue;
        }
        out.push_str(&String::from_utf8_lossy(&hay[pos..s.min(hi)]));
        out.push_str(&redact(&hay[s..e]));
        pos = e.min(hi).max(pos);
        if pos >= hi {
            break;
        }
    }
    if pos < hi {
        out.push_str(&String::from_utf8_lossy(&hay[pos..hi]));
    }
    out.trim_end_matches('\r')
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// Where a provider rule and a looser rule (say the generic assignment rule) match overlapping
/// bytes, only the most confident finding is kept; equally confident overlaps are all kept.
/// `findings` must be sorted by start offset.
pub fn dedup_overlaps(findings: &mut Vec<Finding>) {
    if findings.len() < 2 {
        return;
    }
    let n = findings.len();
    let mut drop = vec![false; n];
    for i in 0..n {
        for j in i + 1..n {
            let (a, b) = (&findings[i].location, &findings[j].location);
            if b.start >= a.end {
                break;
            }
            match findings[i].confidence.cmp(&findings[j].confidence) {
                std::cmp::Ordering::Greater => drop[j] = true,
                std::cmp::Ordering::Less => drop[i] = true,
                std::cmp::Ordering::Equal => {}
            }
        }
    }
    let mut k = 0;
    findings.retain(|_| {
        k += 1;
        !drop[k - 1]
    });
}

/// Scans a complete in-memory input and turns its matches into findings.
pub fn scan_bytes(
    engine: &Engine,
    scratch: &mut Scratch,
    path: &str,
    hay: &[u8],
    opts: &FindingOptions,
) -> Vec<Finding> {
    let matches = engine.scan_block(scratch, hay);
    let mut cursor = LineCursor::new();
    let mut out = Vec::with_capacity(matches.len());
    for m in &matches {
        cursor.advance(hay, 0, m.start);
        let view = View {
            hay,
            base: 0,
            cursor: &cursor,
        };
        out.push(make_finding(engine, scratch, path, m, &view, opts));
    }
    dedup_overlaps(&mut out);
    out
}
