//! Line latency of `guard redact` on a pipe: lines written at a fixed rate, each timed from its
//! write to the moment its redacted line is read back.
//!
//!   cargo run --release --example redact_latency -- [GUARD] [--rate N] [--seconds S]
//!       [--fingerprints FP]
//!
//! GUARD defaults to target/release/guard. Every tenth line carries a fake GitHub token (so the
//! redaction path is timed too) and is checked to come back redacted. Prints p50 / p99 / p99.9 /
//! max in milliseconds. A benchmark tool (scripts/bench-redact runs it), not a test.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A fake classic GitHub token with a valid CRC32/base62 tail (generated, never real).
fn ghp(seed: u64) -> String {
    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut body = String::new();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while body.len() < 30 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push(B62[(x % 62) as usize] as char);
    }
    let mut n = crc32fast::hash(body.as_bytes());
    let mut tail = [b'0'; 6];
    for t in tail.iter_mut().rev() {
        *t = B62[(n % 62) as usize];
        n /= 62;
    }
    format!("ghp_{body}{}", String::from_utf8_lossy(&tail))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut guard = "target/release/guard".to_string();
    let (mut rate, mut seconds, mut fp) = (10_000u64, 5u64, None::<String>);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rate" => rate = args.next().and_then(|v| v.parse().ok()).expect("--rate N"),
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds S")
            }
            "--fingerprints" => fp = Some(args.next().expect("--fingerprints FP")),
            _ => guard = a,
        }
    }
    let mut cmd = Command::new(&guard);
    cmd.arg("redact");
    if let Some(fp) = &fp {
        cmd.args(["--fingerprints", fp]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {guard}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let n = (rate * seconds) as usize;
    let start = Instant::now() + Duration::from_millis(300);
    let sent: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..n).map(|_| Default::default()).collect());
    let reader = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            let mut lat = Vec::with_capacity(n);
            let mut unredacted = 0usize;
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("read");
                let now = start.elapsed().as_nanos() as u64;
                let Some(seq) = line
                    .strip_prefix("line ")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|s| s.parse::<usize>().ok())
                else {
                    continue;
                };
                if line.contains("ghp_") {
                    unredacted += 1;
                }
                let t = sent[seq].load(std::sync::atomic::Ordering::Acquire);
                lat.push(now.saturating_sub(t));
            }
            (lat, unredacted)
        })
    };
    // Warm-up: the first line may wait for the engine to load.
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    while Instant::now() < start {
        std::hint::spin_loop();
    }
    for i in 0..n {
        let due = start + interval * i as u32;
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            // Sleep through most of the gap (a real producer does not spin a core away from
            // guard on a 2-core machine); spin only the last 50 µs for an exact write time.
            if due - now > Duration::from_micros(60) {
                std::thread::sleep(due - now - Duration::from_micros(50));
            } else {
                std::hint::spin_loop();
            }
        }
        let line = if i % 10 == 0 {
            format!("line {i} deploy token={} ok\n", ghp(i as u64))
        } else {
            format!("line {i} GET /api/items/{i} 200 {}us\n", i % 997)
        };
        sent[i].store(
            start.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Release,
        );
        stdin.write_all(line.as_bytes()).expect("write");
    }
    drop(stdin);
    let (mut lat, unredacted) = reader.join().expect("reader");
    let status = child.wait().expect("wait");
    assert!(status.success(), "guard redact: {status}");
    assert_eq!(lat.len(), n, "lines lost");
    assert_eq!(unredacted, 0, "a token came back unredacted");
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1e6;
    println!(
        "lines {n} at {rate}/s{}: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        if fp.is_some() { " (fingerprints)" } else { "" },
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0)
    );
}
