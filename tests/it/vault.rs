//! Integration tests of the vault: the real `guard` binary, a real daemon per test (temp vault
//! dir, stopped by a Drop guard), the real `age` CLI for interop.
//!
//! Two kinds of caller appear below, as in THREAT_MODEL.md:
//! - **the human**: `guard` run with a pseudo-terminal the test controls as its controlling
//!   terminal ([`run_on_pty`]); the test types the vault passphrase there, as a person would;
//! - **the agent**: `guard` (or `age`, or a raw socket client) started in a new session with
//!   stdin from /dev/null ([`Vault::agent`]): same user, any command, any file, the socket — and
//!   no terminal. The self-approval suite (`agent_*` tests) tries every bypass the issue lists.
//!
//! Vaults are created with `kdf_log_n = 10` (scrypt N = 2^10) so a passphrase check takes a
//! millisecond instead of a second; the work factor is recorded in each identity file.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn guard_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("guard")
}

/// A fake value generated per test: recognisable in a grep, obviously not a real credential.
pub(crate) fn fake_value(tag: &str) -> String {
    let mut b = [0u8; 8];
    guard::vault::fill_random(&mut b).unwrap();
    format!("fake-{tag}-{}", hex::encode(b))
}

/// The vault passphrase the test's "human" types.
pub(crate) const PASS: &str = "fake vault passphrase";
pub(crate) const PASS_PROMPT: &str = "passphrase: ";
const TTY_QUESTION: &str = "guard: allow this command to use them? [y/N] ";

pub(crate) struct Vault {
    _tmp: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) work: PathBuf,
}

impl Vault {
    /// An initialised, unlocked vault with a running daemon.
    pub(crate) fn new() -> Self {
        Self::with_config("")
    }
    pub(crate) fn with_config(config: &str) -> Self {
        let v = Self::locked(config);
        v.unlock();
        v
    }
    /// Initialised (passphrase set by the human at the terminal), daemon not started.
    pub(crate) fn locked(config: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vault");
        let work = tmp.path().join("project");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), format!("kdf_log_n = 10\n{config}")).unwrap();
        let v = Self {
            _tmp: tmp,
            dir,
            work,
        };
        let r = v.human(
            &["vault", "init"],
            &[("new vault passphrase: ", PASS), ("again: ", PASS)],
        );
        assert!(r.status.success(), "init: {} / tty {:?}", r.stderr, r.tty);
        v
    }
    /// `guard …` with no terminal (`GUARD_NO_TTY`), stdin from /dev/null.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(guard_bin());
        c.args(args)
            .current_dir(&self.work)
            .env("GUARD_VAULT_DIR", &self.dir)
            .env("XDG_STATE_HOME", self.dir.join("state"))
            .env("GUARD_NO_TTY", "1")
            .env_remove("GUARD_NO_AUTOSTART")
            .stdin(Stdio::null());
        c
    }
    /// `prog …` as the agent runs it: a new session (no controlling terminal), stdin /dev/null,
    /// and nothing that would make guard stricter than it is on its own.
    pub(crate) fn agent_prog(&self, prog: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut c = Command::new(prog);
        c.args(args)
            .current_dir(&self.work)
            .env("GUARD_VAULT_DIR", &self.dir)
            .env("XDG_STATE_HOME", self.dir.join("state"))
            .env_remove("GUARD_NO_TTY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        c
    }
    pub(crate) fn agent(&self, args: &[&str]) -> Output {
        self.agent_prog(guard_bin(), args).output().unwrap()
    }
    /// `guard …` with the test's pty as controlling terminal; `steps` answer its prompts.
    pub(crate) fn human(&self, args: &[&str], steps: &[(&str, &str)]) -> PtyRun {
        let steps: Vec<(&str, String)> =
            steps.iter().map(|(p, a)| (*p, format!("{a}\n"))).collect();
        let steps: Vec<(&str, &str)> = steps.iter().map(|(p, a)| (*p, a.as_str())).collect();
        run_on_pty(self.cmd(args), PtyStdio::Pipes(b""), &steps)
    }
    pub(crate) fn human_ok(&self, args: &[&str], steps: &[(&str, &str)]) -> PtyRun {
        let r = self.human(args, steps);
        assert!(
            r.status.success(),
            "{args:?}: {} / tty {:?}",
            r.stderr,
            r.tty
        );
        r
    }
    pub(crate) fn unlock(&self) {
        self.human_ok(&["vault", "unlock"], &[(PASS_PROMPT, PASS)]);
    }
    /// The human pre-approves `argv` (run in the project dir) for `names`.
    pub(crate) fn grant(&self, names: &[&str], argv: &[&str]) {
        let mut args = vec!["vault", "grant"];
        args.extend_from_slice(names);
        args.push("--");
        args.extend_from_slice(argv);
        self.human_ok(&args, &[(PASS_PROMPT, PASS)]);
    }
    /// The human prints a value (passphrase typed on the terminal).
    pub(crate) fn print(&self, args: &[&str]) -> String {
        let mut a = vec!["vault", "print"];
        a.extend_from_slice(args);
        self.human_ok(&a, &[(PASS_PROMPT, PASS)]).stdout
    }
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
    /// `guard vault add`. Unless `extra` names a `--on-leak` policy, the secret only reports
    /// leaks: tests print values on purpose, and the leak response (tested on its own) must not
    /// revoke the leases of the commands they run next.
    pub(crate) fn add(&self, name: &str, value: &str, extra: &[&str]) {
        let mut args = vec!["vault", "add", name];
        args.extend_from_slice(extra);
        if !extra.contains(&"--on-leak") {
            args.extend_from_slice(&["--on-leak", "report-only"]);
        }
        let o = with_input(self.cmd(&args), format!("{value}\n").as_bytes());
        assert!(
            o.status.success(),
            "add failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    pub(crate) fn project(&self, toml: &str) {
        std::fs::create_dir_all(self.work.join(".guard")).unwrap();
        std::fs::write(self.work.join(".guard/secrets.toml"), toml).unwrap();
    }
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("run/daemon.sock")
    }
    pub(crate) fn rpc(&self, method: &str, params: Value) -> Value {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        rpc_on(&mut s, method, params)
    }
    pub(crate) fn status(&self) -> Value {
        self.json(&["vault", "status"])["data"].clone()
    }
    pub(crate) fn audit_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("audit.jsonl")).unwrap_or_default()
    }
    pub(crate) fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("run/daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    /// Wait until `f(status)` holds (the daemon is asked every 20 ms, for up to 10 s).
    pub(crate) fn wait_status(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        self.wait_status_for(what, Duration::from_secs(10), f)
    }
    pub(crate) fn wait_status_for(
        &self,
        what: &str,
        limit: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let t = Instant::now();
        loop {
            if self.socket().exists() {
                let s = self.status();
                if f(&s) {
                    return s;
                }
            }
            assert!(t.elapsed() < limit, "never saw {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn rpc_on(s: &mut UnixStream, method: &str, params: Value) -> Value {
    let mut f =
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .unwrap();
    f.push(b'\n');
    s.write_all(&f).unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    serde_json::from_str(&line).unwrap()
}

fn pid_alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 }
}

impl Drop for Vault {
    /// Never leave a daemon running: SIGTERM, then SIGKILL.
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let t = Instant::now();
            while pid_alive(pid) && t.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if pid_alive(pid) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `age -d -i identity.age store.age` run by the human: age asks for the passphrase on the tty.
pub(crate) fn age_decrypt(v: &Vault, ctx: &str) -> String {
    let mut c = Command::new("age");
    c.args(["-d", "-i"])
        .arg(v.dir.join(format!("contexts/{ctx}/identity.age")))
        .arg(v.dir.join(format!("contexts/{ctx}/store.age")));
    let r = run_on_pty(
        c,
        PtyStdio::Pipes(b""),
        &[("passphrase", &format!("{PASS}\n"))],
    );
    assert!(
        r.status.success(),
        "age -d failed: {} / {:?}",
        r.stderr,
        r.tty
    );
    r.stdout
}

/// No message or next action shown to a caller names a command that approves or grants.
fn assert_no_self_approval_hint(text: &str) {
    for bad in ["vault grant", "vault approve", "--print"] {
        assert!(!text.contains(bad), "suggests {bad:?} to the agent: {text}");
    }
}

/// Audit records with this op and outcome.
fn audit_count(v: &Vault, op: &str, outcome: &str) -> usize {
    v.audit_text()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["op"] == op && r["outcome"] == outcome)
        .count()
}

/// The agent runs `sh -c script` under `guard exec` in the background; returns it and the id of
/// the approval request it waits on.
fn agent_exec_waiting(v: &Vault, script: &str) -> (std::process::Child, String) {
    let child = v
        .agent_prog(guard_bin(), &["exec", "--", "sh", "-c", script])
        .spawn()
        .unwrap();
    (child, pending_request(v))
}

/// The id of the (first) request waiting for a human's approval, once there is one.
fn pending_request(v: &Vault) -> String {
    let st = v.wait_status("a pending request", |s| {
        s["pending_approvals"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    st["pending_approvals"][0]["request"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A vault with one secret `tok` wired to `$TOK` in the project.
fn tok_vault(tag: &str, config: &str) -> (Vault, String) {
    let v = Vault::with_config(config);
    let val = fake_value(tag);
    v.add("tok", &val, &[]);
    v.project("[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    (v, val)
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

// ---------------------------------------------------------------------------------------------

#[test]
fn store_and_identity_interop_with_the_age_cli_both_ways() {
    let v = Vault::new();
    let val = fake_value("interop");
    v.add("api_token", &val, &[]);
    // guard → age: with the passphrase (typed on the terminal) age decrypts the store.
    let plain: Value = serde_json::from_str(&age_decrypt(&v, "default")).unwrap();
    assert_eq!(
        plain["secrets"]["api_token"]["versions"][0]["value"],
        val.as_str()
    );
    // The identity file itself is a passphrase-encrypted age file.
    let mut c = Command::new("age");
    c.arg("-d").arg(v.dir.join("contexts/default/identity.age"));
    let r = run_on_pty(
        c,
        PtyStdio::Pipes(b""),
        &[("passphrase", &format!("{PASS}\n"))],
    );
    assert!(r.status.success(), "{}", r.stderr);
    assert!(r.stdout.contains("AGE-SECRET-KEY-1"));
    // age → guard: a store written by hand and encrypted by the CLI loads.
    v.human_ok(
        &["vault", "init", "--context", "handmade"],
        &[(PASS_PROMPT, PASS)],
    );
    let mut c = Command::new("age");
    c.arg("-d")
        .arg(v.dir.join("contexts/handmade/identity.age"));
    let r = run_on_pty(
        c,
        PtyStdio::Pipes(b""),
        &[("passphrase", &format!("{PASS}\n"))],
    );
    let mut keygen = Command::new("age-keygen")
        .arg("-y")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    keygen
        .stdin
        .take()
        .unwrap()
        .write_all(r.stdout.as_bytes())
        .unwrap();
    let pubkey = String::from_utf8(keygen.wait_with_output().unwrap().stdout).unwrap();
    assert!(pubkey.starts_with("age1"), "{pubkey}");
    let hand = fake_value("handmade");
    let doc =
        json!({"secrets": {"hand_tok": {"versions": [{"id": 1, "value": hand}]}}}).to_string();
    let mut age = Command::new("age")
        .args(["-e", "-r", pubkey.trim(), "-o"])
        .arg(v.dir.join("contexts/handmade/store.age"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    age.stdin.take().unwrap().write_all(doc.as_bytes()).unwrap();
    assert!(age.wait().unwrap().success());
    let list = v.json(&["vault", "list", "--context", "handmade"]);
    assert_eq!(
        list["data"]["contexts"][0]["secrets"][0]["name"],
        "hand_tok"
    );
    assert_eq!(v.print(&["hand_tok", "--context", "handmade"]), hand);
}

/// `guard exec -- yes | head -2`: the reader goes away while the daemon writes the command's
/// output into its pipe. That costs the daemon a write error (SIGPIPE is ignored there), not its
/// life: the command ends, its lease is revoked, and the same daemon keeps serving.
#[test]
fn a_reader_that_goes_away_does_not_kill_the_daemon() {
    let (v, _val) = tok_vault("pipe", "");
    v.grant(&["tok"], &["sh", "-c", "yes"]);
    let before = v.daemon_pid().expect("daemon running");
    let mut child = v
        .agent_prog(guard_bin(), &["exec", "--", "sh", "-c", "yes"])
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut two = [0u8; 4];
    out.read_exact(&mut two).unwrap();
    assert_eq!(&two, b"y\ny\n");
    drop(out);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "guard exec never ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let st = v.wait_status("the lease revoked", |d| d["active_leases"] == 0);
    assert_eq!(
        st["pid"].as_i64(),
        Some(i64::from(before)),
        "the daemon was replaced: {st}"
    );
    assert_eq!(v.daemon_pid(), Some(before));
}

#[test]
fn exec_injects_masks_revokes_and_propagates_the_exit_code() {
    let v = Vault::new();
    let (a, b) = (fake_value("alpha"), fake_value("beta"));
    v.add("alpha", &a, &[]);
    v.add("beta", &b, &[]);
    v.project("[[secret]]\nname = \"alpha\"\nenv = \"ALPHA\"\n[[secret]]\nname = \"beta\"\nenv = \"BETA_TOKEN\"\nttl = \"5m\"\n");
    let envfile = v.work.join("seen-env");
    // Values printed whole, on stderr, and split across two writes with a pause between them.
    let script = format!(
        "echo \"a=$ALPHA b=$BETA_TOKEN\"; echo \"err $BETA_TOKEN\" >&2; printf '%.9s' \"$ALPHA\"; sleep 0.3; printf '%s\\n' \"${{ALPHA#?????????}}\"; printf '%s' \"$ALPHA\" > {}; exit 7",
        envfile.display()
    );
    v.grant(&["alpha", "beta"], &["sh", "-c", &script]);
    let o = v.run(&["exec", "--", "sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(
        out,
        "a=[REDACTED:alpha] b=[REDACTED:beta]\n[REDACTED:alpha]\n"
    );
    assert!(err.contains("err [REDACTED:beta]"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&envfile).unwrap(),
        a,
        "the child got the real value"
    );
    assert_eq!(v.status()["active_leases"], 0, "leases revoked on exit");
    let audit = v.audit_text();
    assert_eq!(audit.matches("\"op\":\"access\"").count(), 2);
    assert_eq!(audit.matches("\"op\":\"revoke\"").count(), 2);
    // agent-secrets' .secrets.json works too (its client_id means nothing)
    std::fs::remove_dir_all(v.work.join(".guard")).unwrap();
    std::fs::write(
        v.work.join(".secrets.json"),
        r#"{"secrets":[{"name":"alpha","env_var":"GH"}],"client_id":"my-project"}"#,
    )
    .unwrap();
    v.grant(&["alpha"], &["sh", "-c", "echo $GH"]);
    let o = v.run(&["exec", "--", "sh", "-c", "echo $GH"]);
    assert_eq!(stdout(&o), "[REDACTED:alpha]\n");
    // stdin reaches the child; a missing command is an error, not a hang
    v.grant(&["alpha"], &["cat"]);
    let mut c = v.cmd(&["exec", "--", "cat"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    assert_eq!(stdout(&child.wait_with_output().unwrap()), "piped in\n");
    let o = v.run(&["exec", "--", "/nonexistent/cmd"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
}

#[test]
fn contexts_are_isolated() {
    let v = Vault::with_config("approval_timeout = \"300ms\"\n");
    for ctx in ["dev", "prod"] {
        v.human_ok(&["vault", "init", "--context", ctx], &[(PASS_PROMPT, PASS)]);
    }
    let (dev, prod) = (fake_value("dev"), fake_value("prod"));
    v.add("tok", &dev, &["--context", "dev"]);
    v.add("tok", &prod, &["--context", "prod"]);
    v.add("prod_only", &fake_value("p"), &["--context", "prod"]);
    v.project("context = \"dev\"\n[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    let f = v.work.join("seen");
    let script = format!("printf %s \"$TOK\" > {}", f.display());
    v.human_ok(
        &[
            "vault",
            "grant",
            "tok",
            "--context",
            "dev",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[(PASS_PROMPT, PASS)],
    );
    let o = v.run(&["exec", "--", "sh", "-c", &script]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), dev);
    // a dev approval is no prod approval
    v.project("context = \"prod\"\n[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    let o = v.agent(&["exec", "--", "sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // a dev project cannot name a prod-only secret
    v.project("context = \"dev\"\n[[secret]]\nname = \"prod_only\"\n");
    let o = v.run(&["exec", "--", "true"]);
    assert!(
        stderr(&o).contains("no secret \"prod_only\""),
        "{}",
        stderr(&o)
    );
    // the dev identity cannot decrypt the prod store, passphrase or not
    let mut c = Command::new("age");
    c.args(["-d", "-i"])
        .arg(v.dir.join("contexts/dev/identity.age"))
        .arg(v.dir.join("contexts/prod/store.age"));
    let r = run_on_pty(
        c,
        PtyStdio::Pipes(b""),
        &[("passphrase", &format!("{PASS}\n"))],
    );
    assert!(!r.status.success());
}

#[test]
fn approve_from_another_terminal_unblocks_a_waiting_exec_and_is_remembered() {
    let (v, _val) = tok_vault("approve", "approval_timeout = \"20s\"\n");
    let (child, req) = agent_exec_waiting(&v, "echo ran $TOK");
    // The human sees what they approve, then types the passphrase.
    let r = v.human_ok(&["vault", "approve", &req], &[(PASS_PROMPT, PASS)]);
    assert!(r.tty.contains("echo ran $TOK"), "{:?}", r.tty);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "ran [REDACTED:tok]\n");
    assert_no_self_approval_hint(&stderr(&o));
    // remembered: no approval the second time
    let o = v.agent(&["exec", "--", "sh", "-c", "echo ran $TOK"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("approval required"));
    // a denial (needs no passphrase) is remembered too
    let (child, req) = agent_exec_waiting(&v, "echo other $TOK");
    v.ok(&["vault", "approve", &req, "--deny"]);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    let o = v.agent(&["exec", "--", "sh", "-c", "echo other $TOK"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("a human denied it"), "{}", stderr(&o));
    assert!(v.audit_text().contains("\"outcome\":\"denied\""));
}

// ---------------------------------------------------------------------------------------------
// The self-approval suite: the agent (new session, stdin /dev/null, same user) tries each bypass
// the issue lists. Each must yield neither a value nor an approval.

/// Bypass 1: `vault grant … --print` then `lease --print`; and every other human-only command
/// run without a terminal — with the passphrase on stdin for good measure.
#[test]
fn agent_cannot_grant_approve_print_unlock_or_init_without_a_terminal() {
    let (v, val) = tok_vault("cli", "approval_timeout = \"3s\"\n");
    // A real request of the agent's own, waiting in the background.
    let (waiting, req) = agent_exec_waiting(&v, "echo $TOK");
    let tries: &[&[&str]] = &[
        &["vault", "grant", "tok", "--", "sh", "-c", "echo $TOK"],
        &["vault", "print", "tok"],
        &["vault", "unlock"],
        &["vault", "approve", &req],
        &["vault", "init", "--context", "agentctx"],
        &["vault", "lease", "tok", "--client-id", "me", "--print"],
        &["vault", "grant", "tok", "--client", "me", "--print"],
    ];
    for args in tries {
        let mut c = v.agent_prog(guard_bin(), args);
        c.stdin(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{PASS}\n{PASS}\ny\n").as_bytes());
        let o = child.wait_with_output().unwrap();
        assert_ne!(
            o.status.code(),
            Some(0),
            "{args:?} succeeded: {}",
            stderr(&o)
        );
        assert!(!stdout(&o).contains(&val) && !stderr(&o).contains(&val));
        if o.status.code() == Some(2) {
            // clap's usage error for a flag that no longer exists echoes the command typed
            let e = stderr(&o);
            assert!(
                e.contains("unexpected argument") || e.contains("unrecognized subcommand"),
                "{e}"
            );
            continue;
        }
        assert!(
            stderr(&o).contains("needs a human"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert_no_self_approval_hint(&stdout(&o));
        assert_no_self_approval_hint(&stderr(&o));
    }
    assert!(!v.dir.join("contexts/agentctx").exists());
    assert_eq!(audit_count(&v, "grant", "allow"), 0);
    assert_eq!(audit_count(&v, "print", "ok"), 0);
    // …and the command it tried to grant and approve still has no approval.
    let o = waiting.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!stdout(&o).contains("REDACTED"), "the command never ran");
    assert_eq!(audit_count(&v, "approval", "timeout-denied"), 1);
}

/// Bypass 2: start an exec in the background, read its request from `pending`, approve it — by
/// the CLI and by raw requests, with no passphrase and with guesses.
#[test]
fn agent_cannot_approve_its_own_pending_request() {
    let (v, val) = tok_vault(
        "selfapprove",
        "approval_timeout = \"5s\"\npassphrase_attempts = 3\n",
    );
    let marker = v.work.join("ran");
    let script = format!("touch {}; echo $TOK", marker.display());
    let child = v
        .agent_prog(guard_bin(), &["exec", "--json", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let p = loop {
        let o = v.agent(&["vault", "pending", "--json"]);
        let p: Value = serde_json::from_str(&stdout(&o)).unwrap();
        if p["data"]["pending"][0]["request"].is_string() {
            break p;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_no_self_approval_hint(&p.to_string());
    let req = p["data"]["pending"][0]["request"]
        .as_str()
        .unwrap()
        .to_string();
    let o = v.agent(&["vault", "approve", &req]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("needs a human"), "{}", stderr(&o));
    let r = v.rpc("approve", json!({"request": req, "allow": true}));
    assert_eq!(r["error"]["code"], -32010, "{r}");
    let r = v.rpc(
        "approve",
        json!({"request": req, "allow": true, "passphrase": ""}),
    );
    assert_eq!(r["error"]["code"], -32010, "{r}");
    for guess in ["password", "fake vault passphrase!"] {
        let r = v.rpc(
            "approve",
            json!({"request": req, "allow": true, "passphrase": guess}),
        );
        assert_eq!(r["error"]["code"], -32001, "{r}");
        assert!(r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wrong passphrase"));
    }
    let r = v.rpc(
        "grant",
        json!({"names": ["tok"], "argv": ["sh", "-c", &script],
        "cwd": v.work, "passphrase": "guess"}),
    );
    assert_eq!(r["error"]["code"], -32001, "{r}");
    // Three wrong guesses: locked out now, even the right passphrase is refused.
    let r = v.rpc(
        "approve",
        json!({"request": req, "allow": true, "passphrase": PASS}),
    );
    assert_eq!(r["error"]["code"], -32009, "{r}");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!marker.exists(), "the command never ran");
    let err = stderr(&o);
    assert!(err.contains("a human must approve"), "{err}");
    assert_no_self_approval_hint(&err);
    assert!(!err.contains(&val) && stdout(&o).is_empty());
    assert_eq!(audit_count(&v, "passphrase", "lockout"), 1);
    assert_eq!(audit_count(&v, "approval", "approved"), 0);
}

/// Bypass 3: `status` listed every lease id and `resolve` returned the value for any of them —
/// including the user's own running `guard exec`. Every method, with every id the agent can find.
#[test]
fn agent_gets_no_value_from_any_raw_request_with_any_lease_id() {
    let (v, val) = tok_vault("raw", "approval_timeout = \"300ms\"\n");
    let script = "sleep 3; echo done $TOK";
    v.grant(&["tok"], &["sh", "-c", script]);
    // The user's own command, holding a lease.
    let user = v
        .cmd(&["exec", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let st = v.wait_status("the user's lease", |s| s["active_leases"] == 1);
    let st_text = st.to_string();
    assert!(
        !st_text.contains("lease_"),
        "status lists a lease id: {st_text}"
    );
    // Every id-looking token the agent can read anywhere: status, audit, daemon log, files.
    let mut seen = st_text.clone();
    for f in ["audit.jsonl", "daemon.log", "approvals.json"] {
        seen.push_str(&std::fs::read_to_string(v.dir.join(f)).unwrap_or_default());
    }
    let mut ids: Vec<String> = seen
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lease_") || w.starts_with("req_"))
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    assert!(
        ids.iter().any(|i| i.starts_with("lease_")),
        "the audit names the lease: {ids:?}"
    );
    let methods = [
        "hello",
        "status",
        "list",
        "pending",
        "resolve",
        "lease",
        "exec",
        "await_approval",
        "approve",
        "grant",
        "print",
        "unlock",
        "rotate",
        "revoke",
        "signal",
        "get",
        "read",
    ];
    let mut answers = String::new();
    for m in methods {
        for id in &ids {
            let params = json!({"leases": [id], "lease": id, "request": id, "name": "tok",
                "names": ["tok"], "client": "me", "client_id": v.work, "purpose": "print",
                "allow": true, "argv": ["sh", "-c", script], "cwd": v.work,
                "secrets": [{"name": "tok", "env": "TOK"}]});
            let mut s = UnixStream::connect(v.socket()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let r = rpc_on(&mut s, m, params);
            answers.push_str(&r.to_string());
        }
    }
    assert!(!answers.contains(&val), "a raw request returned the value");
    assert!(
        answers.contains("unknown method \\\"resolve\\\""),
        "resolve is gone"
    );
    assert_no_self_approval_hint(&answers);
    let o = user.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "done [REDACTED:tok]\n");
    assert_eq!(audit_count(&v, "print", "ok"), 0);
}

/// Bypass 4: `age -d -i <vault>/…/identity.txt store.age` — the identity sat in plaintext.
#[test]
fn agent_learns_nothing_from_the_vault_directory_with_the_age_cli() {
    let (v, val) = tok_vault("agefiles", "");
    let store = v.dir.join("contexts/default/store.age");
    let mut files = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if !p.to_string_lossy().ends_with(".sock") {
                out.push(p);
            }
        }
    }
    walk(&v.dir, &mut files);
    assert!(!v.dir.join("contexts/default/identity.txt").exists());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&val), "value in {}", f.display());
        assert!(!text.contains("AGE-SECRET-KEY"), "a key in {}", f.display());
        let o = v
            .agent_prog(
                "age",
                &["-d", "-i", &f.to_string_lossy(), &store.to_string_lossy()],
            )
            .output()
            .unwrap();
        assert!(!o.status.success(), "age -d -i {} worked", f.display());
        assert!(!stdout(&o).contains(&val));
    }
    // The identity file asks for a passphrase the agent cannot type (no terminal).
    let o = v
        .agent_prog(
            "age",
            &[
                "-d",
                &v.dir
                    .join("contexts/default/identity.age")
                    .to_string_lossy(),
            ],
        )
        .output()
        .unwrap();
    assert!(!o.status.success() && !stdout(&o).contains("AGE-SECRET-KEY"));
    assert!(stderr(&o).contains("passphrase"), "{}", stderr(&o));
}

/// Bypass 5: `guard exec --client-id <the user's project> --file <its secrets.toml>` from another
/// directory reused the user's approval. Approvals name the command, its content and directory.
#[test]
fn agent_cannot_reuse_an_approval_from_another_directory_script_or_environment() {
    let (v, val) = tok_vault("replay", "approval_timeout = \"300ms\"\n");
    let out = v.work.join("out");
    write_script(
        &v.work.join("deploy.sh"),
        &format!("printf %s \"$TOK\" > {}", out.display()),
    );
    v.grant(&["tok"], &["./deploy.sh"]);
    let o = v.agent(&["exec", "--", "./deploy.sh"]);
    assert!(
        o.status.success(),
        "the approved command runs: {}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), val);
    std::fs::remove_file(&out).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let loot = elsewhere.path().join("loot");
    write_script(
        &elsewhere.path().join("deploy.sh"),
        &format!("printf %s \"$TOK\" > {}", loot.display()),
    );
    let file = v.work.join(".guard/secrets.toml");
    let work = v.work.display().to_string();
    let abs_script = format!("{work}/deploy.sh");
    // (The approved command with `LD_PRELOAD`/`BASH_ENV` set is no longer another command: the
    // command never sees the caller's environment —
    // `agent_environment_never_reaches_an_approved_command`.)
    type Attempt<'a> = (Vec<&'a str>, &'a Path, Vec<(&'a str, &'a str)>);
    let attempts: Vec<Attempt> = vec![
        // the old flag is gone
        (
            vec![
                "exec",
                "--client-id",
                &work,
                "--file",
                file.to_str().unwrap(),
                "--",
                "./deploy.sh",
            ],
            elsewhere.path(),
            vec![],
        ),
        // the user's project file from another directory, a copy of the script there
        (
            vec![
                "exec",
                "--file",
                file.to_str().unwrap(),
                "--",
                "./deploy.sh",
            ],
            elsewhere.path(),
            vec![],
        ),
        // the approved script by absolute path, run from elsewhere
        (
            vec!["exec", "--file", file.to_str().unwrap(), "--", &abs_script],
            elsewhere.path(),
            vec![],
        ),
    ];
    for (args, dir, env) in &attempts {
        let mut c = v.agent_prog(guard_bin(), args);
        c.current_dir(dir).envs(env.iter().copied());
        let o = c.output().unwrap();
        assert_ne!(
            o.status.code(),
            Some(0),
            "{args:?} in {dir:?} ran: {}",
            stderr(&o)
        );
        assert_no_self_approval_hint(&stderr(&o));
    }
    assert!(
        !out.exists() && !loot.exists(),
        "no attempt ran with the value"
    );
    // A changed script is another command: the approval no longer applies.
    write_script(
        &v.work.join("deploy.sh"),
        &format!("printf %s \"$TOK\" > {}; echo changed", out.display()),
    );
    let o = v.agent(&["exec", "--", "./deploy.sh"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!out.exists());
    // A forged approvals.json entry for the agent's own command does not verify.
    let argv = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!("printf %s \"$TOK\" > {}", loot.display()),
    ];
    let env: Vec<(String, String)> = std::env::vars().collect();
    let forged_fp = guard::vault::command::resolve(
        &guard::vault::command::CommandSpec {
            argv: &argv,
            cwd: &v.work,
            env: &env,
            pass_env: &[],
        },
        &mut Default::default(),
    )
    .unwrap()
    .fingerprint;
    let path = v.dir.join("approvals.json");
    let mut a: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut entry = a["decisions"][0].clone();
    entry["scope"]["command"] = json!(forged_fp);
    a["decisions"].as_array_mut().unwrap().push(entry);
    std::fs::write(&path, a.to_string()).unwrap();
    // The daemon reads the file when it starts: restart it (the human unlocks it again).
    v.ok(&["vault", "daemon", "--stop"]);
    v.unlock();
    let o = v.agent(&["exec", "--", &argv[0], &argv[1], &argv[2]]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("approval required"), "{}", stderr(&o));
    assert!(!loot.exists());
}

// ---------------------------------------------------------------------------------------------
// The human paths, on a real pseudo-terminal.

#[test]
fn human_approves_a_command_at_the_terminal_and_a_changed_script_asks_again() {
    let (v, val) = tok_vault("human", "approval_timeout = \"300ms\"\n");
    let seen = v.work.join("seen");
    write_script(
        &v.work.join("deploy.sh"),
        &format!(
            "echo deploying $TOK; printf %s \"$TOK\" > {}",
            seen.display()
        ),
    );
    let r = v.human(
        &["exec", "--", "./deploy.sh"],
        &[("[y/N] ", "y"), (PASS_PROMPT, PASS)],
    );
    assert!(r.status.success(), "{} / tty {:?}", r.stderr, r.tty);
    assert!(
        r.tty.contains("deploy.sh"),
        "the human sees what runs: {:?}",
        r.tty
    );
    assert!(r.tty.contains("wants secret(s) [\"tok\"]"), "{:?}", r.tty);
    assert!(
        !r.tty.contains(PASS),
        "the passphrase was echoed: {:?}",
        r.tty
    );
    assert_eq!(r.stdout, "deploying [REDACTED:tok]\n");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), val);
    assert!(r.echo_after, "echo restored");
    assert_eq!(audit_count(&v, "approval", "approved"), 1);
    // Remembered for the agent too: same command, same directory, same content.
    std::fs::remove_file(&seen).unwrap();
    let o = v.agent(&["exec", "--", "./deploy.sh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), val);
    // The script changes: the approval no longer applies; the agent waits, then is denied…
    std::fs::remove_file(&seen).unwrap();
    write_script(
        &v.work.join("deploy.sh"),
        &format!("echo changed; printf %s \"$TOK\" > {}", seen.display()),
    );
    let o = v.agent(&["exec", "--", "./deploy.sh"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!seen.exists());
    // …and the human is asked again; "no" is remembered, without a passphrase.
    let r = v.human(&["exec", "--", "./deploy.sh"], &[("[y/N] ", "n")]);
    assert_eq!(r.status.code(), Some(1), "{} / {:?}", r.stderr, r.tty);
    assert!(!seen.exists());
    let r = v.human(&["exec", "--", "./deploy.sh"], &[]);
    assert_eq!(r.status.code(), Some(1));
    assert!(!r.tty.contains(TTY_QUESTION), "asked again: {:?}", r.tty);
    v.ok(&["vault", "audit", "verify"]);
}

#[test]
fn human_terminal_answer_counts_not_stdin() {
    let (v, _val) = tok_vault("ttyno", "");
    let marker = v.work.join("child-ran");
    let script = format!("touch {}; echo leaked $TOK", marker.display());
    // The agent side (stdin) says yes and types the passphrase; only the terminal counts.
    let r = run_on_pty(
        v.cmd(&["exec", "--", "sh", "-c", &script]),
        PtyStdio::Pipes(format!("y\n{PASS}\n").as_bytes()),
        &[("[y/N] ", "n\n")],
    );
    assert_eq!(r.status.code(), Some(1), "{} / tty {:?}", r.stderr, r.tty);
    assert!(!marker.exists(), "the child must not run");
    assert!(r.stdout.is_empty(), "{:?}", r.stdout);
    assert!(r.stderr.contains("denied"), "{}", r.stderr);
    assert_eq!(audit_count(&v, "approval", "denied"), 1);
    assert_eq!(audit_count(&v, "access", "ok"), 0, "{}", v.audit_text());
}

#[test]
fn human_unlock_lock_expiry_and_lockout_after_wrong_passphrases() {
    let (v, _val) = tok_vault(
        "lockout",
        "passphrase_attempts = 3\npassphrase_lockout = \"1h\"\nunlock_ttl = \"2s\"\n",
    );
    v.grant(&["tok"], &["sh", "-c", "echo $TOK"]);
    let st = v.status();
    assert_eq!(st["unlocked"], true);
    // The daemon that holds the keys is not dumpable (no core, no same-user ptrace).
    assert_eq!(st["dumpable"], false, "{st}");
    // Locked: nothing can be decrypted; the agent is told a human must unlock.
    v.ok(&["vault", "lock"]);
    let o = v.agent(&["exec", "--", "sh", "-c", "echo $TOK"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    assert!(v.agent(&["vault", "list"]).status.code() == Some(1));
    // At a terminal, exec offers to unlock, then runs (approval remembered).
    let r = v.human(
        &["exec", "--", "sh", "-c", "echo $TOK"],
        &[(PASS_PROMPT, PASS)],
    );
    assert!(r.status.success(), "{} / {:?}", r.stderr, r.tty);
    assert_eq!(r.stdout, "[REDACTED:tok]\n");
    // The keys are forgotten after unlock_ttl.
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(v.status()["unlocked"], false);
    // Wrong passphrases: the third triggers the lockout; then even the right one is refused.
    for i in 0..3 {
        let r = v.human(&["vault", "unlock"], &[(PASS_PROMPT, "not the passphrase")]);
        assert_eq!(r.status.code(), Some(1), "attempt {i}: {}", r.stderr);
        assert!(r.stderr.contains("wrong passphrase"), "{}", r.stderr);
    }
    let r = v.human(&["vault", "unlock"], &[(PASS_PROMPT, PASS)]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("too many wrong passphrases"),
        "{}",
        r.stderr
    );
    assert!(v.status()["passphrase_lockout_secs"].as_u64().unwrap() > 3000);
    assert_eq!(v.status()["unlocked"], false);
    assert_eq!(audit_count(&v, "passphrase", "wrong"), 2);
    assert_eq!(audit_count(&v, "passphrase", "lockout"), 1);
    assert_eq!(audit_count(&v, "passphrase", "locked-out"), 1);
    // Finding 7: the agent restarts the daemon to reset the lockout; it stays.
    v.ok(&["vault", "daemon", "--stop"]);
    let r = v.human(&["vault", "unlock"], &[(PASS_PROMPT, PASS)]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("too many wrong passphrases"),
        "a restart reset the lockout: {}",
        r.stderr
    );
    assert!(v.status()["passphrase_lockout_secs"].as_u64().unwrap() > 3000);
}

#[test]
fn human_print_asks_every_time_and_writes_only_the_value() {
    let (v, val) = tok_vault("print", "");
    let r = v.human_ok(&["vault", "print", "tok"], &[(PASS_PROMPT, PASS)]);
    assert_eq!(r.stdout, val, "only the value on stdout");
    assert!(r.tty.contains("print secret \"tok\""), "{:?}", r.tty);
    assert!(!r.tty.contains(&val) && !r.stderr.contains(&val));
    assert_eq!(audit_count(&v, "print", "ok"), 1);
    // No remembered "print" scope: the next print asks again.
    let r = v.human(&["vault", "print", "tok"], &[(PASS_PROMPT, "wrong one")]);
    assert_eq!(r.status.code(), Some(1));
    assert!(r.stdout.is_empty());
}

#[test]
fn vault_add_prompts_on_the_tty_without_echo() {
    let v = Vault::new();
    let val = fake_value("typed");
    let r = run_on_pty(
        v.cmd(&["vault", "add", "typed_tok"]),
        PtyStdio::Tty,
        &[("value for typed_tok: ", &format!("{val}\n"))],
    );
    assert!(r.status.success(), "tty {:?}", r.tty);
    assert!(
        !r.tty.contains(&val) && !r.tty.contains(&val[..12]),
        "the typed value was echoed: {:?}",
        r.tty
    );
    assert!(r.echo_after, "echo restored on the terminal");
    assert_eq!(v.print(&["typed_tok"]), val);
}

#[test]
fn tty_prompt_goes_to_the_terminal_not_to_stdout_or_stdin() {
    let (v, _val) = tok_vault("ttyout", "");
    // The child echoes its stdin: the agent's bytes reach it untouched (the prompt read none).
    let r = run_on_pty(
        v.cmd(&[
            "exec",
            "--",
            "sh",
            "-c",
            "echo out $TOK; echo err $TOK >&2; cat",
        ]),
        PtyStdio::Pipes(b"agent-input\n"),
        &[("[y/N] ", "y\n"), (PASS_PROMPT, &format!("{PASS}\n"))],
    );
    assert!(r.status.success(), "{} / tty {:?}", r.stderr, r.tty);
    assert_eq!(r.stdout, "out [REDACTED:tok]\nagent-input\n");
    assert_eq!(r.stderr, "err [REDACTED:tok]\n");
    assert!(r.tty.contains(TTY_QUESTION), "{:?}", r.tty);
    assert!(!r.tty.contains("REDACTED") && !r.tty.contains("agent-input"));
}

#[test]
fn init_refuses_a_second_passphrase_and_migrates_a_plaintext_identity() {
    let v = Vault::new();
    // Re-running init on an existing vault changes nothing and asks nothing.
    let o = v.agent(&["vault", "init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A new context needs the existing passphrase.
    let r = v.human(
        &["vault", "init", "--context", "x"],
        &[(PASS_PROMPT, "another one")],
    );
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(!v.dir.join("contexts/x").exists());
    // A vault from before the passphrase: its plaintext identity gets encrypted and wiped.
    let id = Command::new("age-keygen").output().unwrap();
    let legacy_dir = v.dir.join("contexts/old");
    std::fs::create_dir_all(&legacy_dir).unwrap();
    std::fs::write(legacy_dir.join("identity.txt"), &id.stdout).unwrap();
    v.human_ok(&["vault", "init"], &[(PASS_PROMPT, PASS)]);
    assert!(!legacy_dir.join("identity.txt").exists());
    let mut c = Command::new("age");
    c.arg("-d").arg(legacy_dir.join("identity.age"));
    let r = run_on_pty(
        c,
        PtyStdio::Pipes(b""),
        &[("passphrase", &format!("{PASS}\n"))],
    );
    let key = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY"))
            .map(str::to_string)
    };
    assert_eq!(key(&r.stdout), key(&String::from_utf8_lossy(&id.stdout)));
}

// ---------------------------------------------------------------------------------------------
// The daemon itself.

#[test]
fn audit_verify_detects_tampering_and_a_failed_audit_write_refuses_the_operation() {
    let (v, path, orig) = audited_vault(false);
    v.ok(&["vault", "audit", "verify"]);
    let lines: Vec<&str> = orig.lines().collect();
    let mut edited = lines.clone();
    let e = edited[1].replace("\"ok\"", "\"no\"");
    edited[1] = &e;
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    assert_eq!(v.run(&["vault", "audit", "verify"]).status.code(), Some(1));
    let mut reordered = lines.clone();
    reordered.swap(1, 2);
    std::fs::write(&path, reordered.join("\n") + "\n").unwrap();
    assert_eq!(v.run(&["vault", "audit", "verify"]).status.code(), Some(1));
    std::fs::write(&path, &orig).unwrap();
    v.ok(&["vault", "audit", "verify"]);
    // fail closed: with the log unwritable, add is refused and nothing is stored
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let mut c = v.cmd(&["vault", "add", "three"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(fake_value("a3").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("audit"), "{}", stderr(&o));
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &orig).unwrap();
    let list = v.ok(&["vault", "list"]);
    assert!(!list.contains("three"), "{list}");
}

#[test]
fn daemon_socket_permissions_frames_and_handshake() {
    let v = Vault::with_config(
        "max_frame_bytes = 4096\nhandshake_timeout = \"300ms\"\nidle_timeout = \"2s\"\n\
         max_connections = 8\n",
    );
    v.ok(&["vault", "daemon", "--detach"]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&v.socket()), 0o600);
    assert_eq!(mode(&v.dir.join("run")), 0o700);
    // oversize frame: error, connection closed, daemon alive
    let mut s = UnixStream::connect(v.socket()).unwrap();
    let big = vec![b'x'; 100_000];
    let _ = s.write_all(&big);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let e: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(e["error"]["code"], -32004);
    let mut rest = Vec::new();
    assert_eq!(
        r.read_to_end(&mut rest).unwrap_or(0),
        0,
        "connection closed"
    );
    assert_eq!(v.rpc("ping", json!({}))["result"]["ok"], true);
    // garbage is answered, not fatal
    let mut s = UnixStream::connect(v.socket()).unwrap();
    s.write_all(b"{not json\n").unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("-32700"));
    // handshake timeout: a silent client is dropped; blank lines are not a request, they do not
    // hold the connection open; after a request, an idle connection is closed too
    let closed_with = |before: &[u8], ping: bool, code: &str, within: u64| {
        let mut s = UnixStream::connect(v.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(within + 2)))
            .unwrap();
        if ping {
            assert_eq!(rpc_on(&mut s, "ping", json!({}))["result"]["ok"], true);
        }
        let t = Instant::now();
        s.write_all(before).unwrap();
        let mut buf = String::new();
        BufReader::new(s).read_to_string(&mut buf).unwrap();
        assert!(buf.contains(code), "{buf}");
        assert!(t.elapsed() < Duration::from_secs(within));
    };
    closed_with(b"", false, "-32006", 3);
    closed_with(b"\n\n\n", false, "-32006", 3);
    closed_with(b"", true, "-32012", 6);
    // a connection cap: with eight open, a ninth waits (in the listen queue, no descriptor
    // taken) and is served once one closes
    let mut held: Vec<UnixStream> = (0..8)
        .map(|_| {
            let mut s = UnixStream::connect(v.socket()).unwrap();
            assert_eq!(rpc_on(&mut s, "ping", json!({}))["result"]["ok"], true);
            s
        })
        .collect();
    let mut s = UnixStream::connect(v.socket()).unwrap();
    s.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\",\"params\":{}}\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    assert!(
        r.read_line(&mut line).is_err(),
        "served past the cap: {line}"
    );
    held.pop();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
}

#[test]
fn peer_with_another_uid_is_rejected() {
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to act as another uid");
        return;
    }
    if Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("skipped: needs python3 as the foreign-uid client");
        return;
    }
    let v = Vault::new();
    v.ok(&["vault", "daemon", "--detach"]);
    // open the path up so only the SO_PEERCRED check stands between uid 65534 and the daemon
    let mut p = v.socket();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    while let Some(parent) = p.parent() {
        let m = std::fs::metadata(parent).unwrap().permissions().mode();
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(m | 0o011)).unwrap();
        if parent == Path::new("/") || parent == std::env::temp_dir() {
            break;
        }
        p = parent.to_path_buf();
    }
    let script = format!(
        // the daemon answers the rejection before any request is read, then closes
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\nsys.stdout.write(s.makefile().readline())",
        v.socket().display().to_string()
    );
    use std::os::unix::process::CommandExt;
    let o = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("-32007"), "{}", stdout(&o));
    assert!(v.audit_text().contains("peer-rejected"));
}

#[test]
fn five_hundred_concurrent_clients_are_served() {
    let v = Vault::new();
    v.ok(&["vault", "daemon", "--detach"]);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(500));
    let sock = v.socket();
    let handles: Vec<_> = (0..500)
        .map(|_| {
            let b = barrier.clone();
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&sock).unwrap();
                b.wait(); // all 500 connected at once
                rpc_on(&mut s, "status", json!({}))["result"]["ok"] == true
            })
        })
        .collect();
    let ok = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|x| *x)
        .count();
    assert_eq!(ok, 500);
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let v = Vault::locked("");
    let mut d = v
        .cmd(&["vault", "daemon"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !v.socket().exists() {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    let status = d.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!v.socket().exists() && !v.dir.join("run/daemon.pid").exists());
    assert!(v.audit_text().contains("\"outcome\":\"stop\""));
    v.ok(&["vault", "audit", "verify"]);
}

#[test]
fn daemon_refuses_an_injected_library() {
    let v = Vault::locked("");
    let o = v
        .cmd(&["vault", "daemon"])
        .env("LD_PRELOAD", "")
        .env("LD_AUDIT", "/nonexistent/agent.so")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("LD_AUDIT"), "{}", stderr(&o));
    assert!(!v.socket().exists());
}

#[test]
fn kill_9_during_adds_never_corrupts_the_store() {
    let v = Vault::locked("");
    let mut d = v
        .cmd(&["vault", "daemon"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !v.socket().exists() {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    v.unlock();
    let sock = v.socket();
    let adder = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let Ok(mut s) = UnixStream::connect(&sock) else {
            return acked;
        };
        for i in 0..100_000 {
            let name = format!("k{i}");
            let mut f = serde_json::to_vec(&json!({"jsonrpc":"2.0","id":i,"method":"add","params":{"name": name, "value": format!("fake-value-{i:06}")}})).unwrap();
            f.push(b'\n');
            if s.write_all(&f).is_err() {
                break;
            }
            let mut line = String::new();
            match BufReader::new(s.try_clone().unwrap()).read_line(&mut line) {
                Ok(n) if n > 0 && line.contains("\"ok\":true") => acked.push(name),
                _ => break,
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(700));
    d.kill().unwrap(); // SIGKILL
    d.wait().unwrap();
    let acked = adder.join().unwrap();
    assert!(acked.len() > 3, "adds were happening ({})", acked.len());
    let plain: Value = serde_json::from_str(&age_decrypt(&v, "default")).expect("store is whole");
    for name in &acked {
        assert!(
            plain["secrets"].get(name).is_some(),
            "acknowledged {name} was lost"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(v.dir.join("contexts/default"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.len() <= 1, "at most the one in-flight temp file");
    // the autostarted daemon loads the store again (once a human unlocks it), and removes the
    // temp file the killed write left
    v.unlock();
    assert!(v.ok(&["vault", "list"]).contains("k0"));
    let leftovers: Vec<_> = std::fs::read_dir(v.dir.join("contexts/default"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

/// Start an approved long-running command as the agent would, and wait until it holds a lease.
fn running_exec(v: &Vault, secs: u32) -> std::process::Child {
    let script = format!("sleep {secs}; echo $TOK");
    v.grant(&["tok"], &["sh", "-c", &script]);
    let child = v
        .agent_prog(guard_bin(), &["exec", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    v.wait_status("a running command", |s| {
        s["active_leases"] == 1 && s["running_commands"] == 1
    });
    child
}

#[test]
fn heartbeat_failure_revokes_stops_and_rotates_within_the_interval() {
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        // listener dropped here: connections are refused from now on
    });
    let v = Vault::with_config(&format!(
        "[heartbeat]\nurl = \"http://127.0.0.1:{port}/health\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\n[heartbeat.fail_action]\nrevoke_all = true\nrotate_all = true\n"
    ));
    v.add(
        "tok",
        &fake_value("hb"),
        &["--rotate-via", "printf %s fake-rotated-by-heartbeat"],
    );
    v.project("[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    let child = running_exec(&v, 30);
    std::thread::sleep(Duration::from_millis(700));
    let st = v.status();
    assert_eq!(st["heartbeat"], "alive", "{st}");
    assert_eq!(st["active_leases"], 1);
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
    let t = Instant::now();
    loop {
        if v.status()["active_leases"] == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_millis(300 + 200 + 400),
            "not revoked within the interval"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success(), "the running command was stopped");
    let t = Instant::now();
    while !v.audit_text().contains("\"op\":\"rotate\"") {
        assert!(t.elapsed() < Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(v.audit_text().contains("\"op\":\"heartbeat\""));
    let list = v.json(&["vault", "list"]);
    assert_eq!(
        list["data"]["contexts"][0]["secrets"][0]["current_version"],
        2
    );
}

#[test]
fn rotation_hooks_timeout_no_shell_and_old_versions() {
    let v = Vault::with_config("rotation_timeout = \"300ms\"\n");
    let old = fake_value("old");
    v.add("tok", &old, &["--rotate-via", "printf %s fake-new-$HOME"]);
    let before = v.json(&["vault", "list"])["data"]["contexts"][0]["secrets"][0].clone();
    assert_eq!(before["last_rotation"], Value::Null, "{before}");
    v.ok(&["vault", "rotate", "tok"]);
    let after = v.json(&["vault", "list"])["data"]["contexts"][0]["secrets"][0].clone();
    assert!(
        after["last_rotation"].as_u64() >= before["created"].as_u64(),
        "{after}"
    );
    assert_eq!(
        v.print(&["tok"]),
        "fake-new-$HOME",
        "argv, no shell expansion"
    );
    assert_eq!(
        v.print(&["tok", "--version-id", "1"]),
        old,
        "old version by id"
    );
    v.add("slow", &fake_value("slow"), &["--rotate-via", "sleep 5"]);
    let t = Instant::now();
    let o = v.run(&["vault", "rotate", "slow"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(3));
    v.add(
        "sh",
        &fake_value("sh"),
        &[
            "--rotate-via",
            "printf fake-value-%s $((40+2))",
            "--rotate-shell",
        ],
    );
    v.ok(&["vault", "rotate", "sh"]);
    assert_eq!(v.print(&["sh"]), "fake-value-42");
    let list = v.json(&["vault", "list"]);
    let slow = list["data"]["contexts"][0]["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "slow")
        .unwrap()
        .clone();
    assert_eq!(slow["current_version"], 1);
}

#[test]
fn json_envelopes_and_help_examples() {
    let v = Vault::new();
    let ok = v.json(&["vault", "list"]);
    assert_eq!(ok["ok"], true);
    assert!(ok["data"].is_object() && ok["next_actions"].is_array());
    let o = v.run(&["vault", "rm", "missing", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(e["ok"], false);
    assert!(e["error"]["message"].as_str().unwrap().contains("missing"));
    assert!(!e["next_actions"].as_array().unwrap().is_empty());
    let verify = v.json(&["vault", "audit", "verify"]);
    assert_eq!(verify["ok"], true);
    for sub in [
        "init",
        "add",
        "list",
        "rm",
        "status",
        "audit",
        "rotate",
        "print",
        "unlock",
        "lock",
        "revoke",
        "killswitch",
        "approve",
        "pending",
        "grant",
        "daemon",
    ] {
        let o = Command::new(guard_bin())
            .args(["vault", sub, "--help"])
            .output()
            .unwrap();
        assert!(
            stdout(&o).contains("Example"),
            "vault {sub} --help has no example"
        );
    }
    let o = Command::new(guard_bin())
        .args(["exec", "--help"])
        .output()
        .unwrap();
    assert!(stdout(&o).contains("Example"));
}

#[test]
fn killswitch_revokes_stops_rotates_and_wipes() {
    let v = Vault::new();
    v.add(
        "tok",
        &fake_value("ks"),
        &["--rotate-via", "printf %s fake-after-kill"],
    );
    v.project("[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    let child = running_exec(&v, 30);
    let r = v.json(&["vault", "killswitch", "--rotate"]);
    assert_eq!(r["data"]["revoked"], 1);
    assert_eq!(r["data"]["rotated"][0]["version"], 2);
    let t = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(!stdout(&o).contains("REDACTED"), "the command was stopped");
    v.json(&["vault", "killswitch", "--wipe"]);
    assert!(!v.dir.join("contexts/default/store.age").exists());
    assert!(!v.dir.join("contexts/default/identity.age").exists());
    assert_eq!(v.status()["unlocked"], false);
}

/// After an end-to-end run with a known value, the value is nowhere: not in any output, log,
/// audit record, approvals file, or (in plaintext) in the store.
#[test]
fn no_value_in_any_output_log_or_audit() {
    let (v, val) = tok_vault("needle", "approval_timeout = \"200ms\"\n");
    let mut outputs = String::new();
    let mut run = |args: &[&str]| {
        let o = v.run(args);
        outputs.push_str(&stdout(&o));
        outputs.push_str(&stderr(&o));
    };
    run(&["exec", "--", "sh", "-c", "echo $TOK"]); // denied (no approval)
    run(&["exec", "--json", "--", "true"]);
    let script = "echo $TOK; echo $TOK >&2; exit 3";
    let transform = "printf '%s' \"$TOK\" | base64 >/dev/null; echo \"$TOK\" | rev";
    v.grant(&["tok"], &["sh", "-c", script]);
    v.grant(&["tok"], &["sh", "-c", transform]);
    run(&["exec", "--", "sh", "-c", script]);
    run(&["exec", "--", "sh", "-c", transform]);
    run(&["exec", "--", "/nonexistent/cmd"]);
    run(&["vault", "list"]);
    run(&["vault", "list", "--json"]);
    run(&["vault", "status", "--json"]);
    run(&["vault", "pending", "--json"]);
    run(&["vault", "print", "tok"]);
    run(&["vault", "audit", "--json"]);
    run(&["vault", "audit"]);
    run(&["vault", "audit", "verify"]);
    run(&["vault", "rm", "nope"]);
    run(&["vault", "daemon", "--stop"]);
    assert!(!outputs.contains(&val), "value leaked into CLI output");
    let rev: String = val.chars().rev().collect();
    assert!(
        outputs.contains(&rev),
        "sanity: the transformed value is visible (exact-value masking only)"
    );
    fn walk(dir: &Path, val: &str) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, val);
            } else if let Ok(b) = std::fs::read(&p) {
                assert!(
                    !String::from_utf8_lossy(&b).contains(val),
                    "value found in {}",
                    p.display()
                );
            }
        }
    }
    walk(&v.dir, &val);
    walk(&v.work, &val);
}

// ---------------------------------------------------------------------------------------------
// The controlling-terminal paths, driven under a real pseudo-terminal. The pty is made the
// controlling terminal of `guard` (new session + TIOCSCTTY) while its stdin/stdout/stderr can stay
// pipes, as when an agent drives it: whatever shows up on the pty came through `/dev/tty`.

/// How `guard`'s stdio is wired for a pty run.
pub(crate) enum PtyStdio<'a> {
    /// stdin is a pipe fed these bytes (then closed), stdout/stderr are captured pipes.
    Pipes(&'a [u8]),
    /// stdin, stdout and stderr are all the terminal, as in an interactive shell.
    Tty,
}

pub(crate) struct PtyRun {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// Everything the terminal displayed (prompts, echo of typed input).
    pub(crate) tty: String,
    /// The terminal's ECHO flag after the command exited.
    echo_after: bool,
}

fn open_pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc calls on fds we own; every result is checked before use.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        let master = std::fs::File::from_raw_fd(m);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(s >= 0, "open pts: {}", std::io::Error::last_os_error());
        (master, std::fs::File::from_raw_fd(s))
    }
}

/// Run `cmd` with a fresh pty as its controlling terminal. `steps` is a dialogue: wait until the
/// terminal shows `.0` (in the output not yet matched), then type `.1`. Panics (after killing
/// the command) if a prompt or the exit takes longer than 15 s.
fn run_on_pty(mut cmd: Command, stdio: PtyStdio, steps: &[(&str, &str)]) -> PtyRun {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::sync::{Arc, Mutex};
    let (mut master, slave) = open_pty();
    let slave_fd = slave.as_raw_fd();
    cmd.env_remove("GUARD_NO_TTY");
    match stdio {
        PtyStdio::Pipes(_) => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        PtyStdio::Tty => {
            cmd.stdin(slave.try_clone().unwrap())
                .stdout(slave.try_clone().unwrap())
                .stderr(slave.try_clone().unwrap());
        }
    }
    // SAFETY: setsid and ioctl are async-signal-safe; `slave_fd` is still open in the child
    // (O_CLOEXEC closes it only at exec).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // Keep our end of the slave open while the command runs: with stdio on pipes, the command
    // holds the terminal only while `/dev/tty` is open, and the reader must not see EIO between.
    drop(cmd); // the Command holds clones of the slave in Tty mode
    let (out_t, err_t) = if let PtyStdio::Pipes(input) = stdio {
        let mut i = child.stdin.take().unwrap();
        i.write_all(input).unwrap();
        drop(i);
        let mut o = child.stdout.take().unwrap();
        let mut e = child.stderr.take().unwrap();
        (
            Some(std::thread::spawn(move || {
                let mut s = String::new();
                let _ = o.read_to_string(&mut s);
                s
            })),
            Some(std::thread::spawn(move || {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                s
            })),
        )
    } else {
        (None, None)
    };
    let shown = Arc::new(Mutex::new(Vec::<u8>::new()));
    let reader = {
        let shown = shown.clone();
        let mut m = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = m.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let transcript =
        |shown: &Mutex<Vec<u8>>| String::from_utf8_lossy(&shown.lock().unwrap()).into_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = 0;
    for (wait_for, answer) in steps {
        loop {
            let t = transcript(&shown);
            if let Some(i) = t[seen..].find(wait_for) {
                seen += i + wait_for.len();
                break;
            }
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                let st = child.wait();
                let err = err_t.map(|h| h.join().unwrap()).unwrap_or_default();
                panic!("the terminal never showed {wait_for:?}; it showed {t:?} ({st:?}, stderr {err:?})");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        master.write_all(answer.as_bytes()).unwrap();
    }
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after 15 s; the terminal showed {:?}",
                transcript(&shown)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: termios is plain data; tcgetattr on the master reports the terminal's settings.
    let echo_after = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(master.as_raw_fd(), &mut t), 0);
        t.c_lflag & libc::ECHO != 0
    };
    // The reader ends with EIO once the last holder of the terminal has closed it.
    drop(slave);
    let t = Instant::now();
    while !reader.is_finished() && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    PtyRun {
        status,
        stdout: out_t.map(|h| h.join().unwrap()).unwrap_or_default(),
        stderr: err_t.map(|h| h.join().unwrap()).unwrap_or_default(),
        tty: transcript(&shown),
        echo_after,
    }
}

// ---------------------------------------------------------------------------------------------
// The adversarial review of issue 9: each test is one of its findings, as the agent would try it.

/// The account's home directory as the password database has it.
fn passwd_home() -> String {
    // SAFETY: getpwuid returns a pointer into static storage, read at once.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        assert!(!pw.is_null());
        std::ffi::CStr::from_ptr((*pw).pw_dir)
            .to_string_lossy()
            .into_owned()
    }
}

/// Finding 1 (critical): everything in the caller's environment but a short denylist reached the
/// approved command. An exported bash function, a `PATH` that an `#!/usr/bin/env` shebang
/// searches, `BASH_ENV`, `GIT_TRACE`, a proxy, `HOME`: none of it reaches the command now, and
/// none of it changes what was approved (the command runs, clean).
#[test]
fn agent_environment_never_reaches_an_approved_command() {
    let (v, val) = tok_vault("envhijack", "approval_timeout = \"300ms\"\n");
    let w = v.work.clone();
    let loot = |n: &str| w.join(format!("loot-{n}"));
    // bash script: `echo` is a builtin an exported function would replace
    std::fs::write(
        w.join("deploy.sh"),
        format!(
            "#!/bin/bash\necho \"len ${{#TOK}}\"\nenv | cut -d= -f1 | sort > {names}\nprintf %s \"$HOME|$PATH\" > {hp}\ngit version >/dev/null 2>&1 || true\n",
            names = w.join("names").display(),
            hp = w.join("homepath").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(w.join("deploy.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // a script whose interpreter `env` finds on PATH
    std::fs::write(w.join("deploy2.sh"), "#!/usr/bin/env sh\necho env-sh ran\n").unwrap();
    std::fs::set_permissions(w.join("deploy2.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    v.grant(&["tok"], &["./deploy.sh"]);
    v.grant(&["tok"], &["./deploy2.sh"]);
    // the agent's tools
    let evil = w.join("evilbin");
    std::fs::create_dir(&evil).unwrap();
    for prog in ["sh", "python3", "git", "cut", "sort", "env"] {
        write_script(
            &evil.join(prog),
            &format!("printf %s \"$TOK\" > {}", loot(prog).display()),
        );
    }
    write_script(
        &w.join("bash_env.sh"),
        &format!("printf %s \"$TOK\" > {}", loot("bash_env").display()),
    );
    let path = format!("{}:{}", evil.display(), std::env::var("PATH").unwrap());
    let func = format!(
        "() {{ printf %s \"$TOK\" > {}; }}",
        loot("bash_func").display()
    );
    let trace = loot("git_trace");
    let bash_env = w.join("bash_env.sh");
    let agent_env: Vec<(&str, &str)> = vec![
        ("BASH_FUNC_echo%%", &func),
        ("PATH", &path),
        ("BASH_ENV", bash_env.to_str().unwrap()),
        ("ENV", bash_env.to_str().unwrap()),
        ("GIT_TRACE", trace.to_str().unwrap()),
        ("GIT_TRACE_REDACT", "0"),
        ("GIT_CONFIG_COUNT", "1"),
        ("GIT_CONFIG_KEY_0", "core.pager"),
        ("GIT_CONFIG_VALUE_0", "sh"),
        ("GIT_SSH_COMMAND", "sh"),
        ("HTTPS_PROXY", "http://127.0.0.1:9"),
        ("SSL_CERT_FILE", "/tmp/agent-ca.pem"),
        ("PYTHONWARNINGS", "ignore::antigravity.X"),
        ("BROWSER", "sh"),
        ("HOME", "/tmp/agent-home"),
        ("AGENT_MARKER", "1"),
        ("LC_ALL", "/tmp/agent-locale"),
    ];
    let o = v
        .agent_prog(guard_bin(), &["exec", "--", "./deploy.sh"])
        .envs(agent_env.iter().copied())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the approved command runs, unaffected: {}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), format!("len {}\n", val.len()));
    let names = std::fs::read_to_string(w.join("names")).unwrap();
    for (k, _) in &agent_env {
        if !matches!(*k, "PATH" | "HOME") {
            assert!(
                !names.lines().any(|n| n == *k || n.starts_with("BASH_FUNC")),
                "{k} reached the command: {names}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(w.join("homepath")).unwrap(),
        format!(
            "{}|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            passwd_home()
        )
    );
    let o = v
        .agent_prog(guard_bin(), &["exec", "--", "./deploy2.sh"])
        .envs(agent_env.iter().copied())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "env-sh ran\n");
    for n in [
        "sh",
        "python3",
        "git",
        "cut",
        "sort",
        "env",
        "bash_env",
        "bash_func",
        "git_trace",
    ] {
        assert!(!loot(n).exists(), "the agent got the value through {n}");
    }
    assert!(!v.audit_text().contains(&val));
}

/// Findings 1+2: a project that needs a variable names it (`env = [...]`); then its value is part
/// of the approval and the human sees it before approving.
#[test]
fn pass_through_variables_are_shown_to_the_human_and_bind_the_approval() {
    let (v, _val) = tok_vault("passenv", "approval_timeout = \"300ms\"\n");
    v.project("env = [\"DEPLOY_TARGET\"]\n[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    write_script(&v.work.join("deploy.sh"), "echo \"to $DEPLOY_TARGET\"");
    let mut c = v.cmd(&["exec", "--", "./deploy.sh"]);
    c.env("DEPLOY_TARGET", "staging");
    let r = run_on_pty(
        c,
        PtyStdio::Pipes(b""),
        &[("[y/N] ", "y\n"), (PASS_PROMPT, &format!("{PASS}\n"))],
    );
    assert!(r.status.success(), "{} / {:?}", r.stderr, r.tty);
    assert!(r.tty.contains("DEPLOY_TARGET=staging"), "{:?}", r.tty);
    assert_eq!(r.stdout, "to staging\n");
    let mut c = v.agent_prog(guard_bin(), &["exec", "--", "./deploy.sh"]);
    c.env("DEPLOY_TARGET", "staging");
    assert!(c.output().unwrap().status.success());
    let mut c = v.agent_prog(guard_bin(), &["exec", "--", "./deploy.sh"]);
    c.env("DEPLOY_TARGET", "/tmp/agent");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "another value is another command");
}

/// Finding 3 (high): the hash cache trusted (size, mtime, ctime), which a write through a shared
/// mapping need not change. A file the user can write is hashed again on every exec.
#[test]
fn a_script_rewritten_through_a_shared_mapping_is_not_the_approved_one() {
    let (v, val) = tok_vault("mmap", "approval_timeout = \"300ms\"\n");
    let script = v.work.join("deploy.sh");
    write_script(
        &script,
        "echo deploying; echo done with it, all good, nothing to see",
    );
    v.grant(&["tok"], &["./deploy.sh"]);
    let orig = std::fs::read(&script).unwrap();
    let loot = v.work.join("loot");
    let mut evil = format!("#!/bin/sh\nprintf %s \"$TOK\" > {}\n", loot.display()).into_bytes();
    assert!(evil.len() < orig.len(), "the test's payload must fit");
    evil.resize(orig.len() - 1, b'#');
    evil.push(b'\n');
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&script)
        .unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a shared mapping of an open file of `orig.len()` bytes, written within bounds and
    // unmapped before the file is closed.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            orig.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        ) as *mut u8;
        assert_ne!(p as *mut libc::c_void, libc::MAP_FAILED);
        // first write fault: the stamps move now, once; the page stays writable after
        *p = orig[0];
        // the daemon hashes the benign content (the launch itself may fail with ETXTBSY while
        // the file is mapped writable: the hash is taken before, which is what a cache keeps)
        let o = v.agent(&["exec", "--", "./deploy.sh"]);
        assert!(!stderr(&o).contains("approval required"), "{}", stderr(&o));
        std::ptr::copy_nonoverlapping(evil.as_ptr(), p, evil.len());
        libc::munmap(p.cast(), orig.len());
    }
    drop(f);
    assert_eq!(std::fs::read(&script).unwrap(), evil);
    let o = v.agent(&["exec", "--", "./deploy.sh"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        !loot.exists(),
        "the rewritten script ran with the value {val}"
    );
}

/// Finding 4 (high): the agent stops the daemon and listens on its socket; the human's
/// `guard vault unlock` then sent it the passphrase. The CLI now checks who listens first.
#[test]
fn a_fake_daemon_on_the_socket_gets_no_passphrase() {
    use std::os::unix::net::UnixListener;
    let v = Vault::new();
    // `shutdown` needs no proof (SIGTERM from the same user could not be refused anyway).
    assert_eq!(
        v.rpc("shutdown", json!({}))["result"]["data"]["stopping"],
        true
    );
    let t = Instant::now();
    while v.socket().exists() {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    // The fake: this test process, listening where the daemon was, and naming itself in the pid
    // file. It records every byte it is sent and answers like a daemon.
    let l = UnixListener::bind(v.socket()).unwrap();
    std::fs::write(
        v.dir.join("run/daemon.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let g2 = got.clone();
    l.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let fake = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            let Ok((mut c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            c.set_nonblocking(false).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                g2.lock().unwrap().extend_from_slice(line.as_bytes());
                let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let res = json!({"jsonrpc": "2.0", "id": req["id"], "result": {"ok": true,
                    "data": {"unlocked": true, "contexts": ["default"], "unlocked_for_secs": 1,
                             "pid": 1, "pending": []}, "next_actions": []}});
                let _ = c.write_all(format!("{res}\n").as_bytes());
                line.clear();
            }
        }
    });
    let r = v.human(&["vault", "unlock"], &[]);
    // (no passphrase prompt is answered: if the CLI asked, the run times out or fails)
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    fake.join().unwrap();
    // the Drop guard would signal whatever the pid file names: this test process
    std::fs::remove_file(v.dir.join("run/daemon.pid")).unwrap();
    let sent = String::from_utf8_lossy(&got.lock().unwrap()).into_owned();
    assert!(
        !sent.contains(PASS),
        "the fake daemon got the passphrase: {sent}"
    );
    assert_eq!(r.status.code(), Some(2), "{} / {:?}", r.stderr, r.tty);
    assert!(
        r.stderr.contains("refusing to send the vault passphrase"),
        "{}",
        r.stderr
    );
    assert!(
        !r.tty.contains(PASS_PROMPT),
        "asked for nothing: {:?}",
        r.tty
    );
}

/// Finding 5 (high): a tracer attached before `PR_SET_DUMPABLE 0` stays attached. The daemon
/// refuses to run under one.
#[test]
#[allow(clippy::zombie_processes)] // reaped with waitpid(2): the test is its tracer
fn a_daemon_started_under_a_tracer_refuses_to_run() {
    let v = Vault::locked("");
    let mut c = v.cmd(&["vault", "daemon"]);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: ptrace(PTRACE_TRACEME) is async-signal-safe: this test becomes the tracer.
    unsafe {
        c.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        let mut st = 0;
        // SAFETY: waits for our own child.
        let w = unsafe { libc::waitpid(pid, &mut st, libc::__WALL | libc::WNOHANG) };
        if w == pid && libc::WIFSTOPPED(st) {
            let sig = libc::WSTOPSIG(st);
            let fwd = if sig == libc::SIGTRAP { 0 } else { sig };
            // SAFETY: resumes our stopped tracee.
            unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, fwd) };
        } else if w == pid && libc::WIFEXITED(st) {
            break libc::WEXITSTATUS(st);
        } else if w == pid && libc::WIFSIGNALED(st) {
            break 128 + libc::WTERMSIG(st);
        }
        assert!(Instant::now() < deadline, "a traced daemon kept running");
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("traces this one"), "{err}");
    assert!(!v.socket().exists());
    // An untraced daemon reports that nobody traces it.
    v.unlock();
    assert_eq!(v.status()["traced_by"], 0);
}

/// Finding 6 (medium): raw control bytes in the approval prompt could redraw it. Everything the
/// human reads is escaped: arguments, the directory, the question.
#[test]
fn the_approval_prompt_shows_control_sequences_escaped() {
    let (v, _val) = tok_vault("ctl", "");
    let sub = v.work.join("proj\r\x1b[2Kok");
    std::fs::create_dir(&sub).unwrap();
    let mut c = v.cmd(&[
        "exec",
        "--",
        "sh",
        "-c",
        "echo $TOK >/dev/null\r\x1b[2K\x1b[1A./deploy.sh \u{202e}",
    ]);
    c.current_dir(&sub);
    let r = run_on_pty(c, PtyStdio::Pipes(b""), &[("[y/N] ", "n\n")]);
    assert_eq!(r.status.code(), Some(1), "{} / {:?}", r.stderr, r.tty);
    assert!(
        !r.tty.contains('\x1b'),
        "raw escape on the terminal: {:?}",
        r.tty
    );
    assert!(!r.tty.contains('\u{202e}'), "{:?}", r.tty);
    assert!(
        !r.tty.replace("\r\n", "\n").contains('\r'),
        "raw carriage return: {:?}",
        r.tty
    );
    assert!(
        r.tty.contains("\\r\\e[2K\\e[1A./deploy.sh \\u202e"),
        "{:?}",
        r.tty
    );
    assert!(
        r.tty.contains("proj\\r\\e[2Kok"),
        "the directory too: {:?}",
        r.tty
    );
}

#[test]
fn fingerprints_export_every_version_and_redact_without_values() {
    use base64::Engine as _;
    let v = Vault::new();
    let (old, new) = (fake_value("fpold"), fake_value("fpnew"));
    v.add("tok", &old, &[]);
    v.add("tok", &new, &[]);
    let fp = v.work.join("vault.fp");
    v.ok(&["vault", "fingerprints", "--file", fp.to_str().unwrap()]);
    let text = std::fs::read_to_string(&fp).unwrap();
    for s in [&old, &new] {
        assert!(!text.contains(s.as_str()) && !text.contains(&hex::encode(s)));
    }
    assert_eq!(
        std::fs::metadata(&fp).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("u:{new}"));
    let input = format!("old {old}\nnew in base64 {b64}\n");
    let mut c = v.cmd(&["redact", "--fingerprints", fp.to_str().unwrap(), "--spool"]);
    c.arg(v.work.join("spool"));
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let got = String::from_utf8(o.stdout).unwrap();
    assert!(got.starts_with("old [REDACTED:tok]\n"), "{got}");
    assert!(!got.contains(&old) && !got.contains(&b64[4..20]), "{got}");
    assert!(got.contains("[REDACTED:tok]"), "{got}");
    let events: Vec<String> = std::fs::read_dir(v.work.join("spool"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events
        .iter()
        .all(|e| !e.contains(&old) && !e.contains(&new)));
    assert!(events
        .iter()
        .any(|e| e.contains("\"version\":1") && e.contains("\"raw\"")));
    assert!(events
        .iter()
        .any(|e| e.contains("\"version\":2") && e.contains("\"base64\"")));
    assert!(!v.audit_text().contains(&new));
}

/// `guard vault add` with `value` on stdin; the output.
fn add_output(v: &Vault, name: &str, value: &[u8]) -> Output {
    with_input(v.cmd(&["vault", "add", name]), value)
}

/// Runs `c` with `input` on its stdin (written from a thread; the command may stop reading
/// early, so a broken pipe is not an error) and its output captured.
pub(crate) fn with_input(mut c: Command, input: &[u8]) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    o
}

#[test]
fn init_never_replaces_a_store_and_bad_values_get_reasons() {
    let v = Vault::new();
    let val = fake_value("keep");
    v.add("tok", &val, &[]);
    // The identity gone (deleted by mistake): `init` must not make a new, empty store.
    let store = v.dir.join("contexts/default/store.age");
    let before = std::fs::read(&store).unwrap();
    std::fs::remove_file(v.dir.join("contexts/default/identity.age")).unwrap();
    // Refused before anything is asked.
    let o = v.run(&["vault", "init"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "init replaced the store: {err}");
    assert!(
        err.contains("identity file is missing") && err.contains(".orphaned"),
        "says why and what to do: {err}"
    );
    assert_eq!(std::fs::read(&store).unwrap(), before, "store untouched");

    // Values too short to redact, or too long for a frame, are refused with the reason (not
    // a broken pipe, not blamed on the daemon).
    let v = Vault::new();
    for (value, want) in [
        (b"ab\n".to_vec(), "too short"),
        (vec![b'x'; 2 << 20], "too long"),
    ] {
        let o = add_output(&v, "bad", &value);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{want}: accepted");
        assert!(
            err.contains(want) && !err.contains("talking to the daemon") && !err.contains("pipe"),
            "{want}: {err}"
        );
    }
    assert!(!v.ok(&["vault", "list"]).contains("bad"));
    let o = add_output(&v, "big", &vec![b'y'; 200 * 1024]);
    assert!(
        o.status.success(),
        "200 KiB: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_daemon_that_cannot_start_says_why_at_once() {
    let v = Vault::locked("");
    // Broken after init: the autostarted daemon cannot read its config.
    std::fs::write(v.dir.join("config.toml"), "max_frame_bytes = \"lots\"\n").unwrap();
    let t = Instant::now();
    let o = v.run(&["vault", "list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("could not start the vault daemon") && err.contains("config.toml"),
        "names the cause: {err}"
    );
    assert!(!err.contains("talking to the daemon"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "waited {:?}",
        t.elapsed()
    );
}

/// However `guard exec` dies, its leases end and its command does not outlive it: SIGTERM and
/// SIGHUP are forwarded to the command; when the CLI is killed outright, the daemon stops the
/// command (SIGKILL after a grace period, for one that ignores SIGTERM).
#[test]
fn exec_killed_any_way_ends_its_leases_and_its_command() {
    let v = Vault::new();
    v.add("tok", &fake_value("sig"), &[]);
    v.project("[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    let plain = "sleep 30; echo $TOK";
    let stubborn = "trap '' TERM; sleep 30; echo $TOK";
    v.grant(&["tok"], &["sh", "-c", plain]);
    v.grant(&["tok"], &["sh", "-c", stubborn]);
    for (sig, script) in [
        (libc::SIGTERM, plain),
        (libc::SIGHUP, plain),
        (libc::SIGPIPE, plain),
        (libc::SIGKILL, plain),
        (libc::SIGKILL, stubborn),
    ] {
        let mut child = v
            .agent_prog(guard_bin(), &["exec", "--", "sh", "-c", script])
            .spawn()
            .unwrap();
        // (The first run may wait for the daemon's redaction engine on a loaded machine.)
        v.wait_status_for("a running command", Duration::from_secs(60), |s| {
            s["active_leases"] == 1 && s["running_commands"] == 1
        });
        // SAFETY: signalling the child this test started.
        unsafe { libc::kill(child.id() as i32, sig) };
        let t = Instant::now();
        v.wait_status("the lease and the command gone", |s| {
            s["active_leases"] == 0 && s["running_commands"] == 0
        });
        assert!(t.elapsed() < Duration::from_secs(8), "signal {sig}");
        let _ = child.wait();
    }
}

/// A truncated audit log is never re-anchored: the daemon refuses to start and says what to
/// do; only a human (passphrase at the terminal) acknowledges the break, and the broken log is
/// kept.
#[test]
fn a_broken_audit_chain_stops_the_daemon_until_a_human_acknowledges_it() {
    // Cover tracks: the daemon stopped, drop the last two records.
    let (v, path, text) = audited_vault(true);
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&path, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
    let o = v.run(&["vault", "list"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "served on a broken chain");
    assert!(
        err.contains("does not end at the recorded head") && err.contains("audit acknowledge"),
        "{err}"
    );
    assert_eq!(v.run(&["vault", "audit", "verify"]).status.code(), Some(1));
    // The agent (no terminal) cannot acknowledge it.
    let o = v.agent(&["vault", "audit", "acknowledge"]);
    assert!(!o.status.success());
    assert!(!v
        .dir
        .read_dir()
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("audit.broken-")));
    // A human does; the old log is kept, the new chain says why, and the vault works again.
    let r = v.human_ok(&["vault", "audit", "acknowledge"], &[(PASS_PROMPT, PASS)]);
    assert!(r.stdout.contains("audit.broken-"), "{}", r.stdout);
    v.ok(&["vault", "audit", "verify"]);
    assert!(v.audit_text().contains("chain-restarted"));
    v.unlock();
    assert!(v.ok(&["vault", "list"]).contains("two"));
}

#[test]
fn exec_of_a_missing_command_exits_127_like_a_shell() {
    let v = Vault::new();
    v.add("tok", &fake_value("nf"), &[]);
    v.project("[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    let o = v.agent(&["exec", "--", "guard-test-no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
}

/// The leak loop end to end: a command prints its injected secret in base64; the output is
/// redacted, a leak event reaches the daemon, which audits it, marks the version compromised and
/// rotates the secret — once, however many events name that version.
#[test]
fn a_leaked_stored_secret_is_rotated_exactly_once() {
    let spool = tempfile::tempdir().unwrap();
    let v = Vault::with_config(&format!("leak_spool = \"{}\"\n", spool.path().display()));
    let old = fake_value("leaky");
    let count = add_rotating(&v, "tok", &old, &[]);
    v.project("[[secret]]\nname = \"tok\"\nenv = \"TOKEN\"\n");
    // A redactor running since before the rotation, on the daemon's published set.
    let fp = v.dir.join("fingerprints.fp");
    let mut running = v
        .cmd(&["redact", "--fingerprints", fp.to_str().unwrap(), "--spool"])
        .arg(v.work.join("running-spool"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running_in = running.stdin.take().unwrap();
    let mut running_out = BufReader::new(running.stdout.take().unwrap());
    let script = "echo \"$TOKEN\" | base64";
    v.grant(&["tok"], &["sh", "-c", script]);
    let o = v.agent(&["exec", "--", "sh", "-c", script]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = stdout(&o);
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{old}\n"))
    };
    assert!(
        shown.contains("[REDACTED:tok]") && !shown.contains(&b64[..16]) && !shown.contains(&old),
        "{shown}"
    );
    let t = Instant::now();
    let incidents = loop {
        let i = v.json(&["vault", "incidents"]);
        if i["data"]["incidents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["outcome"] == "rotated"))
        {
            break i;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no rotation: {i}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let rotated = incidents["data"]["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["outcome"] == "rotated")
        .unwrap()
        .clone();
    assert_eq!(rotated["secret"], "tok");
    assert_eq!(rotated["version"], 1);
    assert_eq!(rotated["new_version"], 2);
    assert!(rotated["encoding"].as_str().unwrap().starts_with("base64"));
    let new = v.print(&["tok"]);
    assert!(
        new.starts_with("fake-rotated-value-") && new != old,
        "{new}"
    );
    // The running redactor picked the new set up without a restart.
    writeln!(running_in, "new {new}").unwrap();
    let mut line = String::new();
    running_out.read_line(&mut line).unwrap();
    assert_eq!(line, "new [REDACTED:tok]\n");
    drop(running_in);
    assert!(running.wait().unwrap().success());
    // The daemon published the refreshed set (both versions) for redactors.
    let text = std::fs::read_to_string(&fp).unwrap();
    assert!(!text.contains(&old) && !text.contains(&new));
    assert_eq!(
        std::fs::metadata(&fp).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut c = v.cmd(&["redact", "--fingerprints", fp.to_str().unwrap(), "--spool"]);
    c.arg(v.work.join("other-spool"));
    let got = stdout(&with_input(c, format!("old {old}\nnew {new}\n").as_bytes()));
    assert_eq!(got, "old [REDACTED:tok]\nnew [REDACTED:tok]\n");
    // More events naming the compromised version: duplicates, no second rotation.
    for i in 0..3 {
        spool_event(spool.path(), &format!("9-{i}.json"), "tok", 1);
    }
    wait_spool_empty(spool.path(), 10);
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1);
    let i = v.json(&["vault", "incidents"]);
    let outcomes: Vec<&str> = i["data"]["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "rotated").count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&"duplicate"), "{outcomes:?}");
    v.ok(&["vault", "audit", "verify"]);
    let audit = v.audit_text();
    assert!(audit.contains("\"op\":\"leak\"") && !audit.contains(&old) && !audit.contains(&new));
    // While the vault is locked an event waits; unlocked, it is handled. An event for a secret
    // this vault does not hold is left alone.
    v.ok(&["vault", "lock"]);
    spool_event(spool.path(), "10-a.json", "tok", 2);
    spool_event(spool.path(), "10-b.json", "not-in-this-vault", 1);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        spool.path().join("10-a.json").exists(),
        "handled while locked"
    );
    v.unlock();
    let t = Instant::now();
    while spool.path().join("10-a.json").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not handled once unlocked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        spool.path().join("10-b.json").exists(),
        "another vault's event was taken"
    );
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);
    assert!(v.print(&["tok"]) != new, "version 2 leaked: rotated again");
}

/// Per-secret leak policy: `report-only` records, `revoke-only` revokes; neither runs the hook.
#[test]
fn leak_policies_revoke_only_and_report_only_do_not_rotate() {
    let spool = tempfile::tempdir().unwrap();
    let told = spool.path().with_extension("notified");
    let v = Vault::with_config(&format!(
        "leak_spool = \"{}\"\nleak_notify = [\"sh\", \"-c\", \"cat >> {}\"]\n",
        spool.path().display(),
        told.display()
    ));
    let count = v.work.join("hook-runs");
    let hook = format!(
        "echo run >> {}; printf fake-rotated-value-%s $$",
        count.display()
    );
    for (name, policy) in [("quiet", "report-only"), ("rev", "revoke-only")] {
        v.add(
            name,
            &fake_value(name),
            &["--rotate-via", &hook, "--rotate-shell", "--on-leak", policy],
        );
        spool_event(spool.path(), &format!("1-{name}.json"), name, 1);
    }
    wait_spool_empty(spool.path(), 10);
    let i = v.json(&["vault", "incidents"]);
    let outcome = |n: &str| {
        i["data"]["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["secret"] == n)
            .map(|x| x["outcome"].as_str().unwrap().to_string())
    };
    assert_eq!(outcome("quiet").as_deref(), Some("reported"), "{i}");
    assert_eq!(outcome("rev").as_deref(), Some("revoked"), "{i}");
    // The notify command was told of both (as JSON lines, no value).
    let t = Instant::now();
    while std::fs::read_to_string(&told).map_or(0, |t| t.lines().count()) < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "leak_notify not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&told).unwrap();
    for line in text.lines() {
        let inc: Value = serde_json::from_str(line).unwrap();
        assert!(["reported", "revoked"].contains(&inc["outcome"].as_str().unwrap()));
        assert!(
            !line.contains("fake-quiet-") && !line.contains("fake-rev-"),
            "{line}"
        );
    }
    assert!(!count.exists(), "a hook ran");
    let list = v.json(&["vault", "list"]);
    for s in list["data"]["contexts"][0]["secrets"].as_array().unwrap() {
        assert_eq!(s["current_version"], 1, "{s}");
    }
}

/// The daemon killed (SIGKILL) while leak events arrive: after a restart every event is
/// handled, and every leaked secret has exactly one new version.
#[test]
fn leak_events_survive_a_killed_daemon_and_rotate_each_secret_once() {
    let spool = tempfile::tempdir().unwrap();
    let v = Vault::with_config(&format!("leak_spool = \"{}\"\n", spool.path().display()));
    let names: Vec<String> = (0..6).map(|i| format!("k{i}")).collect();
    for n in &names {
        v.add(
            n,
            &fake_value(n),
            &[
                "--rotate-via",
                "sleep 0.2; printf fake-rotated-value-%s $$",
                "--rotate-shell",
                "--on-leak",
                "rotate",
            ],
        );
    }
    // Ten events per secret, written while the daemon works through them.
    let dir = spool.path().to_path_buf();
    let writer = {
        let names = names.clone();
        std::thread::spawn(move || {
            for round in 0..10 {
                for n in &names {
                    spool_event(&dir, &format!("{round:03}-{n}.json"), n, 1);
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(350));
    let pid = v.daemon_pid().expect("daemon running");
    // SAFETY: killing the test's own daemon.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    writer.join().unwrap();
    // Restarted (on the next command) and unlocked by the human: it finishes the work.
    std::thread::sleep(Duration::from_millis(300));
    v.unlock();
    wait_spool_empty(spool.path(), 30);
    let list = v.json(&["vault", "list"]);
    for s in list["data"]["contexts"][0]["secrets"].as_array().unwrap() {
        assert_eq!(s["current_version"], 2, "rotated exactly once: {s}");
    }
    v.ok(&["vault", "audit", "verify"]);
}

/// The same stored value sent 1,000 times through a real rsyslogd with guard as its
/// fail-closed filter: every copy is redacted in the output file, and the secret is rotated
/// once.
#[test]
fn a_value_leaked_a_thousand_times_through_rsyslog_is_rotated_once() {
    use crate::redact::{rsyslogd_present, syslog_line, Rsyslogd};
    if !rsyslogd_present() {
        return;
    }
    let spool = tempfile::tempdir().unwrap();
    let v = Vault::with_config(&format!("leak_spool = \"{}\"\n", spool.path().display()));
    let count = v.work.join("hook-runs");
    let hook = format!(
        "echo run >> {}; printf fake-rotated-value-%s $$",
        count.display()
    );
    let value = fake_value("syslogged");
    v.add(
        "tok",
        &value,
        &[
            "--rotate-via",
            &hook,
            "--rotate-shell",
            "--on-leak",
            "rotate",
        ],
    );
    let fp = v.work.join("vault.fp");
    v.ok(&["vault", "fingerprints", "--file", fp.to_str().unwrap()]);
    let mut rs = Rsyslogd::start_with(
        "",
        &format!(
            "--fingerprints {} --spool {}",
            fp.display(),
            spool.path().display()
        ),
    );
    let mut s = rs.connect();
    let mut payload = Vec::new();
    for i in 0..1000 {
        payload.extend(syslog_line(&format!("line-{i:04} token={value} end")));
    }
    s.write_all(&payload).unwrap();
    s.flush().unwrap();
    rs.wait_for(&["line-0000 ", "line-0999 "]);
    let out = String::from_utf8_lossy(&rs.read("out.log")).into_owned();
    assert!(!out.contains(&value), "{}", rs.diagnostics());
    // (Labelled by the stored secret or by the rule that also matched the assignment.)
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("token=[REDACTED:"))
            .count(),
        1000,
        "{}",
        rs.diagnostics()
    );
    let t = Instant::now();
    loop {
        let i = v.json(&["vault", "incidents"]);
        let done = i["data"]["incidents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["outcome"] == "rotated"));
        if done && std::fs::read_dir(spool.path()).unwrap().count() == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "not rotated: {i}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1);
    let list = v.json(&["vault", "list"]);
    assert_eq!(
        list["data"]["contexts"][0]["secrets"][0]["current_version"],
        2
    );
}

/// Adds `name` with leak policy `rotate` and a rotation hook that appends a line to the returned
/// file each time it runs (and prints a fresh fake value); `extra` goes to `guard vault add`.
pub(crate) fn add_rotating(v: &Vault, name: &str, value: &str, extra: &[&str]) -> PathBuf {
    let count = v.work.join(format!("hook-runs-{name}"));
    let hook = format!(
        "echo run >> {}; printf fake-rotated-value-%s $$",
        count.display()
    );
    let mut args = vec![
        "--rotate-via",
        &hook,
        "--rotate-shell",
        "--on-leak",
        "rotate",
    ];
    args.extend_from_slice(extra);
    v.add(name, value, &args);
    count
}

/// Every incident the daemon recorded.
pub(crate) fn incidents(v: &Vault) -> Vec<Value> {
    v.json(&["vault", "incidents"])["data"]["incidents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits (up to `secs`) for an incident with `outcome`, and returns it.
pub(crate) fn wait_incident(v: &Vault, outcome: &str, secs: u64) -> Value {
    let t = Instant::now();
    loop {
        if let Some(i) = incidents(v).into_iter().find(|x| x["outcome"] == outcome) {
            return i;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "no {outcome} incident: {:?}",
            incidents(v)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a leak event for `secret` version `version` into the spool `dir` as `file`, the way
/// guard does (a temp file, then a rename).
pub(crate) fn spool_event(dir: &Path, file: &str, secret: &str, version: u32) {
    let ev = json!({"v": 1, "secret": secret, "version": version, "encoding": "raw",
                    "source": "test", "offset": 0, "at": 0});
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, ev.to_string()).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// Waits (up to `secs`) until the daemon has taken every event out of the spool `dir`.
pub(crate) fn wait_spool_empty(dir: &Path, secs: u64) {
    let t = Instant::now();
    while std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "events left in the spool"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A vault with two secrets added (the daemon stopped when `stop`), its audit log's path and
/// text.
fn audited_vault(stop: bool) -> (Vault, PathBuf, String) {
    let v = Vault::new();
    v.add("one", &fake_value("a1"), &[]);
    v.add("two", &fake_value("a2"), &[]);
    if stop {
        v.ok(&["vault", "daemon", "--stop"]);
    }
    let path = v.dir.join("audit.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    (v, path, text)
}

/// A stored value staged for commit: the pre-commit hook (reading the fingerprints the daemon
/// publishes) blocks the commit, and its leak event gets the secret rotated — also when the value
/// is staged base64-encoded.
#[test]
fn staging_a_stored_value_blocks_the_commit_and_rotates_it() {
    let v = Vault::new();
    let old = fake_value("staged");
    let count = add_rotating(&v, "tok", &old, &[]);
    assert!(v.dir.join("fingerprints.fp").exists());
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(args)
            .current_dir(&v.work)
            .env("GIT_CONFIG_GLOBAL", crate::empty_git_config())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GUARD_VAULT_DIR", &v.dir)
            .env("XDG_STATE_HOME", v.dir.join("state"))
            .env(
                "GUARD_CACHE_DIR",
                std::env::var_os("GUARD_CACHE_DIR").unwrap(),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
        o
    };
    assert!(git(&["init", "-q"]).status.success());
    git(&["config", "user.email", "dev@example.invalid"]);
    git(&["config", "user.name", "Dev"]);
    let o = v.run(&["hook", "install"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&old)
    };
    std::fs::write(v.work.join("notes.txt"), "nothing here\n").unwrap();
    std::fs::write(
        v.work.join("deploy.env"),
        format!("# deploy settings\nREGION=eu-west-1\nAPP_CREDENTIAL_B64={b64}\n"),
    )
    .unwrap();
    assert!(git(&["add", "notes.txt", "deploy.env"]).status.success());
    let o = git(&["commit", "-q", "-m", "deploy settings"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "the commit went through: {err}");
    // git shows a hook's stdout on its stderr.
    assert!(
        err.contains("vault.stored_value") && err.contains("deploy.env (staged):3:"),
        "{err}"
    );
    assert!(err.contains("commit blocked"), "{err}");
    for text in [stdout(&o), err] {
        assert!(!text.contains(&old) && !text.contains(&b64), "{text}");
    }
    assert!(!git(&["rev-parse", "-q", "--verify", "HEAD"])
        .status
        .success());
    let rotated = wait_incident(&v, "rotated", 20);
    assert_eq!(rotated["version"], 1);
    assert!(rotated["encoding"].as_str().unwrap().starts_with("base64"));
    assert!(rotated["source"]
        .as_str()
        .unwrap()
        .starts_with("hook:pre-commit:deploy.env"));
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1);
    assert_ne!(v.print(&["tok"]), old);
    // The file without the value commits.
    assert!(git(&["rm", "-q", "--cached", "deploy.env"])
        .status
        .success());
    let o = git(&["commit", "-q", "-m", "notes"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Leases are persisted with the command holding them: a daemon killed while `guard exec` runs a
/// command leaves that command running with the value; the next daemon recovers the lease
/// (revoked: its connection died with the old daemon), audits it and stops the command.
#[test]
fn a_restarted_daemon_revokes_recovered_leases_and_stops_their_commands() {
    let v = Vault::new();
    let value = fake_value("restart");
    v.add("tok", &value, &[]);
    v.project("[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    let pidfile = v.work.join("cmd.pid");
    let script = format!("echo $$ > {}; sleep 60; echo $TOK", pidfile.display());
    v.grant(&["tok"], &["sh", "-c", &script]);
    let mut child = v
        .agent_prog(guard_bin(), &["exec", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    v.wait_status_for("a running command", Duration::from_secs(60), |s| {
        s["active_leases"] == 1 && s["running_commands"] == 1
    });
    let persisted = std::fs::read_to_string(v.dir.join("run/leases.json")).unwrap();
    assert!(persisted.contains("\"holder\":{") && !persisted.contains(&value));
    let t = Instant::now();
    let cmd: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no pid file");
        std::thread::sleep(Duration::from_millis(20));
    };
    let daemon = v.daemon_pid().unwrap();
    // SAFETY: killing the test's own daemon.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    while running(daemon) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    assert!(running(cmd), "the command should outlive a killed daemon");
    // Any command starts the next daemon.
    assert_eq!(v.status()["active_leases"], 0);
    let t = Instant::now();
    while running(cmd) {
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "the orphaned command still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(v.audit_text().contains("\"outcome\":\"daemon-restart\""));
    v.ok(&["vault", "audit", "verify"]);
    // Recovered once: a second restart finds nothing to stop.
    v.ok(&["vault", "daemon", "--stop"]);
    assert_eq!(v.status()["active_leases"], 0);
    assert_eq!(v.audit_text().matches("daemon-restart").count(), 1);
}

/// Whether `pid` runs (a zombie does not: nobody may reap an orphan here).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s[s.rfind(')')? + 1..].trim_start().starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// Rebuilds the audit chain the way a same-user agent can, without the vault key: drops record
/// `drop`, renumbers, rehashes every `prev` and writes a head that matches — keeping the old
/// seal words (`keep_seal`) or leaving them out.
fn forge_audit_chain(v: &Vault, drop: usize, keep_seal: bool) {
    use sha2::Digest;
    let path = v.dir.join("audit.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut prev = "0".repeat(64);
    let mut out = String::new();
    let mut n = 0u64;
    for (i, line) in text.lines().enumerate() {
        if i == drop {
            continue;
        }
        let mut rec: Value = serde_json::from_str(line).unwrap();
        rec["seq"] = json!(n);
        rec["prev"] = json!(prev);
        let line = serde_json::to_string(&rec).unwrap();
        prev = hex::encode(sha2::Sha256::digest(line.as_bytes()));
        out.push_str(&line);
        out.push('\n');
        n += 1;
    }
    std::fs::write(&path, out).unwrap();
    let old_head = std::fs::read_to_string(v.dir.join("audit.head")).unwrap();
    let seal: Vec<&str> = old_head.split_whitespace().skip(2).collect();
    assert_eq!(
        seal.first(),
        Some(&"seal"),
        "the unlocked daemon sealed the head"
    );
    let head = if keep_seal {
        format!("{n} {prev} {}\n", seal.join(" "))
    } else {
        format!("{n} {prev}\n")
    };
    std::fs::write(v.dir.join("audit.head"), head).unwrap();
}

/// The chain rebuilt without the vault key passes the keyless check (`audit verify` while
/// locked) but not its seal: the daemon will not unlock on it, with the seal stripped or kept,
/// until a human acknowledges the break; then it seals the new chain and works again.
#[test]
fn an_audit_chain_rebuilt_without_the_vault_key_keeps_the_vault_locked() {
    for keep_seal in [false, true] {
        let (v, _, _) = audited_vault(true);
        forge_audit_chain(&v, 3, keep_seal);
        // Keyless, the forgery is consistent: the daemon starts, locked.
        let r = v.run(&["vault", "audit", "verify"]);
        assert!(r.status.success(), "{}", stderr(&r));
        assert!(stdout(&r).contains("seal not checked"), "{}", stdout(&r));
        let r = v.human(&["vault", "unlock"], &[(PASS_PROMPT, PASS)]);
        assert!(!r.status.success(), "unlocked on a forged chain");
        let want = if keep_seal {
            "does not match its seal"
        } else {
            "seal is missing"
        };
        assert!(r.stderr.contains(want), "{}", r.stderr);
        assert_eq!(v.status()["unlocked"], false);
        // A human acknowledges it; the new chain is sealed and verifies with the keys.
        v.ok(&["vault", "daemon", "--stop"]);
        let r = v.human_ok(&["vault", "audit", "acknowledge"], &[(PASS_PROMPT, PASS)]);
        assert!(r.stdout.contains("audit.broken-"), "{}", r.stdout);
        v.unlock();
        let out = v.ok(&["vault", "audit", "verify"]);
        assert!(out.contains("seal verified"), "{out}");
        assert!(v.ok(&["vault", "list"]).contains("two"));
    }
}
