//! The prefilter's cost over a tree's files (the ones a scan reads: binary files are skipped) for
//! the whole catalogue, then with one rule's pattern replaced by each PATTERN given.
//! Usage: cargo run --release --example hs_variants -- DIR RULE-ID PATTERN...
use std::time::Instant;

fn files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    for e in std::fs::read_dir(dir)
        .expect("readable directory")
        .flatten()
    {
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            files(&e.path(), out);
        } else if ft.is_file() {
            out.extend(std::fs::read(e.path()).ok());
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, id, patterns @ ..] = args.as_slice() else {
        panic!("usage: hs_variants DIR RULE-ID PATTERN...");
    };
    let mut data = Vec::new();
    files(std::path::Path::new(dir), &mut data);
    data.retain(|f| !guard::source::looks_binary(f));
    let all = guard::rules::Ruleset::builtin().expect("builtin rules");
    let spec = all
        .rules()
        .iter()
        .find(|r| &r.id.0 == id)
        .expect("RULE-ID names a builtin rule")
        .spec
        .clone();
    let mut variants = vec![None];
    variants.extend(patterns.iter().map(Some));
    for v in variants {
        let mut set = all.clone();
        if let Some(p) = v {
            let mut spec = spec.clone();
            spec.pattern = p.clone();
            set.retain(|r| &r.id.0 != id);
            set.add_spec("hs_variants", 0, spec)
                .expect("a valid pattern");
        }
        let engine = guard::engine::Engine::builder(set).build().expect("engine");
        let mut scratch = engine.scratch().expect("scratch");
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            for f in &data {
                engine.window_stats(&mut scratch, f).expect("prefilter");
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{best:.3}s  {}", v.map_or("(as is)", |s| s.as_str()));
    }
}
