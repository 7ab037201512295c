//! Integration tests of the vault: the real `guard` binary, a real daemon per test (temp vault
//! dir, stopped by a Drop guard), the real `age` CLI for interop.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn guard_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("guard")
}

/// A fake value generated per test: recognisable in a grep, obviously not a real credential.
fn fake_value(tag: &str) -> String {
    let mut b = [0u8; 8];
    guard::vault::fill_random(&mut b).unwrap();
    format!("fake-{tag}-{}", hex::encode(b))
}

struct Vault {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    work: PathBuf,
}

impl Vault {
    fn new() -> Self {
        Self::with_config("")
    }
    fn with_config(config: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vault");
        let work = tmp.path().join("project");
        std::fs::create_dir_all(&work).unwrap();
        let v = Self {
            _tmp: tmp,
            dir,
            work,
        };
        v.ok(&["vault", "init"]);
        if !config.is_empty() {
            std::fs::write(v.dir.join("config.toml"), config).unwrap();
        }
        v
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(guard_bin());
        c.args(args)
            .current_dir(&self.work)
            .env("GUARD_VAULT_DIR", &self.dir)
            .env("GUARD_NO_TTY", "1")
            .env_remove("GUARD_NO_AUTOSTART")
            .stdin(Stdio::null());
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
    fn add(&self, name: &str, value: &str, extra: &[&str]) {
        let mut args = vec!["vault", "add", name];
        args.extend_from_slice(extra);
        let mut c = self.cmd(&args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{value}\n").as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "add failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    fn project(&self, toml: &str) {
        std::fs::create_dir_all(self.work.join(".guard")).unwrap();
        std::fs::write(self.work.join(".guard/secrets.toml"), toml).unwrap();
    }
    fn client(&self) -> String {
        self.work.display().to_string()
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("run/daemon.sock")
    }
    fn rpc(&self, method: &str, params: Value) -> Value {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        rpc_on(&mut s, method, params)
    }
    fn status(&self) -> Value {
        self.json(&["vault", "status"])["data"].clone()
    }
    fn audit_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("audit.jsonl")).unwrap_or_default()
    }
    fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("run/daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn age_decrypt(v: &Vault, ctx: &str) -> String {
    let o = Command::new("age")
        .args(["-d", "-i"])
        .arg(v.dir.join(format!("contexts/{ctx}/identity.txt")))
        .arg(v.dir.join(format!("contexts/{ctx}/store.age")))
        .output()
        .expect("the age CLI should be installed (apt-get install age)");
    assert!(o.status.success(), "age -d failed: {}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn store_interops_with_the_age_cli_both_ways() {
    let v = Vault::new();
    let val = fake_value("interop");
    v.add("api_token", &val, &[]);
    // guard → age
    let plain: Value = serde_json::from_str(&age_decrypt(&v, "default")).unwrap();
    assert_eq!(
        plain["secrets"]["api_token"]["versions"][0]["value"],
        val.as_str()
    );
    // age → guard: a store written by hand and encrypted by the CLI loads
    v.ok(&["vault", "init", "--context", "handmade"]);
    let id = v.dir.join("contexts/handmade/identity.txt");
    let pubkey = Command::new("age-keygen")
        .arg("-y")
        .arg(&id)
        .output()
        .unwrap();
    let pubkey = String::from_utf8(pubkey.stdout).unwrap();
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
    v.ok(&[
        "vault",
        "grant",
        "hand_tok",
        "--context",
        "handmade",
        "--client",
        "t",
        "--print",
    ]);
    let printed = v.ok(&[
        "vault",
        "lease",
        "hand_tok",
        "--context",
        "handmade",
        "--client-id",
        "t",
        "--print",
    ]);
    assert_eq!(printed, hand);
}

#[test]
fn exec_injects_masks_revokes_and_propagates_the_exit_code() {
    let v = Vault::new();
    let (a, b) = (fake_value("alpha"), fake_value("beta"));
    v.add("alpha", &a, &[]);
    v.add("beta", &b, &[]);
    v.project("[[secret]]\nname = \"alpha\"\nenv = \"ALPHA\"\n[[secret]]\nname = \"beta\"\nenv = \"BETA_TOKEN\"\nttl = \"5m\"\n");
    v.ok(&["vault", "grant", "alpha", "--client", &v.client()]);
    v.ok(&["vault", "grant", "beta", "--client", &v.client()]);
    let envfile = v.work.join("seen-env");
    // Values printed whole, on stderr, and split across two writes with a pause between them.
    let script = format!(
        "echo \"a=$ALPHA b=$BETA_TOKEN\"; echo \"err $BETA_TOKEN\" >&2; printf '%.9s' \"$ALPHA\"; sleep 0.3; printf '%s\\n' \"${{ALPHA#?????????}}\"; printf '%s' \"$ALPHA\" > {}; exit 7",
        envfile.display()
    );
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
    // agent-secrets' .secrets.json works too
    std::fs::remove_dir_all(v.work.join(".guard")).unwrap();
    std::fs::write(
        v.work.join(".secrets.json"),
        r#"{"secrets":[{"name":"alpha","env_var":"GH"}],"client_id":"my-project"}"#,
    )
    .unwrap();
    v.ok(&["vault", "grant", "alpha", "--client", "my-project"]);
    let o = v.run(&["exec", "--", "sh", "-c", "echo $GH"]);
    assert_eq!(stdout(&o), "[REDACTED:alpha]\n");
}

#[test]
fn contexts_are_isolated() {
    let v = Vault::new();
    v.ok(&["vault", "init", "--context", "dev"]);
    v.ok(&["vault", "init", "--context", "prod"]);
    let (dev, prod) = (fake_value("dev"), fake_value("prod"));
    v.add("tok", &dev, &["--context", "dev"]);
    v.add("tok", &prod, &["--context", "prod"]);
    v.add("prod_only", &fake_value("p"), &["--context", "prod"]);
    v.project("context = \"dev\"\n[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    v.ok(&[
        "vault",
        "grant",
        "tok",
        "--context",
        "dev",
        "--client",
        &v.client(),
    ]);
    let f = v.work.join("seen");
    let o = v.run(&[
        "exec",
        "--",
        "sh",
        "-c",
        &format!("printf %s \"$TOK\" > {}", f.display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), dev);
    // a dev lease cannot name a prod-only secret, and a dev grant is no prod grant
    let e = v.rpc(
        "lease",
        json!({"context": "dev", "name": "prod_only", "client": "c"}),
    );
    assert_eq!(e["error"]["code"], -32002);
    let r = v.rpc(
        "lease",
        json!({"context": "prod", "name": "tok", "client": v.client()}),
    );
    assert_eq!(r["result"]["data"]["status"], "approval_required");
    // the dev identity cannot decrypt the prod store
    let o = Command::new("age")
        .args(["-d", "-i"])
        .arg(v.dir.join("contexts/dev/identity.txt"))
        .arg(v.dir.join("contexts/prod/store.age"))
        .output()
        .unwrap();
    assert!(!o.status.success());
}

#[test]
fn unapproved_use_is_denied_after_the_timeout_with_a_grant_hint() {
    let v = Vault::with_config("approval_timeout = \"300ms\"\n");
    v.add("tok", &fake_value("deny"), &[]);
    v.project("[[secret]]\nname = \"tok\"\n");
    let t = Instant::now();
    let o = v.run(&["exec", "--", "true"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(5));
    let err = stderr(&o);
    assert!(err.contains("guard vault grant tok --client"), "{err}");
    assert!(v.audit_text().contains("timeout-denied"));
    // lease --print is its own scope: approving use does not approve printing
    v.ok(&["vault", "grant", "tok", "--client", "agent"]);
    let o = v.run(&["vault", "lease", "tok", "--client-id", "agent", "--print"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    let id = v.ok(&["vault", "lease", "tok", "--client-id", "agent"]);
    assert!(id.starts_with("lease_"), "{id}");
}

#[test]
fn approve_command_unblocks_a_waiting_exec_and_is_remembered() {
    let v = Vault::with_config("approval_timeout = \"20s\"\n");
    v.add("tok", &fake_value("approve"), &[]);
    v.project("[[secret]]\nname = \"tok\"\n");
    let child = v
        .cmd(&["exec", "--", "sh", "-c", "echo ran $TOK"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let req = loop {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no pending request appeared"
        );
        if v.socket().exists() {
            let p = v.json(&["vault", "pending"]);
            if let Some(r) = p["data"]["pending"][0]["request"].as_str() {
                break r.to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    v.ok(&["vault", "approve", &req]);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "ran [REDACTED:tok]\n");
    // remembered: no approval the second time
    let o = v.run(&["exec", "--", "true"]);
    assert!(o.status.success());
    assert!(!stderr(&o).contains("approval required"));
    // a denial is remembered too
    let e = v.rpc("lease", json!({"name": "tok", "client": "other"}));
    let req = e["result"]["data"]["request"].as_str().unwrap().to_string();
    v.ok(&["vault", "approve", &req, "--deny"]);
    let e = v.rpc("lease", json!({"name": "tok", "client": "other"}));
    assert_eq!(e["error"]["code"], -32001);
    assert!(v.audit_text().contains("\"outcome\":\"denied\""));
}

#[test]
fn revoked_lease_resolves_nothing() {
    let v = Vault::new();
    v.add("tok", &fake_value("rev"), &[]);
    v.ok(&["vault", "grant", "tok", "--client", "c"]);
    let id = v.ok(&["vault", "lease", "tok", "--client-id", "c", "--ttl", "10m"]);
    let id = id.trim();
    let r = v.rpc("resolve", json!({"leases": [id]}));
    assert!(r["result"]["data"]["values"][0]["value"].is_string());
    v.ok(&["vault", "revoke", id]);
    let r = v.rpc("resolve", json!({"leases": [id]}));
    assert_eq!(r["error"]["code"], -32005, "{r}");
    let o = v.run(&["vault", "lease", "tok", "--client-id", "c", "--ttl", "25h"]);
    assert_eq!(o.status.code(), Some(2), "ttl above the 24h max is refused");
    v.ok(&["vault", "lease", "tok", "--client-id", "c"]);
    v.ok(&["vault", "revoke", "--all"]);
    assert_eq!(v.status()["active_leases"], 0);
}

#[test]
fn audit_verify_detects_tampering_and_a_failed_audit_write_refuses_the_operation() {
    let v = Vault::new();
    v.add("one", &fake_value("a1"), &[]);
    v.add("two", &fake_value("a2"), &[]);
    v.ok(&["vault", "audit", "verify"]);
    let path = v.dir.join("audit.jsonl");
    let orig = std::fs::read_to_string(&path).unwrap();
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
    let v = Vault::with_config("max_frame_bytes = 4096\nhandshake_timeout = \"300ms\"\n");
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
    // handshake timeout: a silent client is dropped
    let s = UnixStream::connect(v.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut buf = String::new();
    BufReader::new(s).read_to_string(&mut buf).unwrap();
    assert!(buf.contains("-32006"), "{buf}");
    assert!(t.elapsed() < Duration::from_secs(3));
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
    let v = Vault::new();
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
fn kill_9_during_adds_never_corrupts_the_store() {
    let v = Vault::new();
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
    let sock = v.socket();
    let adder = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let Ok(mut s) = UnixStream::connect(&sock) else {
            return acked;
        };
        for i in 0..100_000 {
            let name = format!("k{i}");
            let mut f = serde_json::to_vec(&json!({"jsonrpc":"2.0","id":i,"method":"add","params":{"name": name, "value": format!("fake-v{i}")}})).unwrap();
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
    // the autostarted daemon loads the store again
    assert!(v.ok(&["vault", "list"]).contains("k0"));
}

#[test]
fn heartbeat_failure_revokes_and_rotates_within_the_interval() {
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
    v.ok(&["vault", "grant", "tok", "--client", "c"]);
    v.ok(&["vault", "lease", "tok", "--client-id", "c"]);
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
    v.ok(&["vault", "rotate", "tok"]);
    v.ok(&["vault", "grant", "tok", "--client", "c", "--print"]);
    let new = v.ok(&["vault", "lease", "tok", "--client-id", "c", "--print"]);
    assert_eq!(new, "fake-new-$HOME", "argv, no shell expansion");
    let v1 = v.ok(&[
        "vault",
        "lease",
        "tok",
        "--client-id",
        "c",
        "--print",
        "--version-id",
        "1",
    ]);
    assert_eq!(v1, old, "old version readable by id");
    v.add("slow", &fake_value("slow"), &["--rotate-via", "sleep 5"]);
    let t = Instant::now();
    let o = v.run(&["vault", "rotate", "slow"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(3));
    v.add(
        "sh",
        &fake_value("sh"),
        &["--rotate-via", "printf fake-%s $((40+2))", "--rotate-shell"],
    );
    v.ok(&["vault", "rotate", "sh"]);
    v.ok(&["vault", "grant", "sh", "--client", "c", "--print"]);
    assert_eq!(
        v.ok(&["vault", "lease", "sh", "--client-id", "c", "--print"]),
        "fake-42"
    );
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
        "lease",
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
fn killswitch_revokes_rotates_and_wipes() {
    let v = Vault::new();
    v.add(
        "tok",
        &fake_value("ks"),
        &["--rotate-via", "printf %s fake-after-kill"],
    );
    v.ok(&["vault", "grant", "tok", "--client", "c"]);
    v.ok(&["vault", "lease", "tok", "--client-id", "c"]);
    let r = v.json(&["vault", "killswitch", "--rotate"]);
    assert_eq!(r["data"]["revoked"], 1);
    assert_eq!(r["data"]["rotated"][0]["version"], 2);
    v.json(&["vault", "killswitch", "--wipe"]);
    assert!(!v.dir.join("contexts/default/store.age").exists());
    assert!(!v.dir.join("contexts/default/identity.txt").exists());
}

/// After an end-to-end run with a known value, the value is nowhere: not in any output, log,
/// audit record, approvals file, or (in plaintext) in the store.
#[test]
fn no_value_in_any_output_log_or_audit() {
    let v = Vault::with_config("approval_timeout = \"200ms\"\n");
    let val = fake_value("needle");
    let mut outputs = String::new();
    let mut run = |args: &[&str]| {
        let o = v.run(args);
        outputs.push_str(&stdout(&o));
        outputs.push_str(&stderr(&o));
    };
    v.add(
        "tok",
        &val,
        &["--rotate-via", "printf %s fake-rotated-needle"],
    );
    v.project("[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    run(&["exec", "--", "sh", "-c", "echo $TOK"]); // denied (no grant)
    run(&["exec", "--json", "--", "true"]);
    run(&["vault", "grant", "tok", "--client", &v.client()]);
    run(&["exec", "--", "sh", "-c", "echo $TOK; echo $TOK >&2; exit 3"]);
    run(&[
        "exec",
        "--",
        "sh",
        "-c",
        "printf '%s' \"$TOK\" | base64 >/dev/null; echo \"$TOK\" | rev",
    ]);
    run(&["exec", "--", "/nonexistent/cmd"]);
    run(&["vault", "list"]);
    run(&["vault", "list", "--json"]);
    run(&["vault", "status", "--json"]);
    run(&["vault", "lease", "tok", "--client-id", "x"]);
    run(&["vault", "lease", "tok", "--client-id", "x", "--print"]);
    run(&["vault", "rotate", "tok"]);
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
enum PtyStdio<'a> {
    /// stdin is a pipe fed these bytes (then closed), stdout/stderr are captured pipes.
    Pipes(&'a [u8]),
    /// stdin, stdout and stderr are all the terminal, as in an interactive shell.
    Tty,
}

struct PtyRun {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    /// Everything the terminal displayed (prompts, echo of typed input).
    tty: String,
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

/// Audit records with this op and outcome.
fn audit_count(v: &Vault, op: &str, outcome: &str) -> usize {
    v.audit_text()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["op"] == op && r["outcome"] == outcome)
        .count()
}

const TTY_QUESTION: &str = "guard: allow client";

/// A vault with one secret `tok` wired to `$TOK` in the project, and the daemon already running
/// (started without the pty, so nothing but `guard` itself ever holds the test terminal).
fn tty_vault(tag: &str) -> (Vault, String) {
    let v = Vault::new();
    let val = fake_value(tag);
    v.add("tok", &val, &[]);
    v.project("[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    v.ok(&["vault", "daemon", "--detach"]);
    (v, val)
}

#[test]
fn tty_yes_approves_exec_injects_and_is_remembered_and_audited() {
    let (v, val) = tty_vault("ttyyes");
    let seen = v.work.join("seen");
    let script = format!("echo ran $TOK; printf %s \"$TOK\" > {}", seen.display());
    let r = run_on_pty(
        v.cmd(&["exec", "--", "sh", "-c", &script]),
        PtyStdio::Pipes(b""),
        &[("[y/N] ", "y\n")],
    );
    assert!(r.status.success(), "{} / tty {:?}", r.stderr, r.tty);
    assert!(
        r.tty.contains(&format!(
            "{TTY_QUESTION} \"{}\" to use secret \"tok\" (context \"default\")? [y/N]",
            v.client()
        )),
        "{:?}",
        r.tty
    );
    assert_eq!(r.stdout, "ran [REDACTED:tok]\n", "the child ran, masked");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), val, "injected");
    assert!(!r.tty.contains(&val) && !r.stderr.contains(&val));
    assert_eq!(audit_count(&v, "approval", "approved"), 1);
    assert_eq!(audit_count(&v, "approval", "denied"), 0);
    // Remembered: the second run, with a terminal but nobody typing, neither asks nor waits.
    std::fs::remove_file(&seen).unwrap();
    let t = Instant::now();
    let r = run_on_pty(
        v.cmd(&["exec", "--", "sh", "-c", &script]),
        PtyStdio::Pipes(b""),
        &[],
    );
    assert!(r.status.success(), "{} / tty {:?}", r.stderr, r.tty);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(!r.tty.contains(TTY_QUESTION), "asked again: {:?}", r.tty);
    assert_eq!(r.stdout, "ran [REDACTED:tok]\n");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), val);
    assert_eq!(
        audit_count(&v, "approval", "approved"),
        1,
        "no new decision"
    );
    assert_eq!(
        audit_count(&v, "access", "ok"),
        2,
        "both runs resolved the value"
    );
    v.ok(&["vault", "audit", "verify"]);
}

#[test]
fn tty_no_denies_exec_even_when_stdin_says_yes_and_is_remembered() {
    let (v, _val) = tty_vault("ttyno");
    let marker = v.work.join("child-ran");
    let script = format!("touch {}; echo leaked $TOK", marker.display());
    // The agent side (stdin) says yes; only the terminal's answer counts.
    let r = run_on_pty(
        v.cmd(&["exec", "--", "sh", "-c", &script]),
        PtyStdio::Pipes(b"y\ny\n"),
        &[("[y/N] ", "n\n")],
    );
    assert_eq!(r.status.code(), Some(1), "{} / tty {:?}", r.stderr, r.tty);
    assert!(!marker.exists(), "the child must not run");
    assert!(r.stdout.is_empty(), "{:?}", r.stdout);
    assert!(r.stderr.contains("denied"), "{}", r.stderr);
    assert_eq!(audit_count(&v, "approval", "denied"), 1);
    assert_eq!(audit_count(&v, "approval", "approved"), 0);
    assert_eq!(audit_count(&v, "access", "ok"), 0, "{}", v.audit_text());
    assert_eq!(v.status()["active_leases"], 0);
    // The denial is remembered: refused at once, no question.
    let r = run_on_pty(
        v.cmd(&["exec", "--", "sh", "-c", &script]),
        PtyStdio::Pipes(b""),
        &[],
    );
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(!r.tty.contains(TTY_QUESTION), "{:?}", r.tty);
    assert!(!marker.exists());
}

#[test]
fn vault_add_prompts_on_the_tty_without_echo() {
    let v = Vault::new();
    v.ok(&["vault", "daemon", "--detach"]);
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
    // What was stored is what was typed (newline cut).
    v.ok(&["vault", "grant", "typed_tok", "--client", "c", "--print"]);
    assert_eq!(
        v.ok(&["vault", "lease", "typed_tok", "--client-id", "c", "--print"]),
        val
    );
}

#[test]
fn tty_prompt_goes_to_the_terminal_not_to_stdout_or_stdin() {
    let (v, val) = tty_vault("ttyout");
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
        &[("[y/N] ", "y\n")],
    );
    assert!(r.status.success(), "{} / tty {:?}", r.stderr, r.tty);
    assert_eq!(r.stdout, "out [REDACTED:tok]\nagent-input\n");
    assert_eq!(r.stderr, "err [REDACTED:tok]\n");
    assert!(r.tty.contains(TTY_QUESTION), "{:?}", r.tty);
    assert!(!r.tty.contains("REDACTED") && !r.tty.contains("agent-input"));
    // The same for `lease --print`: question on the terminal, only the value on stdout.
    let r = run_on_pty(
        v.cmd(&["vault", "lease", "tok", "--client-id", "c", "--print"]),
        PtyStdio::Pipes(b""),
        &[("[y/N] ", "y\n")],
    );
    assert!(r.status.success(), "{} / tty {:?}", r.stderr, r.tty);
    assert!(r.tty.contains("to PRINT secret \"tok\""), "{:?}", r.tty);
    assert_eq!(r.stdout, val);
    assert!(!r.stderr.contains(TTY_QUESTION) && !r.tty.contains(&val));
}
