//! The start literals of multi-line rules (a PEM header, `machine `), found in every byte a
//! stream scanner receives so a line can be settled as soon as no such match can be open.
//!
//! One pass finds all of them. With Hyperscan the literals form a small block database of their
//! own (its literal matcher is several times faster than an Aho-Corasick automaton whose start
//! bytes — `"`, `-`, `s`, `c`, `m` — are common in source code: the automaton took 42% of the CPU
//! of `guard redact` on the 100 MiB benchmark); without it, or if that database cannot be built,
//! an Aho-Corasick automaton gives the same occurrences. That database is compiled when the
//! first stream scanner asks for it: compiling it took 4 ms of every start-up, and block mode
//! (every `guard scan` of files) never uses it.

/// Every start literal with the rule it belongs to.
pub(crate) struct StartLiterals {
    lits: Vec<Vec<u8>>,
    max_len: usize,
    /// Literal index → rule index.
    rule: Vec<usize>,
    ac: aho_corasick::AhoCorasick,
    #[cfg(feature = "hyperscan")]
    hs: std::sync::OnceLock<Option<hyperscan::BlockDatabase>>,
}

/// Per-scanner state of [`StartLiterals::find`].
pub(crate) struct LiteralScratch {
    #[cfg(feature = "hyperscan")]
    hs: Option<hyperscan::Scratch>,
}

impl StartLiterals {
    pub(crate) fn new(lits: Vec<Vec<u8>>, rule: Vec<usize>) -> Result<StartLiterals, String> {
        let ac = aho_corasick::AhoCorasick::new(&lits).map_err(|e| e.to_string())?;
        Ok(StartLiterals {
            max_len: lits.iter().map(Vec::len).max().unwrap_or(0),
            lits,
            rule,
            ac,
            #[cfg(feature = "hyperscan")]
            hs: std::sync::OnceLock::new(),
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lits.is_empty()
    }

    /// Length of the longest literal.
    pub(crate) fn max_len(&self) -> usize {
        self.max_len
    }

    pub(crate) fn scratch(&self) -> LiteralScratch {
        LiteralScratch {
            #[cfg(feature = "hyperscan")]
            hs: self.hs_db().and_then(|db| db.alloc_scratch().ok()),
        }
    }

    /// Calls `f(rule, start)` for every occurrence of every literal in `hay` (overlapping ones
    /// included), in no particular order.
    pub(crate) fn find(
        &self,
        scratch: &mut LiteralScratch,
        hay: &[u8],
        f: &mut dyn FnMut(usize, usize),
    ) {
        #[cfg(feature = "hyperscan")]
        if let (Some(db), Some(hs)) = (self.hs_db(), &scratch.hs) {
            let ok = db
                .scan(hay, hs, |id: u32, _from: u64, to: u64, _flags: u32| {
                    let i = id as usize;
                    f(self.rule[i], to as usize - self.lits[i].len());
                    hyperscan::Matching::Continue
                })
                .is_ok();
            if ok {
                return;
            }
            // A scan error (none is expected) falls back to the automaton: a duplicate
            // occurrence is harmless, a missed one would hold a line back.
        }
        #[cfg(not(feature = "hyperscan"))]
        let _ = scratch;
        for m in self.ac.find_overlapping_iter(hay) {
            f(self.rule[m.pattern().as_usize()], m.start());
        }
    }

    #[cfg(feature = "hyperscan")]
    fn hs_db(&self) -> Option<&hyperscan::BlockDatabase> {
        self.hs.get_or_init(|| hs_database(&self.lits)).as_ref()
    }
}

/// The literals as a Hyperscan block database; `None` when there are none, one is not UTF-8
/// (the crate takes `String`s) or the compiler refuses them.
#[cfg(feature = "hyperscan")]
fn hs_database(lits: &[Vec<u8>]) -> Option<hyperscan::BlockDatabase> {
    use hyperscan::prelude::Builder;
    if lits.is_empty() {
        return None;
    }
    let mut set = Vec::with_capacity(lits.len());
    for (i, l) in lits.iter().enumerate() {
        let s = String::from_utf8(l.clone()).ok()?;
        let mut lit = hyperscan::Literal::new(s).ok()?;
        lit.id = Some(i);
        set.push(lit);
    }
    set.into_iter()
        .collect::<hyperscan::Literals>()
        .build::<hyperscan::Block>()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_occurrence_like_the_automaton() {
        let lits: Vec<Vec<u8>> = ["machine ", "machine\t", "-----BEGIN ", "AKIA", "chine "]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let s = StartLiterals::new(lits, vec![0, 0, 1, 2, 3]).unwrap();
        let hay = b"x machine machine\thost -----BEGIN RSA AKIAAKIA\n";
        let mut got = Vec::new();
        s.find(&mut s.scratch(), hay, &mut |r, at| got.push((r, at)));
        got.sort_unstable();
        let mut want = Vec::new();
        for m in s.ac.find_overlapping_iter(&hay[..]) {
            want.push((s.rule[m.pattern().as_usize()], m.start()));
        }
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(s.max_len(), 11);
    }
}
