//! Short-lived helper commands (leak notifications, revocation hooks): their input written on
//! stdin from a thread of its own (a command that does not read it cannot block the caller),
//! then waited for until a deadline, past which the command is killed.

use std::io::{self, Write};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Feeds `input` to `child`'s piped stdin (then closes it) and waits at most `limit`: its exit
/// status, or `None` when it was killed at the deadline.
pub fn feed_and_wait(
    mut child: Child,
    input: Vec<u8>,
    limit: Duration,
) -> io::Result<Option<ExitStatus>> {
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            // A command that exits without reading its input must cost this write an EPIPE,
            // not the caller its life (the CLI runs with SIGPIPE's default action). SIGPIPE
            // goes to the writing thread: blocked here, it stays pending and dies with it.
            block_sigpipe();
            let _ = stdin.write_all(&input);
        });
    }
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn block_sigpipe() {
    // SAFETY: changes this thread's signal mask only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn input_reaches_the_command_and_the_deadline_kills() {
        let c = Command::new("sh")
            .args(["-c", "read x; test \"$x\" = hello"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let st = feed_and_wait(c, b"hello\n".to_vec(), Duration::from_secs(10)).unwrap();
        assert!(st.unwrap().success());
        // A command that never reads its (large) input and never ends.
        let c = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        let st = feed_and_wait(c, vec![b'x'; 1 << 20], Duration::from_millis(200)).unwrap();
        assert!(st.is_none() && t.elapsed() < Duration::from_secs(5));
    }
}
