//! Prefilter hits become confirm windows: a hit ending at `end` for a rule of maximum length
//! `max_len` can only be the end of a match starting in `[end - max_len, end]`. Windows of a rule
//! are merged where they overlap, so the confirm stage resumes one leftmost-first search across
//! them instead of re-searching shared bytes.

#[cfg(feature = "hyperscan")]
use crate::rules::Rule;

/// The Hyperscan match callback of every scan: hands `hit(rule, end)` each hit whose absolute
/// end (`base + to`) lies in `(ends_after, ends_upto]`, of the rules flagged in `only` (all
/// rules when `None`).
#[cfg(feature = "hyperscan")]
pub(super) fn hit_filter<'a>(
    base: u64,
    ends_after: u64,
    ends_upto: u64,
    only: Option<&'a [bool]>,
    mut hit: impl FnMut(usize, u64) + 'a,
) -> impl FnMut(u32, u64, u64, u32) -> hyperscan::Matching + 'a {
    move |id, _from, to, _flags| {
        let (r, end) = (id as usize, base + to);
        if end > ends_after && end <= ends_upto && only.is_none_or(|o| o[r]) {
            hit(r, end);
        }
        hyperscan::Matching::Continue
    }
}

/// [`hit_filter`] recording each hit as a window of its rule, and (when `hit_rules` is given)
/// each rule whose window list it makes non-empty.
#[cfg(feature = "hyperscan")]
pub(super) fn hit_recorder<'a>(
    rules: &'a [Rule],
    windows: &'a mut [Vec<(u64, u64)>],
    mut hit_rules: Option<&'a mut Vec<usize>>,
    base: u64,
    ends_after: u64,
    ends_upto: u64,
    only: Option<&'a [bool]>,
) -> impl FnMut(u32, u64, u64, u32) -> hyperscan::Matching + 'a {
    hit_filter(base, ends_after, ends_upto, only, move |r, end| {
        if let Some(list) = hit_rules.as_deref_mut() {
            if windows[r].is_empty() {
                list.push(r);
            }
        }
        add_hit(&mut windows[r], end, rules[r].max_len)
    })
}

/// Adds a prefilter hit ending at `end` to a rule's window list, merging with the last window.
#[cfg_attr(not(feature = "hyperscan"), allow(dead_code))]
pub(super) fn add_hit(windows: &mut Vec<(u64, u64)>, end: u64, max_len: usize) {
    add_window(windows, end.saturating_sub(max_len as u64), end)
}

pub(super) fn add_window(windows: &mut Vec<(u64, u64)>, lo: u64, end: u64) {
    if let Some(last) = windows.last_mut() {
        if lo <= last.1 && end >= last.0 {
            last.0 = last.0.min(lo);
            last.1 = last.1.max(end);
            return;
        }
    }
    windows.push((lo, end));
}

pub(super) fn merge_windows(w: &mut Vec<(u64, u64)>) {
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

/// Splits every window that straddles `at` into `[lo, at]` and `[at, hi]`: for a rule whose
/// matches cannot contain a newline, `at` just past a newline separates matches that can only
/// lie wholly on one side.
pub(super) fn split_at(w: &mut Vec<(u64, u64)>, at: u64) {
    if let Some(i) = w.iter().position(|&(lo, hi)| lo < at && at < hi) {
        let hi = w[i].1;
        w[i].1 = at;
        w.insert(i + 1, (at, hi));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_merge_and_split() {
        let mut w = vec![(10, 20), (0, 5), (15, 30), (40, 50)];
        merge_windows(&mut w);
        assert_eq!(w, [(0, 5), (10, 30), (40, 50)]);
        split_at(&mut w, 25);
        assert_eq!(w, [(0, 5), (10, 25), (25, 30), (40, 50)]);
        split_at(&mut w, 5);
        assert_eq!(w.len(), 4);
    }
}
