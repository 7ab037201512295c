//! Rotation hooks: a per-secret command whose stdout becomes the secret's next version.
//!
//! Design decision: the hook is split into argv and executed directly (no shell, so a secret name
//! or a stray `$` cannot become shell syntax) unless the secret was added with `--rotate-shell`;
//! it runs with a timeout and is killed when it expires; stdout (one trailing newline stripped) is
//! the new value, and neither stdout nor stderr is ever logged — a hook's stderr could contain the
//! value. The hook learns which secret it rotates through `GUARD_SECRET_NAME`/`GUARD_CONTEXT`.

use crate::vault::SecretValue;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use zeroize::Zeroizing;

const MAX_OUTPUT: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("secret {name:?} has no rotation hook (add one with --rotate-via)")]
    NoHook { name: String },
    #[error("rotation hook for {name:?} is empty or has unbalanced quotes")]
    BadCommand { name: String },
    #[error("rotation hook for {name:?} could not start: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("rotation hook for {name:?} timed out after {timeout:?} and was killed")]
    Timeout { name: String, timeout: Duration },
    #[error("rotation hook for {name:?} exited with {status}")]
    Failed { name: String, status: String },
    #[error("rotation hook for {name:?} printed no value (or more than 64 KiB, or not UTF-8)")]
    BadOutput { name: String },
}

/// Split a command line into argv: whitespace separates, '…' and "…" quote, \ escapes.
pub fn split_args(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => cur.push(chars.next()?),
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                cur.push(chars.next()?);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        out.push(cur);
    }
    (!out.is_empty()).then_some(out)
}

pub struct Hook<'a> {
    pub context: &'a str,
    pub name: &'a str,
    pub command: &'a str,
    pub shell: bool,
    pub timeout: Duration,
}

/// Run the hook and return the new value.
pub async fn run_hook(h: &Hook<'_>) -> Result<SecretValue, RotateError> {
    let name = h.name.to_string();
    let mut cmd = if h.shell {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(h.command);
        c
    } else {
        let argv = split_args(h.command).ok_or(RotateError::BadCommand { name: name.clone() })?;
        let mut c = tokio::process::Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    cmd.env("GUARD_SECRET_NAME", h.name)
        .env("GUARD_CONTEXT", h.context)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| RotateError::Spawn {
        name: name.clone(),
        source,
    })?;
    let mut stdout = child.stdout.take().expect("stdout should be piped");
    let work = async {
        let mut buf = Zeroizing::new(Vec::new());
        let read = (&mut stdout)
            .take(MAX_OUTPUT + 1)
            .read_to_end(&mut buf)
            .await;
        let status = child.wait().await;
        (read, status, buf)
    };
    let (read, status, mut buf) = match tokio::time::timeout(h.timeout, work).await {
        Ok(r) => r,
        Err(_) => {
            return Err(RotateError::Timeout {
                name,
                timeout: h.timeout,
            })
        }
    };
    let status = status.map_err(|source| RotateError::Spawn {
        name: name.clone(),
        source,
    })?;
    if !status.success() {
        return Err(RotateError::Failed {
            name,
            status: status.to_string(),
        });
    }
    if read.is_err() || buf.len() as u64 > MAX_OUTPUT {
        return Err(RotateError::BadOutput { name });
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.is_empty() {
        return Err(RotateError::BadOutput { name });
    }
    let s = String::from_utf8(std::mem::take(&mut *buf)).map_err(|e| {
        let mut b = e.into_bytes();
        zeroize::Zeroize::zeroize(&mut b);
        RotateError::BadOutput { name: name.clone() }
    })?;
    Ok(SecretValue::new(s))
}

/// Is a secret created at `created` (unix secs) due for rotation under `every` at `now`?
pub fn due(created: u64, every: Duration, now: u64) -> bool {
    now.saturating_sub(created) >= every.as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook<'a>(cmd: &'a str, shell: bool, ms: u64) -> Hook<'a> {
        Hook {
            context: "dev",
            name: "tok",
            command: cmd,
            shell,
            timeout: Duration::from_millis(ms),
        }
    }

    #[test]
    fn split() {
        assert_eq!(
            split_args("a 'b c' \"d\\\"e\" f\\ g").unwrap(),
            ["a", "b c", "d\"e", "f g"]
        );
        assert!(split_args("a 'b").is_none());
        assert!(split_args("   ").is_none());
    }

    #[tokio::test]
    async fn stdout_is_the_new_value_without_shell() {
        let v = run_hook(&hook("printf '%s\\n' 'new $HOME'", false, 5000))
            .await
            .unwrap();
        assert_eq!(v.expose_secret(), "new $HOME", "no shell expansion");
        let v = run_hook(&hook("printf '%s' \"$GUARD_SECRET_NAME\"", true, 5000))
            .await
            .unwrap();
        assert_eq!(v.expose_secret(), "tok", "shell when asked");
    }

    #[tokio::test]
    async fn timeout_kills_and_failures_are_errors() {
        let t = std::time::Instant::now();
        let e = run_hook(&hook("sleep 10", false, 200)).await.unwrap_err();
        assert!(matches!(e, RotateError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(matches!(
            run_hook(&hook("false", false, 5000)).await,
            Err(RotateError::Failed { .. })
        ));
        assert!(matches!(
            run_hook(&hook("true", false, 5000)).await,
            Err(RotateError::BadOutput { .. })
        ));
        assert!(matches!(
            run_hook(&hook("/nonexistent/hook", false, 5000)).await,
            Err(RotateError::Spawn { .. })
        ));
    }

    #[test]
    fn schedule() {
        assert!(!due(1000, Duration::from_secs(100), 1099));
        assert!(due(1000, Duration::from_secs(100), 1100));
    }
}
