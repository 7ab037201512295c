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
    out.sort_by(|a, b| {
        (a.location.start, a.location.end, &a.rule).cmp(&(
            b.location.start,
            b.location.end,
            &b.rule,
        ))
    });
    super::dedup_overlaps(&mut out);
    Ok(out)
}
