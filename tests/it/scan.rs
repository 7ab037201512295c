//! `guard scan` and `guard rules` end to end.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use proptest::prelude::*;

/// Writes `stored.txt` (a line holding a value, once raw and once hex-encoded) and a fingerprint
/// file of that value; returns the fingerprint file.
fn stored_value_fixture(dir: &Path, cache: &Path) -> PathBuf {
    let value = "fake-stored-value-0123456789abcdef";
    std::fs::write(
        dir.join("stored.txt"),
        format!(
            "first line\nDB_PASSWORD={value}\nhex {}\n",
            hex::encode(value)
        ),
    )
    .expect("write");
    let fp = dir.join("vault.fp");
    let o = guard(cache)
        .args(["fingerprint", "add", "db_pass", "--file"])
        .arg(&fp)
        .write_stdin(value)
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fp
}

/// `guard scan --fingerprints`: stored values are findings (rule `vault.stored_value`, naming
/// the secret and version, never the value), in every encoding, and each writes a leak event.
#[test]
fn scan_reports_stored_values_and_spools_leak_events() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    let fp = stored_value_fixture(d.path(), cache.path());
    let spool = d.path().join("spool");
    let out = run_in(
        d.path(),
        cache.path(),
        &[
            "scan",
            "-f",
            "jsonl",
            "--fingerprints",
            fp.to_str().expect("utf8"),
            "--spool",
            spool.to_str().expect("utf8"),
            "stored.txt",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains("fake-stored-value"), "{text}");
    let found: Vec<(u64, String, String)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|f| f["rule"] == "vault.stored_value")
        .map(|f| {
            assert_eq!(f["stored_secret"]["id"], "db_pass");
            assert_eq!(f["stored_secret"]["version"], 1);
            (
                f["line"].as_u64().unwrap(),
                f["encoding"].as_str().unwrap_or("raw").to_string(),
                f["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found
            .iter()
            .map(|(l, e, _)| (*l, e.as_str()))
            .collect::<Vec<_>>(),
        vec![(2, "raw"), (3, "hex")],
        "{text}"
    );
    let events: Vec<serde_json::Value> = std::fs::read_dir(&spool)
        .expect("spool written")
        .flatten()
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).expect("read")).expect("json"))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events
        .iter()
        .all(|e| e["secret"] == "db_pass" && e["source"] == "scan:stored.txt"));
    // Without --fingerprints there is no such finding, and no event.
    let plain = run_in(
        d.path(),
        cache.path(),
        &["scan", "-f", "jsonl", "stored.txt"],
    );
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("vault.stored_value"));
}

fn guard(cache: &Path) -> Command {
    let mut c = Command::cargo_bin("guard").expect("the guard binary should be built");
    c.env("GUARD_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .env_remove("GUARD_FINDING_KEY");
    c
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// (rule, line) pairs from a JSONL report.
fn labels(jsonl: &[u8]) -> BTreeSet<(String, u64)> {
    jsonl
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("each line should be JSON");
            (
                v["rule"].as_str().expect("rule").to_string(),
                v["line"].as_u64().expect("line"),
            )
        })
        .collect()
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("corpus/ exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    v.sort();
    assert!(v.len() >= 20, "corpus has {} cases", v.len());
    v
}

/// (rule, line, start offset, end offset, encoding) of every finding in a JSONL report.
fn full_labels(jsonl: &[u8]) -> BTreeSet<(String, u64, u64, u64, Option<String>)> {
    jsonl
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("each line should be JSON");
            (
                v["rule"].as_str().expect("rule").to_string(),
                v["line"].as_u64().expect("line"),
                v["start_offset"].as_u64().expect("start_offset"),
                v["end_offset"].as_u64().expect("end_offset"),
                v["encoding"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Every corpus case through the file path, a directory walk, and stdin, on both backends:
/// identical findings. (How good the findings are is `quality.rs`'s business.) Stdin is stream
/// mode, which does not decode encoded runs: it must equal the file's findings without the decoded
/// ones.
#[test]
fn corpus_every_source_every_backend() {
    let cache = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    for case in cases() {
        let data = std::fs::read(&case).expect("readable");
        let name = case.file_name().expect("name");
        let sub = dir.path().join(name).with_extension("d");
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join(name), &data).expect("write");
        let mut reference = None;
        for backend in ["auto", "regex"] {
            let file = guard(cache.path())
                .args(["scan", "--binary", "-f", "jsonl", "--backend", backend])
                .arg(&case)
                .output()
                .expect("runs");
            let walk = guard(cache.path())
                .args(["scan", "--binary", "-f", "jsonl", "--backend", backend])
                .arg(&sub)
                .output()
                .expect("runs");
            let stdin = guard(cache.path())
                .args(["scan", "-f", "jsonl", "--backend", backend, "-"])
                .write_stdin(data.clone())
                .output()
                .expect("runs");
            let want = reference
                .get_or_insert_with(|| full_labels(&file.stdout))
                .clone();
            let undecoded: BTreeSet<_> = want.iter().filter(|f| f.4.is_none()).cloned().collect();
            for (how, out, want) in [
                ("file", &file, &want),
                ("dir", &walk, &want),
                ("stdin", &stdin, &undecoded),
            ] {
                let code = if want.is_empty() { 0 } else { 1 };
                assert_eq!(
                    out.status.code(),
                    Some(code),
                    "{} via {how} ({backend}): {}",
                    case.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(
                    &full_labels(&out.stdout),
                    want,
                    "{} via {how} ({backend})",
                    case.display()
                );
            }
        }
    }
}

/// A reader that hands out the input in the given chunk sizes.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    i: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = self
            .sizes
            .get(self.i % self.sizes.len().max(1))
            .copied()
            .unwrap_or(7)
            .max(1);
        self.i += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn engine() -> &'static guard::engine::Engine {
    static E: std::sync::OnceLock<guard::engine::Engine> = std::sync::OnceLock::new();
    E.get_or_init(|| {
        guard::engine::Engine::builder(guard::rules::Ruleset::builtin().expect("rules"))
            .build()
            .expect("engine")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Stdin split at random boundaries gives exactly the findings of the whole file.
    #[test]
    fn corpus_through_random_chunkings(case in 0usize..64, sizes in proptest::collection::vec(1usize..300, 1..16)) {
        let sizes: Vec<usize> = sizes;
        let all = cases();
        let case = &all[case % all.len()];
        let data = std::fs::read(case).expect("readable");
        use guard::source::reader::{scan_stream, scan_stream_parallel};
        let opts = guard::finding::FindingOptions::default();
        let origin = guard::finding::Origin::Stdin;
        let e = engine();
        let mut block = Vec::new();
        guard::source::scan_bytes(e, &mut e.scratch().expect("scratch"), &origin, &data, &opts, &mut |f| block.push(f)).expect("scan");
        let mut r = Chunked { data: &data, sizes: sizes.clone(), i: 0 };
        let mut streamed = Vec::new();
        scan_stream(e, &mut r, &origin, &opts, &mut |_| {}, &mut |f| streamed.push(f)).expect("in-memory read");
        let key = |f: &guard::finding::Finding| (f.location.clone(), f.rule.clone(), f.id.clone(), f.snippet.clone());
        prop_assert_eq!(block.iter().map(key).collect::<Vec<_>>(), streamed.iter().map(key).collect::<Vec<_>>());
        // The large-file path: prefilter pieces on threads, rounds of arbitrary size.
        let mut r = Chunked { data: &data, sizes: sizes.clone(), i: 0 };
        let round = sizes[0] * 3;
        let pieces = 1 + sizes.len() % 4;
        let mut par = Vec::new();
        scan_stream_parallel(e, &mut r, &origin, &opts, &mut |_| {}, &mut |f| par.push(f), pieces, round).expect("in-memory read");
        prop_assert_eq!(block.iter().map(key).collect::<Vec<_>>(), par.iter().map(key).collect::<Vec<_>>());
    }
}

const FIXTURE: &str = "# settings\nGITHUB_TOKEN=__GH__\nplain line\nAWS_ACCESS_KEY_ID=AKIAZ7VBXQ3MWT5KPRYD\naws_secret_access_key = \"q7Hx2mVb9LkP0sT4uW8yZ1cE3fG5hJ6kN8pRFAKE\"\n";

/// A classic GitHub token with a valid CRC32 tail, made from `seed` (obviously fake).
pub(crate) fn github_token(seed: &str) -> String {
    let random: String = seed.chars().cycle().take(30).collect();
    let crc = guard::engine::validate::base62_crc(crc32fast::hash(random.as_bytes()));
    format!("ghp_{random}{}", std::str::from_utf8(&crc).expect("ascii"))
}

fn fixture_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        d.path().join("config.env"),
        FIXTURE.replace("__GH__", &github_token("FakeTokenForGuardTests0")),
    )
    .expect("write");
    std::fs::write(d.path().join("clean.txt"), "nothing to see here\n").expect("write");
    d
}

fn run_in(dir: &Path, cache: &Path, args: &[&str]) -> std::process::Output {
    guard(cache)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn output_formats_snapshot_and_redact() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = fixture_dir();
    let token = github_token("FakeTokenForGuardTests0");
    for fmt in ["human", "json", "jsonl", "sarif"] {
        let out = run_in(d.path(), cache.path(), &["scan", "-f", fmt, "."]);
        assert_eq!(out.status.code(), Some(1), "{fmt}");
        let text = String::from_utf8(out.stdout).expect("utf8");
        assert!(!text.contains(&token), "{fmt} output leaks the secret");
        assert!(
            !text.contains("wJalrXUtnFEMI"),
            "{fmt} output leaks the secret"
        );
        // The SARIF rule catalogue changes with every rule edit; snapshot its size, not its text.
        let text = if fmt == "sarif" {
            let mut v: serde_json::Value = serde_json::from_str(&text).expect("SARIF is JSON");
            let ids: Vec<String> = v["runs"][0]["tool"]["driver"]["rules"]
                .as_array()
                .expect("rules")
                .iter()
                .map(|r| r["id"].as_str().expect("id").to_string())
                .collect();
            for r in v["runs"][0]["results"].as_array_mut().expect("results") {
                let i = r["ruleIndex"].as_u64().expect("ruleIndex") as usize;
                assert_eq!(
                    Some(&ids[i]),
                    r["ruleId"].as_str().map(str::to_string).as_ref(),
                    "ruleIndex points at ruleId"
                );
                r["ruleIndex"] = serde_json::json!("<checked>");
            }
            let rules = &mut v["runs"][0]["tool"]["driver"]["rules"];
            let n = rules.as_array().map(|a| a.len()).unwrap_or(0);
            assert!(n >= 100, "{n} rules in the SARIF catalogue");
            *rules =
                serde_json::json!(format!("<{} rules>", if n >= 100 { "100+" } else { "few" }));
            v["runs"][0]["tool"]["driver"]["version"] = serde_json::json!("<version>");
            serde_json::to_string_pretty(&v).expect("serializes")
        } else {
            text
        };
        insta::assert_snapshot!(format!("scan_{fmt}"), text);
        let shown = run_in(
            d.path(),
            cache.path(),
            &["scan", "--show-secrets", "-f", fmt, "."],
        );
        assert!(
            String::from_utf8_lossy(&shown.stdout).contains(&token),
            "{fmt} --show-secrets"
        );
    }
}

#[test]
fn sarif_validates_against_the_official_schema() {
    let tool = std::env::var_os("GUARD_SARIF_MULTITOOL").map(PathBuf::from);
    let Some(tool) = tool.filter(|t| t.exists()) else {
        assert!(
            std::env::var_os("GUARD_SKIP_SARIF_SCHEMA").is_some(),
            "Sarif.Multitool not found: run scripts/test (it installs it) or set GUARD_SKIP_SARIF_SCHEMA=1"
        );
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let d = fixture_dir();
    let report = d.path().join("out.sarif");
    // A stored value too (its rule descriptor is not in the rule set).
    let fp = stored_value_fixture(d.path(), cache.path());
    let out = run_in(
        d.path(),
        cache.path(),
        &[
            "scan",
            "-f",
            "sarif",
            "-o",
            report.to_str().expect("utf8"),
            "--fingerprints",
            fp.to_str().expect("utf8"),
            "--spool",
            d.path().join("spool").to_str().expect("utf8"),
            "config.env",
            "stored.txt",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let log = d.path().join("validation.sarif");
    let v = std::process::Command::new(&tool)
        .arg("validate")
        .arg(&report)
        .arg("-o")
        .arg(&log)
        .output()
        .expect("validator runs");
    assert!(
        log.exists(),
        "validator wrote no log: {}",
        String::from_utf8_lossy(&v.stdout)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&log).expect("log")).expect("json");
    let schema_errors: Vec<String> = doc["runs"][0]["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x["ruleId"].as_str())
                .filter(|id| id.starts_with("JSON") || id.starts_with("SARIF1"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    assert!(schema_errors.is_empty(), "schema errors: {schema_errors:?}");
}

#[test]
fn help_snapshots() {
    let cache = tempfile::tempdir().expect("tempdir");
    for args in [
        &["--help"][..],
        &["scan", "--help"],
        &["rules", "check", "--help"],
    ] {
        let out = guard(cache.path())
            .args(args)
            .env("COLUMNS", "100")
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(0));
        insta::assert_snapshot!(
            format!("help_{}", args.join("_").replace("--", "")),
            String::from_utf8(out.stdout).expect("utf8")
        );
    }
}

#[test]
fn exit_codes_and_missing_paths() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = fixture_dir();
    assert_eq!(
        run_in(d.path(), cache.path(), &["scan", "clean.txt"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        run_in(d.path(), cache.path(), &["scan", "config.env"])
            .status
            .code(),
        Some(1)
    );
    // A missing path is named, the rest is still scanned, and the exit code is 2.
    let out = run_in(
        d.path(),
        cache.path(),
        &["scan", "-f", "jsonl", "nope.txt", "config.env"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.txt"));
    assert!(labels(&out.stdout)
        .iter()
        .any(|(r, _)| r == "github.pat_classic"));
    let bad = run_in(d.path(), cache.path(), &["scan", "--format", "xml", "."]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn baseline_suppresses_by_id_even_when_lines_move() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = fixture_dir();
    let out = run_in(
        d.path(),
        cache.path(),
        &["scan", "--write-baseline", "base.json", "config.env"],
    );
    assert_eq!(out.status.code(), Some(0));
    let base = std::fs::read_to_string(d.path().join("base.json")).expect("baseline written");
    assert!(
        !base.contains("ghp_") && !base.contains("wJalr"),
        "baseline must not hold secrets"
    );
    assert_eq!(
        run_in(
            d.path(),
            cache.path(),
            &["scan", "--baseline", "base.json", "config.env"]
        )
        .status
        .code(),
        Some(0)
    );
    // Move everything down three lines: still suppressed.
    let text = std::fs::read_to_string(d.path().join("config.env")).expect("read");
    std::fs::write(d.path().join("config.env"), format!("\n\n\n{text}")).expect("write");
    assert_eq!(
        run_in(
            d.path(),
            cache.path(),
            &["scan", "--baseline", "base.json", "config.env"]
        )
        .status
        .code(),
        Some(0)
    );
    // A new secret is reported.
    std::fs::write(
        d.path().join("new.env"),
        format!("T={}\n", github_token("AnotherFakeToken99")),
    )
    .expect("write");
    let out = run_in(
        d.path(),
        cache.path(),
        &[
            "scan",
            "-f",
            "jsonl",
            "--baseline",
            "base.json",
            "config.env",
            "new.env",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(labels(&out.stdout).len(), 1);
}

#[test]
fn config_rules_allowlists_and_inline_marker() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = fixture_dir();
    std::fs::create_dir_all(d.path().join("testdata")).expect("mkdir");
    std::fs::write(
        d.path().join("testdata/x.env"),
        format!("T={}\n", github_token("TestdataToken000")),
    )
    .expect("write");
    std::fs::write(
        d.path().join("inline.env"),
        format!("T={} # guard:allow\n", github_token("InlineToken0000")),
    )
    .expect("write");
    std::fs::write(d.path().join("acme.txt"), "key: acme_Zx81Qp0Lm2Vb7Tn3\n").expect("write");
    std::fs::write(
        d.path().join("guard.toml"),
        r#"
[allowlist]
paths = ['(^|/)testdata/']
stopwords = ["kn8prfake"]

[[rule]]
id = "acme.token"
name = "ACME internal token"
pattern = '\bacme_(?P<secret>[A-Za-z0-9]{16})\b'
confidence = "high"
examples = ["acme_Zx81Qp0Lm2Vb7Tn3"]
negative_examples = ["acme_short"]
"#,
    )
    .expect("write");
    let out = run_in(d.path(), cache.path(), &["scan", "-f", "jsonl", "."]);
    let got = labels(&out.stdout);
    let rules: BTreeSet<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
    assert!(rules.contains("acme.token"), "{got:?}");
    assert!(
        !rules.contains("aws.secret_access_key"),
        "stop-word should allow the AWS example secret: {got:?}"
    );
    let paths = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!paths.contains("testdata/"), "path allowlist");
    assert!(!paths.contains("inline.env"), "inline guard:allow");
    // The user's rule is checked by `rules check` too.
    let chk = run_in(d.path(), cache.path(), &["rules", "check"]);
    check_passes_for(&chk, "acme.token");
}

/// `guard rules check` output where every failure is a builtin rule's example count (pending the
/// hand-kept rule files, checked by `builtin_rules_check_and_list`) and none names `rule`.
fn check_passes_for(out: &std::process::Output, rule: &str) {
    let text = String::from_utf8_lossy(&out.stdout);
    let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert!(
        fails
            .iter()
            .all(|l| !l.contains(rule) && l.contains("a builtin rule needs at least")),
        "{text}"
    );
    assert!(matches!(out.status.code(), Some(0 | 1)), "{text}");
}

#[test]
fn malformed_rule_file_names_file_line_and_rule() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    let f = d.path().join("bad.toml");
    std::fs::write(&f, "[[rule]]\nid = \"x.ok\"\nname = \"ok\"\npattern = 'ok_[a-z]{4}'\nconfidence = \"low\"\nexamples = [\"ok_abcd\"]\nnegative_examples = [\"ok_\"]\n\n[[rule]]\nid = \"x.bad\"\nname = \"bad\"\npattern = 'bad_[a-z]+'\nconfidence = \"low\"\n").expect("write");
    let out = guard(cache.path())
        .args(["rules", "check"])
        .arg(&f)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:10") && err.contains("x.bad") && err.contains("unbounded"),
        "{err}"
    );
    // A failing example: exit 1 with the rule named.
    std::fs::write(&f, "[[rule]]\nid = \"x.ok\"\nname = \"ok\"\npattern = 'ok_[a-z]{4}'\nconfidence = \"low\"\nexamples = [\"ok_ABCD\"]\nnegative_examples = [\"ok_\"]\n").expect("write");
    let out = guard(cache.path())
        .args(["rules", "check"])
        .arg(&f)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL x.ok"));
}

/// Every builtin rule passes `guard rules check`, including its example counts (>= 2 examples and
/// >= 2 negatives; until every rule file has them, this fails and lists the rules that do not).
#[test]
fn builtin_rules_check_and_list() {
    let cache = tempfile::tempdir().expect("tempdir");
    let out = guard(cache.path())
        .args(["rules", "check"])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let list = guard(cache.path())
        .args(["rules", "list", "-f", "json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let n = v.as_array().expect("array").len();
    assert!(n >= 100, "{n} rules");
    let providers: BTreeSet<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["id"].as_str()?.split('.').next())
        .collect();
    assert!(providers.len() >= 40, "{} providers", providers.len());
}

#[cfg(unix)]
#[test]
fn hostile_inputs_do_not_crash() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path();
    let tok = github_token("HostileInputToken0");
    std::fs::write(p.join("empty"), b"").expect("write");
    let mut bin = b"\xff\xfe\x00\x01 invalid \xc3\x28 utf8 ".to_vec();
    bin.extend_from_slice(format!("T={tok}\n").as_bytes());
    std::fs::write(p.join("invalid.bin"), &bin).expect("write");
    let mut txt = b"bad \xc3\x28 utf8 ".to_vec();
    txt.extend_from_slice(format!("T={tok}\n").as_bytes());
    std::fs::write(p.join("invalid.txt"), &txt).expect("write");
    std::os::unix::fs::symlink(p, p.join("loop")).expect("symlink");
    let fifo = p.join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    // A single 80 MB line (streamed, not mapped) with a token at the very end.
    let big = p.join("big.txt");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).expect("create"));
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..80 {
            f.write_all(&chunk).expect("write");
        }
        write!(f, " {tok}").expect("write");
    }
    let out = guard(cache.path())
        .args(["scan", "-f", "jsonl", "."])
        .current_dir(p)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("big.txt"),
        "token at the end of an 80 MB line: {text}"
    );
    assert!(text.contains("invalid.txt"));
    assert!(
        !text.contains("invalid.bin"),
        "binary files are skipped by default"
    );
    let out = guard(cache.path())
        .args(["scan", "-f", "jsonl", "--binary", "invalid.bin"])
        .current_dir(p)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn compiled_database_is_cached() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = fixture_dir();
    assert_eq!(
        run_in(d.path(), cache.path(), &["scan", "clean.txt"])
            .status
            .code(),
        Some(0)
    );
    let dbs: Vec<_> = std::fs::read_dir(cache.path())
        .expect("cache dir created")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("hs-"))
        .collect();
    assert_eq!(dbs.len(), 1, "one block database cached");
    // A corrupt cache entry is ignored and rewritten, not fatal.
    std::fs::write(dbs[0].path(), b"garbage").expect("write");
    assert_eq!(
        run_in(d.path(), cache.path(), &["scan", "config.env"])
            .status
            .code(),
        Some(1)
    );
    assert!(std::fs::read(dbs[0].path())
        .expect("rewritten")
        .starts_with(b"GUARDHS1"));
}

/// A rule Hyperscan cannot compile (here: the regex crate's `(?U)` flag) is still enforced by
/// the regex-automata confirm stage alone, with a warning naming it, in block and stream mode.
#[test]
fn rule_hyperscan_rejects_is_still_enforced() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        d.path().join("guard.toml"),
        "[[rule]]\nid = \"acme.ungreedy\"\nname = \"u\"\npattern = '(?U)acme_(?P<secret>[a-z0-9]{12,16})\\b'\nconfidence = \"high\"\nexamples = [\"acme_abcd1234efgh\"]\nnegative_examples = [\"acme_short\"]\n",
    )
    .expect("write");
    std::fs::write(d.path().join("f.txt"), "x acme_abcd1234efgh\n").expect("write");
    for args in [
        &["scan", "-f", "jsonl", "f.txt"][..],
        &["scan", "-f", "jsonl", "-"],
    ] {
        let out = guard(cache.path())
            .current_dir(d.path())
            .args(args)
            .write_stdin("x acme_abcd1234efgh\n")
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            labels(&out.stdout).contains(&("acme.ungreedy".to_string(), 1)),
            "{args:?}"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("acme.ungreedy") && err.contains("Hyperscan"),
            "{err}"
        );
    }
    let chk = guard(cache.path())
        .current_dir(d.path())
        .args(["rules", "check"])
        .output()
        .expect("runs");
    check_passes_for(&chk, "acme.ungreedy");
}

#[test]
fn min_confidence_filters_rules_and_rules_list_formats() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = fixture_dir();
    let list = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = run_in(d.path(), cache.path(), args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .expect("json")
            .as_array()
            .expect("array")
            .clone()
    };
    let all = list(&["rules", "list", "-f", "json"]);
    for key in [
        "id",
        "name",
        "confidence",
        "keywords",
        "description",
        "references",
        "validate",
    ] {
        assert!(all.iter().all(|r| r.get(key).is_some()), "{key}");
    }
    assert_eq!(all, list(&["rules", "list", "--format", "json"]));
    assert_eq!(all, list(&["rules", "list", "--json"]), "old spelling");
    let high = list(&["rules", "list", "-f", "json", "--min-confidence", "high"]);
    assert!(!high.is_empty() && high.len() < all.len());
    assert!(high.iter().all(|r| r["confidence"] == "high"));
    let human = run_in(d.path(), cache.path(), &["rules", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&human.stdout).lines().count(),
        all.len()
    );
    // A file with the examples of a builtin rule below high confidence, and a GitHub token.
    let rules = guard::rules::Ruleset::builtin().expect("rules");
    let lesser = rules
        .rules()
        .iter()
        .find(|r| r.spec.confidence < guard::rules::Confidence::High)
        .expect("a builtin rule below high confidence");
    let mut text = format!("T={}\n", github_token("MinConfidenceToken00"));
    for ex in &lesser.spec.examples {
        text.push_str(ex);
        text.push('\n');
    }
    std::fs::write(d.path().join("mixed.txt"), text).expect("write");
    let conf = |min: &str| -> BTreeSet<String> {
        let out = run_in(
            d.path(),
            cache.path(),
            &["scan", "-f", "jsonl", "--min-confidence", min, "mixed.txt"],
        );
        out.stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(l).expect("json")["confidence"]
                    .as_str()
                    .expect("confidence")
                    .to_string()
            })
            .collect()
    };
    let low = conf("low");
    assert!(
        low.contains(lesser.spec.confidence.as_str()),
        "{low:?} ({})",
        lesser.id
    );
    assert_eq!(conf("high"), BTreeSet::from(["high".to_string()]));
    let bad = run_in(
        d.path(),
        cache.path(),
        &["scan", "--min-confidence", "sure", "."],
    );
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn config_enable_keeps_only_named_rules() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = fixture_dir();
    std::fs::write(
        d.path().join("guard.toml"),
        "[rules]\nenable = [\"github.*\"]\n",
    )
    .expect("write");
    let out = run_in(
        d.path(),
        cache.path(),
        &["scan", "-f", "jsonl", "config.env"],
    );
    let rules: BTreeSet<String> = labels(&out.stdout).into_iter().map(|(r, _)| r).collect();
    assert_eq!(rules, BTreeSet::from(["github.pat_classic".to_string()]));
    let list = run_in(d.path(), cache.path(), &["rules", "list", "-f", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert!(v
        .as_array()
        .expect("array")
        .iter()
        .all(|r| r["id"].as_str().expect("id").starts_with("github.")));
    // A typo is an error, not a scan with nothing enabled.
    std::fs::write(
        d.path().join("guard.toml"),
        "[rules]\nenable = [\"githb.*\"]\n",
    )
    .expect("write");
    let out = run_in(d.path(), cache.path(), &["scan", "config.env"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("githb.*"));
}

/// A token inside base64, hex and URL-encoded content is found and reported at the encoded run,
/// marked with its encoding, in every format, without the secret or the run in clear.
#[test]
fn encoded_secrets_are_found_at_the_encoded_run() {
    use base64::Engine as _;
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    let tok = github_token("EncodedFixtureToken00");
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("GITHUB_TOKEN={tok}\n"));
    let hex = hex::encode(format!("token: {tok}"));
    // The token's first letter percent-encoded too: only URL-decoding reveals it.
    let url = format!("https%3A%2F%2Fx%3A%67{}%40github.com%2Fo%2Fr", &tok[1..]);
    std::fs::write(
        d.path().join("k8s.yaml"),
        format!("kind: Secret\ndata:\n  env: {b64}\n  hex: {hex}\nremote: {url}\n"),
    )
    .expect("write");
    // Off by default (it costs ~30% on a source tree): nothing inside the runs is seen.
    let plain = run_in(d.path(), cache.path(), &["scan", "-f", "jsonl", "k8s.yaml"]);
    assert_eq!(
        plain.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plain.stdout)
    );
    let out = run_in(
        d.path(),
        cache.path(),
        &["scan", "--decode", "-f", "jsonl", "k8s.yaml"],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains(&tok) && !text.contains(&b64) && !text.contains(&hex));
    let found: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let got: Vec<(String, u64, u64, String)> = found
        .iter()
        .map(|v| {
            (
                v["rule"].as_str().expect("rule").to_string(),
                v["line"].as_u64().expect("line"),
                v["column"].as_u64().expect("column"),
                v["encoding"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let gh = "github.pat_classic".to_string();
    assert!(
        got.contains(&(gh.clone(), 3, 8, "base64".into())),
        "{got:?}"
    );
    assert!(got.contains(&(gh.clone(), 4, 8, "hex".into())), "{got:?}");
    assert!(got.contains(&(gh, 5, 9, "url".into())), "{got:?}");
    // The same token in clear has the same finding id (ids are keyed by the decoded secret).
    std::fs::write(d.path().join("plain.env"), format!("T={tok}\n")).expect("write");
    let plain = run_in(
        d.path(),
        cache.path(),
        &["scan", "-f", "jsonl", "plain.env"],
    );
    let id: serde_json::Value =
        serde_json::from_slice(plain.stdout.split(|&b| b == b'\n').next().expect("a line"))
            .expect("json");
    assert!(found.iter().any(|v| v["id"] == id["id"]));
    let human = run_in(d.path(), cache.path(), &["scan", "--decode", "k8s.yaml"]);
    let h = String::from_utf8_lossy(&human.stdout);
    assert!(h.contains("inside base64-encoded content"), "{h}");
    assert!(!h.contains(&tok) && !h.contains(&b64));
    let sarif = run_in(
        d.path(),
        cache.path(),
        &["scan", "--decode", "-f", "sarif", "k8s.yaml"],
    );
    let v: serde_json::Value = serde_json::from_slice(&sarif.stdout).expect("json");
    let encs: BTreeSet<&str> = v["runs"][0]["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["properties"]["encoding"].as_str())
        .collect();
    assert_eq!(encs, BTreeSet::from(["base64", "hex", "url"]));
    let shown = run_in(
        d.path(),
        cache.path(),
        &[
            "scan",
            "--decode",
            "--show-secrets",
            "-f",
            "jsonl",
            "k8s.yaml",
        ],
    );
    assert!(String::from_utf8_lossy(&shown.stdout).contains(&tok));
}

/// `--revoke` runs the hook the user's own revoke.toml names for a finding's rule, with the
/// secret on stdin (not in argv or the environment), once per finding; without the flag nothing
/// runs, and a repository's guard.toml cannot name hooks.
#[test]
fn revoke_runs_the_users_hook_with_the_secret_on_stdin_only_when_asked() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = fixture_dir();
    let home = tempfile::tempdir().expect("tempdir");
    let out = home.path().join("revoked");
    std::fs::create_dir(&out).expect("mkdir");
    let hook = home.path().join("revoke.toml");
    std::fs::write(
        &hook,
        format!(
            "[hooks]\n\"github.*\" = [\"sh\", \"-c\", \"cat > {}/$GUARD_FINDING_ID; echo \
             \\\"$GUARD_RULE $GUARD_PATH:$GUARD_LINE $*\\\" > {}/$GUARD_FINDING_ID.env\", \"hook\"]\n",
            out.display(),
            out.display()
        ),
    )
    .expect("write");
    let run = |args: &[&str]| {
        guard(cache.path())
            .current_dir(d.path())
            .env("GUARD_REVOKE_CONFIG", &hook)
            .args(args)
            .output()
            .expect("runs")
    };
    let plain = run(&["scan", "config.env"]);
    assert_eq!(plain.status.code(), Some(1));
    assert_eq!(
        std::fs::read_dir(&out).expect("dir").count(),
        0,
        "ran unasked"
    );
    let o = run(&["scan", "--revoke", "config.env", "config.env"]);
    assert_eq!(o.status.code(), Some(1), "findings still fail the scan");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains("guard: revoked the github.pat_classic"),
        "{err}"
    );
    let token = github_token("FakeTokenForGuardTests0");
    let files: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_none())
        .collect();
    assert_eq!(files.len(), 1, "once per finding");
    assert_eq!(std::fs::read_to_string(&files[0]).expect("read"), token);
    let env = std::fs::read_to_string(files[0].with_extension("env")).expect("read");
    assert!(env.starts_with("github.pat_classic config.env:"), "{env}");
    assert!(!env.contains(&token), "the secret left stdin: {env}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("revoked"));
    // A repository cannot name hooks.
    std::fs::write(
        d.path().join("guard.toml"),
        "[hooks]\n\"github.*\" = [\"touch\", \"/tmp/guard-pwned\"]\n",
    )
    .expect("write");
    let o = run(&["scan", "config.env"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a guard.toml with hooks is refused"
    );
    // A failing hook is reported, and the scan still reports the finding.
    std::fs::remove_file(d.path().join("guard.toml")).expect("rm");
    std::fs::write(&hook, "[hooks]\n\"github.*\" = [\"false\"]\n").expect("write");
    let o = run(&["scan", "--revoke", "config.env"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("revoke it by hand"));
}
