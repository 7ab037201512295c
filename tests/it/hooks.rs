//! `guard hook`: real `git` repositories in temp dirs, the real binary as the hook.
//!
//! Tokens are fake but valid-format (a `ghp_` token with a correct CRC32 tail), made at runtime.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

use crate::scan::github_token;

/// A repository in a temp dir, with its own cache dir and no global git config.
struct Repo {
    tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn filler(n: usize) -> String {
    (0..n).map(|i| format!("filler line {i}\n")).collect()
}

impl Repo {
    fn new() -> Repo {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("repo");
        std::fs::create_dir(&dir).expect("mkdir");
        let r = Repo { tmp, dir };
        r.git(["init", "-q", "-b", "main"]);
        r.git(["config", "user.name", "Test"]);
        r.git(["config", "user.email", "test@example.com"]);
        r
    }

    fn env(&self, c: &mut std::process::Command) {
        c.current_dir(&self.dir)
            // An empty stdin that is not `/dev/null` (see `empty_git_config`).
            .stdin(std::process::Stdio::piped())
            .env("GIT_CONFIG_GLOBAL", crate::empty_git_config())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GUARD_CACHE_DIR", self.tmp.path().join("cache"))
            .env("NO_COLOR", "1")
            .env_remove("GUARD_FINDING_KEY");
    }

    fn git_out<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = std::process::Command::new("git");
        c.args(args);
        self.env(&mut c);
        c.output().expect("git runs")
    }

    fn git<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.git_out(args);
        assert!(
            out.status.success(),
            "git failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn write(&self, path: impl AsRef<Path>, text: &str) {
        let p = self.dir.join(path);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    fn commit(&self, msg: &str) -> String {
        self.git(["add", "-A"]);
        self.git(["commit", "-q", "--no-verify", "-m", msg]);
        self.git(["rev-parse", "HEAD"])
    }

    fn guard(&self) -> Command {
        let mut c = Command::cargo_bin("guard").expect("the guard binary should be built");
        c.current_dir(&self.dir)
            .env("GIT_CONFIG_GLOBAL", crate::empty_git_config())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GUARD_CACHE_DIR", self.tmp.path().join("cache"))
            .env("NO_COLOR", "1")
            .env_remove("GUARD_FINDING_KEY");
        c
    }

    fn hook(&self, args: &[&str]) -> Output {
        self.guard()
            .arg("hook")
            .args(args)
            .output()
            .expect("guard runs")
    }
}

/// (path, line, commit) of each JSONL finding.
fn findings(out: &Output) -> Vec<(String, u64, Option<String>)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSONL");
            (
                v["path"].as_str().expect("path").to_string(),
                v["line"].as_u64().expect("line"),
                v["origin"]["commit"]["id"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn pre_commit(r: &Repo) -> Output {
    r.hook(&["pre-commit", "-f", "jsonl"])
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The pre-commit hook blocks, with exactly these (path, line, commit) findings.
fn assert_blocked(r: &Repo, want: Vec<(String, u64, Option<String>)>) {
    let o = pre_commit(r);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(findings(&o), want);
}

fn assert_stderr_has(o: &Output, text: &str) {
    let e = stderr(o);
    assert!(e.contains(text), "stderr lacks {text:?}:\n{e}");
}

#[test]
fn staged_secret_blocked_with_staged_line_number_unstaged_ignored() {
    let r = Repo::new();
    r.write("app.cfg", &filler(5));
    r.commit("base");
    let tok = github_token("StagedSecretBlocked");
    // Staged: a secret on line 4 of the staged file.
    r.write("new.env", &format!("a\nb\nc\ntoken = {tok}\n"));
    r.git(["add", "new.env"]);
    // Unstaged: a secret in the work tree only.
    r.write(
        "app.cfg",
        &format!("{}unstaged = {}\n", filler(5), github_token("NotStaged")),
    );
    let o = pre_commit(&r);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(findings(&o), vec![("new.env".into(), 4, None)]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains(&tok), "the secret is redacted");
    assert!(stderr(&o).contains("--no-verify") && stderr(&o).contains("guard:allow"));
    // Human output names the file and line.
    let h = r.hook(&["pre-commit"]);
    assert!(String::from_utf8_lossy(&h.stdout).contains("new.env (staged):4:"));

    // Unstage it: only the unstaged secret is left, and it is not the commit's business.
    r.git(["rm", "-q", "--cached", "new.env"]);
    r.write("other.txt", "clean\n");
    r.git(["add", "other.txt"]);
    let o = r.hook(&["pre-commit", "-v"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_stderr_has(&o, "scanned 1 file(s), 6 bytes");
}

#[test]
fn only_added_lines_are_reported_and_allow_marker_works() {
    let r = Repo::new();
    let old = github_token("OldCommittedSecret");
    r.write("c.env", &format!("{}old = {old}\n{}", filler(3), filler(3)));
    r.commit("old secret, already committed");
    // A new line elsewhere: the old secret on an unchanged line is not reported.
    let new = github_token("NewAddedSecret");
    r.write(
        "c.env",
        &format!(
            "{}old = {old}\n{}new = {new}\nok = {} # guard:allow\n",
            filler(3),
            filler(3),
            github_token("Allowed")
        ),
    );
    r.git(["add", "c.env"]);
    assert_blocked(&r, vec![("c.env".into(), 8, None)]);
}

#[test]
fn deleted_lines_and_files_pass() {
    let r = Repo::new();
    let tok = github_token("DeletedSecret");
    r.write("d.env", &format!("x\nsecret = {tok}\ny\n"));
    r.write("gone.env", &format!("secret = {tok}\n"));
    r.commit("secrets");
    r.write("d.env", "x\ny\n");
    r.git(["add", "d.env"]);
    r.git(["rm", "-q", "gone.env"]);
    let o = pre_commit(&r);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(findings(&o).is_empty());
    // Nothing scannable staged: that passes, and says so.
    assert_stderr_has(&o, "scanned 0 file(s)");
}

#[test]
fn renamed_file_reports_only_new_lines_at_new_path() {
    let r = Repo::new();
    let old = github_token("RenamedOldSecret");
    let body = format!("{}old = {old}\n{}", filler(10), filler(10));
    r.write("before.env", &body);
    r.commit("base");
    // A pure rename adds nothing.
    r.git(["mv", "before.env", "after.env"]);
    let o = pre_commit(&r);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // A rename with an edit reports the edit, at the new path and line.
    let new = github_token("RenamedNewSecret");
    r.write("after.env", &format!("{body}new = {new}\n"));
    r.git(["add", "after.env"]);
    assert_blocked(&r, vec![("after.env".into(), 22, None)]);
}

#[test]
fn empty_repository_without_head() {
    let r = Repo::new();
    r.write(
        "first.env",
        &format!("token = {}\n", github_token("NoHeadYet")),
    );
    r.git(["add", "."]);
    assert_blocked(&r, vec![("first.env".into(), 1, None)]);
    r.git(["rm", "-q", "--cached", "first.env"]);
    r.write("clean.txt", "hello\n");
    r.git(["add", "clean.txt"]);
    assert_eq!(code(&pre_commit(&r)), 0);
}

#[test]
fn detached_head() {
    let r = Repo::new();
    r.write("a.txt", "a\n");
    r.commit("a");
    r.git(["checkout", "-q", "--detach"]);
    r.write(
        "b.env",
        &format!("token = {}\n", github_token("DetachedHead")),
    );
    r.git(["add", "."]);
    assert_blocked(&r, vec![("b.env".into(), 1, None)]);
}

#[cfg(unix)]
#[test]
fn non_utf8_and_quoted_paths() {
    use std::os::unix::ffi::OsStrExt;
    let r = Repo::new();
    let tok = github_token("NonUtf8Path");
    let name = OsStr::from_bytes(b"caf\xe9 \"x\"\tname.env");
    std::fs::write(r.dir.join(name), format!("\ntoken = {tok}\n")).expect("write");
    r.git(["add", "."]);
    let o = pre_commit(&r);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(
        findings(&o),
        vec![("caf\u{fffd} \"x\"\tname.env".into(), 2, None)]
    );
}

#[test]
fn merge_in_progress_scans_what_the_merge_brings() {
    let r = Repo::new();
    r.write("a.txt", &filler(3));
    r.commit("base");
    r.git(["checkout", "-q", "-b", "feature"]);
    r.write(
        "f.env",
        &format!("token = {}\n", github_token("FromFeature")),
    );
    r.commit("feature secret");
    r.git(["checkout", "-q", "main"]);
    r.write("m.txt", "main\n");
    r.commit("main work");
    r.git(["merge", "-q", "--no-ff", "--no-commit", "feature"]);
    assert_blocked(&r, vec![("f.env".into(), 1, None)]);
}

#[test]
fn binary_only_passes_with_a_note() {
    let r = Repo::new();
    std::fs::write(r.dir.join("blob.bin"), b"\x00\x01ghp_binary\x00").expect("write");
    r.git(["add", "."]);
    let o = pre_commit(&r);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_stderr_has(&o, "blob.bin looks binary");
}

#[test]
fn text_marked_binary_by_gitattributes_is_still_scanned() {
    let r = Repo::new();
    r.write(".gitattributes", "*.env -diff\n");
    r.write(
        "x.env",
        &format!("token = {}\n", github_token("AttrBinary")),
    );
    r.git(["add", "."]);
    assert_blocked(&r, vec![("x.env".into(), 1, None)]);
}

#[test]
fn unreadable_staged_blob_fails_closed() {
    let r = Repo::new();
    r.write("x.txt", "some content that is staged\n");
    r.git(["add", "."]);
    let blob = r.git(["rev-parse", ":x.txt"]);
    std::fs::remove_file(r.dir.join(".git/objects").join(&blob[..2]).join(&blob[2..]))
        .expect("remove loose object");
    let o = pre_commit(&r);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_stderr_has(&o, "x.txt");
}

#[test]
fn outside_a_repository_is_an_error() {
    let r = Repo::new();
    std::fs::remove_dir_all(r.dir.join(".git")).expect("rm");
    assert_eq!(code(&pre_commit(&r)), 2);
}

fn hooks_dir(r: &Repo) -> PathBuf {
    r.dir.join(".git/hooks")
}

#[test]
fn install_chains_an_existing_hook_and_uninstall_restores_it() {
    let r = Repo::new();
    let hooks = hooks_dir(&r);
    std::fs::create_dir_all(&hooks).expect("mkdir");
    let mine = "#!/bin/sh\necho ran >> \"$(git rev-parse --git-dir)/chained-ran\"\n";
    std::fs::write(hooks.join("pre-commit"), mine).expect("write");
    set_mode(&hooks.join("pre-commit"));
    let o = r.guard().args(["hook", "install"]).output().expect("runs");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(hooks.join("pre-commit.guard-chained").exists());
    // Installing twice keeps the chained hook (the shim is not chained to itself).
    let o = r
        .guard()
        .args(["hook", "install", "--pre-push", "--commit-msg"])
        .output()
        .expect("runs");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-commit.guard-chained")).expect("read"),
        mine
    );

    // A clean commit goes through guard, then the chained hook.
    r.write("ok.txt", "fine\n");
    r.git(["add", "."]);
    let out = r.git_out(["commit", "-q", "-m", "clean"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(r.dir.join(".git/chained-ran").exists());
    std::fs::remove_file(r.dir.join(".git/chained-ran")).expect("rm");

    // A secret, through `git commit -a` (git's temporary index): blocked, chained hook not run.
    r.write(
        "ok.txt",
        &format!("fine\ntoken = {}\n", github_token("ThroughGitCommit")),
    );
    let out = r.git_out(["commit", "-q", "-a", "-m", "leak"]);
    assert!(!out.status.success());
    // (git sends a hook's stdout to stderr)
    assert_stderr_has(&out, "ok.txt (staged):2:");
    assert!(!r.dir.join(".git/chained-ran").exists());
    assert_eq!(r.git(["rev-list", "--count", "HEAD"]), "1");

    // A secret in the commit message, through the commit-msg hook.
    r.write("ok.txt", "fine\nmore\n");
    let msg = format!("add more\n\ntoken {}\n", github_token("InTheMessage"));
    let out = r.git_out(["commit", "-q", "-a", "-m", &msg]);
    assert!(!out.status.success());
    assert_eq!(r.git(["rev-list", "--count", "HEAD"]), "1");

    let o = r
        .guard()
        .args(["hook", "uninstall"])
        .output()
        .expect("runs");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-commit")).expect("restored"),
        mine
    );
    assert!(!hooks.join("pre-push").exists() && !hooks.join("commit-msg").exists());
    assert!(!hooks.join("pre-commit.guard-chained").exists());
}

#[test]
fn install_refuses_to_lose_a_chained_hook_without_force() {
    let r = Repo::new();
    let hooks = hooks_dir(&r);
    std::fs::create_dir_all(&hooks).expect("mkdir");
    std::fs::write(hooks.join("pre-commit"), "#!/bin/sh\nexit 0\n").expect("write");
    std::fs::write(
        hooks.join("pre-commit.guard-chained"),
        "#!/bin/sh\n# older\n",
    )
    .expect("write");
    let o = r.guard().args(["hook", "install"]).output().expect("runs");
    assert_eq!(code(&o), 2);
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-commit.guard-chained")).expect("read"),
        "#!/bin/sh\n# older\n"
    );
    let o = r
        .guard()
        .args(["hook", "install", "--force"])
        .output()
        .expect("runs");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-commit.guard-chained")).expect("read"),
        "#!/bin/sh\nexit 0\n"
    );
}

#[test]
fn install_honours_core_hooks_path_and_worktrees() {
    let r = Repo::new();
    r.write("a.txt", "a\n");
    r.commit("a");
    // A linked worktree shares the main repository's hooks.
    let wt = r.tmp.path().join("linked");
    let out = r.git_out([
        OsStr::new("worktree"),
        OsStr::new("add"),
        OsStr::new("-q"),
        wt.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = r.guard();
    let o = c
        .current_dir(&wt)
        .args(["hook", "install"])
        .output()
        .expect("runs");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(hooks_dir(&r).join("pre-commit").exists());

    r.git(["config", "core.hooksPath", "custom-hooks"]);
    let o = r.guard().args(["hook", "install"]).output().expect("runs");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(r.dir.join("custom-hooks/pre-commit").exists());
}

#[cfg(unix)]
fn set_mode(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[cfg(not(unix))]
fn set_mode(_: &Path) {}

fn pre_push(r: &Repo, input: &str) -> Output {
    r.guard()
        .args([
            "hook",
            "pre-push",
            "origin",
            "https://example.invalid/r.git",
            "-f",
            "jsonl",
        ])
        .write_stdin(input.to_string())
        .output()
        .expect("runs")
}

#[test]
fn pre_push_blocks_a_secret_added_then_removed_in_the_range() {
    let r = Repo::new();
    r.write("a.txt", &filler(3));
    let base = r.commit("base");
    let tok = github_token("AddedThenRemoved");
    r.write("a.txt", &format!("{}key = {tok}\n", filler(3)));
    let added = r.commit("add a key");
    r.write("a.txt", &filler(3));
    let head = r.commit("remove it again");
    let zero = "0".repeat(40);

    let o = pre_push(
        &r,
        &format!("refs/heads/main {head} refs/heads/main {base}\n"),
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(findings(&o), vec![("a.txt".into(), 4, Some(added.clone()))]);
    let v: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .expect("line"),
    )
    .expect("json");
    assert_eq!(v["origin"]["commit"]["subject"], "add a key");
    assert_eq!(v["origin"]["commit"]["author"], "Test <test@example.com>");
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&tok));

    // Already on the remote: nothing to push, nothing to scan.
    let o = pre_push(
        &r,
        &format!("refs/heads/main {head} refs/heads/main {head}\n"),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // A new branch with no remote-tracking refs: every commit is new.
    let o = pre_push(
        &r,
        &format!("refs/heads/main {head} refs/heads/main {zero}\n"),
    );
    assert_eq!(code(&o), 1);
    // A remote tip this clone has never seen: also every commit not on a remote-tracking ref.
    let unknown = "1234567".repeat(6)[..40].to_string();
    let o = pre_push(
        &r,
        &format!("refs/heads/main {head} refs/heads/main {unknown}\n"),
    );
    assert_eq!(code(&o), 1);
    // Once a remote-tracking ref has the commits, a new branch pushes nothing new.
    r.git(["update-ref", "refs/remotes/origin/main", &head]);
    let o = pre_push(
        &r,
        &format!("refs/heads/topic {head} refs/heads/topic {zero}\n"),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // A deletion pushes nothing.
    let o = pre_push(&r, &format!("(delete) {zero} refs/heads/old {head}\n"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Garbage on stdin is an error, not a pass.
    assert_eq!(code(&pre_push(&r, "not the protocol\n")), 2);
}

#[test]
fn pre_push_merge_reports_the_commit_that_added_the_secret() {
    let r = Repo::new();
    r.write("a.txt", &filler(3));
    let base = r.commit("base");
    r.git(["checkout", "-q", "-b", "feature"]);
    r.write(
        "f.env",
        &format!("token = {}\n", github_token("MergedFromFeature")),
    );
    let feat = r.commit("feature");
    r.git(["checkout", "-q", "main"]);
    r.write("m.txt", "m\n");
    r.commit("main");
    r.git(["merge", "-q", "--no-ff", "-m", "merge", "feature"]);
    let head = r.git(["rev-parse", "HEAD"]);
    let o = pre_push(
        &r,
        &format!("refs/heads/main {head} refs/heads/main {base}\n"),
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(findings(&o), vec![("f.env".into(), 1, Some(feat))]);
}

#[test]
fn commit_msg_scans_the_message_above_the_scissors() {
    let r = Repo::new();
    let msg = r.dir.join("MSG");
    std::fs::write(&msg, format!("fix\n\ntoken {}\n", github_token("Message"))).expect("write");
    let o = r.hook(&["commit-msg", msg.to_str().expect("utf8")]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    std::fs::write(
        &msg,
        format!(
            "fix\n# ------------------------ >8 ------------------------\n+token {}\n",
            github_token("BelowScissors")
        ),
    )
    .expect("write");
    let o = r.hook(&["commit-msg", msg.to_str().expect("utf8")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(code(&r.hook(&["commit-msg", "/nonexistent/MSG"])), 2);
}

/// The pre-commit framework (PyPI `pre-commit`), driving guard through `.pre-commit-hooks.yaml`
/// semantics with a `repo: local` config pointing at the built binary.
#[test]
fn pre_commit_framework_commits_through_guard() {
    let Some(pc) = find_pre_commit() else {
        eprintln!("SKIP pre_commit_framework_commits_through_guard: `pre-commit` is not installed and `pip install pre-commit` failed (scripts/deps test installs it)");
        return;
    };
    let r = Repo::new();
    // The hook definition is the repository's own .pre-commit-hooks.yaml, with the entry pointed
    // at the binary under test.
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".pre-commit-hooks.yaml"),
    )
    .expect(".pre-commit-hooks.yaml exists");
    let hook: serde_json::Value = yaml_hook(&manifest);
    assert_eq!(hook["id"], "guard");
    assert_eq!(hook["pass_filenames"], "false");
    let bin = assert_cmd::cargo::cargo_bin("guard");
    let entry =
        hook["entry"]
            .as_str()
            .expect("entry")
            .replacen("guard", bin.to_str().expect("utf8"), 1);
    r.write(
        ".pre-commit-config.yaml",
        &format!(
            "repos:\n- repo: local\n  hooks:\n  - id: guard\n    name: guard\n    entry: {entry}\n    language: system\n    pass_filenames: false\n"
        ),
    );
    r.commit("config");
    let mut c = std::process::Command::new(&pc);
    c.arg("install");
    r.env(&mut c);
    c.env("PRE_COMMIT_HOME", r.tmp.path().join("pc-home"));
    let out = c.output().expect("pre-commit runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let commit = |msg: &str| {
        let mut c = std::process::Command::new("git");
        c.args(["commit", "-q", "-m", msg]);
        r.env(&mut c);
        c.env("PRE_COMMIT_HOME", r.tmp.path().join("pc-home"));
        c.output().expect("git runs")
    };
    r.write(
        "leak.env",
        &format!("token = {}\n", github_token("ThroughPreCommit")),
    );
    r.git(["add", "leak.env"]);
    let out = commit("leak");
    assert!(!out.status.success(), "the framework let a secret through");
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(shown.contains("leak.env (staged):1:"), "{shown}");
    r.git(["rm", "-q", "--cached", "leak.env"]);
    std::fs::remove_file(r.dir.join("leak.env")).expect("rm");
    r.write("fine.txt", "fine\n");
    r.git(["add", "fine.txt"]);
    let out = commit("fine");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first hook of the manifest as flat `key: value` pairs (enough for this small file).
fn yaml_hook(manifest: &str) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for l in manifest.lines() {
        let l = l.trim_start_matches("- ").trim();
        if let Some((k, v)) = l.split_once(": ") {
            m.entry(k.to_string())
                .or_insert_with(|| serde_json::Value::String(v.trim_matches('\'').to_string()));
        }
    }
    serde_json::Value::Object(m)
}

fn find_pre_commit() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("pre-commit"))
            .find(|p| p.is_file())
    }) {
        return Some(p);
    }
    // Where `scripts/deps test` puts it: a venv under target/tools.
    let bin = assert_cmd::cargo::cargo_bin("guard");
    let venv = bin.parent()?.parent()?.join("tools/pre-commit");
    let pc = venv.join("bin/pre-commit");
    if !pc.is_file() {
        let ok = |c: &mut std::process::Command| c.status().is_ok_and(|s| s.success());
        let _ = ok(std::process::Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv))
            && ok(std::process::Command::new(venv.join("bin/pip")).args([
                "install",
                "-q",
                "pre-commit",
            ]));
    }
    pc.is_file().then_some(pc)
}
