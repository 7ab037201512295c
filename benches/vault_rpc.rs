//! JSON-RPC throughput of the vault daemon with 100 concurrent clients (one persistent
//! connection each), for BENCHMARKS.md. Two workloads: `ping` (framing + dispatch only) and
//! `status` (state lock, lease table, contexts directory). There is no value-returning request to
//! measure any more (no `resolve`): the use path is `guard exec`, timed by `scripts/bench-vault`.
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

fn run(sock: &std::path::Path, secs: f64, status: bool) -> f64 {
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
                    let method = if status { "status" } else { "ping" };
                    let v = call(&mut r, &mut w, method, json!({}));
                    assert!(v["result"]["ok"] == true);
                    n += 1;
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
    let g = |args: &[&str]| {
        let ok = Command::new(bin)
            .args(args)
            .env("GUARD_VAULT_DIR", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "{args:?}");
    };
    // No vault needed to serve these two (init would need a passphrase on a terminal).
    g(&["vault", "daemon", "--detach"]);
    let sock = dir.join("run/daemon.sock");
    while !sock.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ping = run(&sock, 3.0, false);
    let status = run(&sock, 3.0, true);
    println!("vault_rpc ping, {CLIENTS} clients: {ping:.0} requests/s");
    println!("vault_rpc status, {CLIENTS} clients: {status:.0} requests/s");
    g(&["vault", "daemon", "--stop"]);
}
