//! Fuzz: any input, split at fuzzer-chosen boundaries, gives the same findings in block mode,
//! stream mode and the parallel large-file path (the invariant ARCHITECTURE.md's engine section builds on).
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run chunking -- -max_total_time=60`
#![no_main]

use std::sync::OnceLock;

use guard::engine::Engine;
use guard::finding::{Finding, FindingOptions, Origin};
use guard::rules::Ruleset;
use guard::source::{reader, scan_bytes};
use libfuzzer_sys::fuzz_target;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        Engine::builder(Ruleset::builtin().expect("builtin rules load"))
            .build()
            .expect("builtin rules compile")
    })
}

struct Chunks<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    i: usize,
}

impl std::io::Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = self.sizes.get(self.i % self.sizes.len().max(1)).copied().unwrap_or(64).max(1) as usize;
        self.i += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn key(f: &Finding) -> (u64, u64, String, String) {
    (f.location.start, f.location.end, f.rule.0.clone(), f.snippet.clone())
}

fuzz_target!(|input: &[u8]| {
    let (sizes, data) = input.split_at(input.len().min(8));
    let e = engine();
    let opts = FindingOptions::default();
    let o = Origin::Stdin;
    let mut block = Vec::new();
    scan_bytes(e, &mut e.scratch().expect("scratch"), &o, data, &opts, &mut |f| block.push(key(&f))).expect("scan");
    let mut r = Chunks { data, sizes, i: 0 };
    let mut streamed = Vec::new();
    reader::scan_stream(e, &mut r, &o, &opts, &mut |_| {}, &mut |f| streamed.push(key(&f))).expect("in-memory");
    assert_eq!(block, streamed);
    let mut r = Chunks { data, sizes, i: 0 };
    let round = 1 + sizes.first().copied().unwrap_or(0) as usize * 7;
    let mut par = Vec::new();
    reader::scan_stream_parallel(e, &mut r, &o, &opts, &mut |_| {}, &mut |f| par.push(key(&f)), 3, round)
        .expect("in-memory");
    assert_eq!(block, par);
});
