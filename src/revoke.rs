//! Provider revocation hooks for secrets guard does not store: when a scan finds, say, a GitHub
//! token, a command the user names for that rule can revoke it at the provider at once.
//!
//! Design decisions:
//! - **Only the user's own file names hooks**: `$GUARD_REVOKE_CONFIG`, else
//!   `$XDG_CONFIG_HOME/guard/revoke.toml` (`~/.config/guard/revoke.toml`). Never a repository's
//!   `guard.toml` or rule files: scanning a cloned repository must not run its commands.
//! - **Only when asked**: `guard scan --revoke` / `guard hook … --revoke`. Without the flag the
//!   file is not even read.
//! - The secret goes to the hook on **stdin**, never in argv or the environment (both are
//!   readable by other processes); `GUARD_RULE`, `GUARD_FINDING_ID`, `GUARD_PATH` and
//!   `GUARD_LINE` say what it is. The hook's own output goes to stderr (stdout is the report),
//!   it runs with a 30 s limit, once per finding id, and its outcome is reported on stderr.
//! - Stored values (`vault.stored_value`) are not for these hooks: the vault's leak response
//!   rotates them.
//!
//! ```toml
//! # ~/.config/guard/revoke.toml: rule id (or a prefix ending in *) = argv
//! [hooks]
//! "github.*" = ["/usr/local/bin/revoke-github-token"]
//! "slack.bot_token" = ["slack-revoke", "--stdin"]
//! ```

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::finding::Finding;

/// How long a hook may run.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("revocation hooks {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    hooks: std::collections::BTreeMap<String, Vec<String>>,
}

/// The user's hooks, by rule id or `prefix*`.
pub struct RevokeHooks {
    hooks: Vec<(String, Vec<String>)>,
    pub path: PathBuf,
}

impl RevokeHooks {
    /// Where the user's hooks are read from.
    pub fn user_file() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("GUARD_REVOKE_CONFIG").filter(|p| !p.is_empty()) {
            return Some(p.into());
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("guard/revoke.toml"))
    }

    /// The user's hooks; a missing file is an error (the user asked for `--revoke`).
    pub fn load() -> Result<RevokeHooks, RevokeError> {
        let path = Self::user_file().ok_or_else(|| RevokeError::File {
            path: "~/.config/guard/revoke.toml".into(),
            reason: "no HOME to find it in".into(),
        })?;
        let bad = |reason: String| RevokeError::File {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let f: File = toml::from_str(&text).map_err(|e| bad(e.message().to_string()))?;
        let mut hooks = Vec::new();
        for (pattern, argv) in f.hooks {
            if argv.is_empty() || argv[0].is_empty() {
                return Err(bad(format!("the hook for {pattern:?} has no command")));
            }
            hooks.push((pattern, argv));
        }
        Ok(RevokeHooks { hooks, path })
    }

    /// The hook for `rule`: an exact id first, else the longest matching prefix.
    pub fn hook_for(&self, rule: &str) -> Option<&[String]> {
        if let Some((_, a)) = self.hooks.iter().find(|(p, _)| p == rule) {
            return Some(a);
        }
        self.hooks
            .iter()
            .filter_map(|(p, a)| {
                let prefix = p.strip_suffix('*')?;
                rule.starts_with(prefix).then_some((prefix.len(), a))
            })
            .max_by_key(|(n, _)| *n)
            .map(|(_, a)| a.as_slice())
    }
}

/// Runs each finding's hook (a [`crate::pipeline::FindingSink`]).
pub struct RevokeSink {
    hooks: RevokeHooks,
    done: HashSet<String>,
    /// Hooks that exited 0, and those that did not.
    pub revoked: u64,
    pub failed: u64,
}

impl RevokeSink {
    pub fn new(hooks: RevokeHooks) -> RevokeSink {
        RevokeSink {
            hooks,
            done: HashSet::new(),
            revoked: 0,
            failed: 0,
        }
    }

    fn run(&self, argv: &[String], f: &Finding) -> io::Result<std::process::ExitStatus> {
        use std::process::{Command, Stdio};
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("GUARD_RULE", &f.rule.0)
            .env("GUARD_FINDING_ID", &f.id.0)
            .env("GUARD_PATH", f.origin.path())
            .env("GUARD_LINE", f.location.line.to_string())
            .stdin(Stdio::piped())
            .stdout(io::stderr())
            .stderr(Stdio::inherit())
            .spawn()?;
        crate::child::feed_and_wait(child, f.secret.expose_secret().to_vec(), TIMEOUT)?
            .ok_or_else(|| io::Error::other(format!("no answer within {} s", TIMEOUT.as_secs())))
    }
}

impl crate::pipeline::FindingSink for RevokeSink {
    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        if f.stored.is_some() {
            return Ok(());
        }
        let Some(argv) = self.hooks.hook_for(&f.rule.0) else {
            return Ok(());
        };
        if !self.done.insert(f.id.0.clone()) {
            return Ok(());
        }
        let at = format!("{}:{}", f.origin, f.location.line);
        match self.run(argv, f) {
            Ok(st) if st.success() => {
                self.revoked += 1;
                eprintln!("guard: revoked the {} at {at} ({})", f.rule, argv[0]);
            }
            Ok(st) => {
                self.failed += 1;
                eprintln!(
                    "guard: revocation hook {} failed for the {} at {at} ({st}); revoke it by hand",
                    argv[0], f.rule
                );
            }
            Err(e) => {
                self.failed += 1;
                eprintln!(
                    "guard: revocation hook {} for the {} at {at}: {e}; revoke it by hand",
                    argv[0], f.rule
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_ids_win_over_the_longest_prefix() {
        let h = RevokeHooks {
            hooks: vec![
                ("github.*".into(), vec!["a".into()]),
                ("github.pat_*".into(), vec!["b".into()]),
                ("github.pat_classic".into(), vec!["c".into()]),
            ],
            path: PathBuf::new(),
        };
        assert_eq!(h.hook_for("github.pat_classic").unwrap()[0], "c");
        assert_eq!(h.hook_for("github.pat_fine_grained").unwrap()[0], "b");
        assert_eq!(h.hook_for("github.oauth").unwrap()[0], "a");
        assert!(h.hook_for("gitlab.pat").is_none());
    }
}
