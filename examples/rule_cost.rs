//! Hyperscan cost of each rule alone over a file: which rules make the prefilter slow.
//! Usage: cargo run --release --example rule_cost -- FILE
fn main() {
    let path = std::env::args().nth(1).expect("usage: rule_cost FILE");
    let data = std::fs::read(path).expect("readable file");
    let all = guard::rules::Ruleset::builtin().expect("builtin rules");
    let time = |set: guard::rules::Ruleset| {
        let e = guard::engine::Engine::builder(set).build().expect("engine");
        let mut s = e.scratch().expect("scratch");
        let t = std::time::Instant::now();
        let _ = e.window_stats(&mut s, &data);
        t.elapsed().as_secs_f64()
    };
    let total = time(all.clone());
    println!(
        "all {} rules: {:.0} MB/s",
        all.len(),
        data.len() as f64 / total / 1e6
    );
    let mut rows = Vec::new();
    for r in all.rules() {
        let mut one = all.clone();
        one.retain(|x| x.id == r.id);
        rows.push((time(one), r.id.0.clone()));
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (t, id) in rows.iter().take(20) {
        println!("{id:<45} {:>8.0} MB/s alone", data.len() as f64 / t / 1e6);
    }
}
