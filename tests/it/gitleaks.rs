//! Migration from gitleaks: `[import]` in guard.toml, on configs written for these tests.

use std::path::Path;

use assert_cmd::Command;

fn guard(dir: &Path, cache: &Path, args: &[&str]) -> std::process::Output {
    Command::cargo_bin("guard")
        .expect("the guard binary should be built")
        .env("GUARD_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .env_remove("GUARD_FINDING_KEY")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("runs")
}

const GITLEAKS: &str = r#"
title = "team config"

[extend]
useDefault = true

[allowlist]
description = "global"
paths = ['''(^|/)fixtures/''']
stopwords = ["notreal"]

[[rules]]
id = "corp-deploy-key"
description = "Corp deploy key"
regex = '''(?i)corpdeploy[_-]?key\s*[:=]\s*["']?([A-Za-z0-9]{24,})["']?'''
secretGroup = 1
keywords = ["corpdeploy"]
entropy = 3.0
[[rules.allowlists]]
regexes = ['''^0+$''']

[[rules]]
id = "tiny-thing"
regex = '''tiny_[[:alnum:]]+\z'''

[[rules]]
id = "pem-file"
path = '''\.pem$'''

[[rules]]
id = "dotted"
regex = '''(?:[a-z]+\.)+internal'''
"#;

#[test]
fn gitleaks_config_and_ignore_file_are_imported() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path();
    std::fs::write(p.join(".gitleaks.toml"), GITLEAKS).expect("write");
    std::fs::write(
        p.join("guard.toml"),
        "[import]\ngitleaks = \".gitleaks.toml\"\ngitleaksignore = \".gitleaksignore\"\n",
    )
    .expect("write");
    std::fs::write(
        p.join(".gitleaksignore"),
        "# accepted\nold.env:corp-deploy-key:2\nother.env:generic-api-key:1\nnot a fingerprint\n",
    )
    .expect("write");
    let key = "Qm7Xz2Lp9Vw4Rt8Ky3Nb6Hc1";
    std::fs::write(p.join("app.env"), format!("CORPDEPLOY_KEY={key}\n")).expect("write");
    std::fs::write(
        p.join("old.env"),
        format!("# old\ncorpdeploy-key: \"{key}\"\n"),
    )
    .expect("write");
    std::fs::write(
        p.join("other.env"),
        format!("corpdeploy_key={key}\ncorpdeploy_key=Zy8Wk3Qd7Rm2Tp5Vn9Lx4Bc6\n"),
    )
    .expect("write");
    std::fs::create_dir_all(p.join("fixtures")).expect("mkdir");
    std::fs::write(p.join("fixtures/f.env"), format!("corpdeploy_key={key}\n")).expect("write");
    std::fs::write(
        p.join("allowed.env"),
        "corpdeploy_key=000000000000000000000000\ncorpdeploy_key=NotRealKeyAbcdefghijklmn1\n",
    )
    .expect("write");
    std::fs::write(p.join("tiny.txt"), "tiny_abc9\n").expect("write");

    let out = guard(p, cache.path(), &["scan", "-f", "jsonl", "."]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let found: Vec<(String, String, u64)> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("json");
            (
                v["path"]
                    .as_str()
                    .expect("path")
                    .trim_start_matches("./")
                    .to_string(),
                v["rule"].as_str().expect("rule").to_string(),
                v["line"].as_u64().expect("line"),
            )
        })
        .filter(|(_, r, _)| r.starts_with("gitleaks."))
        .collect();
    let corp = "gitleaks.corp-deploy-key".to_string();
    let mut found = found;
    found.sort();
    assert_eq!(
        found,
        [
            ("app.env".to_string(), corp.clone(), 1),
            ("other.env".to_string(), corp.clone(), 2),
            ("tiny.txt".to_string(), "gitleaks.tiny-thing".to_string(), 1),
        ],
        "old.env:2 (ignore file), other.env:1 (ignored under gitleaks' own rule id), fixtures/ \
         (path allowlist), allowed.env (rule allowlist regex, global stopword) are suppressed"
    );
    // Every change and every loss is named, rule by rule.
    for expect in [
        "[extend] not followed",
        "rule tiny-thing: unbounded repetition (*, +, {n,}) bounded to 256",
        "rule tiny-thing: ^/$/\\A/\\z anchors match at line boundaries",
        "rule pem-file: not imported: path-only rules",
        "rule dotted: not imported:",
        ".gitleaksignore:4: not a fingerprint",
    ] {
        assert!(err.contains(expect), "missing {expect:?} in:\n{err}");
    }
    // Imported rules list and check (they have no examples to prove, and need none).
    let list = guard(p, cache.path(), &["rules", "list", "-f", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert!(v
        .as_array()
        .expect("array")
        .iter()
        .any(|r| r["id"] == "gitleaks.corp-deploy-key" && r["confidence"] == "medium"));
    let chk = guard(p, cache.path(), &["rules", "check"]);
    let text = String::from_utf8_lossy(&chk.stdout);
    assert!(!text.contains("gitleaks."), "{text}");
}

#[test]
fn a_missing_gitleaks_file_is_an_error() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        d.path().join("guard.toml"),
        "[import]\ngitleaks = \"nope.toml\"\n",
    )
    .expect("write");
    std::fs::write(d.path().join("a.txt"), "x\n").expect("write");
    let out = guard(d.path(), cache.path(), &["scan", "a.txt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
}
