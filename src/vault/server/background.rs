//! Work the daemon does on its own: scheduled rotation, the heartbeat dead-man, and stopping
//! the commands of leases a killed daemon left behind.

use super::*;

/// Leases a previous daemon left live (recovered revoked): audited, and the commands that held
/// them — running with values, their `guard exec` connections gone with that daemon — are sent
/// SIGTERM, then SIGKILL after [`CALLER_GONE_GRACE`].
pub(super) fn stop_orphans(audit: &mut AuditLog, orphaned: &[crate::vault::lease::Lease]) {
    if orphaned.is_empty() {
        return;
    }
    let _ = audit.append(&Event {
        op: "revoke",
        outcome: "daemon-restart",
        detail: Some(&format!(
            "{} lease(s) live when the previous daemon stopped",
            orphaned.len()
        )),
        ..Default::default()
    });
    let mut holders: Vec<crate::vault::lease::Holder> =
        orphaned.iter().filter_map(|l| l.holder).collect();
    holders.sort_by_key(|h| h.pgid);
    holders.dedup();
    holders.retain(|h| h.alive());
    if holders.is_empty() {
        return;
    }
    eprintln!(
        "guard vault daemon: stopping {} command(s) the previous daemon ran",
        holders.len()
    );
    for h in &holders {
        kill_group(h.pgid, libc::SIGTERM);
    }
    std::thread::spawn(move || {
        std::thread::sleep(CALLER_GONE_GRACE);
        for h in holders.iter().filter(|h| h.alive()) {
            kill_group(h.pgid, libc::SIGKILL);
        }
    });
}

/// `(context, name)` of every stored secret whose entry satisfies `keep`, across the unlocked
/// contexts.
pub(super) fn secrets_where(
    s: &mut State,
    keep: impl Fn(&backend::SecretMeta) -> bool,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for c in store::list_contexts(&s.paths) {
        let Ok(mut st) = s.open_store(&c) else {
            continue;
        };
        for n in st.names().unwrap_or_default() {
            if st.meta(&n).is_ok_and(|m| keep(&m)) {
                out.push((c.clone(), n));
            }
        }
    }
    out
}

pub(super) async fn maintenance(d: Daemon) {
    let mut tick = tokio::time::interval(d.limits.maintenance_interval);
    loop {
        tick.tick().await;
        let due: Vec<(String, String)> = {
            let mut s = d.lock();
            s.leases.prune();
            s.keys.is_unlocked(); // forgets the identities once their time is over
            let now = now_unix();
            secrets_where(&mut s, |e| {
                let due = || {
                    let every = config::parse_duration(e.rotate_every.as_deref()?).ok()?;
                    e.rotate_via.as_ref()?;
                    Some(rotate::due(e.version(None)?.created, every, now))
                };
                due().unwrap_or(false)
            })
        };
        for (c, n) in due {
            if let Err(e) = d.rotate(&c, &n, "scheduled").await {
                eprintln!(
                    "guard vault daemon: scheduled rotation of {n:?} in {c:?} failed: {}",
                    e.message
                );
            }
        }
    }
}

pub(super) async fn heartbeat_loop(d: Daemon, hb: HeartbeatConfig) {
    let (interval, timeout) = match (
        config::parse_duration(&hb.interval),
        config::parse_duration(&hb.timeout),
    ) {
        (Ok(i), Ok(t)) => (i.max(Duration::from_millis(10)), t),
        _ => {
            eprintln!("guard vault daemon: invalid heartbeat interval/timeout; heartbeat disabled");
            return;
        }
    };
    let mut armed = true;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match crate::vault::heartbeat::probe(&hb.url, timeout).await {
            Ok(()) => {
                armed = true;
                d.lock().heartbeat = Some("alive".into());
            }
            Err(e) => {
                d.lock().heartbeat = Some(format!("down: {e}"));
                if !armed {
                    continue;
                }
                armed = false;
                eprintln!("guard vault daemon: {e}; running the fail action");
                {
                    let mut s = d.lock();
                    let _ = s.audit.append(&Event {
                        op: "heartbeat",
                        outcome: "failed",
                        detail: Some(&e.to_string()),
                        ..Default::default()
                    });
                }
                let fa = &hb.fail_action;
                if fa.revoke_all || fa.rotate_all || fa.wipe_store {
                    d.killswitch(fa.rotate_all, fa.wipe_store, "heartbeat")
                        .await;
                }
            }
        }
    }
}
