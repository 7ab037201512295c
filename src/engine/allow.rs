//! Allowlists applied to a confirmed match: stop-words and regexes on the secret value, and the
//! inline `guard:allow` marker on the match's line.
//!
//! The inline marker is looked for within [`CONTEXT`] bytes on each side of the match, never
//! further: stream mode keeps exactly that much context around a pending match, so a file and
//! the same bytes through stdin decide identically.

use regex_automata::meta;

/// Bytes of line context kept around every match (inline allow marker, snippets).
pub const CONTEXT: usize = 256;

/// The inline marker that silences findings on its line.
pub const INLINE_MARKER: &[u8] = b"guard:allow";

#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    /// Lowercased substrings; a secret containing one is a placeholder, not a secret.
    stopwords: Vec<Vec<u8>>,
    /// Patterns that, matching anywhere in a secret, allow it.
    regexes: Vec<meta::Regex>,
    /// Whether `guard:allow` on the line silences a finding (on by default).
    pub inline: bool,
}

impl Allowlist {
    pub fn new() -> Allowlist {
        Allowlist {
            inline: true,
            ..Default::default()
        }
    }

    pub fn add_stopword(&mut self, w: &str) {
        if !w.is_empty() {
            self.stopwords.push(w.to_ascii_lowercase().into_bytes());
        }
    }

    pub fn add_regex(&mut self, pattern: &str) -> Result<(), String> {
        let re =
            super::byte_regex(pattern).map_err(|e| format!("allowlist regex {pattern:?}: {e}"))?;
        self.regexes.push(re);
        Ok(())
    }

    /// True when the secret value is allowed by a stop-word or regex.
    pub fn allows_secret(&self, secret: &[u8]) -> bool {
        if !self.stopwords.is_empty() {
            let lower = secret.to_ascii_lowercase();
            if self
                .stopwords
                .iter()
                .any(|w| memchr::memmem::find(&lower, w).is_some())
            {
                return true;
            }
        }
        self.regexes.iter().any(|r| r.is_match(secret))
    }

    /// True when the line around `hay[start..end]` carries the inline marker.
    pub fn allows_line(&self, hay: &[u8], start: usize, end: usize) -> bool {
        if !self.inline {
            return false;
        }
        let (lo, hi) = line_bounds(hay, start, end);
        memchr::memmem::find(&hay[lo..hi], INLINE_MARKER).is_some()
    }
}

/// The line containing `hay[start..end]`, clipped to [`CONTEXT`] bytes on each side.
pub fn line_bounds(hay: &[u8], start: usize, end: usize) -> (usize, usize) {
    let lo_limit = start.saturating_sub(CONTEXT);
    let lo = memchr::memrchr(b'\n', &hay[lo_limit..start])
        .map(|p| lo_limit + p + 1)
        .unwrap_or(lo_limit);
    let hi_limit = (end + CONTEXT).min(hay.len());
    let hi = memchr::memchr(b'\n', &hay[end..hi_limit])
        .map(|p| end + p)
        .unwrap_or(hi_limit);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopwords_and_regexes() {
        let mut a = Allowlist::new();
        a.add_stopword("EXAMPLE");
        a.add_regex("^test_[a-z]{4}$").expect("valid regex");
        assert!(a.allows_secret(b"AKIAEXAMPLEKEY"));
        assert!(a.allows_secret(b"test_abcd"));
        assert!(!a.allows_secret(b"prod_abcd"));
        assert!(a.add_regex("(").is_err());
    }

    #[test]
    fn inline_marker_on_same_line_only() {
        let a = Allowlist::new();
        let hay = b"a = SECRET # guard:allow\nb = SECRET\n";
        assert!(a.allows_line(hay, 4, 10));
        assert!(!a.allows_line(hay, 29, 35));
        assert_eq!(line_bounds(hay, 4, 10), (0, 24));
    }
}
