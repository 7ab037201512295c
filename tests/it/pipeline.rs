//! The pipeline end to end: defaults a secret scanner's users expect (dotfiles, .gitignore only in
//! a repository, nothing scanned is an error), findings streamed as they are confirmed, filters
//! shared by every source, and bad input answered clearly.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;

fn guard(cache: &Path) -> Command {
    let mut c = Command::cargo_bin("guard").expect("the guard binary should be built");
    c.env("GUARD_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .env_remove("GUARD_FINDING_KEY");
    c
}

fn run(dir: &Path, cache: &Path, args: &[&str]) -> std::process::Output {
    guard(cache)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("runs")
}

/// A token with a valid CRC32/base62 tail (GitHub `ghp_`, npm `npm_`): generated, fake.
fn crc_token(prefix: &str, seed: &str) -> String {
    let random: String = seed.chars().cycle().take(30).collect();
    let crc = guard::engine::validate::base62_crc(crc32fast::hash(random.as_bytes()));
    format!(
        "{prefix}{random}{}",
        std::str::from_utf8(&crc).expect("ascii")
    )
}

/// (rule, path) of every JSONL finding.
fn found(stdout: &[u8]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSONL");
            (
                v["rule"].as_str().expect("rule").to_string(),
                v["path"].as_str().expect("path").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// The places secrets really live, each holding a valid-format fake credential.
fn dotfiles(root: &Path) {
    let gh = crc_token("ghp_", "FakeDotfileTokenForGuard0");
    let npm = crc_token("npm_", "FakeNpmrcTokenForGuardTests");
    write(
        &root.join(".env"),
        "SLACK_BOT_TOKEN=xoxb-904300627781-6321048482558-fbWqCI0fwBbtFAKEUM0CbJnO\n",
    );
    write(
        &root.join(".aws/credentials"),
        "[default]\naws_access_key_id = AKIAZ7VBXQ3MWT5KPRYD\n",
    );
    write(
        &root.join(".npmrc"),
        &format!("//registry.npmjs.org/:_authToken={npm}\n"),
    );
    write(
        &root.join(".git-credentials"),
        &format!("https://dev:{gh}@github.com\n"),
    );
    write(
        &root.join(".docker/config.json"),
        "{\"auths\":{\"https://index.docker.io/v1/\":{\"identitytoken\":\"dckr_pat_FAKEq8Zr3vT1mW0pL5xN7cB2dF9gH\"}}}\n",
    );
}

#[test]
fn dotfiles_are_scanned_by_default() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    dotfiles(d.path());
    let out = run(d.path(), cache.path(), &["scan", "-f", "jsonl", "."]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths: std::collections::BTreeSet<String> =
        found(&out.stdout).into_iter().map(|(_, p)| p).collect();
    for want in [
        ".env",
        ".aws/credentials",
        ".npmrc",
        ".git-credentials",
        ".docker/config.json",
    ] {
        assert!(paths.contains(want), "{want} not reported: {paths:?}");
    }
}

#[test]
fn git_dir_is_skipped_and_gitignore_only_counts_inside_a_repository() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    dotfiles(d.path());
    // Outside a repository an ignore file is no reason to skip (and `.ignore` is never read).
    write(&d.path().join(".ignore"), "*\n");
    write(&d.path().join(".gitignore"), ".env\n");
    let out = run(d.path(), cache.path(), &["scan", "-f", "jsonl", "."]);
    assert!(found(&out.stdout).iter().any(|(_, p)| p == ".env"));
    // Inside one, .gitignore is honoured and the summary says what it skipped.
    let git = StdCommand::new("git")
        .args(["init", "-q"])
        .current_dir(d.path())
        .status()
        .expect("git runs");
    assert!(git.success());
    write(
        &d.path().join(".git/config-secret-copy"),
        "SLACK_BOT_TOKEN=xoxb-904300627781-6321048482558-fbWqCI0fwBbtFAKEUM0CbJnO\n",
    );
    let out = run(d.path(), cache.path(), &["scan", "-f", "jsonl", "."]);
    let f = found(&out.stdout);
    assert!(
        !f.iter().any(|(_, p)| p == ".env" || p.starts_with(".git/")),
        "{f:?}"
    );
    assert!(f.iter().any(|(_, p)| p == ".npmrc"), "{f:?}");
    let human = run(d.path(), cache.path(), &["scan", "."]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("1 path(s) ignored"), "{text}");
    // --no-ignore scans it again; --exclude drops what a glob names.
    let out = run(
        d.path(),
        cache.path(),
        &[
            "scan",
            "-f",
            "jsonl",
            "--no-ignore",
            "--exclude",
            ".docker",
            ".",
        ],
    );
    let f = found(&out.stdout);
    assert!(f.iter().any(|(_, p)| p == ".env"), "{f:?}");
    assert!(!f.iter().any(|(_, p)| p.starts_with(".docker")), "{f:?}");
}

#[test]
fn nothing_scanned_is_an_error_not_a_clean_result() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(d.path().join("empty")).expect("mkdir");
    let out = run(d.path(), cache.path(), &["scan", "empty"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was scanned"));
    // Everything excluded: the same, and the reason is named.
    write(&d.path().join("src/a.txt"), "hello\n");
    let out = run(
        d.path(),
        cache.path(),
        &["scan", "--exclude", "*.txt", "src"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing was scanned") && err.contains("ignored"),
        "{err}"
    );
}

/// `tail -f log | guard scan -`: the finding is printed while the pipe is still open.
#[test]
fn stdin_findings_stream_before_end_of_input() {
    let cache = tempfile::tempdir().expect("tempdir");
    let bin = assert_cmd::cargo::cargo_bin("guard");
    // Compiling the stream database for 600+ rules takes seconds with a cold cache: that is not
    // what this test measures, so fill the cache first.
    let warm = StdCommand::new(&bin)
        .args(["scan", "-"])
        .env("GUARD_CACHE_DIR", cache.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns")
        .wait_with_output()
        .expect("runs");
    assert!(warm.status.code().is_some());
    let mut child = StdCommand::new(bin)
        .args(["scan", "-f", "jsonl", "-"])
        .env("GUARD_CACHE_DIR", cache.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
    });
    writeln!(stdin, "starting up").expect("write");
    let token = crc_token("ghp_", "FakeStreamingTokenForGuard");
    writeln!(stdin, "2026-11-29 token={token} accepted").expect("write");
    stdin.flush().expect("flush");
    let t = Instant::now();
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a finding is printed while stdin is still open");
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSONL");
    assert_eq!(v["rule"], "github.pat_classic");
    assert_eq!(v["line"], 2);
    assert_eq!(v["origin"]["kind"], "stdin");
    assert!(
        !line.contains(&token[8..]),
        "the secret is redacted: {line}"
    );
    eprintln!("finding arrived {:?} after the line", t.elapsed());
    // More lines keep flowing; closing stdin ends the scan with exit 1.
    writeln!(
        stdin,
        "again {}",
        crc_token("ghp_", "SecondStreamingToken0")
    )
    .expect("write");
    stdin.flush().expect("flush");
    rx.recv_timeout(Duration::from_secs(20))
        .expect("second finding");
    drop(stdin);
    assert_eq!(child.wait().expect("exits").code(), Some(1));
}

#[test]
fn filters_give_the_same_result_for_every_source() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    let keep = crc_token("ghp_", "KeptTokenForFilterTests00");
    let known = crc_token("ghp_", "BaselinedTokenForFilters0");
    let text = format!("a={known}\nb={keep}\nc=AKIAZ7VBXQ3MDUMMYRYD\n");
    write(&d.path().join("in/app.log"), &text);
    // Baseline the first token only (through a file holding just it).
    write(&d.path().join("old/app.log"), &format!("a={known}\n"));
    let b = run(
        d.path(),
        cache.path(),
        &["scan", "--write-baseline", "base.json", "old"],
    );
    assert_eq!(
        b.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&b.stderr)
    );
    write(
        &d.path().join("guard.toml"),
        "[allowlist]\nstopwords = [\"dummy\"]\n",
    );
    let file = run(
        d.path(),
        cache.path(),
        &[
            "scan",
            "-f",
            "jsonl",
            "--baseline",
            "base.json",
            "in/app.log",
        ],
    );
    let dir = run(
        d.path(),
        cache.path(),
        &["scan", "-f", "jsonl", "--baseline", "base.json", "in"],
    );
    let stdin = guard(cache.path())
        .current_dir(d.path())
        .args(["scan", "-f", "jsonl", "--baseline", "base.json", "-"])
        .write_stdin(text.clone())
        .output()
        .expect("runs");
    let rules = |o: &std::process::Output| -> Vec<(String, u64)> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSONL");
                (
                    v["rule"].as_str().expect("rule").to_string(),
                    v["line"].as_u64().expect("line"),
                )
            })
            .collect()
    };
    let want = vec![("github.pat_classic".to_string(), 2)];
    assert_eq!(rules(&file), want);
    assert_eq!(rules(&dir), want);
    assert_eq!(rules(&stdin), want);
    let human = run(
        d.path(),
        cache.path(),
        &["scan", "--baseline", "base.json", "in"],
    );
    assert!(String::from_utf8_lossy(&human.stdout).contains("1 in baseline"));
}

#[test]
fn bad_input_gets_a_clear_answer() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    write(&d.path().join("a.txt"), "hello\n");
    // Absurd -j is capped, not obeyed.
    let out = run(d.path(), cache.path(), &["scan", "-j", "100000", "a.txt"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("capped"));
    // A size that overflows is refused, not turned into 0.
    let out = run(
        d.path(),
        cache.path(),
        &["scan", "--max-file-size", "17179869184G", "a.txt"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too large"));
    // A closed stdin is an error, not an empty clean input.
    let bin = assert_cmd::cargo::cargo_bin("guard");
    let status = StdCommand::new("sh")
        .arg("-c")
        .arg(format!("exec '{}' scan - <&-", bin.display()))
        .env("GUARD_CACHE_DIR", cache.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runs");
    assert_eq!(status.code(), Some(2));
    // Stdin bytes are counted.
    let out = guard(cache.path())
        .args(["scan", "-"])
        .write_stdin("twelve bytes")
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 file(s), 12 bytes"));
    // /dev/zero named on the command line: binary, skipped at once (not read forever).
    let out = guard(cache.path())
        .current_dir(d.path())
        .args(["scan", "/dev/zero", "a.txt"])
        .timeout(Duration::from_secs(60))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 binary skipped"));
    // A user rule whose nested repeats would take minutes is refused with the reason.
    write(
        &d.path().join("guard.toml"),
        "[[rule]]\nid = \"x.nested\"\nname = \"n\"\npattern = '(a{1,64}){1,64}b'\nconfidence = \"low\"\n",
    );
    let out = run(d.path(), cache.path(), &["scan", "a.txt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nested"));
}

#[test]
fn a_fifo_is_cut_at_the_size_limit_and_says_so() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    let fifo = d.path().join("pipe");
    let ok = StdCommand::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(ok.success());
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        // Endless text: only the cap ends the scan. The reader closing makes write fail.
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&writer_path) {
            let line = b"all quiet on this line\n".repeat(1000);
            while f.write_all(&line).is_ok() {}
        }
    });
    let out = guard(cache.path())
        .args(["scan", "--max-file-size", "1M"])
        .arg(&fifo)
        .timeout(Duration::from_secs(60))
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cut at the size limit"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1048576 bytes"));
    writer.join().expect("writer ends");
}

#[test]
fn output_never_shows_a_value_it_did_not_detect() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    // The access key id is detected; the secret key beside it is matched by no rule (no keyword).
    let secret = "q8Zr3vT1mW0pL5xN7cB2dF9gH4jK6sQ1uY3eR8tA";
    write(
        &d.path().join("creds.txt"),
        &format!("key AKIAZ7VBXQ3MWT5KPRYD {secret}\n"),
    );
    // A token that is also the file name.
    let gh = crc_token("ghp_", "TokenInAFileNameForGuard0");
    write(&d.path().join(format!("{gh}.txt")), &format!("{gh}\n"));
    for fmt in ["human", "json", "jsonl", "sarif"] {
        let out = run(d.path(), cache.path(), &["scan", "-f", fmt, "."]);
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains(&secret[..20]),
            "{fmt}: adjacent secret shown:\n{text}"
        );
        assert!(
            !text.contains(&gh[4..24]),
            "{fmt}: token in a path shown:\n{text}"
        );
        assert!(!text.contains("KPRYD"), "{fmt}: access key shown:\n{text}");
    }
}

/// guard's own clone is clean under its own policy (guard.toml allowlists the fixtures).
#[test]
fn guard_scans_its_own_repository_clean() {
    let cache = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run(
        root,
        cache.path(),
        &[
            "scan",
            "--exclude",
            "target",
            "--exclude",
            "fuzz/target",
            ".",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Files are read into a buffer each worker keeps from one file to the next, and the walk no
/// longer learns sizes before a file is opened: a file read after a larger one sees none of its
/// bytes, the size limit still skips what is over it (read and mapped sizes alike), and every
/// token is found where it is.
#[test]
fn files_read_one_after_another_share_nothing_and_the_size_limit_holds() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    let filler = |n: usize| "let x = compute(y);\n".repeat(n / 20);
    for i in 0..12 {
        // Larger files end with a token; the smaller clean ones are read after some of them
        // (one worker), so a stale tail of a larger file would show up as a finding.
        let token = crc_token("ghp_", &format!("ReuseCheck{i:02}Seed"));
        write(
            &d.path().join(format!("t/{i:02}-big.txt")),
            &format!("{}GITHUB_TOKEN={token}\n", filler(100_000)),
        );
        write(
            &d.path().join(format!("t/{i:02}-small.txt")),
            &filler(2_000),
        );
    }
    // Over the read tier (memory-mapped), with a token at its end.
    let token = crc_token("ghp_", "MappedFileSeedForGuard");
    write(
        &d.path().join("t/mapped.txt"),
        &format!("{}GITHUB_TOKEN={token}\n", filler(400_000)),
    );
    let out = run(
        d.path(),
        cache.path(),
        &["scan", "-j", "1", "-f", "jsonl", "t"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hits = found(&out.stdout);
    assert_eq!(hits.len(), 13, "{hits:?}");
    assert!(hits.iter().all(|(rule, path)| rule == "github.pat_classic"
        && (path.ends_with("-big.txt") || path.ends_with("mapped.txt"))));
    // The limit is checked on each opened file: the big and mapped ones are skipped, counted.
    let out = run(
        d.path(),
        cache.path(),
        &["scan", "-j", "1", "--max-file-size", "50K", "t"],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("13 too large skipped"), "{text}");
}
