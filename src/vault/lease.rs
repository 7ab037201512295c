//! Leases: time-bounded, revocable records of one command using one secret.
//!
//! Design decision: a lease *gates use* — the daemon injects a value only into a command it
//! launches under a live lease, and revocation (or the killswitch) stops further injection. Lease
//! ids never leave the daemon except in the audit log: no request takes a lease id and returns a
//! value, and `status` lists leases without their ids.
//! The clock is `tokio::time::Instant`, so tests drive it with paused time instead of sleeping.
//! TTL defaults to 1 h and is capped (24 h by default) by config.

use serde::Serialize;
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
        Ok(l.clone())
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
        n
    }

    /// Forget expired and revoked leases (their ids then report `NotFound`, still not usable).
    pub fn prune(&mut self) -> usize {
        let now = Instant::now();
        let before = self.leases.len();
        self.leases.retain(|_, l| !l.revoked && l.expires > now);
        before - self.leases.len()
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
