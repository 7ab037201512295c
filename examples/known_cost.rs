//! Times the fingerprint stage alone: `known_cost FP FILE` runs `KnownMatcher::find_all` over
//! FILE (in memory) with the fingerprint file FP, and prints ns per input byte.
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [fp, file] = &args[..] else {
        eprintln!("usage: known_cost FP FILE");
        std::process::exit(2);
    };
    let t = Instant::now();
    let set = guard::fingerprint::load(fp.as_ref()).expect("fingerprint file");
    let loaded = t.elapsed();
    let t = Instant::now();
    let m = guard::engine::known::KnownMatcher::new(set);
    let built = t.elapsed();
    let hay = std::fs::read(file).expect("input");
    for _ in 0..3 {
        let t = Instant::now();
        let hits = m.find_all(&hay);
        let s = t.elapsed().as_secs_f64();
        println!(
            "load {:.0} ms, build {:.0} ms, scan {:.3} s = {:.2} ns/byte, {} hits",
            loaded.as_secs_f64() * 1e3,
            built.as_secs_f64() * 1e3,
            s,
            s * 1e9 / hay.len() as f64,
            hits.len()
        );
    }
}
