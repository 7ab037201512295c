//! Fuzz: any bytes as a rule file or `guard.toml` give a rule set or an error, never a panic;
//! a rule set that loads also compiles into an engine that can scan.
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run rule_file -- -max_total_time=60`
#![no_main]

use guard::engine::{Backend, Engine};
use guard::rules::Ruleset;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut set = Ruleset::empty();
    if set.add_toml("fuzz.toml", text).is_ok() && !set.is_empty() {
        if let Ok(e) = Engine::builder(set).backend(Backend::RegexOnly).build() {
            if let Ok(mut s) = e.scratch() {
                let _ = e.scan_block(&mut s, text.as_bytes());
            }
        }
    }
});
