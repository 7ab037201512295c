//! Block mode: one complete input (a file, a blob, a snippet) in memory.
//!
//! Hyperscan's block database runs once over the input; each rule's hits become merged windows,
//! confirmed in order. Rules Hyperscan did not take (or every rule, without Hyperscan) are
//! confirmed by a full search when one of their keywords occurs in the input.

#[cfg(feature = "hyperscan")]
use super::windows::hit_recorder;
use super::windows::merge_windows;
use super::{Engine, EngineError, Match, RuleIndex, Scratch, StreamScanner};

impl Engine {
    /// Scans one complete input. Matches are sorted by position, overlaps resolved.
    pub fn scan_block(&self, scratch: &mut Scratch, hay: &[u8]) -> Result<Vec<Match>, EngineError> {
        let mut out = Vec::new();
        // The rules that got windows, in the order of their first hit: only they are confirmed
        // (a loop over every rule of the catalogue for each file was 2 % of a tree scan).
        let mut hit_rules = std::mem::take(&mut scratch.hit_rules);
        #[cfg(feature = "hyperscan")]
        if let (Some(db), Some(hs)) = (&self.hs, &scratch.hs) {
            // Block-mode Hyperscan takes a u32 length; larger inputs go through stream mode.
            if hay.len() < u32::MAX as usize {
                let windows = &mut scratch.windows;
                let scanned = self.block_hits(
                    db,
                    hs,
                    windows,
                    Some(&mut hit_rules),
                    hay,
                    0,
                    0,
                    u64::MAX,
                    None,
                );
                if let Err(e) = scanned {
                    // No stale window may reach the next input.
                    for r in hit_rules.drain(..) {
                        windows[r].clear();
                    }
                    scratch.hit_rules = hit_rules;
                    return Err(e);
                }
            } else {
                let mut s = StreamScanner::new(self)?;
                s.feed(hay, &mut |m, _| out.push(m.clone()))?;
                s.finish(&mut |m, _| out.push(m.clone()))?;
                return Ok(out);
            }
        }
        #[cfg(not(feature = "hyperscan"))]
        let _ = StreamScanner::new;
        self.mark_keywords(scratch, hay);
        for &r in &self.full_search_rules {
            if scratch.kw_seen[r] || self.rule_at(r).spec.keywords.is_empty() {
                self.confirm(scratch, r, hay, 0, 0..hay.len(), usize::MAX, &mut out);
            }
        }
        for &r in &hit_rules {
            let mut windows = std::mem::take(&mut scratch.windows[r]);
            merge_windows(&mut windows);
            let mut next = 0usize;
            for &(lo, hi) in &windows {
                let from = (lo as usize).max(next);
                if from < hi as usize {
                    next =
                        self.confirm(scratch, r, hay, 0, from..hi as usize, usize::MAX, &mut out);
                }
            }
            windows.clear();
            scratch.windows[r] = windows;
        }
        hit_rules.clear();
        scratch.hit_rules = hit_rules;
        out.sort();
        let mut flagged: Vec<(Match, bool)> = out.into_iter().map(|m| (m, false)).collect();
        self.resolve_overlaps(&mut flagged, u64::MAX);
        Ok(flagged
            .into_iter()
            .filter_map(|(m, dropped)| (!dropped).then_some(m))
            .collect())
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
    ) -> Result<Vec<(RuleIndex, u64, u64)>, EngineError> {
        #[cfg_attr(not(feature = "hyperscan"), allow(unused_mut))]
        let mut out = Vec::new();
        #[cfg(feature = "hyperscan")]
        if let (Some(db), Some(hs)) = (&self.hs, &scratch.hs) {
            let windows = &mut scratch.windows;
            self.block_hits(
                db, hs, windows, None, hay, base, ends_after, ends_upto, None,
            )?;
            for (r, w) in windows.iter_mut().enumerate() {
                out.extend(w.drain(..).map(|(lo, hi)| (RuleIndex::new(r), lo, hi)));
            }
        }
        #[cfg(not(feature = "hyperscan"))]
        let _ = (scratch, hay, base, ends_after, ends_upto);
        Ok(out)
    }

    /// Runs the block database over `hay` (at absolute offset `base`) and adds the windows of the
    /// hits ending in `(ends_after, ends_upto]` to the per-rule lists (of the rules flagged in
    /// `only`, when given), listing in `hit_rules` (when given) each rule that gets its first.
    #[cfg(feature = "hyperscan")]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn block_hits(
        &self,
        db: &hyperscan::BlockDatabase,
        hs: &hyperscan::Scratch,
        windows: &mut [Vec<(u64, u64)>],
        hit_rules: Option<&mut Vec<usize>>,
        hay: &[u8],
        base: u64,
        ends_after: u64,
        ends_upto: u64,
        only: Option<&[bool]>,
    ) -> Result<(), EngineError> {
        db.scan(
            hay,
            hs,
            hit_recorder(
                self.ruleset.rules(),
                windows,
                hit_rules,
                base,
                ends_after,
                ends_upto,
                only,
            ),
        )
        .map_err(|e| EngineError::Hyperscan(format!("block scan failed: {e}")))
    }

    /// Per rule: (merged prefilter windows, bytes in them) for `hay` — a rule-tuning aid.
    pub fn window_stats(
        &self,
        scratch: &mut Scratch,
        hay: &[u8],
    ) -> Result<Vec<(u64, u64)>, EngineError> {
        let mut out = vec![(0, 0); self.compiled.len()];
        #[cfg(feature = "hyperscan")]
        if let (Some(db), Some(hs)) = (&self.hs, &scratch.hs) {
            self.block_hits(
                db,
                hs,
                &mut scratch.windows,
                None,
                hay,
                0,
                0,
                u64::MAX,
                None,
            )?;
        }
        #[cfg(not(feature = "hyperscan"))]
        let _ = hay;
        for (r, w) in scratch.windows.iter_mut().enumerate() {
            merge_windows(w);
            out[r] = (w.len() as u64, w.iter().map(|(a, b)| b - a).sum());
            w.clear();
        }
        Ok(out)
    }

    fn mark_keywords(&self, scratch: &mut Scratch, hay: &[u8]) {
        let Some(keywords) = &self.keywords else {
            return;
        };
        scratch.kw_seen.iter_mut().for_each(|s| *s = false);
        // Every keyword belongs to a gated rule: stop once each has been seen.
        let mut left = self.keyword_gated;
        for m in keywords.find_overlapping_iter(hay) {
            let r = self.kw_rule[m.pattern().as_usize()];
            if !scratch.kw_seen[r] {
                scratch.kw_seen[r] = true;
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
    }
}
