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
[[rule]]
id = "t.multi"
name = "multi-line, no start literals"
pattern = '[A-Z]{2}_PASS\s{0,3}=\s{0,3}(?P<secret>[0-9]{6,10})'
confidence = "medium"
"#,
    )
    .expect("test rules are valid");
    s
}

fn engines(rules: Ruleset) -> Vec<Engine> {
    let mut v = vec![Engine::builder(rules.clone())
        .backend(Backend::RegexOnly)
        .build()
        .expect("builds")];
    #[cfg(feature = "hyperscan")]
    v.push(Engine::builder(rules).build().expect("builds"));
    v
}

fn scan(e: &Engine, hay: &[u8]) -> Vec<Match> {
    e.scan_block(&mut e.scratch().expect("scratch"), hay)
        .expect("scan")
}

/// Stream mode at the given cuts. Matches must arrive in order, each exactly once: no sorting.
fn stream(e: &Engine, hay: &[u8], cuts: &[usize]) -> Vec<Match> {
    let mut out = Vec::new();
    let mut s = StreamScanner::new(e).expect("stream");
    let mut pos = 0;
    for &c in cuts {
        let c = c.min(hay.len()).max(pos);
        s.feed(&hay[pos..c], &mut |m, _| out.push(m.clone()))
            .expect("feed");
        pos = c;
    }
    s.feed(&hay[pos..], &mut |m, _| out.push(m.clone()))
        .expect("feed");
    s.finish(&mut |m, _| out.push(m.clone())).expect("finish");
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
    "XY_PASS =\n",
    "1234567",
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
    let a = scan(&es[0], hay);
    let names: Vec<&str> = a.iter().map(|m| es[0].rule(m.rule).id.0.as_str()).collect();
    assert_eq!(names, ["t.tok", "t.kv"]);
    assert_eq!(
        &hay[a[0].secret_start as usize..a[0].secret_end as usize],
        b"abcDEF12"
    );
    for e in &es[1..] {
        assert_eq!(scan(e, hay), a);
    }
}

#[cfg(feature = "hyperscan")]
#[test]
fn builtin_rules_compile_into_hyperscan() {
    let e = Engine::builder(Ruleset::builtin().expect("loads"))
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
        let block = scan(&e, &hay);
        let mut s = StreamScanner::new(&e).expect("stream");
        let mut out = Vec::new();
        let mut max_held = 0;
        for c in hay.chunks(4096) {
            s.feed(c, &mut |m, _| out.push(m.clone())).expect("feed");
            max_held = max_held.max(s.buffered());
        }
        s.finish(&mut |m, _| out.push(m.clone())).expect("finish");
        assert_eq!(out, block);
        assert!(
            max_held <= STREAM_HOLD_CAP + e.max_holdback() + 4096,
            "held {max_held}"
        );
    }
}

/// A pseudo-random input of about `len` bytes from [`FRAGMENTS`]; one newline in `1 + line`
/// fragment picks, so a large `line` gives lines longer than [`STREAM_HOLD_CAP`].
#[cfg(feature = "hyperscan")]
fn large_hay(seed: u64, len: usize, line: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut hay = Vec::with_capacity(len + 64);
    while hay.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(1 + line) {
            hay.push(b'\n');
        } else {
            let f = FRAGMENTS[(x >> 8) as usize % FRAGMENTS.len()].bytes();
            hay.extend(f.map(|b| if b == b'\n' { b' ' } else { b }));
        }
    }
    hay
}

#[cfg(feature = "hyperscan")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Large chunks take the two-thread path (line batches cut at a newline, the second part and
    /// the multi-line stream scanned on the worker), long lines the partial-line block scans.
    #[test]
    fn large_chunks_and_long_lines_never_change_findings(
        seed in any::<u64>(),
        line in prop_oneof![Just(8u64), Just(200), Just(20_000)],
        stride in 20_000usize..150_000,
        cuts in proptest::collection::vec(0usize..400_000, 0..6),
    ) {
        let hay = large_hay(seed, 400_000, line);
        let mut cuts = cuts;
        cuts.extend((stride..hay.len()).step_by(stride));
        cuts.sort_unstable();
        let e = Engine::builder(small_rules()).build().expect("builds");
        let reference = scan(&e, &hay);
        prop_assert!(!reference.is_empty());
        prop_assert_eq!(&stream(&e, &hay, &cuts), &reference);
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
        let reference = scan(&es[0], &hay);
        for e in &es {
            prop_assert_eq!(&scan(e, &hay), &reference);
            prop_assert_eq!(&stream(e, &hay, &cuts), &reference);
        }
    }
}

#[cfg(feature = "hyperscan")]
#[test]
fn builtin_rules_have_a_stream_database() {
    let e = Engine::builder(Ruleset::builtin().expect("loads"))
        .build()
        .expect("builds");
    assert!(e.stream_db().expect("stream database").is_some());
}

#[test]
fn a_complete_line_is_settled_at_its_newline() {
    // Line-local rules settle at the newline even though the longest rule (t.block) could still
    // be pending; the multi-line rule holds nothing when its start literal is absent.
    let mut rules = small_rules();
    rules.retain(|r| ["t.tok", "t.block"].contains(&r.id.0.as_str()));
    for e in engines(rules) {
        let mut s = StreamScanner::new(&e).expect("stream");
        let mut out = Vec::new();
        s.feed(b"noise\nuser tok_abcDEF12 here\n", &mut |m, _| {
            out.push(m.clone())
        })
        .expect("feed");
        assert_eq!(out.len(), 1, "{}", e.backend_name());
        assert_eq!(e.rule(out[0].rule).id.0, "t.tok");
        assert_eq!(s.settled(), 29);
        // An open multi-line match holds the stream back (until max_len + context more bytes, or
        // the end of input): a longer match from the same start could still complete.
        s.feed(b"-----BEGIN KEY-----\nQUJD\n", &mut |m, _| {
            out.push(m.clone())
        })
        .expect("feed");
        s.feed(b"-----END KEY-----\ntok_zzzzDEF12 x\n", &mut |m, _| {
            out.push(m.clone())
        })
        .expect("feed");
        assert!(s.settled() <= 29, "settled {}", s.settled());
        assert_eq!(out.len(), 1);
        s.finish(&mut |m, _| out.push(m.clone())).expect("finish");
        let ids: Vec<&str> = out.iter().map(|m| e.rule(m.rule).id.0.as_str()).collect();
        assert_eq!(ids, ["t.tok", "t.block", "t.tok"], "{}", e.backend_name());
    }
}

#[test]
fn overlapping_matches_keep_the_most_confident() {
    // t.kv (low) would take "tok_abcDEF12345" as a value; t.tok (high) matches inside it.
    let hay = b"secret = tok_abcDEF12\n";
    for e in engines(small_rules()) {
        let found = scan(&e, hay);
        let ids: Vec<&str> = found.iter().map(|m| e.rule(m.rule).id.0.as_str()).collect();
        assert_eq!(ids, ["t.tok"], "{}", e.backend_name());
        assert_eq!(stream(&e, hay, &[3, 14]), found);
    }
}
