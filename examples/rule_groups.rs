//! Hyperscan cost of groups of rules over a file: the whole catalogue, and the catalogue
//! without each group (rules whose pattern contains a text given on the command line).
//! Usage: cargo run --release --example rule_groups -- FILE TEXT...
fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: rule_groups FILE TEXT...");
    let data = std::fs::read(path).expect("readable file");
    let all = guard::rules::Ruleset::builtin().expect("builtin rules");
    let time = |set: guard::rules::Ruleset| {
        let e = guard::engine::Engine::builder(set).build().expect("engine");
        let mut s = e.scratch().expect("scratch");
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let _ = e.window_stats(&mut s, &data);
            best = best.min(t.elapsed().as_secs_f64());
        }
        data.len() as f64 / best / 1e6
    };
    println!("all {} rules: {:.0} MB/s", all.len(), time(all.clone()));
    for re in args {
        let mut rest = all.clone();
        rest.retain(|x| !x.spec.pattern.contains(re.as_str()));
        let n = all.len() - rest.len();
        println!("without {n} rules matching {re:?}: {:.0} MB/s", time(rest));
    }
}
