//! Approval of first use: scopes, remembered decisions, and the terminal prompt.
//!
//! Design decision: a *scope* is (context, secret, client id, purpose). The first use in a scope
//! needs a decision from a channel the agent does not drive: the controlling terminal
//! (`/dev/tty`, never stdin/stdout, which an agent pipes) or `guard vault approve REQUEST` run by
//! the user; `guard vault grant` decides ahead of time. Decisions are remembered in
//! `approvals.json` and every decision is audited by the daemon. `print` (showing a raw value) is
//! its own purpose, so approving injection never approves disclosure.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("approvals file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Scope {
    pub context: String,
    pub secret: String,
    pub client: String,
    pub purpose: String,
}

impl Scope {
    /// The audit event for a decision about this scope (`request` when it answers one).
    pub fn event<'a>(
        &'a self,
        op: &'a str,
        outcome: &'a str,
        request: Option<&'a str>,
    ) -> crate::vault::audit::Event<'a> {
        crate::vault::audit::Event {
            op,
            outcome,
            request,
            context: Some(&self.context),
            secret: Some(&self.secret),
            client: Some(&self.client),
            purpose: Some(&self.purpose),
            ..Default::default()
        }
    }

    fn key(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.context, self.secret, self.client, self.purpose
        )
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

#[derive(Serialize, Deserialize, Default)]
struct FileFormat {
    decisions: Vec<(Scope, Decision)>,
}

pub struct ApprovalStore {
    path: PathBuf,
    decisions: BTreeMap<String, (Scope, Decision)>,
}

impl ApprovalStore {
    pub fn open(path: PathBuf) -> Result<Self, ApprovalError> {
        let decisions = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<FileFormat>(&b)
                .map_err(|e| ApprovalError::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
                .decisions
                .into_iter()
                .map(|(s, d)| (s.key(), (s, d)))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(ApprovalError::File {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        Ok(Self { path, decisions })
    }

    pub fn get(&self, scope: &Scope) -> Option<Decision> {
        self.decisions.get(&scope.key()).map(|(_, d)| *d)
    }

    pub fn set(&mut self, scope: Scope, d: Decision) -> Result<(), ApprovalError> {
        self.decisions.insert(scope.key(), (scope, d));
        let ff = FileFormat {
            decisions: self.decisions.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&ff).expect("approvals should serialize");
        crate::vault::store::atomic_write(&self.path, &bytes).map_err(|e| ApprovalError::File {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    pub fn forget_all(&mut self) -> Result<(), ApprovalError> {
        self.decisions.clear();
        let _ = std::fs::remove_file(&self.path);
        Ok(())
    }
}

/// Ask a yes/no question on the controlling terminal. `None` when there is no terminal (or
/// `GUARD_NO_TTY` is set, which can only make guard stricter).
pub fn ask_tty(question: &str) -> Option<bool> {
    if std::env::var_os("GUARD_NO_TTY").is_some() {
        return None;
    }
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let mut w = &tty;
    write!(w, "{question} [y/N] ").ok()?;
    w.flush().ok()?;
    let mut line = String::new();
    std::io::BufReader::new(&tty).read_line(&mut line).ok()?;
    Some(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn decisions_persist_per_scope() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("approvals.json");
        let s = |c: &str, purpose: &str| Scope {
            context: "dev".into(),
            secret: "tok".into(),
            client: c.into(),
            purpose: purpose.into(),
        };
        let mut a = ApprovalStore::open(p.clone()).unwrap();
        a.set(s("ci", "use"), Decision::Allow).unwrap();
        a.set(s("bad", "use"), Decision::Deny).unwrap();
        let a = ApprovalStore::open(p).unwrap();
        assert_eq!(a.get(&s("ci", "use")), Some(Decision::Allow));
        assert_eq!(a.get(&s("bad", "use")), Some(Decision::Deny));
        assert_eq!(a.get(&s("ci", "print")), None, "use does not approve print");
        assert_eq!(a.get(&s("other", "use")), None);
    }
}
