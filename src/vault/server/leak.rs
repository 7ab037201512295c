//! Leak response: the daemon consumes leak events (spool files written by `guard redact` and
//! the log-shipper adapters — see `crate::redact::spool`) and, per compromised version of a
//! stored secret, exactly once:
//! 1. audits the leak (secret, version, encoding, where — never the value);
//! 2. marks the version compromised in the store (saved before anything else happens);
//! 3. revokes every live lease of the secret;
//! 4. if the version is the current one and the secret has a rotation hook, rotates it: the hook
//!    runs and its output is stored as the next version;
//!
//! (steps 3–4 as the secret's policy says: `rotate`, the default; `revoke-only`; `report-only`,
//! which only audits, marks and records)
//! 5. records the outcome in `incidents.jsonl` (`guard vault incidents`).
//!
//! Exactly once, under concurrency and across crashes: a secret being rotated is skipped (its
//! events wait in the spool for the next pass); an event file is deleted only once its outcome is
//! recorded; and "compromised and still current, with a hook" is exactly the state of a rotation
//! that did not finish — a later pass (after a crash, say) rotates it then. Once rotated, the
//! compromised version is no longer current, so a second event for it is only a duplicate.
//!
//! Events wait in the spool while the vault is locked (the store cannot be opened) — nothing is
//! lost. An event naming a secret this vault does not hold is left alone (another vault of the
//! same user may share the spool), and not looked at again by this daemon.

use super::*;
use crate::redact::spool::{LeakEvent, Spool};
use serde::Serialize;
use std::path::Path;

/// How often the spool directory is looked at.
pub(super) const POLL: Duration = Duration::from_millis(20);

/// One line of `incidents.jsonl`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Incident {
    pub at: u64,
    pub context: String,
    pub secret: String,
    pub version: u32,
    pub encoding: String,
    pub source: String,
    /// `rotated`, `revoked` (no hook, an old version, or policy `revoke-only`), `reported`
    /// (policy `report-only`), `duplicate`, `failed`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub new_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

/// The context and name of a fingerprint id: `name` (the default context) or `context/name`.
pub fn split_id(id: &str) -> (String, String) {
    match id.split_once('/') {
        Some((c, n)) => (c.to_string(), n.to_string()),
        None => ("default".to_string(), id.to_string()),
    }
}

/// The fingerprint id of a secret (see [`split_id`]).
pub fn fingerprint_id(context: &str, name: &str) -> String {
    if context == "default" {
        name.to_string()
    } else {
        format!("{context}/{name}")
    }
}

/// What became of one event.
enum Handled {
    /// Recorded: the event file can go.
    Done(Box<Incident>),
    /// Not now (vault locked, or the secret is being rotated): the event stays.
    Later,
    /// Not a secret of this vault: the event stays, and this daemon skips it from now on.
    NotOurs,
    /// The secret's backend cannot be read (an OpenBao server down): the event stays, and the
    /// loop waits [`BACKOFF`] before the next pass.
    Unavailable(String),
}

/// How long the leak loop waits after a backend could not be reached.
const BACKOFF: Duration = Duration::from_secs(1);
/// At most one log line per this long about an unreachable backend.
const LOG_EVERY: Duration = Duration::from_secs(60);

impl Daemon {
    /// Watches the spool directory until the daemon stops.
    pub(super) async fn leak_loop(self, dir: PathBuf) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut not_ours = std::collections::HashSet::new();
        let mut logged: Option<(std::time::Instant, String)> = None;
        loop {
            tick.tick().await;
            if let Some(why) = self.leak_pass(&dir, &mut not_ours).await {
                let quiet = logged
                    .as_ref()
                    .is_some_and(|(at, w)| *w == why && at.elapsed() < LOG_EVERY);
                if !quiet {
                    eprintln!("guard vault daemon: leak events wait: {why}");
                    logged = Some((std::time::Instant::now(), why));
                }
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }

    /// One pass over the spool: every event that can be handled now is, oldest first. Stops at
    /// a backend that cannot be reached, and says why.
    async fn leak_pass(
        &self,
        dir: &Path,
        not_ours: &mut std::collections::HashSet<PathBuf>,
    ) -> Option<String> {
        let Ok((events, _unreadable)) = Spool::read_all_but(dir, not_ours) else {
            return None;
        };
        for (path, ev) in events {
            match self.handle_leak(&ev).await {
                Handled::Later => continue,
                Handled::Unavailable(why) => return Some(why),
                Handled::NotOurs => {
                    not_ours.insert(path);
                }
                Handled::Done(inc) => {
                    let recorded = {
                        let s = self.lock();
                        append_incident(&s.paths, &inc)
                    };
                    match recorded {
                        // Only a recorded outcome lets the event go.
                        Ok(()) => {
                            let _ = std::fs::remove_file(&path);
                            if inc.outcome != "duplicate" {
                                self.notify(&inc);
                            }
                        }
                        Err(e) => eprintln!("guard vault daemon: recording an incident: {e}"),
                    }
                }
            }
        }
        None
    }

    /// Runs `leak_notify` with the incident on its stdin, in the background (10 s at most).
    fn notify(&self, inc: &Incident) {
        let Some(argv) = &self.leak_notify else {
            return;
        };
        let json = serde_json::to_vec(inc).unwrap_or_default();
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("guard vault daemon: leak_notify {:?}: {e}", argv[0]);
                return;
            }
        };
        std::thread::spawn(move || {
            let mut input = json;
            input.push(b'\n');
            let _ = crate::child::feed_and_wait(child, input, Duration::from_secs(10));
        });
    }

    async fn handle_leak(&self, ev: &LeakEvent) -> Handled {
        let (context, name) = split_id(&ev.secret);
        let incident = |outcome: &str, new_version: Option<u32>, detail: Option<String>| {
            Handled::Done(Box::new(Incident {
                at: now_unix(),
                context: context.clone(),
                secret: name.clone(),
                version: ev.version,
                encoding: ev.encoding.clone(),
                source: ev.source.clone(),
                outcome: outcome.into(),
                new_version,
                detail,
            }))
        };
        let token = {
            let mut s = self.lock();
            if s.rotating.contains(&(context.clone(), name.clone())) {
                return Handled::Later;
            }
            if !store::list_contexts(&s.paths).contains(&context) {
                return Handled::NotOurs;
            }
            if s.keys.get(&context).is_none() {
                return Handled::Later; // locked: the event waits
            }
            let mut st = match s.open_store(&context) {
                Ok(st) => st,
                Err(e) => return Handled::Unavailable(e.message),
            };
            let entry = match st.meta(&name) {
                Ok(m) => m,
                Err(StoreError::NotFound { .. }) => return Handled::NotOurs,
                Err(e) => return Handled::Unavailable(e.to_string()),
            };
            let Some(version) = entry.versions.iter().find(|v| v.id == ev.version) else {
                return Handled::NotOurs;
            };
            let current = entry.current_id() == Some(ev.version);
            let policy = entry.on_leak.unwrap_or_default();
            let hook = entry.rotate_via.is_some() && policy == store::LeakPolicy::Rotate;
            if version.compromised && !(current && hook) {
                return incident("duplicate", None, None);
            }
            if !version.compromised {
                let detail = format!("{} in {}", ev.encoding, ev.source);
                // Audited first: an unaudited response does not happen.
                if let Err(e) = s.audit.append(&Event {
                    op: "leak",
                    outcome: "detected",
                    context: Some(&context),
                    secret: Some(&name),
                    version: Some(ev.version),
                    detail: Some(&detail),
                    ..Default::default()
                }) {
                    eprintln!("guard vault daemon: leak of {name:?} not handled yet: {e}");
                    return Handled::Later;
                }
                if let Err(e) = st
                    .mark_compromised(&name, ev.version)
                    .and_then(|()| st.save())
                {
                    return Handled::Unavailable(format!("leak of {name:?}: {e}"));
                }
            }
            if policy == store::LeakPolicy::ReportOnly {
                return incident("reported", None, Some("policy: report-only".into()));
            }
            let n = s
                .leases
                .revoke_where(|l| l.context == context && l.secret == name);
            if n > 0 {
                let _ = s.audit.append(&Event {
                    op: "revoke",
                    outcome: "leak",
                    context: Some(&context),
                    secret: Some(&name),
                    detail: Some(&format!("{n} leases")),
                    ..Default::default()
                });
            }
            // What the backend issued with it (OpenBao leases under the secret's prefix).
            match st.revoke_upstream(&name) {
                Ok(None) => {}
                Ok(Some(prefix)) => {
                    let _ = s.audit.append(&Event {
                        op: "revoke",
                        outcome: "upstream",
                        context: Some(&context),
                        secret: Some(&name),
                        detail: Some(&format!("OpenBao leases under {prefix}")),
                        ..Default::default()
                    });
                }
                Err(e) => {
                    let _ = s.audit.append(&Event {
                        op: "revoke",
                        outcome: "upstream-error",
                        context: Some(&context),
                        secret: Some(&name),
                        detail: Some(&e.to_string()),
                        ..Default::default()
                    });
                }
            }
            if !(current && hook) {
                let why = if policy == store::LeakPolicy::RevokeOnly {
                    "policy: revoke-only"
                } else {
                    "no rotation hook, or an old version"
                };
                return incident("revoked", None, Some(why.into()));
            }
            match self.rotation_token(&mut s, &context, &name) {
                Some(t) => t,
                None => return Handled::Later,
            }
        };
        let rotated = self.rotate_holding(&token, "leak").await;
        drop(token);
        match rotated {
            Ok(v) => incident("rotated", Some(v), None),
            Err(e) => incident("failed", None, Some(e.message)),
        }
    }
}

/// Appends an incident to `incidents.jsonl` (0600), durably.
fn append_incident(paths: &VaultPaths, inc: &Incident) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut line = serde_json::to_vec(inc).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(paths.root().join("incidents.jsonl"))?;
    f.write_all(&line)?;
    f.sync_data()
}

/// Every recorded incident, oldest first (lines that do not parse are skipped).
pub fn incidents(paths: &VaultPaths) -> Vec<Incident> {
    std::fs::read_to_string(paths.root().join("incidents.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
