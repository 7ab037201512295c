//! Hyperscan cost over a tree's files of the whole catalogue with one rule's pattern replaced.
//! Usage: hs_variants DIR RULE-ID PATTERN...
use hyperscan::prelude::*;
use std::time::Instant;

fn files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
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
    let mut data = Vec::new();
    files(std::path::Path::new(&args[0]), &mut data);
    let rules = guard::rules::Ruleset::builtin().expect("rules");
    let mut variants = vec![None];
    variants.extend(args[2..].iter().map(Some));
    for v in variants {
        let pats: Patterns = rules
            .rules()
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let p = match v {
                    Some(p) if r.id.0 == args[1] => p.clone(),
                    _ => r.spec.pattern.clone(),
                };
                Pattern {
                    expression: p.replace("(?P<", "(?<"),
                    flags: CompileFlags::PREFILTER,
                    id: Some(i),
                    ext: Default::default(),
                    som: None,
                }
            })
            .collect();
        let db: BlockDatabase = pats.build().expect("database");
        let s = db.alloc_scratch().expect("scratch");
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            for f in &data {
                db.scan(&f[..], &s, |_: u32, _: u64, _: u64, _: u32| {
                    Matching::Continue
                })
                .expect("scan");
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{:.3}s  {}", best, v.map_or("(as is)", |s| s.as_str()));
    }
}
