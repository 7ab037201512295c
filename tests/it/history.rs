//! `guard scan --git`: history of real repositories built by `git` in temp dirs, checked against
//! `git log --raw` as the oracle for "which commit introduced this blob".

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command as StdCommand;

use assert_cmd::Command;

fn guard(cache: &Path) -> Command {
    let mut c = Command::cargo_bin("guard").expect("the guard binary should be built");
    c.env("GUARD_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .env_remove("GUARD_FINDING_KEY");
    c
}

/// `git` with a fixed identity and no user or system configuration.
fn git_cmd(dir: &Path) -> StdCommand {
    let mut c = StdCommand::new("git");
    c.current_dir(dir)
        // An empty stdin that is not `/dev/null` (see `empty_git_config`).
        .stdin(std::process::Stdio::piped())
        .env("GIT_CONFIG_GLOBAL", crate::empty_git_config())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ada Tester")
        .env("GIT_AUTHOR_EMAIL", "ada@example.test")
        .env("GIT_COMMITTER_NAME", "Ada Tester")
        .env("GIT_COMMITTER_EMAIL", "ada@example.test");
    c
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_cmd(dir).args(args).output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Commits with a fixed, increasing date so "oldest first" is well defined.
fn commit(dir: &Path, n: u32, msg: &str) {
    let date = format!("2024-01-{:02}T12:00:00Z", n);
    let out = git_cmd(dir)
        .args(["commit", "-q", "-m", msg])
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .output()
        .expect("git commit runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn token(seed: &str) -> String {
    let random: String = seed.chars().cycle().take(30).collect();
    let crc = guard::engine::validate::base62_crc(crc32fast::hash(random.as_bytes()));
    format!("ghp_{random}{}", std::str::from_utf8(&crc).expect("ascii"))
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// The findings of `guard scan --git` as JSON values.
fn scan(cache: &Path, dir: &Path, extra: &[&str]) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let out = guard(cache)
        .current_dir(dir)
        .args(["scan", "--git", "-f", "jsonl"])
        .args(extra)
        .arg(".")
        .output()
        .expect("runs");
    let v = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSONL"))
        .collect();
    (
        out.status.code(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Oracle: for every blob, the first commit (oldest first) whose diff adds it, and its path.
fn git_log_first_commits(dir: &Path) -> BTreeMap<String, (String, String)> {
    let log = git(
        dir,
        &[
            "log",
            "--all",
            "--reverse",
            "--raw",
            "--no-abbrev",
            "--format=C %H",
            "-m",
            "--first-parent",
        ],
    );
    let mut first = BTreeMap::new();
    let mut current = String::new();
    for line in log.lines() {
        if let Some(c) = line.strip_prefix("C ") {
            current = c.to_string();
        } else if let Some(rest) = line.strip_prefix(':') {
            // :old_mode new_mode old_sha new_sha status\tpath
            let (meta, path) = rest.split_once('\t').expect("raw line");
            let fields: Vec<&str> = meta.split(' ').collect();
            let new_sha = fields[3];
            if new_sha.chars().all(|c| c == '0') {
                continue;
            }
            let path = path.rsplit('\t').next().expect("path").to_string();
            first
                .entry(new_sha.to_string())
                .or_insert((current.clone(), path));
        }
    }
    first
}

#[test]
fn every_blob_once_with_the_commit_that_introduced_it() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    let r = d.path();
    git(r, &["init", "-q", "-b", "main"]);
    let a = token("HistoryFirstTokenForGuard");
    let b = token("HistorySecondTokenForGuard");
    write(&r.join("app/.env"), &format!("GITHUB_TOKEN={a}\n"));
    write(&r.join("README"), "hello\n");
    git(r, &["add", "."]);
    commit(r, 1, "add config");
    // The secret is removed from the tip: only history still has it.
    write(&r.join("app/.env"), "GITHUB_TOKEN=\n");
    git(r, &["add", "."]);
    commit(r, 2, "remove the token");
    // The same blob again under another path, and a branch with a second secret.
    write(&r.join("backup/old.env"), &format!("GITHUB_TOKEN={a}\n"));
    git(r, &["add", "."]);
    commit(r, 3, "restore a backup");
    git(r, &["checkout", "-q", "-b", "feature"]);
    write(
        &r.join("deploy.sh"),
        &format!("curl -H 'Authorization: token {b}'\n"),
    );
    git(r, &["add", "."]);
    commit(r, 4, "deploy script");
    git(r, &["checkout", "-q", "main"]);

    let (code, found, err) = scan(cache.path(), r, &[]);
    assert_eq!(code, Some(1), "{err}");
    // Each blob once: the restored copy shares the first blob's id, so it is one finding.
    assert_eq!(found.len(), 2, "{found:#?}");
    let oracle = git_log_first_commits(r);
    for f in &found {
        let o = &f["origin"];
        assert_eq!(o["kind"], "git_blob");
        let blob = o["blob"].as_str().expect("blob id");
        let (commit, path) = oracle.get(blob).expect("git log knows the blob");
        assert_eq!(o["commit"]["id"].as_str(), Some(commit.as_str()), "{f}");
        assert_eq!(o["path"].as_str(), Some(path.as_str()), "{f}");
        assert_eq!(o["commit"]["author"], "Ada Tester");
    }
    let first = found
        .iter()
        .find(|f| f["origin"]["path"] == "app/.env")
        .expect("the removed secret is found in history");
    assert_eq!(first["origin"]["commit"]["subject"], "add config");
    assert_eq!(first["origin"]["commit"]["date"], "2024-01-01T12:00:00Z");
    // In commit 1 (app/.env) and commits 3 and 4 (backup/old.env): 3 commits.
    assert_eq!(first["origin"]["commits"], 3, "{first}");
    assert!(!first.to_string().contains(&a[4..20]), "redacted: {first}");

    // Human output names the commit.
    let human = guard(cache.path())
        .current_dir(r)
        .args(["scan", "--git", "."])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("introduced in") && text.contains("add config"),
        "{text}"
    );

    // Selections: one branch, a range, a date.
    let (_, main_only, _) = scan(cache.path(), r, &["--branch", "main"]);
    assert_eq!(main_only.len(), 1);
    let (_, range, _) = scan(cache.path(), r, &["--commits", "main..feature"]);
    let paths: BTreeSet<_> = range
        .iter()
        .map(|f| f["origin"]["path"].to_string())
        .collect();
    assert_eq!(paths.len(), 1, "{range:#?}");
    assert_eq!(range[0]["origin"]["path"], "deploy.sh");
    let (code, since, _) = scan(cache.path(), r, &["--since", "2024-01-03"]);
    assert_eq!(code, Some(1));
    assert!(since.iter().all(|f| f["origin"]["path"] != "app/.env"));
    // The working tree alone no longer has the removed secret.
    let tree = guard(cache.path())
        .current_dir(r)
        .args(["scan", "-f", "jsonl", "app"])
        .output()
        .expect("runs");
    assert_eq!(tree.status.code(), Some(0));
}

#[test]
fn bare_clones_tags_and_missing_objects() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    let r = d.path().join("work");
    std::fs::create_dir(&r).expect("mkdir");
    git(&r, &["init", "-q", "-b", "main"]);
    write(
        &r.join("a.txt"),
        &format!("t={}\n", token("BareCloneTokenForGuard0")),
    );
    git(&r, &["add", "."]);
    commit(&r, 1, "one");
    // A blob reachable only through a tag.
    let blob_file = d.path().join("tagged.txt");
    write(
        &blob_file,
        &format!("key {}\n", token("TaggedBlobTokenForGuard")),
    );
    let blob = git(
        &r,
        &["hash-object", "-w", blob_file.to_str().expect("utf-8 path")],
    );
    git(&r, &["tag", "loose-blob", blob.trim()]);
    // Packed, as most real repositories are. Not `git gc`/`repack`: they feed `/dev/null` to
    // `pack-objects` as its list of revisions, and some sandboxes put a regular file with
    // content there; here the (empty) list comes from a closed pipe.
    git(
        &r,
        &[
            "pack-objects",
            "-q",
            "--revs",
            "--all",
            ".git/objects/pack/pack",
        ],
    );
    git(&r, &["prune-packed"]);
    git(&r, &["pack-refs", "--all"]);
    let bare = d.path().join("bare.git");
    git(
        d.path(),
        &[
            "clone",
            "-q",
            "--bare",
            "--mirror",
            r.to_str().expect("utf-8"),
            bare.to_str().expect("utf-8"),
        ],
    );
    for repo in [&r, &bare] {
        let (code, found, err) = scan(cache.path(), repo, &[]);
        assert_eq!(code, Some(1), "{}: {err}", repo.display());
        assert_eq!(found.len(), 2, "{}: {found:#?}", repo.display());
        assert!(found
            .iter()
            .any(|f| f["origin"]["path"] == "refs/tags/loose-blob"));
    }
    // A missing blob (as in a damaged or partial clone): named, the rest scanned, exit 2.
    let extra = d.path().join("w2");
    git(
        d.path(),
        &["init", "-q", "-b", "main", extra.to_str().expect("utf-8")],
    );
    write(
        &extra.join("keep.txt"),
        &format!("t={}\n", token("KeptWhenOtherBlobIsGone")),
    );
    write(&extra.join("gone.txt"), "this blob will be deleted\n");
    git(&extra, &["add", "."]);
    commit(&extra, 1, "two files");
    let gone = git(&extra, &["rev-parse", "HEAD:gone.txt"]);
    let gone = gone.trim();
    std::fs::remove_file(extra.join(".git/objects").join(&gone[..2]).join(&gone[2..]))
        .expect("loose object exists");
    let (code, found, err) = scan(cache.path(), &extra, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(err.contains(gone), "the missing blob is named: {err}");
}

#[test]
fn an_empty_repository_or_a_plain_directory_is_a_clear_error() {
    let cache = tempfile::tempdir().expect("tempdir");
    let d = tempfile::tempdir().expect("tempdir");
    let out = guard(cache.path())
        .current_dir(d.path())
        .args(["scan", "--git", "."])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a git repository"));
    git(d.path(), &["init", "-q"]);
    let out = guard(cache.path())
        .current_dir(d.path())
        .args(["scan", "--git", "."])
        .output()
        .expect("runs");
    // No commits: nothing was scanned, and guard says so instead of reporting "clean".
    assert_eq!(out.status.code(), Some(2));
}
