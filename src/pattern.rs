//! Patterns: how every regex in guard is compiled and what is known about it before any scan.
//!
//! A leaf module (no other guard module is imported), so `rules` can analyse patterns without
//! depending on the engine that later runs them. Every stage compiles byte regexes with Unicode
//! off: measured on 60 secret patterns, a Unicode-aware `\b` dropped the meta regex to 1 MB/s,
//! byte mode ran 366 MB/s on one thread.
//!
//! [`analyze`] derives what the engine relies on, once, at load time:
//! - `max_len`: the longest match (the confirm window, and the most stream mode holds back);
//! - `spans_newline`: whether a match can contain `\n` — a rule that cannot is *line-local*, and
//!   stream mode settles it at every newline, so a complete line is reported (or written) at once;
//! - `start_literals` (multi-line rules only): literals every match starts with, when finitely
//!   many; stream mode uses them to settle a multi-line rule wherever none of them occurs;
//! - a bound on work: nested counted repetitions whose maxima multiply past
//!   [`MAX_NESTED_REPEAT`] are refused (`(a{1,64}){1,64}b` took minutes on 3 MB with the pure
//!   regex backend); [`byte_regex`] refuses automata larger than [`NFA_SIZE_LIMIT`].

use regex_automata::{meta, util::syntax};
use regex_syntax::hir::{self, Hir, HirKind};

/// Longest match any rule may produce; bounds hold-back in stream mode and the confirm window.
pub const MAX_RULE_LEN: usize = 16 * 1024;

/// Largest product of the maxima of nested counted repetitions (`(x{1,a}){1,b}`: a·b).
/// The builtin PGP rule needs 1,200; the pathological `(a{1,64}){1,64}` is 4,096.
pub const MAX_NESTED_REPEAT: u64 = 2_000;

/// Compiled NFA size above which a pattern is refused (the PGP rule, the largest builtin, is
/// well under it).
pub const NFA_SIZE_LIMIT: usize = 4 << 20;

/// Lazy-DFA cache per rule and thread. Confirm windows are a few hundred bytes, so a small cache
/// holds every state they need; the 2 MiB default, times rules and threads, was most of the
/// peak RSS of a 1 GiB scan (84 MiB).
const HYBRID_CACHE: usize = 256 * 1024;

/// At most this many start literals are kept per pattern; more means "no useful literals".
const MAX_START_LITERALS: usize = 64;

/// Builds a byte regex the way every stage of guard compiles patterns (Unicode off).
pub fn byte_regex(pattern: &str) -> Result<meta::Regex, String> {
    meta::Regex::builder()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .configure(
            meta::Config::new()
                .nfa_size_limit(Some(NFA_SIZE_LIMIT))
                .utf8_empty(false)
                .hybrid_cache_capacity(HYBRID_CACHE),
        )
        .build(pattern)
        .map_err(|e| first_line(&e.to_string()))
}

/// What the engine needs to know about a rule's pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternInfo {
    /// Longest possible match in bytes (≤ [`MAX_RULE_LEN`]).
    pub max_len: usize,
    /// A match can contain a `\n` byte.
    pub spans_newline: bool,
    /// For a rule whose matches can span a newline: every match starts with one of these
    /// (non-empty) literals; `None` when unknown, and for every line-local rule (nothing uses
    /// them there, and the builtin catalogue's line-local rules have 15,000 of them).
    pub start_literals: Option<Vec<Vec<u8>>>,
}

/// Parses `pattern` the way the confirm stage compiles it and checks the bounds the engine relies
/// on; the error says why a pattern is refused.
pub fn analyze(pattern: &str) -> Result<PatternInfo, String> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .map_err(|e| format!("pattern does not parse: {}", first_line(&e.to_string())))?;
    let props = hir.properties();
    if props.minimum_len().unwrap_or(0) == 0 {
        return Err("pattern can match the empty string".into());
    }
    if props.look_set().iter().any(|l| {
        !matches!(
            l,
            hir::Look::WordAscii
                | hir::Look::WordAsciiNegate
                | hir::Look::StartLF
                | hir::Look::EndLF
        )
    }) {
        return Err(
            "pattern uses an assertion Hyperscan cannot share (use \\b, or (?m)^ and (?m)$)".into(),
        );
    }
    let max_len = match props.maximum_len() {
        None => {
            return Err(
                "pattern has an unbounded repetition (*, + or {n,}); bound it, e.g. {1,64}".into(),
            )
        }
        Some(n) if n > MAX_RULE_LEN => {
            return Err(format!(
                "pattern can match {n} bytes; the limit is {MAX_RULE_LEN}"
            ))
        }
        Some(n) => n,
    };
    let nested = nested_repeat(&hir);
    if nested > MAX_NESTED_REPEAT {
        return Err(format!(
            "nested counted repetitions multiply to {nested} (limit {MAX_NESTED_REPEAT}); \
             such a pattern can take minutes per megabyte — flatten the nesting"
        ));
    }
    // The automaton's size is bounded where it is built (`byte_regex`, [`NFA_SIZE_LIMIT`]): the
    // engine compiles user rules up front, builtin rules on first use (compiling all 150 here
    // cost 60 ms of start-up).
    let spans_newline = can_match_newline(&hir);
    Ok(PatternInfo {
        max_len,
        spans_newline,
        start_literals: spans_newline.then(|| start_literals(&hir)).flatten(),
    })
}

/// Largest product of repetition maxima along a chain of nested repetitions (`(x{1,a}){1,b}`:
/// a·b); 1 when no counted repetition contains another.
fn nested_repeat(h: &Hir) -> u64 {
    match h.kind() {
        HirKind::Repetition(r) => {
            let max = r.max.unwrap_or(u32::MAX) as u64;
            let inner = repeat_chain(&r.sub);
            let here = if max > 1 && inner > 1 {
                max.saturating_mul(inner)
            } else {
                1
            };
            here.max(nested_repeat(&r.sub))
        }
        HirKind::Capture(c) => nested_repeat(&c.sub),
        HirKind::Concat(v) | HirKind::Alternation(v) => {
            v.iter().map(nested_repeat).max().unwrap_or(1)
        }
        _ => 1,
    }
}

/// Product of repetition maxima along the deepest chain of repetitions in `h` (1 if none).
fn repeat_chain(h: &Hir) -> u64 {
    match h.kind() {
        HirKind::Repetition(r) => {
            (r.max.unwrap_or(u32::MAX).max(1) as u64).saturating_mul(repeat_chain(&r.sub))
        }
        HirKind::Capture(c) => repeat_chain(&c.sub),
        HirKind::Concat(v) | HirKind::Alternation(v) => {
            v.iter().map(repeat_chain).max().unwrap_or(1)
        }
        _ => 1,
    }
}

/// Whether any literal or class in the pattern can match `\n` (conservative: a branch that can
/// never be part of a match still counts).
fn can_match_newline(h: &Hir) -> bool {
    match h.kind() {
        HirKind::Literal(l) => l.0.contains(&b'\n'),
        HirKind::Class(hir::Class::Bytes(c)) => c
            .ranges()
            .iter()
            .any(|r| r.start() <= b'\n' && b'\n' <= r.end()),
        HirKind::Class(hir::Class::Unicode(c)) => c
            .ranges()
            .iter()
            .any(|r| r.start() <= '\n' && '\n' <= r.end()),
        HirKind::Repetition(r) => r.max != Some(0) && can_match_newline(&r.sub),
        HirKind::Capture(c) => can_match_newline(&c.sub),
        HirKind::Concat(v) | HirKind::Alternation(v) => v.iter().any(can_match_newline),
        HirKind::Empty | HirKind::Look(_) => false,
    }
}

fn start_literals(h: &Hir) -> Option<Vec<Vec<u8>>> {
    let seq = hir::literal::Extractor::new()
        .kind(hir::literal::ExtractKind::Prefix)
        .limit_total(MAX_START_LITERALS)
        .extract(h);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.len() > MAX_START_LITERALS || lits.iter().any(|l| l.is_empty()) {
        return None;
    }
    Some(lits.iter().map(|l| l.as_bytes().to_vec()).collect())
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_local_and_literals() {
        let a = analyze(r"\bghp_[A-Za-z0-9]{36}\b").expect("valid");
        assert_eq!(a.max_len, 40);
        assert!(!a.spans_newline);
        assert_eq!(a.start_literals, None, "kept for multi-line rules only");
        let pem =
            analyze(r"-----BEGIN KEY-----[A-Za-z0-9\s]{1,64}-----END KEY-----").expect("valid");
        assert!(pem.spans_newline);
        assert_eq!(
            pem.start_literals,
            Some(vec![b"-----BEGIN KEY-----".to_vec()])
        );
        assert!(analyze(r"key[ \t]{0,4}=[^\s]{8,16}")
            .map(|a| !a.spans_newline)
            .expect("valid"));
        assert!(analyze(r"key\s{0,4}=x{8}").expect("valid").spans_newline);
        assert!(analyze(r"[a-z]{4,8}\s")
            .expect("valid")
            .start_literals
            .is_none());
    }

    #[test]
    fn refuses_patterns_that_cost_too_much() {
        let e = analyze(r"(a{1,64}){1,64}b").unwrap_err();
        assert!(e.contains("nested") && e.contains("4096"), "{e}");
        // A large but flat repetition, and a small nesting, are fine.
        analyze(r"-----BEGIN-----[A-Za-z0-9+/=\s]{64,12000}-----END-----").expect("flat");
        analyze(r"(?:[a-z]{2,16}: [^\r\n]{1,200}){0,6}x").expect("1200");
        assert!(analyze("x[a-z]+").unwrap_err().contains("unbounded"));
        assert!(analyze("x?").unwrap_err().contains("empty"));
    }
}
