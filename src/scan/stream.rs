//! Readers (stdin, pipes, FIFOs, files too large to map) through the engine's stream mode.
//!
//! The reader is pulled in 1 MiB reads; the engine holds back only what a pending match needs,
//! so memory stays flat whatever the input size, and a secret split across reads is found once.

use std::io::{self, Read};

use crate::engine::{Engine, StreamScanner};
use crate::finding::Finding;

use super::{make_finding, FindingOptions};

pub const READ_SIZE: usize = 1 << 20;

/// Scans everything `reader` yields; `on_bytes` is told how many bytes were read (progress).
pub fn scan_reader(
    engine: &Engine,
    reader: &mut dyn Read,
    path: &str,
    opts: &FindingOptions,
    on_bytes: &mut dyn FnMut(u64),
) -> io::Result<Vec<Finding>> {
    let mut scanner = StreamScanner::new(engine);
    let mut scratch = engine.scratch();
    let mut out = Vec::new();
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        on_bytes(n as u64);
        scanner.feed(&buf[..n], &mut |m, v| {
            out.push(make_finding(engine, &mut scratch, path, m, v, opts))
        });
    }
    scanner.finish(&mut |m, v| out.push(make_finding(engine, &mut scratch, path, m, v, opts)));
    Ok(in_order(out))
}

/// Bytes read per round by [`scan_reader_parallel`].
pub const PARALLEL_CHUNK: usize = 8 << 20;
/// Hits are only taken this far before the bytes read so far: a hit's end assertion (`\b`) may look
/// one byte ahead, so the last bytes wait for the next round.
const LOOKAHEAD: u64 = 8;

/// Like [`scan_reader`], but the Hyperscan prefilter of each `round`-byte read (normally
/// [`PARALLEL_CHUNK`]) runs on `pieces` threads
/// (rayon); the confirm stage stays sequential and exact. One large file then uses every core
/// while memory stays at one round plus the hold-back — measured on the 1 GiB benchmark file,
/// the single-threaded stream prefilter was the bottleneck (see BENCHMARKS.md).
pub fn scan_reader_parallel(
    engine: &Engine,
    reader: &mut dyn Read,
    path: &str,
    opts: &FindingOptions,
    on_bytes: &mut dyn FnMut(u64),
    pieces: usize,
    round: usize,
) -> io::Result<Vec<Finding>> {
    use rayon::prelude::*;
    if !engine.has_block_prefilter() {
        return scan_reader(engine, reader, path, opts, on_bytes);
    }
    let context = engine.max_holdback() as u64;
    let mut scanner = StreamScanner::with_external_prefilter(engine);
    let mut scratch = engine.scratch();
    let mut out = Vec::new();
    // `window` holds bytes from absolute offset `win_base`: left context, then bytes not yet fed.
    let round = round.max(1);
    let mut window: Vec<u8> = Vec::with_capacity(round + context as usize + 64);
    let mut win_base = 0u64;
    let mut fed = 0u64;
    loop {
        let before = window.len();
        let eof = fill(reader, &mut window, before + round)?;
        on_bytes((window.len() - before) as u64);
        let end = win_base + window.len() as u64;
        let target = if eof {
            end
        } else {
            end.saturating_sub(LOOKAHEAD)
        };
        if target > fed {
            let step = (target - fed).div_ceil(pieces.max(1) as u64).max(1);
            let ranges: Vec<(u64, u64)> = (fed..target)
                .step_by(step as usize)
                .map(|a| (a, (a + step).min(target)))
                .collect();
            let found: Vec<Vec<(usize, u64, u64)>> = ranges
                .par_iter()
                .map_init(
                    || engine.scratch(),
                    |sc, &(a, b)| {
                        let lo = a.saturating_sub(context).max(win_base);
                        let hi = if eof { end } else { (b + LOOKAHEAD).min(end) };
                        let hay = &window[(lo - win_base) as usize..(hi - win_base) as usize];
                        engine.prefilter_windows(sc, hay, lo, a, b)
                    },
                )
                .collect();
            let chunk = &window[(fed - win_base) as usize..(target - win_base) as usize];
            scanner.feed_windows(chunk, found.into_iter().flatten(), &mut |m, v| {
                out.push(make_finding(engine, &mut scratch, path, m, v, opts))
            });
            fed = target;
        }
        if eof {
            break;
        }
        let keep_from = fed.saturating_sub(context).max(win_base);
        window.drain(..(keep_from - win_base) as usize);
        win_base = keep_from;
    }
    scanner.finish(&mut |m, v| out.push(make_finding(engine, &mut scratch, path, m, v, opts)));
    Ok(in_order(out))
}

/// Reads until `buf` holds `upto` bytes or the reader ends; returns true at end of input.
fn fill(reader: &mut dyn Read, buf: &mut Vec<u8>, upto: usize) -> io::Result<bool> {
    while buf.len() < upto {
        let old = buf.len();
        buf.resize(upto, 0);
        match reader.read(&mut buf[old..]) {
            Ok(0) => {
                buf.truncate(old);
                return Ok(true);
            }
            Ok(n) => buf.truncate(old + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(old),
            Err(e) => {
                buf.truncate(old);
                return Err(e);
            }
        }
    }
    Ok(false)
}

/// Stream batches arrive per rule window; findings are reported in input order, deduplicated.
fn in_order(mut out: Vec<Finding>) -> Vec<Finding> {
    out.sort_by(|a, b| {
        (a.location.start, a.location.end, &a.rule).cmp(&(
            b.location.start,
            b.location.end,
            &b.rule,
        ))
    });
    super::dedup_overlaps(&mut out);
    out
}
