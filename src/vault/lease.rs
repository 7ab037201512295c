//! Leases: time-bounded, revocable records of one command using one secret.
//!
//! Design decision: a lease *gates use* — the daemon injects a value only into a command it
//! launches under a live lease, and revocation (or the killswitch) stops further injection. Lease
//! ids never leave the daemon except in the audit log: no request takes a lease id and returns a
//! value, and `status` lists leases without their ids.
//! The clock is `tokio::time::Instant`, so tests drive it with paused time instead of sleeping.
//! TTL defaults to 1 h and is capped (24 h by default) by config.
//!
//! Leases are persisted (`run/leases.json`, 0600, replaced atomically on every change, expiry as
//! wall-clock seconds) with the process group that holds them, so a daemon restart neither
//! forgets nor resurrects one: a revoked lease stays revoked, and a lease still live when the
//! daemon died belonged to a `guard exec` connection that died with it — [`LeaseManager::recover`]
//! revokes it and hands back its holder, whose command the daemon then stops.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaseError {
    #[error("lease {id} not found")]
    NotFound { id: String },
    #[error("lease {id} has expired")]
    Expired { id: String },
    #[error("lease {id} was revoked")]
    Revoked { id: String },
    #[error("ttl {requested:?} exceeds the maximum {max:?}")]
    TtlTooLong { requested: Duration, max: Duration },
    #[error("ttl must be positive")]
    ZeroTtl,
}

#[derive(Clone, Debug)]
pub struct Lease {
    pub id: String,
    pub context: String,
    pub secret: String,
    pub version: Option<u32>,
    /// The command (as shown to a human) holding the lease.
    pub command: String,
    pub granted: Instant,
    pub expires: Instant,
    pub revoked: bool,
    /// The process group running the command under this lease, once launched.
    pub holder: Option<Holder>,
}

/// A command's process group, and its leader's start time (`/proc/PID/stat` field 22) so a
/// reused pid is never mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pgid: u32,
    pub start_time: u64,
}

impl Holder {
    /// The holder record of process group `pgid`, if its leader is alive.
    pub fn of(pgid: u32) -> Option<Holder> {
        Some(Holder {
            pgid,
            start_time: start_time(pgid)?,
        })
    }
    /// Whether the same process still leads the group.
    pub fn alive(&self) -> bool {
        start_time(self.pgid) == Some(self.start_time)
    }
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A lease as persisted: expiry in wall-clock seconds.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    context: String,
    secret: String,
    version: Option<u32>,
    command: String,
    expires_unix: u64,
    revoked: bool,
    holder: Option<Holder>,
}

/// What `status` reports about a lease: no value, no id.
#[derive(Serialize, Debug)]
pub struct LeaseInfo {
    pub context: String,
    pub secret: String,
    /// The command (as shown to a human) holding the lease.
    pub command: String,
    pub expires_in_secs: u64,
}

pub struct LeaseManager {
    leases: HashMap<String, Lease>,
    default_ttl: Duration,
    max_ttl: Duration,
    /// Where the leases are persisted (none: memory only).
    path: Option<std::path::PathBuf>,
}

pub struct LeaseRequest<'a> {
    pub context: &'a str,
    pub secret: &'a str,
    pub version: Option<u32>,
    pub command: &'a str,
    pub ttl: Option<Duration>,
}

impl LeaseManager {
    pub fn new(default_ttl: Duration, max_ttl: Duration) -> Self {
        Self {
            leases: HashMap::new(),
            default_ttl,
            max_ttl,
            path: None,
        }
    }

    /// Leases persisted at `path`, loaded from what a previous daemon left there. Every lease
    /// that was still live is revoked now (its `guard exec` connection died with that daemon);
    /// their holders are returned, for the caller to stop. A file that cannot be read is an
    /// error: the daemon would otherwise forget commands that still run with values.
    pub fn recover(
        default_ttl: Duration,
        max_ttl: Duration,
        path: std::path::PathBuf,
    ) -> std::io::Result<(Self, Vec<Lease>)> {
        let mut m = Self::new(default_ttl, max_ttl);
        let stored: Vec<Stored> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                std::io::Error::other(format!("{}: not a lease file ({e})", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (now, wall) = (Instant::now(), crate::vault::now_unix());
        let mut orphaned = Vec::new();
        for s in stored {
            let left = Duration::from_secs(s.expires_unix.saturating_sub(wall));
            let mut l = Lease {
                id: s.id,
                context: s.context,
                secret: s.secret,
                version: s.version,
                command: s.command,
                granted: now,
                expires: now + left,
                revoked: s.revoked,
                holder: s.holder,
            };
            if !l.revoked && !left.is_zero() {
                l.revoked = true;
                orphaned.push(l.clone());
            }
            m.leases.insert(l.id.clone(), l);
        }
        m.path = Some(path);
        m.prune();
        m.persist()?;
        Ok((m, orphaned))
    }

    /// Writes the leases out (temp file + rename; no fsync: this guards against a daemon that
    /// dies, not against power loss, and an exec must not wait for the disk).
    fn persist(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let (now, wall) = (Instant::now(), crate::vault::now_unix());
        let stored: Vec<Stored> = self
            .leases
            .values()
            .map(|l| Stored {
                id: l.id.clone(),
                context: l.context.clone(),
                secret: l.secret.clone(),
                version: l.version,
                command: l.command.clone(),
                expires_unix: wall + l.expires.saturating_duration_since(now).as_secs().max(1),
                revoked: l.revoked,
                holder: l.holder,
            })
            .collect();
        let json = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&json)?;
        }
        std::fs::rename(&tmp, path)
    }

    /// Persists, reporting (not failing on) an error: revocations must never be blocked.
    /// Revocations by id or predicate save at once; a caller that [`grant`]s, [`hold`]s or
    /// revokes unsaved saves after its batch.
    ///
    /// [`hold`]: LeaseManager::hold
    ///
    /// [`grant`]: LeaseManager::grant
    pub fn save(&self) {
        if let Err(e) = self.persist() {
            eprintln!("guard vault daemon: persisting leases: {e}");
        }
    }

    /// Records the process group running the command under `ids` (the caller [`save`]s).
    ///
    /// [`save`]: LeaseManager::save
    pub fn hold(&mut self, ids: &[String], holder: Holder) {
        for id in ids {
            if let Some(l) = self.leases.get_mut(id) {
                l.holder = Some(holder);
            }
        }
    }

    pub fn grant(&mut self, r: &LeaseRequest<'_>) -> Result<Lease, LeaseError> {
        let ttl = r.ttl.unwrap_or(self.default_ttl.min(self.max_ttl));
        if ttl.is_zero() {
            return Err(LeaseError::ZeroTtl);
        }
        if ttl > self.max_ttl {
            return Err(LeaseError::TtlTooLong {
                requested: ttl,
                max: self.max_ttl,
            });
        }
        let now = Instant::now();
        let lease = Lease {
            id: crate::vault::random_id("lease"),
            context: r.context.into(),
            secret: r.secret.into(),
            version: r.version,
            command: r.command.into(),
            granted: now,
            expires: now + ttl,
            revoked: false,
            holder: None,
        };
        self.leases.insert(lease.id.clone(), lease.clone());
        Ok(lease)
    }

    /// The lease if it is live now.
    pub fn check(&self, id: &str) -> Result<&Lease, LeaseError> {
        let l = self
            .leases
            .get(id)
            .ok_or_else(|| LeaseError::NotFound { id: id.into() })?;
        if l.revoked {
            return Err(LeaseError::Revoked { id: id.into() });
        }
        if Instant::now() >= l.expires {
            return Err(LeaseError::Expired { id: id.into() });
        }
        Ok(l)
    }

    pub fn revoke(&mut self, id: &str) -> Result<Lease, LeaseError> {
        let l = self
            .leases
            .get_mut(id)
            .ok_or_else(|| LeaseError::NotFound { id: id.into() })?;
        l.revoked = true;
        let l = l.clone();
        self.save();
        Ok(l)
    }

    /// Revokes the live leases among `ids` without persisting (the caller [`save`]s, possibly
    /// after answering: the revocation itself is in effect at once). Returns them.
    ///
    /// [`save`]: LeaseManager::save
    pub fn revoke_unsaved(&mut self, ids: &[String]) -> Vec<Lease> {
        let now = Instant::now();
        let mut out = Vec::new();
        for id in ids {
            if let Some(l) = self.leases.get_mut(id) {
                if !l.revoked && l.expires > now {
                    l.revoked = true;
                    out.push(l.clone());
                }
            }
        }
        out
    }

    /// Revoke every live lease matching `pred`; returns how many.
    pub fn revoke_where(&mut self, pred: impl Fn(&Lease) -> bool) -> usize {
        let now = Instant::now();
        let mut n = 0;
        for l in self.leases.values_mut() {
            if !l.revoked && l.expires > now && pred(l) {
                l.revoked = true;
                n += 1;
            }
        }
        if n > 0 {
            self.save();
        }
        n
    }

    /// Forget expired and revoked leases (their ids then report `NotFound`, still not usable).
    pub fn prune(&mut self) -> usize {
        let now = Instant::now();
        let before = self.leases.len();
        self.leases.retain(|_, l| !l.revoked && l.expires > now);
        let n = before - self.leases.len();
        if n > 0 {
            self.save();
        }
        n
    }

    pub fn active(&self) -> Vec<LeaseInfo> {
        let now = Instant::now();
        let mut v: Vec<LeaseInfo> = self
            .leases
            .values()
            .filter(|l| !l.revoked && l.expires > now)
            .map(|l| LeaseInfo {
                context: l.context.clone(),
                secret: l.secret.clone(),
                command: l.command.clone(),
                expires_in_secs: (l.expires - now).as_secs(),
            })
            .collect();
        v.sort_by(|a, b| (&a.context, &a.secret).cmp(&(&b.context, &b.secret)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ttl: Option<Duration>) -> LeaseRequest<'static> {
        LeaseRequest {
            context: "dev",
            secret: "tok",
            version: None,
            command: "c",
            ttl,
        }
    }
    const H: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn default_ttl_is_one_hour() {
        let mut m = LeaseManager::new(H, 24 * H);
        let l = m.grant(&req(None)).unwrap();
        tokio::time::advance(H - Duration::from_secs(1)).await;
        assert!(m.check(&l.id).is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            m.check(&l.id).unwrap_err(),
            LeaseError::Expired { id: l.id.clone() }
        );
        assert!(m.active().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn custom_ttl_and_max() {
        let mut m = LeaseManager::new(H, 24 * H);
        assert!(matches!(
            m.grant(&req(Some(25 * H))),
            Err(LeaseError::TtlTooLong { .. })
        ));
        assert!(matches!(
            m.grant(&req(Some(Duration::ZERO))),
            Err(LeaseError::ZeroTtl)
        ));
        let l = m.grant(&req(Some(24 * H))).unwrap();
        let short = m.grant(&req(Some(Duration::from_secs(30 * 60)))).unwrap();
        tokio::time::advance(Duration::from_secs(30 * 60)).await;
        assert!(m.check(&short.id).is_err());
        assert!(m.check(&l.id).is_ok());
        tokio::time::advance(24 * H).await;
        assert!(m.check(&l.id).is_err());
        assert_eq!(m.prune(), 2);
        assert!(matches!(m.check(&l.id), Err(LeaseError::NotFound { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn configured_max_caps_default() {
        let mut m = LeaseManager::new(H, Duration::from_secs(60));
        let l = m.grant(&req(None)).unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(m.check(&l.id).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn revoked_lease_is_unusable() {
        let mut m = LeaseManager::new(H, 24 * H);
        let a = m.grant(&req(None)).unwrap();
        let b = m.grant(&req(None)).unwrap();
        m.revoke(&a.id).unwrap();
        assert!(matches!(m.check(&a.id), Err(LeaseError::Revoked { .. })));
        assert!(m.check(&b.id).is_ok());
        assert_eq!(m.revoke_where(|_| true), 1);
        assert!(m.check(&b.id).is_err());
    }
}
