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

/// Where a finding is: a path (or `-` for stdin) and 1-based line/column, plus byte offsets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Location {
    pub path: String,
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
    pub location: Location,
    pub secret: Secret,
    /// The line around the match with every secret on it redacted (or shown, if asked).
    pub snippet: String,
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
}
