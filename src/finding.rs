//! Findings: a match placed in its source, with a stable id and a redacted snippet.
//!
//! The finding id is a keyed hash of rule id + secret, never of the path or line: moving code, or
//! the same leaked key in two files, keeps one id, which is what baselines are keyed by. The key is
//! fixed per installation by default (`GUARD_FINDING_KEY` overrides it) so ids are comparable
//! across runs without being a plain hash anyone could brute-force a short secret against.
//! The secret itself lives in [`Secret`], which has no `Debug`/`Display`.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Serialize, Serializer};
use sha2::Sha256;

use crate::engine::{allow::line_bounds, decode::DecodedMatch, entropy, Engine, Match, View};
use crate::rules::{Confidence, RuleId};

/// The matched secret. Deliberately not `Debug`/`Display`: use [`Secret::expose_secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret([REDACTED; {} bytes])", self.0.len())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort wipe; the vault uses zeroizing buffers for stored values.
        for b in self.0.iter_mut() {
            // SAFETY: writing through a valid &mut u8; volatile so the wipe is not optimized out.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// Stable identifier of a finding: keyed hash of rule id and secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct FindingId(pub String);

impl fmt::Display for FindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const DEFAULT_ID_KEY: &[u8] = b"guard finding id v1";

impl FindingId {
    pub fn compute(key: Option<&[u8]>, rule: &RuleId, secret: &[u8]) -> FindingId {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.unwrap_or(DEFAULT_ID_KEY))
            .expect("HMAC accepts keys of any length");
        mac.update(rule.0.as_bytes());
        mac.update(&[0]);
        mac.update(secret);
        FindingId(hex::encode(&mac.finalize().into_bytes()[..16]))
    }
}

/// Where the bytes of a finding came from. Reports render every variant without knowing the
/// source: JSON/JSONL/SARIF carry it as an object (`kind` plus fields), the human report as text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A file on disk.
    File { path: String },
    /// Standard input.
    Stdin,
    /// A FIFO, device or other stream named on the command line.
    Stream { path: String },
    /// A blob in git history: the path and commit that first introduced it (when known), and
    /// how many commits contain it.
    GitBlob {
        blob: String,
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        commit: Option<Commit>,
        commits: u64,
    },
    /// A file as staged in the git index.
    Staged { path: String },
    /// One record of a log stream, counted from 1 by the source.
    LogRecord { source: String, record: u64 },
    /// The output of a command (`stream` is `stdout` or `stderr`).
    Command { command: String, stream: String },
}

/// A commit, as a git source describes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Commit {
    pub id: String,
    pub author: String,
    pub date: String,
    pub subject: String,
}

impl Origin {
    /// The path-like part, used for allowlists, baselines and the `path` field of reports.
    pub fn path(&self) -> &str {
        match self {
            Origin::File { path }
            | Origin::Stream { path }
            | Origin::GitBlob { path, .. }
            | Origin::Staged { path } => path,
            Origin::Stdin => "-",
            Origin::LogRecord { source, .. } => source,
            Origin::Command { command, .. } => command,
        }
    }

    /// The same origin with every occurrence of `secret` in its text replaced by its redacted
    /// form: a token that is also a file name is not printed through the path.
    pub fn redacted(&self, secret: &[u8]) -> Origin {
        let fix = |s: &str| redact_in(s, secret);
        match self {
            Origin::File { path } => Origin::File { path: fix(path) },
            Origin::Stdin => Origin::Stdin,
            Origin::Stream { path } => Origin::Stream { path: fix(path) },
            Origin::GitBlob {
                blob,
                path,
                commit,
                commits,
            } => Origin::GitBlob {
                blob: blob.clone(),
                path: fix(path),
                commit: commit.clone().map(|c| Commit {
                    subject: fix(&c.subject),
                    ..c
                }),
                commits: *commits,
            },
            Origin::Staged { path } => Origin::Staged { path: fix(path) },
            Origin::LogRecord { source, record } => Origin::LogRecord {
                source: fix(source),
                record: *record,
            },
            Origin::Command { command, stream } => Origin::Command {
                command: fix(command),
                stream: stream.clone(),
            },
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path } | Origin::Stream { path } => f.write_str(path),
            Origin::Stdin => f.write_str("<stdin>"),
            Origin::GitBlob {
                path, commit, blob, ..
            } => match commit {
                Some(c) => write!(f, "{path} @ {}", &c.id[..c.id.len().min(12)]),
                None => write!(f, "{path} (blob {})", &blob[..blob.len().min(12)]),
            },
            Origin::Staged { path } => write!(f, "{path} (staged)"),
            Origin::LogRecord { source, record } => write!(f, "{source} record {record}"),
            Origin::Command { command, stream } => write!(f, "{command} ({stream})"),
        }
    }
}

fn redact_in(text: &str, secret: &[u8]) -> String {
    let Ok(needle) = std::str::from_utf8(secret) else {
        return text.to_string();
    };
    if needle.is_empty() || !text.contains(needle) {
        return text.to_string();
    }
    text.replace(needle, &redact(secret))
}

/// Where in its origin a finding is: 1-based line/column and absolute byte offsets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    pub line: u64,
    /// 1-based byte column of the match start.
    pub column: u64,
    pub end_line: u64,
    pub end_column: u64,
    pub start: u64,
    pub end: u64,
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub id: FindingId,
    pub rule: RuleId,
    pub rule_name: String,
    pub confidence: Confidence,
    pub origin: Origin,
    pub location: Location,
    pub secret: Secret,
    /// The line around the match: the secret and every token-like run redacted (or shown, if
    /// asked).
    pub snippet: String,
    /// For a secret found inside encoded content: the encodings peeled off, outermost first
    /// (`base64`, `hex`, `url`, `base64+url`). The location is then the encoded run's.
    pub encoding: Option<String>,
    /// A stored value recognised by its fingerprints (`--fingerprints`): which secret, which
    /// version. Its rule is [`STORED_VALUE_RULE`].
    pub stored: Option<StoredValue>,
}

/// The rule id of a finding that is a stored value (a fingerprint hit, not a pattern).
pub const STORED_VALUE_RULE: &str = "vault.stored_value";

/// Which stored secret a fingerprint hit is: its fingerprint id (`name` or `context/name`) and
/// version. Never the value.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoredValue {
    pub id: String,
    pub version: u32,
}

/// How secrets appear in output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reveal {
    Redacted,
    Shown,
}

/// Redacted rendering of a secret: its type prefix (`ghp_`, `xoxb-`, `sk-`…, up to the first
/// `_`, `-` or `.` within 12 bytes — the part a provider publishes, not the random part) and its
/// length. Values without such a prefix show nothing of themselves.
pub fn redact(secret: &[u8]) -> String {
    let head = secret
        .iter()
        .take(12)
        .position(|b| b"_-.".contains(b))
        .filter(|&p| {
            p > 0 && secret.len() >= 16 && secret[..p].iter().all(u8::is_ascii_alphanumeric)
        })
        .map(|p| String::from_utf8_lossy(&secret[..=p]).into_owned())
        .unwrap_or_default();
    format!("{head}…[REDACTED {} bytes]", secret.len())
}

/// How findings are rendered and identified.
#[derive(Clone, Debug)]
pub struct FindingOptions {
    pub reveal: Reveal,
    /// Key for finding ids (`GUARD_FINDING_KEY`); `None` uses the built-in key.
    pub id_key: Option<Vec<u8>>,
    /// Also decode base64 / hex / URL-encoded runs of whole inputs and scan what they hold
    /// (`guard scan --decode`; on in the git hooks, whose inputs are small).
    pub decode: bool,
    /// Fingerprints of stored values (`--fingerprints`): every whole-unit scan also reports
    /// them, in each encoding the set holds.
    pub known: Option<std::sync::Arc<crate::engine::known::KnownMatcher>>,
}

impl Default for FindingOptions {
    fn default() -> Self {
        FindingOptions {
            reveal: Reveal::Redacted,
            id_key: None,
            decode: false,
            known: None,
        }
    }
}

/// Snippet width on each side of the match, within the line.
const SNIPPET_SIDE: usize = 80;

impl Finding {
    /// Places match `m`, whose bytes are in `view`, in `origin`: the one place every source turns
    /// a match into a finding.
    pub fn from_match(
        engine: &Engine,
        origin: &Origin,
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
            line: view.cursor.line,
            column: view.cursor.column(),
            end_line: view.cursor.line + newlines,
            end_column,
            start: m.start,
            end: m.end,
        };
        let origin = match opts.reveal {
            Reveal::Redacted => origin.redacted(secret),
            Reveal::Shown => origin.clone(),
        };
        Finding {
            id: FindingId::compute(opts.id_key.as_deref(), &rule.id, secret),
            rule: rule.id.clone(),
            rule_name: rule.spec.name.clone(),
            confidence: rule.spec.confidence,
            origin,
            location,
            secret: Secret::new(secret.to_vec()),
            snippet: snippet(
                hay,
                rel(m.start)..rel(m.end),
                rel(m.secret_start)..rel(m.secret_end),
                opts.reveal,
            ),
            encoding: None,
            stored: None,
        }
    }

    /// Places a match found in decoded content ([`DecodedMatch`]) at its encoded run, whose
    /// bytes are in `view` (the cursor at the run's start). The snippet masks the whole run.
    pub fn from_decoded(
        engine: &Engine,
        origin: &Origin,
        m: &DecodedMatch,
        view: &View,
        opts: &FindingOptions,
    ) -> Finding {
        let rel = |x: u64| (x - view.base) as usize;
        let rule = engine.rule(m.rule);
        let len = m.run.end - m.run.start;
        let location = Location {
            line: view.cursor.line,
            column: view.cursor.column(),
            end_line: view.cursor.line,
            end_column: view.cursor.column() + len,
            start: m.run.start,
            end: m.run.end,
        };
        let origin = match opts.reveal {
            Reveal::Redacted => origin.redacted(&m.secret),
            Reveal::Shown => origin.clone(),
        };
        let run = rel(m.run.start)..rel(m.run.end);
        Finding {
            id: FindingId::compute(opts.id_key.as_deref(), &rule.id, &m.secret),
            rule: rule.id.clone(),
            rule_name: rule.spec.name.clone(),
            confidence: rule.spec.confidence,
            origin,
            location,
            secret: Secret::new(m.secret.clone()),
            snippet: snippet(view.hay, run.clone(), run, opts.reveal),
            encoding: Some(m.encoding.clone()),
            stored: None,
        }
    }

    /// Places a fingerprint hit of a stored value (`hit`, an entry of `known`), whose bytes are
    /// in `view` (the cursor at its start).
    pub fn from_known(
        origin: &Origin,
        hit: &crate::engine::known::KnownHit,
        known: &crate::engine::known::KnownMatcher,
        view: &View,
        opts: &FindingOptions,
    ) -> Finding {
        let rel = |x: u64| (x - view.base) as usize;
        let e = known.entry(hit.entry);
        let span = rel(hit.start)..rel(hit.end);
        let secret = &view.hay[span.clone()];
        let rule = RuleId(STORED_VALUE_RULE.to_string());
        let location = Location {
            line: view.cursor.line,
            column: view.cursor.column(),
            end_line: view.cursor.line,
            end_column: view.cursor.column() + (hit.end - hit.start),
            start: hit.start,
            end: hit.end,
        };
        let origin = match opts.reveal {
            Reveal::Redacted => origin.redacted(secret),
            Reveal::Shown => origin.clone(),
        };
        let encoding = e.encoding.as_str();
        Finding {
            id: FindingId::compute(opts.id_key.as_deref(), &rule, secret),
            rule,
            rule_name: format!("Stored secret {} (version {})", e.id, e.version),
            confidence: crate::rules::Confidence::High,
            origin,
            location,
            secret: Secret::new(secret.to_vec()),
            snippet: snippet(view.hay, span.clone(), span, opts.reveal),
            encoding: (encoding != "raw").then(|| encoding.to_string()),
            stored: Some(StoredValue {
                id: e.id.clone(),
                version: e.version,
            }),
        }
    }
}

/// The line around a match, clipped. Redacted: the finding's own secret, and every token-like
/// run in the clip (an adjacent key that no rule matched, a second secret), are replaced by their
/// redacted form — decided on the snippet's own bytes, so no re-scan can diverge and leak.
pub fn snippet(
    hay: &[u8],
    matched: std::ops::Range<usize>,
    secret: std::ops::Range<usize>,
    reveal: Reveal,
) -> String {
    let (lo, hi) = line_bounds(hay, matched.start, matched.end);
    let lo = lo.max(matched.start.saturating_sub(SNIPPET_SIDE));
    let hi = hi.min(matched.end + SNIPPET_SIDE).max(lo);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    if reveal == Reveal::Redacted {
        spans.push((secret.start.max(lo), secret.end.min(hi)));
        spans.extend(token_runs(&hay[lo..hi]).map(|(a, b)| (lo + a, lo + b)));
        spans.retain(|(a, b)| a < b);
        spans.sort_unstable();
    }
    let mut out = String::new();
    let mut pos = lo;
    for (s, e) in spans {
        if e <= pos {
            continue;
        }
        let s = s.max(pos);
        out.push_str(&String::from_utf8_lossy(&hay[pos..s]));
        out.push_str(&redact(&hay[s..e]));
        pos = e;
    }
    out.push_str(&String::from_utf8_lossy(&hay[pos..hi]));
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

/// Runs of token characters that look like credentials: 16+ bytes mixing letters and digits, or
/// 32+ bytes of high entropy.
fn token_runs(text: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let is_tok = |b: u8| b.is_ascii_alphanumeric() || b"+/_-.~".contains(&b);
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < text.len() {
            while i < text.len() && !is_tok(text[i]) {
                i += 1;
            }
            let start = i;
            while i < text.len() && is_tok(text[i]) {
                i += 1;
            }
            let run = &text[start..i];
            let mixed =
                run.iter().any(u8::is_ascii_digit) && run.iter().any(u8::is_ascii_alphabetic);
            if (run.len() >= 16 && mixed) || (run.len() >= 32 && entropy::shannon(run) >= 3.5) {
                return Some((start, i));
            }
        }
        None
    })
}

pub fn serialize_secret<S: Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&String::from_utf8_lossy(s.expose_secret()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_depends_on_rule_and_secret_only() {
        let r = RuleId("a.b".into());
        let a = FindingId::compute(None, &r, b"s3cret-value");
        assert_eq!(a, FindingId::compute(None, &r, b"s3cret-value"));
        assert_ne!(a, FindingId::compute(None, &r, b"s3cret-valuf"));
        assert_ne!(
            a,
            FindingId::compute(None, &RuleId("a.c".into()), b"s3cret-value")
        );
        assert_ne!(
            a,
            FindingId::compute(Some(b"other key"), &r, b"s3cret-value")
        );
        assert_eq!(a.0.len(), 32);
    }

    #[test]
    fn debug_and_redaction_hide_the_value() {
        let s = Secret::new(b"ghp_topsecretvalue1234".to_vec());
        assert!(!format!("{s:?}").contains("topsecret"));
        let r = redact(s.expose_secret());
        assert!(!r.contains("topsecret") && r.starts_with("ghp_"), "{r}");
        assert!(!redact(b"short-secret").contains("short"));
        assert_eq!(
            redact(b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "…[REDACTED 40 bytes]"
        );
        assert_eq!(
            redact(b"xoxb-1234567890-abcdefghij"),
            "xoxb-…[REDACTED 26 bytes]"
        );
    }

    #[test]
    fn snippets_mask_the_secret_and_adjacent_tokens() {
        let line = b"aws_access_key_id=AKIAZ7FAKEKEY0000000 aws_secret=q8Zr3vT1mW0pL5xN7cB2dF9gH4jK6sQ1uY3eR8tA id=42\n"; // guard:allow
        let at = 18..38;
        let s = snippet(line, at.clone(), at, Reveal::Redacted);
        assert!(!s.contains("AKIAZ7") && !s.contains("q8Zr3v"), "{s}");
        assert!(s.contains("aws_secret=") && s.contains("id=42"), "{s}");
        let shown = snippet(line, 18..38, 18..38, Reveal::Shown);
        assert!(shown.contains("AKIAZ7FAKEKEY0000000"));
        // Even a span no rule would find again is masked: it is the finding's own.
        let s = snippet(b"x=abc\n", 2..5, 2..5, Reveal::Redacted);
        assert!(!s.contains("abc"), "{s}");
    }

    #[test]
    fn origins_redact_a_secret_in_their_path() {
        let o = Origin::File {
            path: "keys/ghp_abcdefghijklmnop1234.txt".into(),
        };
        let r = o.redacted(b"ghp_abcdefghijklmnop1234");
        assert!(!r.path().contains("abcdefghij"), "{}", r.path());
        assert_eq!(o.redacted(b"other-secret"), o);
    }
}
