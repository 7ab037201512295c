//! The exact stage: a rule's regex on a span, its filters, and overlaps across rules.
//!
//! Every path (block, stream, parallel, both backends) ends here, so the filters and the overlap
//! rule are written once. Filters run on the confirmed secret: entropy floor, the rule's `allow`
//! regexes, its offline validator, then the user's allowlist (stop-words, regexes, and the inline
//! `guard:allow` marker on the match's line, looked for within [`CONTEXT`](super::CONTEXT) bytes).

/// What every redaction guard writes starts with this; a "secret" containing it is guard's
/// own output, never a finding.
pub const REDACTION_MARK: &[u8] = b"REDACTED:";

use std::ops::Range;

use regex_automata::{meta, Input, PatternID};

use super::{entropy, validate, CompiledRule, Engine, Match, RuleIndex, Scratch};
use crate::pattern::byte_regex;
use crate::rules::Rule;

/// A rule's confirm regex, the index of its secret group, and its `allow` regexes.
pub(super) struct RuleRegex {
    regex: meta::Regex,
    secret_group: usize,
    allow: Vec<meta::Regex>,
}

pub(super) fn compile_rule(rule: &Rule) -> Result<RuleRegex, String> {
    let regex = byte_regex(&rule.spec.pattern)?;
    let secret_group = regex
        .group_info()
        .to_index(PatternID::ZERO, "secret")
        .unwrap_or(if regex.captures_len() > 1 { 1 } else { 0 });
    let allow = rule
        .spec
        .allow
        .iter()
        .map(|a| byte_regex(a).map_err(|e| format!("allow regex {a:?}: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(RuleRegex {
        regex,
        secret_group,
        allow,
    })
}

impl Engine {
    fn regex(&self, r: usize) -> &RuleRegex {
        let cr: &CompiledRule = &self.compiled[r];
        cr.regex.get_or_init(|| {
            compile_rule(self.rule_at(r))
                .expect("builtin rules compile (proven by `guard rules check` in the tests)")
        })
    }

    /// Leftmost-first search of rule `r` over `hay[span]`, pushing filtered matches.
    ///
    /// `hay` starts at absolute offset `base`; look-around sees bytes outside `span`. Matches
    /// starting at or after `accept_before` are not final yet (stream mode): the search stops
    /// there. Returns the end of the last match found (or `span.start`): where the next search of
    /// this rule resumes. It never skips ahead on "no match", so callers decide what they know.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn confirm(
        &self,
        scratch: &mut Scratch,
        r: usize,
        hay: &[u8],
        base: u64,
        span: Range<usize>,
        accept_before: usize,
        out: &mut Vec<Match>,
    ) -> usize {
        let RuleRegex {
            regex,
            secret_group,
            ..
        } = self.regex(r);
        let (cache, caps) = &mut **scratch.caches[r]
            .get_or_insert_with(|| Box::new((regex.create_cache(), regex.create_captures())));
        let mut pos = span.start;
        while pos < span.end {
            let input = Input::new(hay).span(pos..span.end);
            regex.search_captures_with(cache, &input, caps);
            let Some(m) = caps.get_match() else {
                return pos;
            };
            if m.start() >= accept_before {
                return pos;
            }
            pos = m.end().max(m.start() + 1);
            let sec = caps.get_group(*secret_group).unwrap_or(m.span());
            if self.keep(r, hay, m.start(), m.end(), sec.start, sec.end) {
                out.push(Match {
                    start: base + m.start() as u64,
                    end: base + m.end() as u64,
                    rule: RuleIndex::new(r),
                    secret_start: base + sec.start as u64,
                    secret_end: base + sec.end as u64,
                });
            }
        }
        pos
    }

    fn keep(&self, r: usize, hay: &[u8], start: usize, end: usize, s0: usize, s1: usize) -> bool {
        let secret = &hay[s0..s1];
        // Empty, or guard's own redaction marker (so redacted output re-scans clean).
        if secret.is_empty() || memchr::memmem::find(secret, REDACTION_MARK).is_some() {
            return false;
        }
        let spec = &self.rule_at(r).spec;
        if let Some(min) = spec.min_entropy {
            if entropy::shannon(secret) < min {
                return false;
            }
        }
        if self.regex(r).allow.iter().any(|a| a.is_match(secret)) {
            return false;
        }
        if let Some(v) = spec.validate {
            if !validate::validate(v, secret) {
                return false;
            }
        }
        !(self.allow.allows_secret(secret) || self.allow.allows_line(hay, start, end))
    }

    /// Where a provider rule and a looser rule (say the generic assignment rule) match overlapping
    /// bytes, only the most confident match is kept; equally confident overlaps are all kept.
    ///
    /// `pending` is sorted by start; only entries starting before `known_before` are compared
    /// (every match starting earlier is known). A dropped entry stays dropped: the decision for a
    /// match is final once every match starting before its end is known.
    pub(super) fn resolve_overlaps(&self, pending: &mut [(Match, bool)], known_before: u64) {
        if self.keep_overlaps {
            return;
        }
        let known = pending.partition_point(|(m, _)| m.start < known_before);
        for i in 0..known {
            for j in i + 1..known {
                if pending[j].0.start >= pending[i].0.end {
                    break;
                }
                let ci = self.rule(pending[i].0.rule).spec.confidence;
                let cj = self.rule(pending[j].0.rule).spec.confidence;
                match ci.cmp(&cj) {
                    std::cmp::Ordering::Greater => pending[j].1 = true,
                    std::cmp::Ordering::Less => pending[i].1 = true,
                    std::cmp::Ordering::Equal => {}
                }
            }
        }
    }
}
