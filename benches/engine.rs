//! Engine benchmarks (criterion, MB/s through `Throughput::Bytes`).
//!
//! - `scan/{sparse,dense}/{block,stream}/{auto,regex}`: engine throughput with every builtin rule,
//!   on 4 MiB of generated source-like text with no secrets (`sparse`) and the same text with a
//!   rule example spliced in every ~200 bytes (`dense`); block mode is one `scan_block` call,
//!   stream mode feeds 64 KiB chunks to a `StreamScanner`; `auto` is Hyperscan + confirm,
//!   `regex` the pure regex-automata backend.
//! - `build/compile/{auto,regex}`: `Engine::builder(Ruleset::builtin()).build()` (no cache).
//! - `build/cached/auto`: the same with a `DirCache` after a first build filled it
//!   (in a temp dir), i.e. what a pre-commit hook pays at start-up.
//!
//! Inputs are generated in-process from a fixed seed, so runs are comparable and need no files.
//! Run: `cargo bench --bench engine` (a few minutes on 2 cores); one group: `-- scan/sparse`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use guard::engine::{Backend, Engine, StreamScanner};
use guard::rules::Ruleset;

const INPUT_LEN: usize = 4 << 20;
const CHUNK: usize = 64 << 10;
const DENSE_EVERY: usize = 200;

/// xorshift64*: a fixed-seed generator, so the inputs are the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "buffer", "config", "reader", "writer", "index", "offset", "length", "value", "result",
    "error", "state", "handle", "request", "response", "header", "payload", "context", "token",
    "parser", "cursor", "window", "chunk", "stream", "engine", "rule", "match", "scratch", "path",
    "entry", "count", "limit", "cache", "key", "name", "item", "node", "tree", "map", "list",
];
const TYPES: &[&str] = &[
    "usize",
    "u64",
    "String",
    "Vec<u8>",
    "&str",
    "Option<usize>",
    "bool",
    "PathBuf",
    "Duration",
];
const COMMENT: &[&str] = &[
    "the", "a", "of", "is", "when", "returns", "every", "if", "not", "this", "that", "bytes",
    "input", "output", "first", "last", "so", "we", "keep", "only", "once", "after", "before",
];

fn ident(r: &mut Rng) -> String {
    match r.next() % 3 {
        0 => r.pick(WORDS).to_string(),
        1 => format!("{}_{}", r.pick(WORDS), r.pick(WORDS)),
        _ => format!("{}{}", r.pick(WORDS), r.next() % 16),
    }
}

/// Rust-looking source text with no secrets: the common case of a scan.
fn sparse_text(len: usize) -> Vec<u8> {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(len + 256);
    while out.len() < len {
        let line = match r.next() % 8 {
            0 => {
                let n = 3 + r.next() % 10;
                let words: Vec<&str> = (0..n).map(|_| r.pick(COMMENT)).collect();
                format!("    // {}.\n", words.join(" "))
            }
            1 => format!(
                "pub fn {}(&self, {}: {}) -> {} {{\n",
                ident(&mut r),
                ident(&mut r),
                r.pick(TYPES),
                r.pick(TYPES)
            ),
            2 => format!(
                "        let {} = self.{}.{}({}, {});\n",
                ident(&mut r),
                ident(&mut r),
                ident(&mut r),
                ident(&mut r),
                r.next() % 4096
            ),
            3 => format!(
                "        if {} > {} {{ return Err(Error::{}); }}\n",
                ident(&mut r),
                r.next() % 100,
                r.pick(WORDS)
            ),
            4 => format!(
                "    {}: {}, // {} {}\n",
                ident(&mut r),
                r.pick(TYPES),
                r.pick(COMMENT),
                r.pick(WORDS)
            ),
            5 => format!(
                "        log::debug!(\"{} {} {{}}\", {});\n",
                r.pick(WORDS),
                r.pick(COMMENT),
                ident(&mut r)
            ),
            6 => "    }\n\n".to_string(),
            _ => format!(
                "        {}.push({}::new({}));\n",
                ident(&mut r),
                r.pick(WORDS),
                ident(&mut r)
            ),
        };
        out.push_str(&line);
    }
    out.truncate(len);
    out.into_bytes()
}

/// The sparse text with one builtin rule example (all rules in turn) every ~200 bytes, each on
/// its own line: a worst case for the confirm stage.
fn dense_text(len: usize, rules: &Ruleset) -> Vec<u8> {
    let examples: Vec<&str> = rules
        .rules()
        .iter()
        .flat_map(|r| r.spec.examples.iter().map(String::as_str))
        .collect();
    let base = sparse_text(len);
    let mut out = Vec::with_capacity(len + 4096);
    let mut i = 0;
    let mut k = 0;
    while out.len() < len && i < base.len() {
        let stop = (i + DENSE_EVERY).min(base.len());
        // cut at a line end so examples keep their own lines
        let stop = match base[stop..].iter().position(|&b| b == b'\n') {
            Some(p) => stop + p + 1,
            None => base.len(),
        };
        out.extend_from_slice(&base[i..stop]);
        out.extend_from_slice(examples[k % examples.len()].as_bytes());
        out.push(b'\n');
        k += 1;
        i = stop;
    }
    out.truncate(len);
    out
}

fn engine(backend: Backend) -> Engine {
    Engine::builder(Ruleset::builtin().expect("builtin rules should load"))
        .backend(backend)
        .build()
        .expect("builtin rules should compile")
}

fn stream_scan(engine: &Engine, hay: &[u8]) -> usize {
    let mut n = 0usize;
    let mut s = StreamScanner::new(engine).expect("stream");
    for chunk in hay.chunks(CHUNK) {
        s.feed(chunk, &mut |m, _view| {
            n += 1;
            black_box(m);
        })
        .expect("feed");
    }
    s.finish(&mut |m, _view| {
        n += 1;
        black_box(m);
    })
    .expect("finish");
    n
}

fn bench_scan(c: &mut Criterion) {
    let rules = Ruleset::builtin().expect("builtin rules should load");
    let inputs = [
        ("sparse", sparse_text(INPUT_LEN)),
        ("dense", dense_text(INPUT_LEN, &rules)),
    ];
    let engines = [
        ("auto", engine(Backend::Auto)),
        ("regex", engine(Backend::RegexOnly)),
    ];
    for (name, hay) in &inputs {
        // Say what the input holds, so a reader can tell "sparse" really is hit-free.
        let (_, e) = &engines[0];
        let hits = e
            .scan_block(&mut e.scratch().expect("scratch"), hay)
            .expect("scan")
            .len();
        eprintln!(
            "engine bench input {name}: {} bytes, {hits} matches ({} backend)",
            hay.len(),
            e.backend_name()
        );
        let mut g = c.benchmark_group(format!("scan/{name}"));
        g.throughput(Throughput::Bytes(hay.len() as u64));
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(4));
        for (bname, e) in &engines {
            let mut scratch = e.scratch().expect("scratch");
            g.bench_function(BenchmarkId::new("block", bname), |b| {
                b.iter(|| {
                    black_box(
                        e.scan_block(&mut scratch, black_box(hay))
                            .expect("scan")
                            .len(),
                    )
                })
            });
            g.bench_function(BenchmarkId::new("stream", bname), |b| {
                b.iter(|| black_box(stream_scan(e, black_box(hay))))
            });
        }
        g.finish();
    }
}

fn bench_build(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp dir should be creatable");
    let rules = Ruleset::builtin().expect("builtin rules should load");
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    for (bname, backend) in [("auto", Backend::Auto), ("regex", Backend::RegexOnly)] {
        g.bench_function(BenchmarkId::new("compile", bname), |b| {
            b.iter(|| {
                Engine::builder(black_box(rules.clone()))
                    .backend(backend)
                    .build()
                    .expect("builtin rules should compile")
            })
        });
    }
    // Fill the cache once, then measure the start-up path of every later run.
    let cache = || {
        Some(std::sync::Arc::new(guard::cache::DirCache::new(dir.path()))
            as std::sync::Arc<dyn guard::engine::DatabaseCache>)
    };
    Engine::builder(rules.clone())
        .database_cache(cache())
        .build()
        .expect("builtin rules should compile");
    g.bench_function(BenchmarkId::new("cached", "auto"), |b| {
        b.iter(|| {
            Engine::builder(black_box(rules.clone()))
                .database_cache(cache())
                .build()
                .expect("cached database should load")
        })
    });
    // Ruleset parsing alone (the embedded TOML), part of every start-up.
    g.bench_function("ruleset/builtin", |b| {
        b.iter(|| Ruleset::builtin().expect("builtin rules should load"))
    });
    g.finish();
}

criterion_group!(benches, bench_scan, bench_build);
criterion_main!(benches);
