//! JSON-RPC throughput of the vault daemon with 100 concurrent clients (one persistent
//! connection each), for BENCHMARKS.md. Two workloads: `ping` (framing + dispatch only) and a
//! full use cycle `lease` → `resolve` → `revoke` (store decryption and three audit appends).
//! Run with `cargo bench --bench vault_rpc` (or `scripts/bench-vault`).

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENTS: usize = 100;

fn call(r: &mut BufReader<UnixStream>, w: &mut UnixStream, method: &str, params: Value) -> Value {
    let mut f =
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .unwrap();
    f.push(b'\n');
    w.write_all(&f).unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn run(sock: &std::path::Path, secs: f64, cycle: bool) -> f64 {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let sock = sock.to_path_buf();
            let b = barrier.clone();
            std::thread::spawn(move || {
                let mut w = UnixStream::connect(&sock).unwrap();
                let mut r = BufReader::new(w.try_clone().unwrap());
                b.wait();
                let end = Instant::now() + Duration::from_secs_f64(secs);
                let mut n = 0u64;
                while Instant::now() < end {
                    if cycle {
                        let l = call(
                            &mut r,
                            &mut w,
                            "lease",
                            json!({"name": "tok", "client": "bench"}),
                        );
                        let id = l["result"]["data"]["lease"].as_str().unwrap().to_string();
                        let v = call(&mut r, &mut w, "resolve", json!({"leases": [id]}));
                        assert!(v["result"]["ok"] == true);
                        call(&mut r, &mut w, "revoke", json!({"lease": id}));
                        n += 3;
                    } else {
                        call(&mut r, &mut w, "ping", json!({}));
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let t = Instant::now();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    // `cargo test --all-targets` runs harness-less benches too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_guard");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let g = |args: &[&str], input: Option<&str>| {
        let mut c = Command::new(bin);
        c.args(args)
            .env("GUARD_VAULT_DIR", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let mut ch = c.spawn().unwrap();
        if let Some(i) = input {
            ch.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
        }
        drop(ch.stdin.take());
        assert!(ch.wait().unwrap().success(), "{args:?}");
    };
    g(&["vault", "init"], None);
    g(
        &["vault", "add", "tok"],
        Some("fake-bench-value-0123456789"),
    );
    g(&["vault", "grant", "tok", "--client", "bench"], None);
    // `grant` autostarted the daemon; it is stopped with `daemon --stop` below.
    let sock = dir.join("run/daemon.sock");
    while !sock.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ping = run(&sock, 3.0, false);
    let cycle = run(&sock, 3.0, true);
    println!("vault_rpc ping, {CLIENTS} clients: {ping:.0} requests/s");
    println!(
        "vault_rpc lease+resolve+revoke, {CLIENTS} clients: {cycle:.0} requests/s ({:.0} cycles/s)",
        cycle / 3.0
    );
    g(&["vault", "daemon", "--stop"], None);
}
