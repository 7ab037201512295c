//! `guard redact` and `guard fingerprint` end to end: the stream contract (every other byte
//! unchanged, any chunking, idempotent, bounded memory, fail closed), fingerprint files, leak
//! events, `-- cmd`, JSON lines, and a real rsyslogd running the mmexternal filter of
//! `contrib/rsyslog/guard-redact.conf`.
//!
//! Every token here is generated (valid format, fake). The Hyperscan database is compiled once
//! into a cache shared by every process this file starts: a cold compile costs tens of seconds
//! of CPU on a busy machine.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use base64::Engine as _;
use guard::engine::known::{KnownMatcher, KnownSet};
use guard::engine::{Allowlist, Engine};
use guard::redact::{redact_bytes, BlockRedactor, RedactOptions, Redactor};
use proptest::prelude::*;

const GH: &str = "github.pat_classic";

fn gh_redacted() -> String {
    format!("[REDACTED:{GH}]")
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_guard")
}

/// The compiled-database cache every process of this file shares, warmed once.
fn cache_dir() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("redact-it-cache");
        std::fs::create_dir_all(&d).expect("mkdir cache");
        for args in [&["redact"][..], &["scan", "-"][..]] {
            let out = Command::new(bin())
                .args(args)
                .env("GUARD_CACHE_DIR", &d)
                .write_stdin("warm up\n")
                .output()
                .expect("guard runs");
            assert!(
                out.status.code().is_some_and(|c| c == 0),
                "warming the cache: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        d
    })
}

/// Where the default leak spool would go: never the user's home.
fn state_dir() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("redact-it-state");
        std::fs::create_dir_all(&d).expect("mkdir state");
        d
    })
}

fn guard() -> Command {
    let mut c = Command::new(bin());
    c.env("GUARD_CACHE_DIR", cache_dir())
        .env("XDG_STATE_HOME", state_dir())
        .env("NO_COLOR", "1")
        .env_remove("GUARD_FINDING_KEY");
    c
}

fn guard_std() -> StdCommand {
    let mut c = StdCommand::new(bin());
    c.env("GUARD_CACHE_DIR", cache_dir())
        .env("XDG_STATE_HOME", state_dir())
        .env("NO_COLOR", "1")
        .env_remove("GUARD_FINDING_KEY");
    c
}

/// The library engine configured as `guard redact` builds it (builtin rules, no inline marker).
fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let mut allow = Allowlist::new();
        allow.inline = false;
        let cache: Arc<dyn guard::engine::DatabaseCache> =
            Arc::new(guard::cache::DirCache::new(cache_dir()));
        Engine::builder(guard::rules::Ruleset::builtin().expect("builtin rules"))
            .allowlist(allow)
            .database_cache(Some(cache))
            .build()
            .expect("engine builds")
    })
}

/// A GitHub classic token with a valid CRC32 tail: 30 base62 characters from `seed` (cycled).
fn ghp(seed: &str) -> String {
    let random: String = seed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .cycle()
        .take(30)
        .collect();
    let crc = guard::engine::validate::base62_crc(crc32fast::hash(random.as_bytes()));
    format!("ghp_{random}{}", std::str::from_utf8(&crc).expect("ascii"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. Basics

#[test]
fn rule_hit_replaced_every_other_byte_identical() {
    let tok = ghp("BasicsFakeTokenRedactTest");
    let mut input = b"\x00\x01 binary \xff\xfe\xc3\x28 invalid utf-8\r\n".to_vec();
    input.extend_from_slice(format!("export GITHUB_TOKEN={tok}\r\n").as_bytes());
    input.extend_from_slice(b"tab\tnul\x00 ");
    input.extend_from_slice(tok.as_bytes());
    input.extend_from_slice(b"\xff\r\n\r\n\nlast line, no newline \x7f\x80");
    let out = guard()
        .arg("redact")
        .write_stdin(input.clone())
        .output()
        .expect("runs");
    let want = replace_all(&input, tok.as_bytes(), gh_redacted().as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "stderr: {}", lossy(&out.stderr));
    assert_eq!(
        out.stdout,
        want,
        "\n got: {:?}\nwant: {:?}",
        lossy(&out.stdout),
        lossy(&want)
    );

    // Clean binary input passes byte for byte (every byte value, NUL and CR included).
    let all: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let out = guard()
        .arg("redact")
        .write_stdin(all.clone())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == all, "clean binary input changed");
}

#[test]
fn replacement_text_and_id_template() {
    let tok = ghp("ReplacementFakeToken");
    let input = format!("a {tok} b\n{tok}\n");
    let out = guard()
        .args(["redact", "--replacement", "***"])
        .write_stdin(input.clone())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lossy(&out.stdout), "a *** b\n***\n");
    let out = guard()
        .args(["redact", "--replacement", "<{id}>"])
        .write_stdin(input)
        .output()
        .expect("runs");
    assert_eq!(lossy(&out.stdout), format!("a <{GH}> b\n<{GH}>\n"));
}

#[test]
fn fail_on_redact_exit_codes() {
    let tok = ghp("FailOnRedactFakeToken");
    let secret = format!("x {tok}\n");
    let clean = "nothing to see here\n";
    let code = |args: &[&str], input: &str| {
        let o = guard()
            .args(args)
            .write_stdin(input.to_string())
            .output()
            .expect("runs");
        (o.status.code(), o.stdout)
    };
    let (c, out) = code(&["redact", "--fail-on-redact"], &secret);
    assert_eq!(c, Some(1));
    assert_eq!(lossy(&out), format!("x {}\n", gh_redacted()));
    let (c, out) = code(&["redact", "--fail-on-redact"], clean);
    assert_eq!(c, Some(0));
    assert_eq!(lossy(&out), clean);
    assert_eq!(code(&["redact"], &secret).0, Some(0));
    assert_eq!(code(&["redact"], clean).0, Some(0));
}

fn quiet_end(status: std::process::ExitStatus) -> bool {
    status.code() == Some(0) || status.signal() == Some(libc::SIGPIPE)
}

#[test]
fn closed_stdout_ends_quietly() {
    let tok = ghp("ClosedStdoutFakeToken");
    let line = format!("a line with {tok} and some padding text to make it longer\n");
    // Spawned with a stdout whose reader goes away after one byte.
    let mut child = guard_std()
        .arg("redact")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let mut stdin = child.stdin.take().expect("stdin");
    let l2 = line.clone();
    let writer = std::thread::spawn(move || {
        for _ in 0..200_000 {
            if stdin.write_all(l2.as_bytes()).is_err() {
                return;
            }
        }
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).expect("one byte");
    drop(stdout);
    writer.join().expect("writer");
    let out = child.wait_with_output().expect("waits");
    assert!(out.stderr.is_empty(), "stderr: {}", lossy(&out.stderr));
    assert!(quiet_end(out.status), "status {:?}", out.status);

    // The shell way: `… | guard redact | head -c 1`.
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("in.txt");
    std::fs::write(&big, line.repeat(100_000)).expect("write");
    let out = StdCommand::new("sh")
        .arg("-c")
        .arg(r#""$G" redact < "$IN" | head -c 1 >/dev/null"#)
        .env("G", bin())
        .env("IN", &big)
        .env("GUARD_CACHE_DIR", cache_dir())
        .env("XDG_STATE_HOME", state_dir())
        .output()
        .expect("sh runs");
    assert!(out.stderr.is_empty(), "stderr: {}", lossy(&out.stderr));
}

// ---------------------------------------------------------------------------------------------
// 2. Properties

/// Two stored values for the property tests, under a fixed key.
const KNOWN: [(&str, &[u8]); 2] = [
    ("db-password", b"Fake-DB-pass/w0rd+\"q\" & 100%"),
    ("api-key", b"fakeapikey\x01\xfe-NOT-REAL-0123"),
];

fn known_set() -> KnownSet {
    let mut s = KnownSet::new([7; 32]);
    for (n, v) in KNOWN {
        s.add(n, 1, v).expect("fingerprints");
    }
    s
}

fn known_matcher() -> Arc<KnownMatcher> {
    static K: OnceLock<Arc<KnownMatcher>> = OnceLock::new();
    K.get_or_init(|| Arc::new(KnownMatcher::new(known_set())))
        .clone()
}

/// guard's own definitions of the encodings it recognises, written out independently.
#[derive(Clone, Copy, Debug)]
enum Enc {
    Raw,
    /// Inside a larger base64 blob: the value starts at byte `3n + align` of the blob's plaintext.
    B64 {
        url: bool,
        align: usize,
    },
    HexLower,
    HexUpper,
    Url,
    Json,
}

const ENCS: [Enc; 11] = [
    Enc::Raw,
    Enc::B64 {
        url: false,
        align: 0,
    },
    Enc::B64 {
        url: false,
        align: 1,
    },
    Enc::B64 {
        url: false,
        align: 2,
    },
    Enc::B64 {
        url: true,
        align: 0,
    },
    Enc::B64 {
        url: true,
        align: 1,
    },
    Enc::B64 {
        url: true,
        align: 2,
    },
    Enc::HexLower,
    Enc::HexUpper,
    Enc::Url,
    Enc::Json,
];

/// The text planted for `value` in encoding `e` and the part of it that depends only on the
/// value (what must not survive). `None` when the encoding does not apply (JSON of non-UTF-8).
fn plant(value: &[u8], e: Enc, pad: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    Some(match e {
        Enc::Raw => (value.to_vec(), value.to_vec()),
        Enc::B64 { url, align } => {
            let p = 3 * (pad.len() % 3) + align;
            let mut plain: Vec<u8> = pad.iter().cycle().take(p).copied().collect();
            plain.extend_from_slice(value);
            plain.extend_from_slice(&pad[..pad.len().min(7)]);
            let blob = if url {
                base64::engine::general_purpose::URL_SAFE.encode(&plain)
            } else {
                base64::engine::general_purpose::STANDARD.encode(&plain)
            }
            .into_bytes();
            // Characters whose 6 bits all come from the value.
            let lo = (8 * p).div_ceil(6);
            let hi = 8 * (p + value.len()) / 6;
            (blob.clone(), blob[lo..hi].to_vec())
        }
        Enc::HexLower => {
            let h = hex::encode(value).into_bytes();
            (h.clone(), h)
        }
        Enc::HexUpper => {
            let h = hex::encode_upper(value).into_bytes();
            (h.clone(), h)
        }
        Enc::Url => {
            let mut u = Vec::new();
            for &b in value {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    u.push(b);
                } else {
                    u.extend_from_slice(format!("%{b:02X}").as_bytes());
                }
            }
            (u.clone(), u)
        }
        Enc::Json => {
            let s = std::str::from_utf8(value).ok()?;
            let j = serde_json::to_string(s).expect("serializes");
            let inner = j.as_bytes()[1..j.len() - 1].to_vec();
            let mut doc = b"{\"password\":\"".to_vec();
            doc.extend_from_slice(&inner);
            doc.extend_from_slice(b"\"}");
            (doc, inner)
        }
    })
}

#[derive(Clone, Debug)]
enum Seg {
    Text(String),
    Newline(&'static str),
    Bytes(Vec<u8>),
    Token(String),
    Known(usize, usize),
}

fn seg() -> impl Strategy<Value = Seg> {
    prop_oneof![
        4 => "[a-z ,.:=]{0,24}".prop_map(Seg::Text),
        2 => prop_oneof![Just("\n"), Just("\r\n")].prop_map(Seg::Newline),
        1 => proptest::collection::vec(any::<u8>(), 0..8).prop_map(Seg::Bytes),
        1 => "[A-Za-z0-9]{30}".prop_map(Seg::Token),
        1 => (0..KNOWN.len(), 0..ENCS.len()).prop_map(|(k, e)| Seg::Known(k, e)),
    ]
}

/// The input, and the byte strings that must not be in its redaction.
fn build(segs: &[Seg]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut input = Vec::new();
    let mut banned = Vec::new();
    for s in segs {
        match s {
            Seg::Text(t) => input.extend_from_slice(t.as_bytes()),
            Seg::Newline(n) => input.extend_from_slice(n.as_bytes()),
            Seg::Bytes(b) => input.extend_from_slice(b),
            Seg::Token(seed) => {
                let t = ghp(seed);
                input.extend_from_slice(format!(" {t} ").as_bytes());
                banned.push(t.into_bytes());
            }
            Seg::Known(k, e) => {
                let (_, value) = KNOWN[*k];
                if let Some((text, core)) = plant(value, ENCS[*e], b"padding!") {
                    input.push(b' ');
                    input.extend_from_slice(&text);
                    input.push(b' ');
                    banned.push(core);
                    banned.push(value.to_vec());
                }
            }
        }
    }
    (input, banned)
}

fn redact_lib(input: &[u8]) -> Vec<u8> {
    redact_bytes(
        engine(),
        Some(known_matcher()),
        &RedactOptions::default(),
        input,
    )
    .expect("redacts")
    .0
}

fn redact_chunked(input: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut r =
        Redactor::new(engine(), Some(known_matcher()), RedactOptions::default()).expect("redactor");
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < input.len() {
        let n = sizes[k % sizes.len()].min(input.len() - i);
        r.feed(&input[i..i + n], &mut out).expect("feed");
        i += n;
        k += 1;
    }
    r.finish(&mut out).expect("finish");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any chunking gives the same output; the output has no finding and no known value left;
    /// redacting it again changes nothing; no planted secret survives.
    #[test]
    fn library_chunking_rescan_idempotent(
        segs in proptest::collection::vec(seg(), 1..40),
        sizes in proptest::collection::vec(1usize..200, 1..12),
    ) {
        let (input, banned) = build(&segs);
        let whole = redact_lib(&input);
        let chunked = redact_chunked(&input, &sizes);
        prop_assert!(whole == chunked, "chunking changed the output:\n{:?}\n{:?}", lossy(&whole), lossy(&chunked));
        let one_by_one = redact_chunked(&input, &[1]);
        prop_assert!(whole == one_by_one, "byte-by-byte feeding changed the output");
        // Block mode (the log-shipper adapters: one text at a time) writes the same.
        let block = BlockRedactor::new(engine(), Some(known_matcher()), RedactOptions::default())
            .expect("block redactor");
        let (b, _) = block.redact(&input).expect("redacts");
        prop_assert!(whole == b, "block mode differs from the stream:\n{:?}\n{:?}", lossy(&whole), lossy(&b));
        for b in &banned {
            prop_assert!(!contains(&whole, b), "{:?} survived in {:?}", lossy(b), lossy(&whole));
        }
        let mut scratch = engine().scratch().expect("scratch");
        let found = engine().scan_block(&mut scratch, &whole).expect("scan");
        prop_assert!(found.is_empty(), "the redaction still has findings: {:?}", found.iter().map(|m| &engine().rule(m.rule).id.0).collect::<Vec<_>>());
        prop_assert!(known_matcher().find_all(&whole).is_empty(), "a known value is left");
        prop_assert!(redact_lib(&whole) == whole, "redacting twice differs from once");
    }

    /// Any 8+ byte value, planted in each encoding anywhere in a line, is redacted: neither the
    /// value nor the part of its encoded form that depends on it remains.
    #[test]
    fn known_value_every_encoding(
        value in prop_oneof![
            "[ -~]{8,48}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 8..48),
        ],
        e in 0..ENCS.len(),
        pad in proptest::collection::vec(any::<u8>(), 1..12),
        before in "[a-z =:]{0,12}",
        after in "[a-z =:]{0,12}",
    ) {
        let mut set = KnownSet::new([9; 32]);
        set.add("stored", 4, &value).expect("fingerprints");
        let k = Arc::new(KnownMatcher::new(set));
        let Some((text, core)) = plant(&value, ENCS[e], &pad) else { return Ok(()) };
        let mut input = before.clone().into_bytes();
        input.extend_from_slice(&text);
        input.extend_from_slice(after.as_bytes());
        input.push(b'\n');
        let (out, log) = redact_bytes(engine(), Some(k), &RedactOptions::default(), &input).expect("redacts");
        prop_assert!(!contains(&out, &value), "{:?}: the value survived in {:?}", ENCS[e], lossy(&out));
        prop_assert!(!contains(&out, &core), "{:?}: {:?} survived in {:?}", ENCS[e], lossy(&core), lossy(&out));
        // A rule may cover the same span (a JSON `"password"` value) and name the replacement;
        // the known value is still what the log records, so its leak event is written.
        prop_assert!(contains(&out, b"[REDACTED:"), "{:?}: no replacement in {:?}", ENCS[e], lossy(&out));
        prop_assert!(log.iter().any(|(_, id)| id == "stored"), "{:?}: the known value is not in the log", ENCS[e]);
    }
}

/// Writes `input` to the child's stdin in the given chunk sizes with small pauses.
fn feed_slowly(
    child: &mut Child,
    input: Vec<u8>,
    sizes: Vec<usize>,
) -> std::thread::JoinHandle<()> {
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::spawn(move || {
        let mut i = 0;
        let mut k = 0;
        while i < input.len() {
            let n = sizes[k % sizes.len()].min(input.len() - i);
            if stdin.write_all(&input[i..i + n]).is_err() {
                return;
            }
            let _ = stdin.flush();
            std::thread::sleep(Duration::from_micros(300));
            i += n;
            k += 1;
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    /// The binary, fed through a pipe in random pieces, writes what the library writes for the
    /// whole input (same fingerprint set from a file), and `guard scan -` finds nothing in it.
    #[test]
    fn binary_random_chunks_equal_library_and_rescan_clean(
        segs in proptest::collection::vec(seg(), 1..60),
        sizes in proptest::collection::vec(1usize..700, 1..8),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let fp = dir.path().join("fp.json");
        guard::fingerprint::save(&fp, &known_set()).expect("saves");
        let (input, banned) = build(&segs);
        let mut child = guard_std()
            .args(["redact", "--spool"]).arg(dir.path().join("spool"))
            .arg("--fingerprints").arg(&fp)
            .stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped())
            .spawn().expect("spawns");
        let w = feed_slowly(&mut child, input.clone(), sizes);
        let out = child.wait_with_output().expect("waits");
        w.join().expect("writer");
        prop_assert_eq!(out.status.code(), Some(0), "{}", lossy(&out.stderr));
        let want = redact_lib(&input);
        prop_assert!(out.stdout == want, "binary {:?}\nlibrary {:?}", lossy(&out.stdout), lossy(&want));
        for b in &banned {
            prop_assert!(!contains(&out.stdout, b));
        }
        let scan = guard().args(["scan", "-"]).write_stdin(out.stdout.clone()).output().expect("scan runs");
        prop_assert_eq!(scan.status.code(), Some(0), "guard scan found something in the redaction: {}", lossy(&scan.stdout));
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Fingerprint files and leak events

const VALUE: &str = "Fake-DB-pass/w0rd+\"quoted\" & 100% NOT-REAL";

/// `guard fingerprint add NAME --file FP [--version V]` with `value` on stdin.
fn fp_add(fp: &Path, name: &str, version: u32, value: &[u8]) -> std::process::Output {
    guard()
        .args([
            "fingerprint",
            "add",
            name,
            "--version",
            &version.to_string(),
            "--file",
        ])
        .arg(fp)
        .write_stdin(value.to_vec())
        .output()
        .expect("runs")
}

/// Every form of `v` a file or an event must not contain.
fn forms(v: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::*;
    let mut f = vec![
        v.to_vec(),
        hex::encode(v).into_bytes(),
        hex::encode_upper(v).into_bytes(),
        STANDARD.encode(v).into_bytes(),
        STANDARD_NO_PAD.encode(v).into_bytes(),
        URL_SAFE.encode(v).into_bytes(),
        URL_SAFE_NO_PAD.encode(v).into_bytes(),
    ];
    for e in ENCS {
        if let Some((_, core)) = plant(v, e, b"xyz") {
            f.push(core);
        }
    }
    // Any 8-byte window of the value itself.
    f.extend(v.windows(8).map(|w| w.to_vec()));
    f
}

#[test]
fn fingerprint_cli_file_0600_no_value_and_every_encoding_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fp = dir.path().join("ci.fp");
    let out = fp_add(&fp, "db-password", 3, format!("{VALUE}\n").as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", lossy(&out.stderr));
    let mode = std::fs::metadata(&fp).expect("exists").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let body = std::fs::read(&fp).expect("read");
    for f in forms(VALUE.as_bytes()) {
        assert!(
            !contains(&body, &f),
            "the fingerprint file contains {:?}",
            lossy(&f)
        );
    }
    let list = guard()
        .args(["fingerprint", "list", "--file"])
        .arg(&fp)
        .output()
        .expect("runs");
    assert_eq!(list.status.code(), Some(0));
    assert!(
        lossy(&list.stdout).contains("db-password"),
        "{}",
        lossy(&list.stdout)
    );

    // One line per encoding, each inside other text.
    let mut input = Vec::new();
    let mut cores = Vec::new();
    for (i, e) in ENCS.iter().enumerate() {
        let (text, core) =
            plant(VALUE.as_bytes(), *e, format!("pad{i}-").as_bytes()).expect("utf-8");
        input.extend_from_slice(format!("line {i} {e:?}: ").as_bytes());
        input.extend_from_slice(&text);
        input.extend_from_slice(b" end\n");
        cores.push(core);
    }
    let out = guard()
        .arg("redact")
        .arg("--fingerprints")
        .arg(&fp)
        .arg("--spool")
        .arg(dir.path().join("spool"))
        .write_stdin(input)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", lossy(&out.stderr));
    for f in forms(VALUE.as_bytes()).iter().chain(&cores) {
        assert!(
            !contains(&out.stdout, f),
            "{:?} survived:\n{}",
            lossy(f),
            lossy(&out.stdout)
        );
    }
    for (i, line) in lossy(&out.stdout).lines().enumerate() {
        assert!(line.contains("[REDACTED:db-password]"), "line {i}: {line}");
        assert!(line.ends_with(" end"), "line {i}: {line}");
    }
    assert_eq!(lossy(&out.stdout).lines().count(), ENCS.len());
}

#[test]
fn fingerprint_short_value_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fp = dir.path().join("fp");
    for v in [&b"1234567"[..], b"1234567\n", b"", b"\n"] {
        let out = fp_add(&fp, "short", 1, v);
        assert_ne!(out.status.code(), Some(0), "{:?} accepted", lossy(v));
        let err = lossy(&out.stderr);
        assert!(
            err.contains("shorter than 8") || err.contains("too short"),
            "no reason: {err}"
        );
        assert!(!fp.exists(), "a file was written for a refused value");
    }
    assert_eq!(fp_add(&fp, "ok", 1, b"12345678\n").status.code(), Some(0));
}

#[test]
fn bad_fingerprint_files_refused_nothing_passed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.fp");
    assert_eq!(
        fp_add(&good, "db", 1, VALUE.as_bytes()).status.code(),
        Some(0)
    );
    let good_body = std::fs::read_to_string(&good).expect("read");
    let mut v: serde_json::Value = serde_json::from_str(&good_body).expect("json");
    v["guard_fingerprints"] = 2.into();
    let v2 = serde_json::to_string(&v).expect("json");
    let mut damaged: serde_json::Value = serde_json::from_str(&good_body).expect("json");
    damaged["set"]["entries"][0]["mac"] = "zz".into();
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "corrupt",
            good_body[..good_body.len() / 2].to_string(),
            &["not a guard fingerprint file", "damaged"],
        ),
        (
            "garbage",
            "\u{0}\u{1}not json at all".into(),
            &["not a guard fingerprint file"],
        ),
        (
            "foreign",
            r#"{"name": "something else", "entries": []}"#.into(),
            &["not a guard fingerprint file"],
        ),
        ("version", v2, &["format 2"]),
        (
            "damaged",
            serde_json::to_string(&damaged).expect("json"),
            &["damaged"],
        ),
    ];
    let tok = ghp("BadFingerprintFileToken");
    let input = format!("clean first line\n{VALUE}\nand {tok}\n");
    for (what, body, reasons) in cases {
        let fp = dir.path().join(format!("{what}.fp"));
        std::fs::write(&fp, body).expect("write");
        for mode in [&[][..], &["--jsonl"][..], &["--", "cat"][..]] {
            let mut args = vec!["redact", "--fingerprints", fp.to_str().expect("utf-8 path")];
            args.extend(mode);
            let out = guard()
                .args(&args)
                .write_stdin(input.clone())
                .output()
                .expect("runs");
            let err = lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{what} {mode:?}: {err}");
            assert!(
                out.stdout.is_empty(),
                "{what} {mode:?}: stdout {:?}",
                lossy(&out.stdout)
            );
            assert!(
                err.contains(fp.to_str().unwrap()),
                "{what}: the error does not name the file: {err}"
            );
            assert!(
                reasons.iter().any(|r| err.contains(r)),
                "{what}: unclear error: {err}"
            );
            assert!(
                !err.contains(VALUE) && !err.contains(&tok),
                "{what}: the error quotes input"
            );
        }
        // The rsyslog filter answers every message `{}` (no ack: quarantined).
        let out = guard()
            .args(["redact", "--rsyslog", "--fingerprints"])
            .arg(&fp)
            .write_stdin(format!(
                "{{\"msg\":\"a {tok}\",\"$!\":{{\"guard_nonce\":\"n1\"}}}}\n{{\"msg\":\"clean\",\"$!\":{{\"guard_nonce\":\"n2\"}}}}\n"
            ))
            .output()
            .expect("runs");
        assert_eq!(lossy(&out.stdout), "{}\n{}\n", "{what}: rsyslog replies");
    }
}

fn spool_events(dir: &Path) -> Vec<(Vec<u8>, serde_json::Value)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let b = std::fs::read(&p).expect("read event");
            let j: serde_json::Value = serde_json::from_slice(&b).expect("an event is JSON");
            (b, j)
        })
        .collect();
    v.sort_by_key(|(_, j)| j["offset"].as_u64());
    v
}

#[test]
fn leak_events_for_known_values_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fp = dir.path().join("ci.fp");
    assert_eq!(
        fp_add(&fp, "db-password", 3, VALUE.as_bytes())
            .status
            .code(),
        Some(0)
    );
    let spool = dir.path().join("spool");
    let b64 = base64::engine::general_purpose::STANDARD.encode(VALUE);
    let input = format!("raw: {VALUE}\nb64: {b64}\nhex: {}\n", hex::encode(VALUE));
    let out = guard()
        .arg("redact")
        .arg("--fingerprints")
        .arg(&fp)
        .arg("--spool")
        .arg(&spool)
        .write_stdin(input)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", lossy(&out.stderr));
    let events = spool_events(&spool);
    let mut encodings: Vec<String> = events
        .iter()
        .map(|(_, j)| j["encoding"].as_str().expect("encoding").to_string())
        .collect();
    encodings.sort();
    assert_eq!(encodings, ["base64", "hex", "raw"], "events: {events:?}");
    for (bytes, j) in &events {
        assert_eq!(j["secret"], "db-password");
        assert_eq!(j["version"], 3);
        for f in forms(VALUE.as_bytes()) {
            assert!(!contains(bytes, &f), "an event holds {:?}", lossy(&f));
        }
    }

    // A rule-only hit (no fingerprint file, or one without the value) writes no event.
    let spool2 = dir.path().join("spool2");
    let tok = ghp("RuleOnlyNoLeakEvent");
    for with_fp in [false, true] {
        let mut c = guard();
        c.arg("redact").arg("--spool").arg(&spool2);
        if with_fp {
            c.arg("--fingerprints").arg(&fp);
        }
        let out = c
            .write_stdin(format!("token {tok}\n"))
            .output()
            .expect("runs");
        assert_eq!(lossy(&out.stdout), format!("token {}\n", gh_redacted()));
        assert!(spool_events(&spool2).is_empty(), "an event for a rule hit");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Bounded memory, fail closed

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn no_newline_256mib_in_bounded_memory() {
    const TOTAL: usize = 256 << 20;
    const PHRASE: &[u8] = b"lorem ipsum dolor sit amet, consectetur adipiscing elit; ";
    let cache = cache_dir();
    let mut child = guard_std()
        .arg("redact")
        .env("GUARD_CACHE_DIR", cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0usize;
        let mut bad = None;
        loop {
            let got = match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(g) => g,
                Err(e) => panic!("read: {e}"),
            };
            if bad.is_none() {
                for (i, &b) in buf[..got].iter().enumerate() {
                    if b != PHRASE[(n + i) % PHRASE.len()] {
                        bad = Some(n + i);
                        break;
                    }
                }
            }
            n += got;
        }
        (n, bad)
    });
    let chunk: Vec<u8> = PHRASE
        .iter()
        .cycle()
        .take(PHRASE.len() * 18_000)
        .copied()
        .collect();
    let mut stdin = child.stdin.take().expect("stdin");
    let mut sent = 0usize;
    let mut peak = 0u64;
    let mut next_probe = 0usize;
    while sent < TOTAL {
        let off = sent % PHRASE.len();
        let n = (chunk.len() - PHRASE.len()).min(TOTAL - sent);
        stdin
            .write_all(&chunk[off..off + n])
            .expect("guard takes its input");
        sent += n;
        if sent >= next_probe {
            peak = peak.max(vm_hwm_kib(pid).unwrap_or(0));
            next_probe += 8 << 20;
        }
    }
    stdin.flush().expect("flush");
    // The high-water mark, read while the process still waits for more input.
    std::thread::sleep(Duration::from_millis(200));
    peak = peak.max(vm_hwm_kib(pid).expect("the process is still alive"));
    drop(stdin);
    let (n, bad) = reader.join().expect("reader");
    let out = child.wait_with_output().expect("waits");
    assert_eq!(out.status.code(), Some(0), "{}", lossy(&out.stderr));
    assert_eq!(n, TOTAL, "output length differs from input length");
    assert_eq!(bad, None, "output differs from the input at this offset");
    eprintln!("peak RSS {peak} KiB for {TOTAL} bytes");
    assert!(peak > 0 && peak < 64 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn max_hold_fails_closed_on_a_pending_match() {
    let tok = ghp("HeldRegionFakeToken");
    let mut input = b"before\n-----BEGIN RSA PRIVATE KEY-----\n".to_vec();
    let body_line = "MIIEpAIBAAKCAQEARkFLRS1URVNULUtFWS1OT1QtUkVBTJ82DfsgEbEkuaroPp3a\n";
    for i in 0..6000 {
        if i == 3000 {
            input.extend_from_slice(format!("{tok}AAAAAAAAAAAAAAAAAAAAAAAA\n").as_bytes());
        }
        input.extend_from_slice(body_line.as_bytes());
    }
    input.extend_from_slice(b"after\n");
    for cap in ["1", "4096"] {
        let out = guard()
            .args(["redact", "--max-hold", cap])
            .write_stdin(input.clone())
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(0), "{}", lossy(&out.stderr));
        assert!(
            !contains(&out.stdout, tok.as_bytes()),
            "the held token was passed"
        );
        assert!(
            !contains(&out.stdout, &tok.as_bytes()[4..]),
            "the held token's body was passed"
        );
        let text = lossy(&out.stdout);
        assert!(
            text.contains("[REDACTED:guard.overflow]") || text.contains(&gh_redacted()),
            "nothing redacted"
        );
        assert!(
            text.starts_with("before\n") && text.ends_with("after\n"),
            "{}",
            &text[..200.min(text.len())]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. guard redact -- cmd

#[test]
fn command_streams_redacted_separately_and_status_kept() {
    let tok = ghp("CommandOutputFakeToken");
    let out = guard()
        .args([
            "redact",
            "--",
            "sh",
            "-c",
            "echo out $T; echo err $T >&2; echo out2",
        ])
        .env("T", &tok)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", lossy(&out.stderr));
    assert_eq!(lossy(&out.stdout), format!("out {}\nout2\n", gh_redacted()));
    assert_eq!(lossy(&out.stderr), format!("err {}\n", gh_redacted()));

    let out = guard()
        .args(["redact", "--fail-on-redact", "--", "sh", "-c", "echo $T"])
        .env("T", &tok)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let out = guard()
        .args(["redact", "--", "sh", "-c", "echo $T; exit 7"])
        .env("T", &tok)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(lossy(&out.stdout), format!("{}\n", gh_redacted()));
    let out = guard()
        .args(["redact", "--fail-on-redact", "--", "sh", "-c", "echo clean"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn command_signal_and_missing_command() {
    let out = guard()
        .args(["redact", "--", "sh", "-c", "echo before; kill -TERM $$"])
        .output()
        .expect("runs");
    assert!(
        out.status.signal() == Some(libc::SIGTERM)
            || out.status.code() == Some(128 + libc::SIGTERM),
        "status {:?}",
        out.status
    );
    assert_eq!(lossy(&out.stdout), "before\n");
    let out = guard()
        .args([
            "redact",
            "--",
            "/nonexistent/guard-test-no-such-command",
            "x",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(127));
    assert!(out.stdout.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 6. JSON lines

#[test]
fn jsonl_records() {
    let tok = ghp("JsonLinesFakeToken");
    let secret_rec = format!(
        r#"{{"ts":"2024-01-02T03:04:05Z","level":"info","n":5,"ok":true,"msg":"login with {tok} done","ctx":{{"user":"bob","tags":["a","b"]}}}}"#
    );
    let both = format!(r#"{{"msg":"m {tok}","detail":"d {tok}","n":1.5}}"#);
    let mut invalid = format!("not json {{ {tok} ").into_bytes();
    invalid.extend_from_slice(b"\xff end");
    let clean = r#"{ "msg" : "nothing here \u00e9 \/", "z": 1e3, "a": [ ] }"#;
    let run = |args: &[&str], input: Vec<u8>| {
        let out = guard()
            .args(args)
            .write_stdin(input)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(0), "{}", lossy(&out.stderr));
        out.stdout
    };

    let mut input = Vec::new();
    for l in [
        secret_rec.as_bytes(),
        both.as_bytes(),
        &invalid[..],
        clean.as_bytes(),
    ] {
        input.extend_from_slice(l);
        input.push(b'\n');
    }
    let out = run(&["redact", "--jsonl"], input.clone());
    let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), 5, "{}", lossy(&out));
    assert!(!contains(&out, tok.as_bytes()), "{}", lossy(&out));
    let got: serde_json::Value = serde_json::from_slice(lines[0]).expect("valid JSON out");
    let mut want: serde_json::Value = serde_json::from_str(&secret_rec).expect("json");
    want["msg"] = format!("login with {} done", gh_redacted()).into();
    assert_eq!(got, want);
    let got: serde_json::Value = serde_json::from_slice(lines[1]).expect("valid JSON out");
    assert_eq!(got["detail"], format!("d {}", gh_redacted()));
    assert_eq!(got["n"], 1.5);
    assert_eq!(
        lines[2],
        replace_all(&invalid, tok.as_bytes(), gh_redacted().as_bytes())
    );
    assert_eq!(lines[3], clean.as_bytes(), "a clean record was rewritten");
    assert!(lines[4].is_empty());

    // --field msg: only msg is redacted; the rest of the record is untouched.
    let out = run(
        &["redact", "--jsonl", "--field", "msg"],
        format!("{both}\n{clean}\n").into_bytes(),
    );
    let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
    let got: serde_json::Value = serde_json::from_slice(lines[0]).expect("valid JSON out");
    assert_eq!(got["msg"], format!("m {}", gh_redacted()));
    assert_eq!(got["detail"], format!("d {tok}"));
    assert_eq!(got["n"], 1.5);
    assert_eq!(lines[1], clean.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// 7. A real rsyslogd running contrib/rsyslog/guard-redact.conf

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// rsyslogd in the foreground with its own config; stopped (SIGTERM, then SIGKILL) on drop.
pub(crate) struct Rsyslogd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Rsyslogd {
    /// Starts rsyslogd with the shipped snippet (paths pointed at a temp dir and this build).
    pub(crate) fn start(global_extra: &str) -> Rsyslogd {
        Rsyslogd::start_with(global_extra, "")
    }

    /// With `guard_args` added to the filter's command line (`--fingerprints FP`, …).
    pub(crate) fn start_with(global_extra: &str, guard_args: &str) -> Rsyslogd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/rsyslog/guard-redact.conf"),
        )
        .expect("contrib/rsyslog/guard-redact.conf");
        let mut snippet = shipped.clone();
        for (from, to) in [
            ("/usr/local/bin/guard", bin().to_string()),
            ("/var/cache/guard", cache_dir().display().to_string()),
            (
                "/var/log/guard-redacted.log",
                d.join("out.log").display().to_string(),
            ),
            (
                "/var/log/guard-quarantine.log",
                d.join("quarantine.log").display().to_string(),
            ),
            (
                "string=\"%timereported:::date-rfc3339% %hostname% %syslogtag%%msg%\\n\"",
                "string=\"%msg%\\n\"".to_string(),
            ),
            (
                "redact --rsyslog",
                format!("redact --rsyslog {guard_args}")
                    .trim_end()
                    .to_string(),
            ),
        ] {
            assert!(
                snippet.contains(from),
                "the shipped config no longer has {from}"
            );
            snippet = snippet.replace(from, &to);
        }
        std::fs::write(d.join("guard-redact.conf"), snippet).expect("write");
        let conf = format!(
            "global(workDirectory=\"{d}\" processInternalMessages=\"on\"{global_extra})\n\
             module(load=\"imtcp\")\n\
             include(file=\"{d}/guard-redact.conf\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"0\" listenPortFileName=\"{d}/port\" ruleset=\"guard_redact\")\n",
            d = d.display()
        );
        std::fs::write(d.join("rsyslog.conf"), conf).expect("write");
        let child = StdCommand::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("rsyslogd.out")).expect("create"))
            .stderr(std::fs::File::create(d.join("rsyslogd.err")).expect("create"))
            .spawn()
            .expect("rsyslogd starts");
        Rsyslogd { child, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_default()
    }

    pub(crate) fn diagnostics(&self) -> String {
        format!(
            "rsyslogd stderr: {}\nstdout: {}\nout.log: {}\nquarantine.log: {}",
            lossy(&self.read("rsyslogd.err")),
            lossy(&self.read("rsyslogd.out")),
            lossy(&self.read("out.log")),
            lossy(&self.read("quarantine.log")),
        )
    }

    pub(crate) fn connect(&mut self) -> std::net::TcpStream {
        let t = Instant::now();
        loop {
            if let Some(port) = std::fs::read_to_string(self.path("port"))
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
                .filter(|p| *p > 0)
            {
                return std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("rsyslogd exited: {st:?}\n{}", self.diagnostics());
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no port file\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until out.log and quarantine.log together hold `want` (each a substring).
    pub(crate) fn wait_for(&self, want: &[&str]) {
        let t = Instant::now();
        loop {
            let mut both = self.read("out.log");
            both.extend(self.read("quarantine.log"));
            if want.iter().all(|w| contains(&both, w.as_bytes())) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "waited for {want:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pids of guard filters rsyslogd runs.
    fn filters(&self) -> Vec<i32> {
        let me = self.child.id().to_string();
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Field 4 (after the parenthesised command) is the parent pid.
            let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else {
                continue;
            };
            if rest.split_whitespace().nth(1) != Some(me.as_str()) {
                continue;
            }
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if contains(&cmd, b"redact\0--rsyslog") {
                v.push(pid);
            }
        }
        v
    }
}

pub(crate) fn syslog_line(body: &str) -> Vec<u8> {
    format!("<13>Jan  1 00:00:00 testhost app: {body}\n").into_bytes()
}

/// Octet-counted framing (RFC 6587): the message may hold newlines.
fn octet_counted(body: &[u8]) -> Vec<u8> {
    let mut m = b"<13>Jan  1 00:00:00 testhost app: ".to_vec();
    m.extend_from_slice(body);
    let mut f = format!("{} ", m.len()).into_bytes();
    f.extend_from_slice(&m);
    f
}

pub(crate) fn rsyslogd_present() -> bool {
    if Path::new(RSYSLOGD).exists() {
        return true;
    }
    eprintln!(
        "SKIPPED: {RSYSLOGD} is absent (Debian package `rsyslog`; scripts/deps test installs it)"
    );
    false
}

#[test]
fn rsyslogd_end_to_end_fail_closed() {
    if !rsyslogd_present() {
        return;
    }
    let mut rs = Rsyslogd::start("");
    let toks: Vec<String> = (0..4)
        .map(|i| ghp(&format!("RsyslogFakeToken{i}")))
        .collect();
    let mut s = rs.connect();
    s.write_all(&syslog_line("clean-one nothing secret"))
        .expect("send");
    s.write_all(&syslog_line(&format!("secret-one token={} end", toks[0])))
        .expect("send");
    let mut bad = b"<13>Jan  1 00:00:00 testhost app: secret-two bad utf8 \xff\xfe\xc3 ".to_vec();
    bad.extend_from_slice(toks[1].as_bytes());
    bad.extend_from_slice(b" \xff end\n");
    s.write_all(&bad).expect("send");
    s.write_all(&octet_counted(
        format!("secret-three multi\nline one\n{}\nline three", toks[2]).as_bytes(),
    ))
    .expect("send");
    s.write_all(&syslog_line("clean-two still nothing"))
        .expect("send");
    s.flush().expect("flush");
    rs.wait_for(&[
        "clean-one",
        "secret-one",
        "secret-two",
        "secret-three",
        "clean-two",
    ]);
    let out = rs.read("out.log");
    for t in &toks {
        assert!(
            !contains(&out, t.as_bytes()),
            "a token reached out.log\n{}",
            rs.diagnostics()
        );
    }
    let text = lossy(&out);
    for want in [
        "clean-one nothing secret\n".to_string(),
        format!("secret-one token={} end\n", gh_redacted()),
        "clean-two still nothing\n".to_string(),
    ] {
        assert!(
            text.contains(&want),
            "out.log lacks {want:?}\n{}",
            rs.diagnostics()
        );
    }
    let mut two = "secret-two bad utf8 \u{FFFD}".to_string().into_bytes();
    two.truncate(two.len() - 3);
    two.extend_from_slice(b"\xff\xfe\xc3 ");
    two.extend_from_slice(format!("{} ", gh_redacted()).as_bytes());
    two.extend_from_slice(b"\xff end\n");
    assert!(
        contains(&out, &two),
        "the invalid UTF-8 message changed\n{}",
        rs.diagnostics()
    );
    assert_eq!(
        text.matches(&gh_redacted()).count(),
        3,
        "{}",
        rs.diagnostics()
    );
    assert!(rs.read("quarantine.log").is_empty(), "{}", rs.diagnostics());

    // Fail closed: the filter dies while secrets keep coming.
    let filters = rs.filters();
    assert_eq!(filters.len(), 1, "guard filters of rsyslogd: {filters:?}");
    let burst: Vec<String> = (0..40)
        .map(|i| ghp(&format!("AfterKillFakeToken{i}")))
        .collect();
    let mut payload = Vec::new();
    for (i, t) in burst.iter().enumerate() {
        payload.extend(syslog_line(&format!("burst-{i:02} {t}")));
    }
    let (a, b) = payload.split_at(payload.len() / 4);
    s.write_all(a).expect("send");
    unsafe { libc::kill(filters[0], libc::SIGKILL) };
    s.write_all(b).expect("send");
    s.flush().expect("flush");
    // The burst is accounted for: redacted in out.log or quarantined (or dropped with the filter).
    std::thread::sleep(Duration::from_millis(500));
    let mut later = rs.connect();
    for i in 0..5 {
        later
            .write_all(&syslog_line(&format!("clean-after-{i} fine")))
            .expect("send");
    }
    later.flush().expect("flush");
    rs.wait_for(&["clean-after-0 fine", "clean-after-4 fine"]);
    let out = rs.read("out.log");
    for t in toks.iter().chain(&burst) {
        assert!(
            !contains(&out, t.as_bytes()),
            "{t} reached out.log\n{}",
            rs.diagnostics()
        );
    }
    let text = lossy(&out);
    let redacted = (0..burst.len())
        .filter(|i| text.contains(&format!("burst-{i:02} {}", gh_redacted())))
        .count();
    let q = lossy(&rs.read("quarantine.log"));
    let quarantined = (0..burst.len())
        .filter(|i| q.contains(&format!("burst-{i:02} ")))
        .count();
    eprintln!(
        "after SIGKILL: {redacted} redacted, {quarantined} quarantined of {}",
        burst.len()
    );
    for i in 0..5 {
        assert!(
            text.contains(&format!("clean-after-{i} fine\n")),
            "{}",
            rs.diagnostics()
        );
    }
    assert_eq!(rs.filters().len(), 1, "rsyslogd did not restart the filter");
}

/// rsyslog's default escapes control characters on receipt (`#012` for a newline), so a PEM key
/// in a multi-line message reaches the filter as one line joined by `#012`.
#[test]
fn rsyslogd_multiline_pem_key_redacted() {
    if !rsyslogd_present() {
        return;
    }
    const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEARkFLRS1URVNULUtFWS1OT1QtUkVBTJ82DfsgEbEkuaroPp3a\nECvg/hSJ7a79wn55JTbrQyR1ot9EmS3skW8Vt6TRfxiktLp/VeVG+oqgg82I7SkY\nNU/y9fcyt2eoTbrJoY1te2tFsy9aO/g+b2unh13fQR4vBODnS3L2S0mxpd8cVqxo\n-----END RSA PRIVATE KEY-----";
    for (how, extra) in [
        (
            "escaping off",
            " parser.escapeControlCharactersOnReceive=\"off\"",
        ),
        ("rsyslog's default escaping", ""),
    ] {
        let mut rs = Rsyslogd::start(extra);
        let mut s = rs.connect();
        s.write_all(&octet_counted(format!("pem-key\n{PEM}\nafter").as_bytes()))
            .expect("send");
        s.write_all(&syslog_line("clean-end")).expect("send");
        rs.wait_for(&["pem-key", "clean-end"]);
        let out = rs.read("out.log");
        for body in PEM.lines().skip(1).take(3) {
            assert!(
                !contains(&out, body.as_bytes()),
                "{how}: key material reached out.log\n{}",
                rs.diagnostics()
            );
        }
        assert!(
            lossy(&out).contains("[REDACTED:private_key.rsa]"),
            "{how}\n{}",
            rs.diagnostics()
        );
    }
}
