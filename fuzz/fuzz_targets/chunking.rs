//! Fuzz: any input, split at fuzzer-chosen boundaries, gives the same findings in block mode,
//! stream mode and the parallel large-file path (the invariant DESIGN.md §1 builds on).
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run chunking -- -max_total_time=60`
#![no_main]

use std::sync::OnceLock;

use guard::engine::Engine;
use guard::finding::Finding;
use guard::rules::Ruleset;
use guard::scan::{scan_bytes, stream, FindingOptions};
use libfuzzer_sys::fuzz_target;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        Engine::builder(Ruleset::builtin().expect("builtin rules load"))
            .cache(false)
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
    let block: Vec<_> = scan_bytes(e, &mut e.scratch(), "f", data, &opts).iter().map(key).collect();
    let mut r = Chunks { data, sizes, i: 0 };
    let streamed: Vec<_> =
        stream::scan_reader(e, &mut r, "f", &opts, &mut |_| {}).expect("in-memory").iter().map(key).collect();
    assert_eq!(block, streamed);
    let mut r = Chunks { data, sizes, i: 0 };
    let round = 1 + sizes.first().copied().unwrap_or(0) as usize * 7;
    let par: Vec<_> = stream::scan_reader_parallel(e, &mut r, "f", &opts, &mut |_| {}, 3, round)
        .expect("in-memory")
        .iter()
        .map(key)
        .collect();
    assert_eq!(block, par);
});
