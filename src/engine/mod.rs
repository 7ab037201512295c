//! The engine: bytes in, matches out. No I/O, no threads, no environment.
//!
//! Stages: **prefilter** (Hyperscan over all rules at once, reporting match ends) → **confirm**
//! (regex-automata, byte mode with Unicode off, on the window `[end - max_len, end]` around the
//! hits of each rule, with captures) → **filters** (entropy floor, offline validator, allowlists)
//! → **overlaps** (where rules match overlapping bytes, only the most confident is kept).
//!
//! The semantics are defined once, independent of the backend: the matches of a rule are the
//! leftmost-first, non-overlapping matches of its regex over the whole input (what `find_iter`
//! would give), then filtered, then overlaps across rules are resolved. The Hyperscan backend
//! reaches the same set faster: every such match ends at an offset Hyperscan reports and starts at
//! most `max_len` before it, so searching the merged windows `[end - max_len, end]` in order,
//! resuming each at the end of the previous match, visits exactly the matches a full search would.
//! The pure regex-automata backend (feature `hyperscan` off, or [`Backend::RegexOnly`]) searches
//! the whole input for each rule whose keywords occur in it. Both run in the test-suite and must
//! agree; block mode ([`Engine::scan_block`]), stream mode ([`StreamScanner`]) at any chunking,
//! and the parallel large-input path ([`Engine::prefilter_windows`]) must agree too.
//!
//! Module map: [`block`] (whole inputs), [`stream`] (chunked inputs, settled offsets; `split`
//! is its second thread for large batches),
//! [`known`] (the fingerprint stage: stored values, raw and encoded, by keyed hashes),
//! [`confirm`] (the exact stage and the filters), [`windows`] (prefilter hits → windows),
//! `prefilter` (Hyperscan databases), [`check`] (rule examples on both backends), [`decode`]
//! (base64, hex and URL-encoded runs decoded and scanned again, block mode).
//! The compiled Hyperscan database can be cached by the caller through [`DatabaseCache`]; the
//! engine itself never touches the disk.

pub mod allow;
pub mod block;
pub mod check;
pub mod confirm;
pub mod decode;
pub mod entropy;
pub mod known;
pub mod lines;
mod literals;
#[cfg(feature = "hyperscan")]
pub mod prefilter;
#[cfg(feature = "hyperscan")]
mod split;
pub mod stream;
pub mod validate;
pub mod windows;

use std::sync::{Arc, OnceLock};

pub use crate::pattern::byte_regex;
pub use allow::{Allowlist, CONTEXT};
pub use lines::LineCursor;
pub use stream::{StreamScanner, View, STREAM_HOLD_CAP};

use crate::rules::{Rule, Ruleset};
use confirm::RuleRegex;

/// Index of a rule in the engine's [`Ruleset`] (load order). A newtype so a rule is never
/// confused with a count or an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleIndex(pub u32);

impl RuleIndex {
    pub fn get(self) -> usize {
        self.0 as usize
    }
    fn new(i: usize) -> RuleIndex {
        RuleIndex(u32::try_from(i).expect("fewer than 2^32 rules"))
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

/// Bytes loaded from a [`DatabaseCache`]: a `Vec`, or a memory-mapped file.
pub type CachedBytes = Box<dyn std::ops::Deref<Target = [u8]>>;

/// Where a caller keeps compiled Hyperscan databases between runs (compiling the builtin
/// catalogue takes ~10 s, loading its cached 4 MB database a few ms). Keys are content hashes;
/// a `load` that returns bytes which do not deserialize is treated as a miss and recompiled.
pub trait DatabaseCache: Send + Sync {
    fn load(&self, key: &str) -> Option<CachedBytes>;
    /// Best effort: a failed store only costs a recompile next time.
    fn store(&self, key: &str, bytes: &[u8]);
}

/// One confirmed, filtered match. Offsets are absolute in the input (stream mode included).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Match {
    pub start: u64,
    pub end: u64,
    pub rule: RuleIndex,
    /// The secret, `secret_start..secret_end`: the `secret` capture group, else group 1, else
    /// the whole match.
    pub secret_start: u64,
    pub secret_end: u64,
}

/// Per rule: what the engine compiled or derived from it.
struct CompiledRule {
    /// Compiled on first use: a scan of a small file confirms a handful of rules, and building
    /// all 150 regexes up front cost ~50 ms of start-up (measured with `guard scan` of a 10 KB file).
    regex: OnceLock<RuleRegex>,
    /// Confirmed by a full search (no Hyperscan, or Hyperscan rejected the pattern).
    full_search: bool,
    /// For a rule whose matches can span lines and start with known literals (found by
    /// `Engine::start_literals`): the longest of them; 0 for every other rule.
    start_literal_max: usize,
    start_literal_newline: bool,
}

pub struct EngineBuilder {
    rules: Ruleset,
    backend: Backend,
    allow: Allowlist,
    cache: Option<Arc<dyn DatabaseCache>>,
    keep_overlaps: bool,
}

impl EngineBuilder {
    /// Report overlapping matches of different rules instead of keeping only the most confident
    /// (what `guard rules check` needs to see every rule's own matches).
    pub fn keep_overlaps(mut self, keep: bool) -> Self {
        self.keep_overlaps = keep;
        self
    }
    pub fn backend(mut self, b: Backend) -> Self {
        self.backend = b;
        self
    }
    pub fn allowlist(mut self, a: Allowlist) -> Self {
        self.allow = a;
        self
    }
    /// Where compiled Hyperscan databases are loaded from and stored (none by default).
    pub fn database_cache(mut self, cache: Option<Arc<dyn DatabaseCache>>) -> Self {
        self.cache = cache;
        self
    }

    pub fn build(self) -> Result<Engine, EngineError> {
        let mut compiled = Vec::with_capacity(self.rules.len());
        let (mut start_lits, mut start_lit_rule) = (Vec::new(), Vec::new());
        for r in self.rules.rules() {
            let cr = CompiledRule {
                regex: OnceLock::new(),
                full_search: true,
                start_literal_max: 0,
                start_literal_newline: false,
            };
            // Builtin rules are proven by the test-suite; anything else is compiled now, so a bad
            // user rule is an error at start-up rather than at its first hit.
            if !r.builtin {
                let built = confirm::compile_rule(r).map_err(|message| EngineError::Regex {
                    rule: r.id.0.clone(),
                    message,
                })?;
                let _ = cr.regex.set(built);
            }
            let mut cr = cr;
            if r.pattern.spans_newline {
                if let Some(lits) = &r.pattern.start_literals {
                    cr.start_literal_max = lits.iter().map(Vec::len).max().unwrap_or(0);
                    cr.start_literal_newline = lits.iter().any(|l| l.contains(&b'\n'));
                    for l in lits {
                        start_lits.push(l.clone());
                        start_lit_rule.push(compiled.len());
                    }
                }
            }
            compiled.push(cr);
        }
        // One matcher for the start literals of every multi-line rule: stream mode scans each
        // byte once for all of them (one pass per rule cost 29% on the 1 GiB benchmark).
        let start_literals =
            literals::StartLiterals::new(start_lits, start_lit_rule).map_err(|message| {
                EngineError::Regex {
                    rule: "start literals".into(),
                    message,
                }
            })?;
        let max_holdback = self
            .rules
            .rules()
            .iter()
            .map(|r| r.max_len)
            .max()
            .unwrap_or(0)
            + 2 * CONTEXT;
        let line_local: Arc<[bool]> = self
            .rules
            .rules()
            .iter()
            .map(|r| !r.pattern.spans_newline)
            .collect();
        let max_len_line_local = self
            .rules
            .rules()
            .iter()
            .filter(|r| !r.pattern.spans_newline)
            .map(|r| r.max_len)
            .max()
            .unwrap_or(0);
        let mut engine = Engine {
            ruleset: self.rules,
            compiled,
            keywords: None,
            kw_rule: Vec::new(),
            allow: self.allow,
            warnings: Vec::new(),
            max_holdback,
            line_local,
            max_len_line_local,
            keep_overlaps: self.keep_overlaps,
            keyword_gated: 0,
            full_search_rules: Vec::new(),
            start_literals,
            #[cfg(feature = "hyperscan")]
            hs: None,
            #[cfg(feature = "hyperscan")]
            hs_stream: OnceLock::new(),
            #[cfg(feature = "hyperscan")]
            cache: self.cache,
        };
        #[cfg(feature = "hyperscan")]
        if self.backend == Backend::Auto && !engine.compiled.is_empty() {
            let c = prefilter::build::<hyperscan::Block>(
                &engine.patterns(),
                &vec![true; engine.compiled.len()],
                prefilter::Mode::Block,
                engine.cache.as_deref(),
            )
            .map_err(EngineError::Hyperscan)?;
            for (i, why) in &c.rejected {
                engine.warnings.push(format!(
                    "rule {} is not in the Hyperscan database ({why}); it is still enforced by a full regex search",
                    engine.ruleset.rules()[*i].id
                ));
            }
            for (r, &ok) in engine.compiled.iter_mut().zip(&c.in_db) {
                r.full_search = !ok;
            }
            engine.hs = c.db.map(Arc::new);
        }
        #[cfg(not(feature = "hyperscan"))]
        let _ = (self.backend, self.cache);
        // Keywords gate only the rules confirmed by a full search; with Hyperscan that is rarely
        // any, so the matcher (4 ms to build for the whole catalogue) is built for those alone.
        let (mut kw, mut kw_rule) = (Vec::new(), Vec::new());
        for (i, (c, r)) in engine
            .compiled
            .iter()
            .zip(engine.ruleset.rules())
            .enumerate()
        {
            if c.full_search {
                engine.full_search_rules.push(i);
            }
            if c.full_search && !r.spec.keywords.is_empty() {
                engine.keyword_gated += 1;
                for k in &r.spec.keywords {
                    kw.push(k.as_bytes().to_vec());
                    kw_rule.push(i);
                }
            }
        }
        if engine.keyword_gated > 0 {
            let keywords = aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(&kw)
                .map_err(|e| EngineError::Regex {
                    rule: "keywords".into(),
                    message: e.to_string(),
                })?;
            engine.keywords = Some(keywords);
            engine.kw_rule = kw_rule;
        }
        Ok(engine)
    }
}

/// Immutable, `Send + Sync`; build once, share across threads, give each thread a [`Scratch`].
pub struct Engine {
    ruleset: Ruleset,
    compiled: Vec<CompiledRule>,
    /// The keywords of the `keyword_gated` rules (`None` when there are none), and
    /// the rule of each.
    keywords: Option<aho_corasick::AhoCorasick>,
    kw_rule: Vec<usize>,
    allow: Allowlist,
    warnings: Vec<String>,
    max_holdback: usize,
    /// Per rule: its matches cannot span a newline (stream mode block-scans it over lines).
    #[cfg_attr(not(feature = "hyperscan"), allow(dead_code))]
    line_local: Arc<[bool]>,
    /// Longest match of a rule that cannot span a newline.
    max_len_line_local: usize,
    keep_overlaps: bool,
    /// How many rules are confirmed by a full search gated on their keywords (the keyword pass
    /// stops once it has seen each of them).
    keyword_gated: usize,
    /// The rules confirmed by a full search (not in the Hyperscan database), in order.
    full_search_rules: Vec<usize>,
    start_literals: literals::StartLiterals,
    #[cfg(feature = "hyperscan")]
    /// Shared with stream mode's second thread ([`split`]).
    hs: Option<Arc<hyperscan::BlockDatabase>>,
    #[cfg(feature = "hyperscan")]
    hs_stream: OnceLock<Result<hyperscan::StreamingDatabase, String>>,
    #[cfg(feature = "hyperscan")]
    cache: Option<Arc<dyn DatabaseCache>>,
}

/// Per-thread mutable state: regex caches, Hyperscan scratch, window bookkeeping.
pub struct Scratch {
    /// Per rule, created with the rule's regex on first use. Boxed: unboxed, the 1.4 KB of an
    /// empty slot times 629 rules was 900 KB of memory to fault in for every scratch.
    #[allow(clippy::type_complexity)]
    caches: Vec<
        Option<
            Box<(
                regex_automata::meta::Cache,
                regex_automata::util::captures::Captures,
            )>,
        >,
    >,
    /// Per rule: candidate windows `(lo, hi)` collected from prefilter hits.
    windows: Vec<Vec<(u64, u64)>>,
    kw_seen: Vec<bool>,
    /// Block mode: the rules whose window lists are non-empty.
    hit_rules: Vec<usize>,
    #[cfg(feature = "hyperscan")]
    hs: Option<hyperscan::Scratch>,
}

impl Engine {
    pub fn builder(rules: Ruleset) -> EngineBuilder {
        EngineBuilder {
            rules,
            backend: Backend::Auto,
            allow: Allowlist::new(),
            cache: None,
            keep_overlaps: false,
        }
    }

    /// The rules, in [`RuleIndex`] order: the metadata reports need.
    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    pub fn rules(&self) -> impl ExactSizeIterator<Item = &Rule> {
        self.ruleset.rules().iter()
    }

    pub fn rule(&self, i: RuleIndex) -> &Rule {
        &self.ruleset.rules()[i.get()]
    }

    fn rule_at(&self, i: usize) -> &Rule {
        &self.ruleset.rules()[i]
    }

    /// Non-fatal problems found while building (rules Hyperscan could not take).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Which prefilter is active.
    pub fn backend_name(&self) -> &'static str {
        if self.has_block_prefilter() {
            "hyperscan"
        } else {
            "regex-automata"
        }
    }

    /// Whether Hyperscan prefilters (and [`Engine::prefilter_windows`] does anything).
    pub fn has_block_prefilter(&self) -> bool {
        #[cfg(feature = "hyperscan")]
        return self.hs.is_some();
        #[cfg(not(feature = "hyperscan"))]
        false
    }

    /// Longest rule window plus context: the most stream mode holds back for a pending match.
    pub fn max_holdback(&self) -> usize {
        self.max_holdback
    }

    pub fn scratch(&self) -> Result<Scratch, EngineError> {
        let n = self.compiled.len();
        Ok(Scratch {
            caches: (0..n).map(|_| None).collect(),
            windows: vec![Vec::new(); n],
            kw_seen: vec![false; n],
            hit_rules: Vec::new(),
            #[cfg(feature = "hyperscan")]
            hs: match &self.hs {
                Some(db) => Some(db.alloc_scratch().map_err(|e| {
                    EngineError::Hyperscan(format!("cannot allocate scratch space: {e}"))
                })?),
                None => None,
            },
        })
    }

    #[cfg(feature = "hyperscan")]
    fn patterns(&self) -> Vec<&str> {
        self.rules().map(|r| r.spec.pattern.as_str()).collect()
    }

    /// The streaming database of the rules whose matches can span a newline (stream mode scans
    /// line-local rules in block mode over complete lines: Hyperscan's block mode is ~1.5× as
    /// fast as its stream mode on the same rules). `None` when Hyperscan has none of them.
    #[cfg(feature = "hyperscan")]
    fn stream_db(&self) -> Result<Option<&hyperscan::StreamingDatabase>, EngineError> {
        if self.hs.is_none() {
            return Ok(None);
        }
        let include: Vec<bool> = (0..self.compiled.len()).map(|r| self.streamed(r)).collect();
        if !include.contains(&true) {
            return Ok(None);
        }
        let db = self.hs_stream.get_or_init(|| {
            prefilter::build::<hyperscan::Streaming>(
                &self.patterns(),
                &include,
                prefilter::Mode::Stream,
                self.cache.as_deref(),
            )
            .and_then(|c| {
                // Must agree with the block database on which rules Hyperscan takes.
                if c.in_db
                    .iter()
                    .zip(&self.compiled)
                    .zip(&include)
                    .all(|((&ok, r), &inc)| !inc || ok != r.full_search)
                {
                    c.db.ok_or_else(|| "Hyperscan took none of the rules".to_string())
                } else {
                    Err("block and stream databases disagree on rejected rules".into())
                }
            })
        });
        db.as_ref()
            .map(Some)
            .map_err(|e| EngineError::Hyperscan(e.clone()))
    }

    /// Whether stream mode prefilters rule `r` with the streaming database (a multi-line rule
    /// Hyperscan takes) rather than block scans of complete lines.
    #[cfg(feature = "hyperscan")]
    fn streamed(&self, r: usize) -> bool {
        self.rule_at(r).pattern.spans_newline && !self.compiled[r].full_search
    }
}

#[cfg(test)]
mod tests;
