//! Engine invariants: both backends agree, and stream mode equals block mode for any chunking.

use proptest::prelude::*;

use super::*;
use crate::rules::Ruleset;

fn small_rules() -> Ruleset {
    let mut s = Ruleset::empty();
    s.add_toml(
        "t.toml",
        r#"
[[rule]]
id = "t.tok"
name = "tok"
pattern = '\btok_(?P<secret>[A-Za-z0-9]{8,12})\b'
keywords = ["tok_"]
confidence = "high"
[[rule]]
id = "t.kv"
name = "kv"
pattern = '(?i)(?:key|secret)\s{0,3}[=:]\s{0,3}"?(?P<secret>[A-Za-z0-9+/]{12,40})'
keywords = ["key", "secret"]
min_entropy = 2.5
confidence = "low"
[[rule]]
id = "t.block"
name = "block"
pattern = '-----BEGIN KEY-----[A-Za-z0-9+/=\s]{4,600}-----END KEY-----'
keywords = ["-----BEGIN KEY-----"]
confidence = "high"
[[rule]]
id = "t.dense"
name = "dense"
pattern = '[a-f0-9]{16,24}'
confidence = "low"
"#,
    )
    .expect("test rules are valid");
    s
}

fn engines(rules: Ruleset) -> Vec<Engine> {
    let mut v = vec![Engine::builder(rules.clone())
        .cache(false)
        .backend(Backend::RegexOnly)
        .build()
        .expect("builds")];
    #[cfg(feature = "hyperscan")]
    v.push(Engine::builder(rules).cache(false).build().expect("builds"));
    v
}

fn stream(e: &Engine, hay: &[u8], cuts: &[usize]) -> Vec<Match> {
    let mut out = Vec::new();
    let mut s = StreamScanner::new(e);
    let mut pos = 0;
    for &c in cuts {
        let c = c.min(hay.len()).max(pos);
        s.feed(&hay[pos..c], &mut |m, _| out.push(m.clone()));
        pos = c;
    }
    s.feed(&hay[pos..], &mut |m, _| out.push(m.clone()));
    s.finish(&mut |m, _| out.push(m.clone()));
    out.sort();
    out
}

const FRAGMENTS: &[&str] = &[
    "tok_abcDEF12",
    "tok_abcDEF12345",
    "tok_ab",
    " ",
    "\n",
    "key = ",
    "secret: \"",
    "Zq8Lm2Xr9Tv4Wp1N",
    "-----BEGIN KEY-----\n",
    "QUJDREVG\n",
    "-----END KEY-----",
    "deadbeefcafebabe0123",
    "0123456789abcdef",
    "guard:allow",
    "x",
    "=",
    "\u{0}",
    "\u{ff}",
];

fn build_hay(idx: &[usize]) -> Vec<u8> {
    idx.iter()
        .flat_map(|&i| FRAGMENTS[i % FRAGMENTS.len()].bytes())
        .collect()
}

#[test]
fn backends_agree_and_find_expected() {
    let hay = b"a tok_abcDEF12 b\nkey = \"Zq8Lm2Xr9Tv4Wp1N\"\nkey = \"zzzzzzzzzzzzzzzz\"\nsecret=tok_abcDEF12 # guard:allow\n";
    let es = engines(small_rules());
    let a = es[0].scan_block(&mut es[0].scratch(), hay);
    let names: Vec<&str> = a.iter().map(|m| es[0].rule(m.rule).id.0.as_str()).collect();
    assert_eq!(names, ["t.tok", "t.kv"]);
    assert_eq!(
        &hay[a[0].secret_start as usize..a[0].secret_end as usize],
        b"abcDEF12"
    );
    for e in &es[1..] {
        assert_eq!(e.scan_block(&mut e.scratch(), hay), a);
    }
}

#[cfg(feature = "hyperscan")]
#[test]
fn builtin_rules_compile_into_hyperscan() {
    let e = Engine::builder(Ruleset::builtin().expect("loads"))
        .cache(false)
        .build()
        .expect("builds");
    assert_eq!(e.backend_name(), "hyperscan");
}

#[test]
fn long_hit_dense_input_is_bounded_and_exact() {
    // 300 KiB of hex: one dense rule keeps hitting, the window must not grow without bound.
    let hay: Vec<u8> = (0..300 * 1024)
        .map(|i| b"0123456789abcdef"[(i * 7 + i / 13) % 16])
        .collect();
    for e in engines(small_rules()) {
        let block = e.scan_block(&mut e.scratch(), &hay);
        let mut s = StreamScanner::new(&e);
        let mut out = Vec::new();
        let mut max_held = 0;
        for c in hay.chunks(4096) {
            s.feed(c, &mut |m, _| out.push(m.clone()));
            max_held = max_held.max(s.buffered());
        }
        s.finish(&mut |m, _| out.push(m.clone()));
        out.sort();
        assert_eq!(out, block);
        assert!(
            max_held <= STREAM_HOLD_CAP + e.max_holdback() + 4096,
            "held {max_held}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn chunking_never_changes_findings(idx in proptest::collection::vec(0usize..64, 0..80),
                                       cuts in proptest::collection::vec(0usize..2000, 0..12)) {
        let hay = build_hay(&idx);
        let mut cuts = cuts;
        cuts.sort_unstable();
        let es = engines(small_rules());
        let reference = es[0].scan_block(&mut es[0].scratch(), &hay);
        for e in &es {
            prop_assert_eq!(&e.scan_block(&mut e.scratch(), &hay), &reference);
            prop_assert_eq!(&stream(e, &hay, &cuts), &reference);
        }
    }
}
