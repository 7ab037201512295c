//! The engine: bytes in, matches out. No I/O, no threads.
//!
//! Stages: **prefilter** (Hyperscan over all rules at once, reporting match ends) → **confirm**
//! (regex-automata, byte mode with Unicode off, on the window `[end - max_len, end]` around the
//! hits of each rule, with captures) → **filters** (entropy floor, offline validator, allowlists).
//!
//! The semantics are defined once, independent of the backend: the findings of a rule are the
//! leftmost-first, non-overlapping matches of its regex over the whole input (what
//! `find_iter` would give), then filtered. The Hyperscan backend reaches the same set faster: every
//! such match ends at an offset Hyperscan reports and starts at most `max_len` before it, so
//! searching the merged windows `[end - max_len, end]` in order, resuming each at the end of the
//! previous match, visits exactly the matches a full search would. The pure regex-automata
//! backend (feature `hyperscan` off, or [`Backend::RegexOnly`]) searches the whole input for each
//! rule whose keywords occur in it. Both run in the test-suite and must agree.
//!
//! Stream mode ([`StreamScanner`]) gives the same matches for any chunking of the input by holding
//! back bytes only while a match could still be completing: a match starting at `s` is final once
//! `s + max_len + CONTEXT` bytes have been seen. Measured on Byte-mode regexes (DESIGN.md §1): a
//! Unicode-aware `\b` dropped a 60-pattern meta regex to 1 MB/s; byte mode ran 366 MB/s.

pub mod allow;
pub mod entropy;
pub mod lines;
#[cfg(feature = "hyperscan")]
pub mod prefilter;
pub mod validate;

use std::ops::Range;

use regex_automata::{meta, util::captures::Captures, util::syntax, Input, PatternID};

pub use allow::{Allowlist, CONTEXT};
pub use lines::LineCursor;

use crate::rules::{Rule, Ruleset};

/// Lazy-DFA cache per rule and thread. Confirm windows are a few hundred bytes, so a small cache
/// holds every state they need; the 2 MiB default, times rules and threads, was most of the
/// peak RSS of a 1 GiB scan (84 MiB).
const HYBRID_CACHE: usize = 256 * 1024;

/// Builds a byte regex the way every stage of guard compiles patterns (Unicode off).
pub fn byte_regex(pattern: &str) -> Result<meta::Regex, String> {
    meta::Regex::builder()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .configure(
            meta::Config::new()
                .utf8_empty(false)
                .hybrid_cache_capacity(HYBRID_CACHE),
        )
        .build(pattern)
        .map_err(|e| e.to_string())
}

/// A rule's confirm regex, the index of its secret group, and its `allow` regexes.
struct RuleRegex {
    regex: meta::Regex,
    secret_group: usize,
    allow: Vec<meta::Regex>,
}

fn compile_rule(rule: &Rule) -> Result<RuleRegex, String> {
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

impl CompiledRule {
    fn regex(&self) -> &RuleRegex {
        self.regex.get_or_init(|| {
            compile_rule(&self.rule)
                .expect("builtin rules compile (proven by `guard rules check` in the tests)")
        })
    }
}

/// Which prefilter runs in front of the confirm stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// Hyperscan when compiled in (the default), else regex-automata alone.
    #[default]
    Auto,
    /// regex-automata alone: no C++ library involved.
    RegexOnly,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("rule {rule}: pattern does not compile: {message}")]
    Regex { rule: String, message: String },
    #[error("hyperscan: {0}")]
    Hyperscan(String),
}

/// One confirmed, filtered match. Offsets are absolute in the input (stream mode included).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Match {
    pub start: u64,
    pub end: u64,
    /// Index of the rule in [`Engine::rules`].
    pub rule: usize,
    /// The secret, `secret_start..secret_end`: the `secret` capture group, else group 1, else
    /// the whole match.
    pub secret_start: u64,
    pub secret_end: u64,
}

struct CompiledRule {
    rule: Rule,
    /// Compiled on first use: a scan of a small file confirms a handful of rules, and building
    /// all 150 regexes up front cost ~50 ms of start-up (measured with `guard scan` of a 10 KB file).
    regex: std::sync::OnceLock<RuleRegex>,
    /// Confirmed by a full search (no Hyperscan, or Hyperscan rejected the pattern).
    full_search: bool,
}

pub struct EngineBuilder {
    rules: Ruleset,
    backend: Backend,
    allow: Allowlist,
    use_cache: bool,
}

impl EngineBuilder {
    pub fn backend(mut self, b: Backend) -> Self {
        self.backend = b;
        self
    }
    pub fn allowlist(mut self, a: Allowlist) -> Self {
        self.allow = a;
        self
    }
    /// Whether the compiled Hyperscan database may be read from / written to the disk cache.
    pub fn cache(mut self, on: bool) -> Self {
        self.use_cache = on;
        self
    }

    pub fn build(self) -> Result<Engine, EngineError> {
        let mut rules = Vec::with_capacity(self.rules.len());
        for r in self.rules.rules() {
            let cr = CompiledRule {
                rule: r.clone(),
                regex: std::sync::OnceLock::new(),
                full_search: true,
            };
            // Builtin rules are proven by the test-suite; anything else is compiled now, so a bad
            // user rule is an error at start-up rather than at its first hit.
            if !r.builtin {
                let built = compile_rule(r).map_err(|message| EngineError::Regex {
                    rule: r.id.0.clone(),
                    message,
                })?;
                let _ = cr.regex.set(built);
            }
            rules.push(cr);
        }
        let mut kw = Vec::new();
        let mut kw_rule = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            for k in &r.rule.spec.keywords {
                kw.push(k.as_bytes().to_vec());
                kw_rule.push(i);
            }
        }
        let keywords = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&kw)
            .map_err(|e| EngineError::Regex {
                rule: "keywords".into(),
                message: e.to_string(),
            })?;
        #[cfg_attr(not(feature = "hyperscan"), allow(unused_mut))]
        let mut engine = Engine {
            rules,
            keywords,
            kw_rule,
            allow: self.allow,
            warnings: Vec::new(),
            #[cfg(feature = "hyperscan")]
            hs: None,
            #[cfg(feature = "hyperscan")]
            hs_stream: std::sync::OnceLock::new(),
            #[cfg(feature = "hyperscan")]
            use_cache: self.use_cache,
        };
        #[cfg(feature = "hyperscan")]
        if self.backend == Backend::Auto && !engine.rules.is_empty() {
            let pats: Vec<&str> = engine
                .rules
                .iter()
                .map(|r| r.rule.spec.pattern.as_str())
                .collect();
            let c =
                prefilter::build::<hyperscan::Block>(&pats, prefilter::Mode::Block, self.use_cache)
                    .map_err(EngineError::Hyperscan)?;
            for (i, why) in &c.rejected {
                engine.warnings.push(format!(
                    "rule {} is not in the Hyperscan database ({why}); it is still enforced by a full regex search",
                    engine.rules[*i].rule.id
                ));
            }
            for (r, &ok) in engine.rules.iter_mut().zip(&c.in_db) {
                r.full_search = !ok;
            }
            engine.hs = c.db;
        }
        #[cfg(not(feature = "hyperscan"))]
        let _ = (self.backend, self.use_cache);
        Ok(engine)
    }
}

/// Immutable, `Send + Sync`; build once, share across threads, give each thread a [`Scratch`].
pub struct Engine {
    rules: Vec<CompiledRule>,
    keywords: aho_corasick::AhoCorasick,
    kw_rule: Vec<usize>,
    allow: Allowlist,
    warnings: Vec<String>,
    #[cfg(feature = "hyperscan")]
    hs: Option<hyperscan::BlockDatabase>,
    #[cfg(feature = "hyperscan")]
    hs_stream: std::sync::OnceLock<Result<hyperscan::StreamingDatabase, String>>,
    #[cfg(feature = "hyperscan")]
    use_cache: bool,
}

/// Per-thread mutable state: regex caches, Hyperscan scratch, window bookkeeping.
pub struct Scratch {
    /// Per rule, created with the rule's regex on first use.
    caches: Vec<Option<(meta::Cache, Captures)>>,
    /// Per rule: candidate windows `(lo, hi)` collected from prefilter hits.
    windows: Vec<Vec<(u64, u64)>>,
    kw_seen: Vec<bool>,
    #[cfg(feature = "hyperscan")]
    hs: Option<hyperscan::Scratch>,
}

impl Engine {
    pub fn builder(rules: Ruleset) -> EngineBuilder {
        EngineBuilder {
            rules,
            backend: Backend::Auto,
            allow: Allowlist::new(),
            use_cache: true,
        }
    }

    pub fn rules(&self) -> impl ExactSizeIterator<Item = &Rule> {
        self.rules.iter().map(|r| &r.rule)
    }

    pub fn rule(&self, i: usize) -> &Rule {
        &self.rules[i].rule
    }

    /// Non-fatal problems found while building (rules Hyperscan could not take).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Which prefilter is active.
    pub fn backend_name(&self) -> &'static str {
        #[cfg(feature = "hyperscan")]
        if self.hs.is_some() {
            return "hyperscan";
        }
        "regex-automata"
    }

    pub fn scratch(&self) -> Scratch {
        Scratch {
            caches: (0..self.rules.len()).map(|_| None).collect(),
            windows: vec![Vec::new(); self.rules.len()],
            kw_seen: vec![false; self.rules.len()],
            #[cfg(feature = "hyperscan")]
            hs: self.hs.as_ref().map(|db| {
                db.alloc_scratch()
                    .expect("hyperscan scratch allocation should succeed")
            }),
        }
    }

    /// Scans one complete input (a file, a blob). Matches are sorted by position.
    pub fn scan_block(&self, scratch: &mut Scratch, hay: &[u8]) -> Vec<Match> {
        let mut out = Vec::new();
        #[cfg(feature = "hyperscan")]
        if let (Some(db), Some(hs)) = (&self.hs, &scratch.hs) {
            // Block-mode Hyperscan takes a u32 length; larger inputs go through stream mode.
            if hay.len() < u32::MAX as usize {
                self.block_hits(db, hs, &mut scratch.windows, hay, 0, 0, u64::MAX);
            } else {
                let mut s = StreamScanner::new(self);
                s.feed(hay, &mut |m, _| out.push(m.clone()));
                s.finish(&mut |m, _| out.push(m.clone()));
                out.sort();
                return out;
            }
        }
        self.mark_keywords(scratch, hay);
        for r in 0..self.rules.len() {
            if self.rules[r].full_search {
                if scratch.kw_seen[r] || self.rules[r].rule.spec.keywords.is_empty() {
                    self.confirm(scratch, r, hay, 0, 0..hay.len(), usize::MAX, &mut out);
                }
            } else {
                let mut windows = std::mem::take(&mut scratch.windows[r]);
                merge_windows(&mut windows);
                let mut next = 0usize;
                for &(lo, hi) in &windows {
                    let from = (lo as usize).max(next);
                    if from < hi as usize {
                        next = self.confirm(
                            scratch,
                            r,
                            hay,
                            0,
                            from..hi as usize,
                            usize::MAX,
                            &mut out,
                        );
                    }
                }
                windows.clear();
                scratch.windows[r] = windows;
            }
        }
        out.sort();
        out
    }

    /// Block-mode prefilter over `hay` (which starts at absolute offset `base`), returning the
    /// candidate windows `(rule, lo, hi)` of hits whose end lies in `(ends_after, ends_upto]`.
    ///
    /// This is the piece of work a caller may spread over threads for one large input: `hay` must
    /// start at least [`Engine::max_holdback`] bytes before `ends_after` (or at the input start)
    /// and extend a few bytes past `ends_upto` (or to the input end), and the windows go to
    /// [`StreamScanner::feed_windows`] in order. Empty without Hyperscan.
    pub fn prefilter_windows(
        &self,
        scratch: &mut Scratch,
        hay: &[u8],
        base: u64,
        ends_after: u64,
        ends_upto: u64,
    ) -> Vec<(usize, u64, u64)> {
        #[cfg_attr(not(feature = "hyperscan"), allow(unused_mut))]
        let mut out = Vec::new();
        #[cfg(feature = "hyperscan")]
        if let (Some(db), Some(hs)) = (&self.hs, &scratch.hs) {
            let windows = &mut scratch.windows;
            self.block_hits(db, hs, windows, hay, base, ends_after, ends_upto);
            for (r, w) in windows.iter_mut().enumerate() {
                out.extend(w.drain(..).map(|(lo, hi)| (r, lo, hi)));
            }
        }
        #[cfg(not(feature = "hyperscan"))]
        let _ = (scratch, hay, base, ends_after, ends_upto);
        out
    }

    /// Runs the block database over `hay` (at absolute offset `base`) and adds the windows of the
    /// hits ending in `(ends_after, ends_upto]` to the per-rule lists.
    #[cfg(feature = "hyperscan")]
    #[allow(clippy::too_many_arguments)]
    fn block_hits(
        &self,
        db: &hyperscan::BlockDatabase,
        hs: &hyperscan::Scratch,
        windows: &mut [Vec<(u64, u64)>],
        hay: &[u8],
        base: u64,
        ends_after: u64,
        ends_upto: u64,
    ) {
        let _ = db.scan(
            hay,
            hs,
            hit_recorder(&self.rules, windows, base, ends_after, ends_upto),
        );
    }

    /// Whether [`Engine::prefilter_windows`] does anything (Hyperscan is active).
    pub fn has_block_prefilter(&self) -> bool {
        #[cfg(feature = "hyperscan")]
        return self.hs.is_some();
        #[cfg(not(feature = "hyperscan"))]
        false
    }

    /// Per rule: (merged prefilter windows, bytes in them) for `hay` — a rule-tuning aid.
    pub fn window_stats(&self, scratch: &mut Scratch, hay: &[u8]) -> Vec<(u64, u64)> {
        let mut out = vec![(0, 0); self.rules.len()];
        #[cfg(feature = "hyperscan")]
        if let (Some(db), Some(hs)) = (&self.hs, &scratch.hs) {
            self.block_hits(db, hs, &mut scratch.windows, hay, 0, 0, u64::MAX);
        }
        #[cfg(not(feature = "hyperscan"))]
        let _ = hay;
        for (r, w) in scratch.windows.iter_mut().enumerate() {
            merge_windows(w);
            out[r] = (w.len() as u64, w.iter().map(|(a, b)| b - a).sum());
            w.clear();
        }
        out
    }

    fn mark_keywords(&self, scratch: &mut Scratch, hay: &[u8]) {
        scratch.kw_seen.iter_mut().for_each(|s| *s = false);
        if !self
            .rules
            .iter()
            .any(|r| r.full_search && !r.rule.spec.keywords.is_empty())
        {
            return;
        }
        let mut left = self
            .rules
            .iter()
            .filter(|r| r.full_search && !r.rule.spec.keywords.is_empty())
            .count();
        for m in self.keywords.find_overlapping_iter(hay) {
            let r = self.kw_rule[m.pattern().as_usize()];
            if !scratch.kw_seen[r] {
                scratch.kw_seen[r] = true;
                if self.rules[r].full_search {
                    left -= 1;
                    if left == 0 {
                        break;
                    }
                }
            }
        }
    }

    /// Leftmost-first search of rule `r` over `hay[span]`, pushing filtered matches.
    ///
    /// `hay` starts at absolute offset `base`; look-around sees bytes outside `span`. Matches
    /// starting at or after `accept_before` are not final yet (stream mode): the search stops
    /// there. Returns the end of the last match found (or `span.start`): where the next search of
    /// this rule resumes. It never skips ahead on "no match", so callers decide what they know.
    #[allow(clippy::too_many_arguments)]
    fn confirm(
        &self,
        scratch: &mut Scratch,
        r: usize,
        hay: &[u8],
        base: u64,
        span: Range<usize>,
        accept_before: usize,
        out: &mut Vec<Match>,
    ) -> usize {
        let cr = &self.rules[r];
        let RuleRegex {
            regex,
            secret_group,
            ..
        } = cr.regex();
        let (cache, caps) = scratch.caches[r]
            .get_or_insert_with(|| (regex.create_cache(), regex.create_captures()));
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
            if self.keep(cr, hay, m.start(), m.end(), sec.start, sec.end) {
                out.push(Match {
                    start: base + m.start() as u64,
                    end: base + m.end() as u64,
                    rule: r,
                    secret_start: base + sec.start as u64,
                    secret_end: base + sec.end as u64,
                });
            }
        }
        pos
    }

    fn keep(
        &self,
        cr: &CompiledRule,
        hay: &[u8],
        start: usize,
        end: usize,
        s0: usize,
        s1: usize,
    ) -> bool {
        let secret = &hay[s0..s1];
        if secret.is_empty() {
            return false;
        }
        if let Some(min) = cr.rule.spec.min_entropy {
            if entropy::shannon(secret) < min {
                return false;
            }
        }
        if cr.regex().allow.iter().any(|a| a.is_match(secret)) {
            return false;
        }
        if let Some(v) = cr.rule.spec.validate {
            if !validate::validate(v, secret) {
                return false;
            }
        }
        !(self.allow.allows_secret(secret) || self.allow.allows_line(hay, start, end))
    }

    /// Longest rule window plus context: the most stream mode ever holds back.
    pub fn max_holdback(&self) -> usize {
        self.rules.iter().map(|r| r.rule.max_len).max().unwrap_or(0) + 2 * CONTEXT
    }

    #[cfg(feature = "hyperscan")]
    fn stream_db(&self) -> Option<&hyperscan::StreamingDatabase> {
        self.hs.as_ref()?;
        let db = self.hs_stream.get_or_init(|| {
            let pats: Vec<&str> = self
                .rules
                .iter()
                .map(|r| r.rule.spec.pattern.as_str())
                .collect();
            prefilter::build::<hyperscan::Streaming>(&pats, prefilter::Mode::Stream, self.use_cache)
                .and_then(|c| {
                    // Must agree with the block database on which rules Hyperscan takes.
                    if c.in_db
                        .iter()
                        .zip(&self.rules)
                        .all(|(&ok, r)| ok != r.full_search)
                    {
                        c.db.ok_or_else(|| "Hyperscan took none of the rules".to_string())
                    } else {
                        Err("block and stream databases disagree on rejected rules".into())
                    }
                })
        });
        db.as_ref().ok()
    }
}

/// The Hyperscan match callback of every scan: records each hit whose absolute end
/// (`base + to`) lies in `(ends_after, ends_upto]` as a window of its rule.
#[cfg(feature = "hyperscan")]
fn hit_recorder<'a>(
    rules: &'a [CompiledRule],
    windows: &'a mut [Vec<(u64, u64)>],
    base: u64,
    ends_after: u64,
    ends_upto: u64,
) -> impl FnMut(u32, u64, u64, u32) -> hyperscan::Matching + 'a {
    move |id, _from, to, _flags| {
        let end = base + to;
        if end > ends_after && end <= ends_upto {
            add_hit(
                &mut windows[id as usize],
                end,
                rules[id as usize].rule.max_len,
            );
        }
        hyperscan::Matching::Continue
    }
}

/// Adds a prefilter hit ending at `end` to a rule's window list, merging with the last window.
#[cfg_attr(not(feature = "hyperscan"), allow(dead_code))]
fn add_hit(windows: &mut Vec<(u64, u64)>, end: u64, max_len: usize) {
    add_window(windows, end.saturating_sub(max_len as u64), end)
}

fn add_window(windows: &mut Vec<(u64, u64)>, lo: u64, end: u64) {
    if let Some(last) = windows.last_mut() {
        if lo <= last.1 && end >= last.0 {
            last.0 = last.0.min(lo);
            last.1 = last.1.max(end);
            return;
        }
    }
    windows.push((lo, end));
}

fn merge_windows(w: &mut Vec<(u64, u64)>) {
    if w.len() < 2 {
        return;
    }
    w.sort_unstable();
    let mut out = 0;
    for i in 1..w.len() {
        if w[i].0 <= w[out].1 {
            w[out].1 = w[out].1.max(w[i].1);
        } else {
            out += 1;
            w[out] = w[i];
        }
    }
    w.truncate(out + 1);
}

/// What a stream-mode sink sees with each match: the held bytes (covering the match and
/// [`CONTEXT`] bytes around it) and the line position of the match start.
pub struct View<'a> {
    pub hay: &'a [u8],
    /// Absolute offset of `hay[0]`.
    pub base: u64,
    /// Positioned at the match start.
    pub cursor: &'a LineCursor,
}

/// Stream mode: feed chunks of any size, get the same matches as [`Engine::scan_block`] on the
/// concatenation. Memory is bounded by the hold-back (longest rule + context) plus one chunk.
pub struct StreamScanner<'e> {
    engine: &'e Engine,
    scratch: Scratch,
    buf: Vec<u8>,
    /// Absolute offset of `buf[0]`.
    base: u64,
    /// Per rule: where the next search resumes (end of the last match, or a horizon).
    next: Vec<u64>,
    /// Line position of `base`.
    cursor: LineCursor,
    /// Prefilter windows arrive (from the Hyperscan stream, or from the caller through
    /// [`StreamScanner::feed_windows`]); otherwise every rule is confirmed by full search.
    prefiltered: bool,
    #[cfg(feature = "hyperscan")]
    hs: Option<(hyperscan::Stream, hyperscan::Scratch)>,
}

impl<'e> StreamScanner<'e> {
    pub fn new(engine: &'e Engine) -> StreamScanner<'e> {
        #[cfg(feature = "hyperscan")]
        let hs = engine.stream_db().map(|db| {
            let st = db
                .open_stream()
                .expect("opening a hyperscan stream should succeed");
            let sc = db
                .alloc_scratch()
                .expect("hyperscan scratch allocation should succeed");
            (st, sc)
        });
        #[cfg(feature = "hyperscan")]
        return StreamScanner::assemble(engine, hs.is_some(), hs);
        #[cfg(not(feature = "hyperscan"))]
        StreamScanner::assemble(engine, false)
    }

    fn assemble(
        engine: &'e Engine,
        prefiltered: bool,
        #[cfg(feature = "hyperscan")] hs: Option<(hyperscan::Stream, hyperscan::Scratch)>,
    ) -> StreamScanner<'e> {
        StreamScanner {
            engine,
            scratch: engine.scratch(),
            buf: Vec::with_capacity(engine.max_holdback()),
            base: 0,
            next: vec![0; engine.rules.len()],
            cursor: LineCursor::new(),
            prefiltered,
            #[cfg(feature = "hyperscan")]
            hs,
        }
    }

    /// Absolute offset of the first byte still held (everything before it is final).
    pub fn held_from(&self) -> u64 {
        self.base
    }

    /// Bytes currently held back.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// A scanner whose windows come from the caller ([`StreamScanner::feed_windows`] with the
    /// output of [`Engine::prefilter_windows`]) instead of a Hyperscan stream.
    pub fn with_external_prefilter(engine: &'e Engine) -> StreamScanner<'e> {
        StreamScanner::assemble(
            engine,
            engine.has_block_prefilter(),
            #[cfg(feature = "hyperscan")]
            None,
        )
    }

    /// Appends `chunk` with the prefilter windows of every hit ending inside it.
    pub fn feed_windows(
        &mut self,
        chunk: &[u8],
        windows: impl IntoIterator<Item = (usize, u64, u64)>,
        sink: &mut dyn FnMut(&Match, &View),
    ) {
        for (r, lo, hi) in windows {
            add_window(&mut self.scratch.windows[r], lo, hi);
        }
        self.buf.extend_from_slice(chunk);
        self.process(false, sink);
    }

    fn full_search(&self, r: usize) -> bool {
        !self.prefiltered || self.engine.rules[r].full_search
    }

    pub fn feed(&mut self, chunk: &[u8], sink: &mut dyn FnMut(&Match, &View)) {
        #[cfg(feature = "hyperscan")]
        if let Some((st, sc)) = &self.hs {
            let mut record = hit_recorder(
                &self.engine.rules,
                &mut self.scratch.windows,
                0,
                0,
                u64::MAX,
            );
            for piece in chunk.chunks(u32::MAX as usize / 2) {
                let _ = st.scan(piece, sc, &mut record);
            }
        }
        self.buf.extend_from_slice(chunk);
        self.process(false, sink);
    }

    pub fn finish(mut self, sink: &mut dyn FnMut(&Match, &View)) {
        self.close_stream();
        self.process(true, sink);
    }

    fn close_stream(&mut self) {
        #[cfg(feature = "hyperscan")]
        if let Some((st, sc)) = self.hs.take() {
            let record = hit_recorder(
                &self.engine.rules,
                &mut self.scratch.windows,
                0,
                0,
                u64::MAX,
            );
            let _ = st.close(&sc, record);
        }
    }

    fn process(&mut self, eof: bool, sink: &mut dyn FnMut(&Match, &View)) {
        let total = self.base + self.buf.len() as u64;
        let mut out = Vec::new();
        let mut keep_from = total.saturating_sub(self.engine.max_holdback() as u64);
        for r in 0..self.engine.rules.len() {
            let max_len = self.engine.rules[r].rule.max_len as u64;
            // A match starting before `horizon` is entirely visible, and so is its context.
            let horizon = if eof {
                u64::MAX
            } else {
                total.saturating_sub(max_len + CONTEXT as u64)
            };
            if self.full_search(r) || (!eof && self.windows_too_long(r)) {
                let from = self.next[r].max(self.base);
                let rel = |x: u64| (x - self.base) as usize;
                let accept = if eof {
                    usize::MAX
                } else {
                    rel(horizon.max(self.base))
                };
                let next = self.engine.confirm(
                    &mut self.scratch,
                    r,
                    &self.buf,
                    self.base,
                    rel(from)..self.buf.len(),
                    accept,
                    &mut out,
                );
                let next_abs = self.base + next as u64;
                // No final match starts in [next_abs, horizon): any would have been found.
                self.next[r] = if eof {
                    next_abs
                } else {
                    next_abs.max(horizon.min(total))
                };
                let next = self.next[r];
                let windows = &mut self.scratch.windows[r];
                windows.retain_mut(|w| {
                    w.0 = w.0.max(next);
                    w.1 > next
                });
                keep_from = keep_from.min(next);
                continue;
            }
            let mut windows = std::mem::take(&mut self.scratch.windows[r]);
            merge_windows(&mut windows);
            // Windows that can no longer grow: a later hit ends past `total`, so its window starts
            // past `total - max_len`.
            let closable = windows
                .iter()
                .take_while(|w| eof || w.1 + max_len + CONTEXT as u64 <= total)
                .count();
            for &(lo, hi) in &windows[..closable] {
                let from = lo.max(self.next[r]).max(self.base);
                if from < hi {
                    let s = (from - self.base) as usize..(hi - self.base) as usize;
                    let n = self.engine.confirm(
                        &mut self.scratch,
                        r,
                        &self.buf,
                        self.base,
                        s,
                        usize::MAX,
                        &mut out,
                    );
                    self.next[r] = self.base + n as u64;
                }
            }
            windows.drain(..closable);
            if let Some(first) = windows.first() {
                keep_from = keep_from.min(first.0.max(self.next[r]));
            }
            self.scratch.windows[r] = windows;
        }
        out.sort();
        let mut cursor = self.cursor.clone();
        for m in &out {
            cursor.advance(&self.buf, self.base, m.start);
            sink(
                m,
                &View {
                    hay: &self.buf,
                    base: self.base,
                    cursor: &cursor,
                },
            );
        }
        let keep_from = keep_from.saturating_sub(CONTEXT as u64).max(self.base);
        let drop = (keep_from - self.base) as usize;
        if drop > 0 {
            self.cursor.advance(&self.buf, self.base, keep_from);
            self.buf.drain(..drop);
            self.base = keep_from;
        }
    }

    /// An open window longer than the hold-back cap is searched with a horizon instead of waiting
    /// for it to close, so hit-dense input cannot grow the buffer without bound.
    fn windows_too_long(&self, r: usize) -> bool {
        let cap = STREAM_HOLD_CAP.max(self.engine.max_holdback()) as u64;
        let next = self.next[r];
        self.scratch.windows[r]
            .iter()
            .any(|w| w.1.saturating_sub(w.0.max(next)) > cap)
    }
}

/// Default cap on bytes held for an open window before it is resolved with a horizon.
pub const STREAM_HOLD_CAP: usize = 64 * 1024;

impl Drop for StreamScanner<'_> {
    fn drop(&mut self) {
        // The hyperscan crate does not free a stream on drop: always close it.
        self.close_stream();
    }
}

#[cfg(test)]
mod tests;
