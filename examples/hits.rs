//! Prints, per rule, how many prefilter windows and confirmed matches a file produces
//! (a rule-tuning aid: rules with many windows and few matches cost confirm time).
//! Usage: cargo run --release --example hits -- FILE
fn main() {
    let path = std::env::args().nth(1).expect("usage: hits FILE");
    let data = std::fs::read(path).expect("readable file");
    let rules = guard::rules::Ruleset::builtin().expect("builtin rules");
    let engine = guard::engine::Engine::builder(rules)
        .build()
        .expect("engine");
    let mut scratch = engine.scratch().expect("scratch");
    let t = std::time::Instant::now();
    let stats = engine.window_stats(&mut scratch, &data).expect("prefilter");
    let matches = engine.scan_block(&mut scratch, &data).expect("scan");
    let mut rows: Vec<_> = stats
        .into_iter()
        .enumerate()
        .filter(|(_, w)| w.0 > 0)
        .collect();
    rows.sort_by_key(|(_, w)| std::cmp::Reverse(w.1));
    for (r, (n, bytes)) in rows.iter().take(25) {
        let m = matches.iter().filter(|m| m.rule.get() == *r).count();
        println!(
            "{:<45} windows {n:>9} window-bytes {bytes:>11} matches {m}",
            engine.rules().nth(*r).expect("rule index").id
        );
    }
    println!("{} bytes in {:?}", data.len(), t.elapsed());
}
