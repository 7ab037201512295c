//! The human channel: the controlling terminal (`/dev/tty`), never stdin/stdout.
//!
//! Design decision: an agent drives a process's stdin, stdout, arguments and environment, so
//! none of them can carry proof of a human. Questions and passphrases go through `/dev/tty`
//! only, which a process started without a controlling terminal (`setsid … </dev/null`, how
//! agents run commands) cannot open. Passphrases are read with echo off and the terminal is
//! restored on every path; a process about to hold one marks itself non-dumpable first, so
//! another process of the same user cannot ptrace it or read its memory through `/proc`.
//! `GUARD_NO_TTY` can only make guard stricter: it pretends there is no terminal.

use age::secrecy::SecretString;
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use zeroize::Zeroizing;

/// Why a human-only operation could not reach a human.
pub const NO_TTY: &str = "this needs a human: the vault passphrase is read only from the \
controlling terminal (/dev/tty), and this process has none";

fn open_tty() -> std::io::Result<std::fs::File> {
    if std::env::var_os("GUARD_NO_TTY").is_some() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, NO_TTY));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::NotFound, NO_TTY))
}

/// Whether a controlling terminal is available for a question.
pub fn available() -> bool {
    open_tty().is_ok()
}

/// Print a line on the terminal (for what a human must read before answering).
/// Every character a terminal would act on is escaped (see [`crate::vault::command::printable`]):
/// what the human reads cannot be redrawn by the text itself.
pub fn say(text: &str) -> std::io::Result<()> {
    let mut t = open_tty()?;
    writeln!(t, "{}", crate::vault::command::printable(text))?;
    t.flush()
}

/// Ask a yes/no question on the controlling terminal. `None` when there is no terminal.
pub fn ask(question: &str) -> Option<bool> {
    let tty = open_tty().ok()?;
    let mut w = &tty;
    write!(w, "{} [y/N] ", crate::vault::command::printable(question)).ok()?;
    w.flush().ok()?;
    let mut line = String::new();
    std::io::BufReader::new(&tty).read_line(&mut line).ok()?;
    Some(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// Read a line from `/dev/tty` with echo off (termios), restoring the terminal afterwards.
pub fn prompt_no_echo(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    let tty = open_tty()?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it for a valid open fd.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the lifetime of `tty`; `old` is a valid out-pointer.
    if unsafe { libc::tcgetattr(fd, &mut old) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut noecho = old;
    noecho.c_lflag &= !libc::ECHO;
    noecho.c_lflag |= libc::ECHONL;
    // SAFETY: as above; restored below on every path.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &noecho) };
    let r = (|| {
        (&tty).write_all(prompt.as_bytes())?;
        (&tty).flush()?;
        let mut line = Zeroizing::new(String::new());
        std::io::BufReader::new(&tty).read_line(&mut line)?;
        while line.ends_with('\n') || line.ends_with('\r') {
            line.pop();
        }
        Ok(line)
    })();
    // SAFETY: restores the attributes read above on the same fd.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    r
}

/// Read the vault passphrase from the terminal (no echo). The process becomes non-dumpable
/// first. Errors when there is no terminal or nothing was typed.
pub fn passphrase(prompt: &str) -> std::io::Result<SecretString> {
    set_non_dumpable();
    let line = prompt_no_echo(prompt)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no passphrase typed",
        ));
    }
    Ok(SecretString::from(line.to_string()))
}

/// A new passphrase, typed twice. `min_len` characters at least.
pub fn new_passphrase(min_len: usize) -> std::io::Result<SecretString> {
    use age::secrecy::ExposeSecret;
    set_non_dumpable();
    let a = prompt_no_echo("new vault passphrase: ")?;
    if a.chars().count() < min_len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the passphrase must have at least {min_len} characters"),
        ));
    }
    let b = prompt_no_echo("again: ")?;
    if a.as_str() != b.as_str() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the two passphrases differ",
        ));
    }
    let s = SecretString::from(a.to_string());
    debug_assert!(!s.expose_secret().is_empty());
    Ok(s)
}

/// `prctl(PR_SET_DUMPABLE, 0)`: no core dumps, no same-user ptrace attach, `/proc/PID/mem`,
/// `environ` and `fd/` owned by root. Best effort (it cannot fail on Linux for these args).
pub fn set_non_dumpable() {
    // SAFETY: prctl with PR_SET_DUMPABLE takes plain integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Whether this process is currently dumpable (for tests and `status`).
pub fn is_dumpable() -> bool {
    // SAFETY: as above; returns the flag.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 1 }
}

/// `TracerPid` of a process (`None`: this one) from `/proc/PID/status`: 0 when nobody traces it;
/// `None` when it cannot be read.
pub fn tracer_pid(pid: Option<u32>) -> Option<u32> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()
}
