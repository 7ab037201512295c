//! Approvals: scopes, and the remembered decisions a human made.
//!
//! Design decisions:
//! - A *scope* is (context, secret, command fingerprint): an approval names what runs
//!   ([`crate::vault::command`]), in which project (the working directory is part of the
//!   fingerprint), for which secret. There is no client id in it: an agent can claim any id.
//! - Only the daemon writes decisions, and only after proof of a human (the vault passphrase,
//!   typed on a terminal, checked by the daemon); a denial needs no proof, since it only reduces
//!   exposure. Every decision is audited first.
//! - `approvals.json` sits in a directory the agent can write, so each entry carries an
//!   HMAC-SHA256 under a key derived from the context's identity ([`crate::vault::keys`]): an
//!   entry an agent adds or edits does not verify and is ignored. (An agent can still delete the
//!   file — that only takes approvals away.)

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// The command fingerprint (hex SHA-256).
    pub command: String,
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
            client: Some(&self.command),
            ..Default::default()
        }
    }

    fn key(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}",
            self.context, self.secret, self.command
        )
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    scope: Scope,
    decision: Decision,
    /// What the human was shown (for reading the file; not part of the MAC'd scope).
    #[serde(default)]
    label: String,
    mac: String,
}

#[derive(Serialize, Deserialize, Default)]
struct FileFormat {
    #[serde(default)]
    format: u32,
    #[serde(default)]
    decisions: Vec<Entry>,
}

fn mac(key: &[u8; 32], scope: &Scope, d: Decision) -> String {
    use hmac::{Hmac, Mac};
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .expect("HMAC should accept any key length");
    m.update(scope.key().as_bytes());
    m.update(&[0x1f, matches!(d, Decision::Allow) as u8]);
    hex::encode(m.finalize().into_bytes())
}

pub struct ApprovalStore {
    path: PathBuf,
    decisions: BTreeMap<String, Entry>,
}

impl ApprovalStore {
    pub fn open(path: PathBuf) -> Result<Self, ApprovalError> {
        let decisions = match std::fs::read(&path) {
            // An unreadable file is treated as empty (fail closed: no approvals), not fatal: an
            // agent that corrupts it must not be able to stop the daemon.
            Ok(b) => serde_json::from_slice::<FileFormat>(&b)
                .map(|f| f.decisions)
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.scope.key(), e))
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

    /// The decision for `scope` if one is remembered *and* its MAC verifies under `key`.
    pub fn get(&self, scope: &Scope, key: &[u8; 32]) -> Option<Decision> {
        let e = self.decisions.get(&scope.key())?;
        let ok = [Decision::Allow, Decision::Deny]
            .into_iter()
            .find(|d| *d == e.decision)
            .filter(|d| {
                let want = mac(key, scope, *d);
                // compare every byte (no early exit on the first difference)
                want.len() == e.mac.len()
                    && want
                        .bytes()
                        .zip(e.mac.bytes())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            });
        ok
    }

    pub fn set(
        &mut self,
        scope: Scope,
        d: Decision,
        label: &str,
        key: &[u8; 32],
    ) -> Result<(), ApprovalError> {
        let entry = Entry {
            mac: mac(key, &scope, d),
            scope: scope.clone(),
            decision: d,
            label: label.to_string(),
        };
        self.decisions.insert(scope.key(), entry);
        self.save()
    }

    fn save(&self) -> Result<(), ApprovalError> {
        let ff = FileFormat {
            format: 2,
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

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn decisions_persist_per_scope_and_forgeries_do_not_verify() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("approvals.json");
        let key = [7u8; 32];
        let s = |cmd: &str| Scope {
            context: "dev".into(),
            secret: "tok".into(),
            command: cmd.into(),
        };
        let mut a = ApprovalStore::open(p.clone()).unwrap();
        a.set(s("aaaa"), Decision::Allow, "./deploy.sh", &key)
            .unwrap();
        a.set(s("bbbb"), Decision::Deny, "./other.sh", &key)
            .unwrap();
        let a = ApprovalStore::open(p.clone()).unwrap();
        assert_eq!(a.get(&s("aaaa"), &key), Some(Decision::Allow));
        assert_eq!(a.get(&s("bbbb"), &key), Some(Decision::Deny));
        assert_eq!(a.get(&s("cccc"), &key), None);
        assert_eq!(a.get(&s("aaaa"), &[8u8; 32]), None, "another vault's key");
        // An agent edits the file: flips the deny to allow, copies an entry to a new command.
        let text = std::fs::read_to_string(&p).unwrap();
        let forged = text
            .replace("\"deny\"", "\"allow\"")
            .replace("\"aaaa\"", "\"cccc\"");
        std::fs::write(&p, forged).unwrap();
        let a = ApprovalStore::open(p.clone()).unwrap();
        assert_eq!(a.get(&s("bbbb"), &key), None, "flipped decision ignored");
        assert_eq!(a.get(&s("cccc"), &key), None, "copied entry ignored");
        std::fs::write(&p, "not json").unwrap();
        assert!(ApprovalStore::open(p).is_ok(), "garbage means no approvals");
    }
}
