//! The operations: what each request does, with the audit record first.

use super::*;

pub(super) fn env_name_syntax(env: &str) -> bool {
    !env.is_empty()
        && env.len() <= 256
        && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !env.as_bytes()[0].is_ascii_digit()
}

pub(super) fn check_pass_env(names: &[String]) -> Result<(), RpcError> {
    match names.iter().find(|n| !env_name_syntax(n)) {
        Some(n) => Err(RpcError::new(
            rpc::INVALID_PARAMS,
            format!(
                "invalid pass-through variable name {:?}",
                command::printable(n)
            ),
        )),
        None => Ok(()),
    }
}

pub(super) fn valid_env_name(env: &str) -> bool {
    !env.is_empty()
        && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !env.as_bytes()[0].is_ascii_digit()
        && !command::is_code_env(env)
        && env != "PATH"
}

impl Daemon {
    pub(super) async fn dispatch(
        &self,
        req: Request,
        conn: &mut FrameReader,
    ) -> Result<Reply, RpcError> {
        let p = req.params;
        match req.method.as_str() {
            "hello" | "ping" => reply(
                json!({"server": "guard-vault", "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id()}),
                vec![],
            ),
            "status" => self.status(),
            "add" => self.add(params(p)?),
            "list" => self.list(params(p)?),
            "fingerprints" => self.fingerprints(params(p)?),
            "rm" => self.rm(params(p)?),
            "exec" => self.exec(params(p)?, conn).await,
            "await_approval" => self.await_approval(params(p)?).await,
            "approve" => self.approve(params(p)?).await,
            "pending" => self.pending(),
            "request_access" => self.request_access(params(p)?),
            "note" => self.note(params(p)?),
            "grant" => self.grant(params(p)?).await,
            "print" => self.print(params(p)?, conn).await,
            "unlock" => self.unlock(params(p)?).await,
            "lock" => {
                let mut s = self.lock();
                s.keys.lock();
                let _ = s.audit.append(&Event {
                    op: "lock",
                    outcome: "ok",
                    ..Default::default()
                });
                reply(json!({"locked": true}), vec![])
            }
            "revoke" => self.revoke(params(p)?),
            "audit_verify" => self.audit_verify(),
            "rotate" => {
                let n: api::NameRequest = params(p)?;
                let version = self.rotate(&n.context, &n.name, "manual").await?;
                let ctx = n.context.clone();
                typed(
                    &api::SecretVersion {
                        context: n.context,
                        name: n.name,
                        version,
                    },
                    vec![next(
                        format!("guard vault list --context {ctx}"),
                        "see versions",
                    )],
                )
            }
            "killswitch" => {
                let k: api::KillswitchRequest = params(p)?;
                let data = self.killswitch(k.rotate, k.wipe, "manual").await;
                typed(
                    &data,
                    vec![next("guard vault status", "confirm no leases remain")],
                )
            }
            "shutdown" => {
                self.shutdown.notify_one();
                reply(json!({"stopping": true}), vec![])
            }
            m => Err(RpcError::new(
                rpc::METHOD_NOT_FOUND,
                format!("unknown method {m:?}"),
            )),
        }
    }

    /// Check the vault passphrase (the proof of a human) for `what`: rate-limited, audited, one
    /// check at a time. A correct one (re)unlocks the identities for `ttl`.
    pub(super) async fn human(
        &self,
        passphrase: Option<SecretValue>,
        what: &str,
        ttl: Option<Duration>,
        seal_first: bool,
    ) -> Result<(), RpcError> {
        let pass = secret_string(passphrase).ok_or_else(|| {
            let mut s = self.lock();
            let _ = s.audit.append(&Event {
                op: "passphrase",
                outcome: "missing",
                detail: Some(what),
                ..Default::default()
            });
            human_required(what)
        })?;
        let _one_at_a_time = self.human.lock().await;
        if crate::vault::tty::tracer_pid(None) != Some(0) {
            return Err(RpcError::new(
                rpc::FAILED,
                "refused: this daemon is being traced; stop it and start a new one",
            ));
        }
        let paths = {
            let mut s = self.lock();
            if let Err(left) = s.attempts.check() {
                let _ = s.audit.append(&Event {
                    op: "passphrase",
                    outcome: "locked-out",
                    detail: Some(what),
                    ..Default::default()
                });
                return Err(RpcError::new(
                    rpc::LOCKED_OUT,
                    format!(
                        "too many wrong passphrases: passphrase checks are refused for another {} s",
                        left.as_secs() + 1
                    ),
                ));
            }
            s.paths.clone()
        };
        let checked = tokio::task::spawn_blocking(move || keys::unlock_all(&paths, &pass))
            .await
            .map_err(|_| RpcError::new(rpc::INTERNAL, "passphrase check failed"))?;
        let mut s = self.lock();
        match checked {
            Ok(u) => {
                // The chain is checked against its seal before the keys are taken: a chain
                // rewritten without the vault key keeps the vault locked.
                let paths = s.paths.clone();
                if let Err(e) = s.audit.unseal(&paths, &u.ids, u.seal_required, seal_first) {
                    s.attempts.succeeded();
                    eprintln!("guard vault daemon: not unlocked: {e}");
                    return Err(RpcError::new(
                        rpc::AUDIT_FAILED,
                        format!(
                            "{e}. The vault stays locked: a human looks at it (`guard vault \
                             audit --tail 20`), stops the daemon and runs `guard vault audit \
                             acknowledge` at a terminal"
                        ),
                    ));
                }
                s.audit
                    .append(&Event {
                        op: "passphrase",
                        outcome: "ok",
                        detail: Some(what),
                        ..Default::default()
                    })
                    .map_err(audit_err)?;
                s.attempts.succeeded();
                s.seal_required = u.seal_required;
                s.keys.unlock(u.ids, ttl.unwrap_or(self.limits.unlock_ttl));
                Ok(())
            }
            Err(KeyError::WrongPassphrase) => {
                let left = s.attempts.failed();
                let _ = s.audit.append(&Event {
                    op: "passphrase",
                    outcome: if left == 0 { "lockout" } else { "wrong" },
                    detail: Some(what),
                    ..Default::default()
                });
                Err(RpcError::new(
                    rpc::DENIED,
                    if left == 0 {
                        format!(
                            "wrong passphrase; passphrase checks are now refused for {} s",
                            self.limits.passphrase_lockout.as_secs()
                        )
                    } else {
                        format!("wrong passphrase ({left} more before a lockout)")
                    },
                ))
            }
            Err(e) => Err(RpcError::new(rpc::FAILED, e.to_string())),
        }
    }

    /// The audit chain, its head and its seal, checked with the unlocked identities.
    pub(super) fn audit_verify(&self) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let mut ids = std::collections::BTreeMap::new();
        for c in store::list_contexts(&s.paths) {
            match s.keys.get(&c) {
                Some(id) => {
                    ids.insert(c, id.clone());
                }
                None => return Err(locked()),
            }
        }
        let report = crate::vault::audit::verify_sealed(&s.paths, &ids, s.seal_required)
            .map_err(|e| RpcError::new(rpc::AUDIT_FAILED, e.to_string()))?;
        reply(json!(report), vec![])
    }

    pub(super) fn status(&self) -> Result<Reply, RpcError> {
        // What reads /proc or the disk, before the state lock every request shares.
        let (dumpable, traced_by) = (
            crate::vault::tty::is_dumpable(),
            crate::vault::tty::tracer_pid(None),
        );
        let paths = self.lock().paths.clone();
        let contexts = store::list_contexts(&paths);
        let mut s = self.lock();
        let leases = s.leases.active();
        let pending: Vec<Value> = s.pending.iter().map(|(id, p)| p.info(id)).collect();
        let unlocked_for = s.keys.expires_in().map(|d| d.as_secs());
        let lockout = s.attempts.locked_out_for().map(|d| d.as_secs());
        let mut acts = vec![
            next("guard vault list", "list stored secrets"),
            next("guard vault audit --tail 20", "recent audit records"),
        ];
        if !pending.is_empty() {
            acts.push(next(
                "guard vault pending",
                "requests waiting for a human's approval",
            ));
        }
        reply(
            json!({"running": true, "pid": std::process::id(), "started": s.started,
                   "vault_dir": s.paths.root(), "contexts": contexts,
                   "unlocked": unlocked_for.is_some(), "unlocked_for_secs": unlocked_for,
                   "passphrase_lockout_secs": lockout,
                   "active_leases": leases.len(), "leases": leases, "pending_approvals": pending,
                   "running_commands": s.running.len(), "heartbeat": s.heartbeat,
                   "dumpable": dumpable, "traced_by": traced_by}),
            acts,
        )
    }

    pub(super) fn add(&self, a: api::AddRequest) -> Result<Reply, RpcError> {
        if let Some(e) = &a.rotate_every {
            config::parse_duration(e)
                .map_err(|e| RpcError::new(rpc::INVALID_PARAMS, e.to_string()))?;
        }
        store::check_name("secret", &a.name).map_err(store_err)?;
        if let Some(d) = &a.description {
            if d.chars().count() > 200 || d.chars().any(char::is_control) {
                return Err(RpcError::new(
                    rpc::INVALID_PARAMS,
                    "a description is one line of at most 200 characters",
                ));
            }
        }
        let mut s = self.lock();
        let mut st = s.open_store(&a.context)?;
        let version = st
            .put(
                &a.name,
                a.value,
                PutOptions {
                    rotate_via: a.rotate_via,
                    rotate_shell: a.rotate_shell,
                    rotate_every: a.rotate_every,
                    on_leak: a.on_leak,
                    revoke_prefix: a.revoke_prefix,
                    description: a.description,
                },
            )
            .map_err(store_err)?;
        s.audit
            .append(&Event {
                op: "add",
                outcome: "ok",
                context: Some(&a.context),
                secret: Some(&a.name),
                version: Some(version),
                ..Default::default()
            })
            .map_err(audit_err)?;
        if let Err(e) = st.save() {
            let _ = s.audit.append(&Event {
                op: "add",
                outcome: "error",
                context: Some(&a.context),
                secret: Some(&a.name),
                ..Default::default()
            });
            return Err(store_err(e));
        }
        publish_fingerprints(&mut s);
        typed(
            &api::SecretVersion {
                context: a.context,
                name: a.name,
                version,
            },
            vec![next(
                "guard exec -- CMD",
                "run a command with the secret injected (declare it in .guard/secrets.toml); \
                 a human approves its first use",
            )],
        )
    }

    pub(super) fn list(&self, l: api::ListRequest) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let contexts = match l.context {
            Some(c) => vec![c],
            None => store::list_contexts(&s.paths),
        };
        let mut out = Vec::new();
        for c in contexts {
            let mut st = s.open_store(&c)?;
            let secrets = st.infos().map_err(store_err)?;
            out.push(api::ContextSecrets {
                context: c,
                backend: st.backend().to_string(),
                secrets,
            });
        }
        typed(
            &api::ListReply { contexts: out },
            vec![next(
                "guard vault add NAME",
                "store a secret (value from a no-echo prompt or stdin)",
            )],
        )
    }

    /// The fingerprints of every version of every secret (in one context, or all): what a
    /// redactor needs to recognise stored values, without the values. Rotated-out versions stay
    /// in, so they keep being redacted. Values too short to fingerprint are named in `skipped`.
    pub(super) fn fingerprints(&self, l: api::ListRequest) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let contexts = match l.context {
            Some(c) => vec![c],
            None => store::list_contexts(&s.paths),
        };
        let (set, skipped) = fingerprint_set(&mut s, &contexts)?;
        s.audit
            .append(&Event {
                op: "fingerprints",
                outcome: "ok",
                ..Default::default()
            })
            .map_err(audit_err)?;
        reply(
            json!({"set": set, "skipped": skipped}),
            vec![next(
                "guard redact --fingerprints FILE",
                "redact every stored value from a stream or a command's output",
            )],
        )
    }

    pub(super) fn rm(&self, n: api::NameRequest) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let mut st = s.open_store(&n.context)?;
        st.remove(&n.name).map_err(store_err)?;
        s.audit
            .append(&Event {
                op: "rm",
                outcome: "ok",
                context: Some(&n.context),
                secret: Some(&n.name),
                ..Default::default()
            })
            .map_err(audit_err)?;
        st.save().map_err(store_err)?;
        let revoked = s
            .leases
            .revoke_where(|l| l.context == n.context && l.secret == n.name);
        publish_fingerprints(&mut s);
        typed(
            &api::RmReply {
                removed: n.name,
                revoked_leases: revoked,
            },
            vec![next("guard vault list", "remaining secrets")],
        )
    }

    /// Launch `e.argv` with the approved secrets on the caller's stdio; answer with its exit.
    pub(super) async fn exec(
        &self,
        e: api::ExecRequest,
        conn: &mut FrameReader,
    ) -> Result<Reply, RpcError> {
        let stdio: [OwnedFd; 3] = conn
            .take_fds(3)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| {
                RpcError::new(
                    rpc::INVALID_PARAMS,
                    "exec needs the caller's stdin, stdout and stderr passed with the request",
                )
            })?;
        if e.argv.is_empty() {
            return Err(RpcError::new(rpc::INVALID_PARAMS, "empty command"));
        }
        check_pass_env(&e.pass_env)?;
        let caller = e.caller.as_ref().map(api::Caller::cleaned);
        let mut ttls = Vec::new();
        for sec in &e.secrets {
            store::check_name("secret", &sec.name).map_err(store_err)?;
            if !valid_env_name(&sec.env) {
                return Err(RpcError::new(
                    rpc::INVALID_PARAMS,
                    format!(
                        "{:?} cannot carry a secret (invalid, or it chooses code)",
                        sec.env
                    ),
                ));
            }
            ttls.push(match &sec.ttl {
                Some(t) => Some(
                    config::parse_duration(t)
                        .map_err(|e| RpcError::new(rpc::INVALID_PARAMS, e.to_string()))?,
                ),
                None => None,
            });
        }
        let (cmd, secrets, lease_ids, exec_no) = {
            let mut s = self.lock();
            let mut st = s.open_store(&e.context)?;
            let (cmd, key) = s.command_and_key(&e.context, &e.argv, &e.cwd, &e.env, &e.pass_env)?;
            for sec in &e.secrets {
                st.value(&sec.name, None).map_err(store_err)?;
            }
            let names: Vec<&str> = e.secrets.iter().map(|s| s.name.as_str()).collect();
            let missing = unapproved(&mut s, &e.context, &names, &cmd, &key)?;
            if !missing.is_empty() {
                return request_approval(&mut s, &e.context, missing, cmd, caller);
            }
            let mut secrets = Vec::new();
            let mut lease_ids = Vec::new();
            let mut access = Vec::new();
            let mut failed = None;
            for (sec, ttl) in e.secrets.iter().zip(ttls) {
                let granted = s.leases.grant(&LeaseRequest {
                    context: &e.context,
                    secret: &sec.name,
                    version: None,
                    command: &cmd.display,
                    ttl,
                });
                let lease = match granted {
                    Ok(l) => l,
                    Err(err) => {
                        failed = Some(RpcError::new(rpc::INVALID_PARAMS, err.to_string()));
                        break;
                    }
                };
                lease_ids.push(lease.id.clone());
                let (version, value) = match st.value(&sec.name, None) {
                    Ok(v) => v,
                    Err(err) => {
                        failed = Some(store_err(err));
                        break;
                    }
                };
                access.push((sec.name.as_str(), lease.id, version));
                secrets.push(crate::vault::exec::Injected {
                    env: sec.env.clone(),
                    id: leak::fingerprint_id(&e.context, &sec.name),
                    version,
                    value,
                });
            }
            if failed.is_none() {
                // One audit write for all of them, before any value is used.
                let events: Vec<Event> = access
                    .iter()
                    .map(|(name, lease, version)| {
                        Event {
                            op: "access",
                            outcome: "ok",
                            context: Some(&e.context),
                            secret: Some(name),
                            client: Some(&cmd.fingerprint),
                            lease: Some(lease),
                            version: Some(*version),
                            ..Default::default()
                        }
                        .asked_by(caller.as_ref())
                    })
                    .collect();
                if let Err(err) = s.audit.append_all(&events) {
                    failed = Some(audit_err(err));
                }
            }
            if let Some(err) = failed {
                revoke_leases(&mut s, &lease_ids);
                return Err(err);
            }
            s.next_exec += 1;
            (cmd, secrets, lease_ids, s.next_exec)
        };
        let launched = crate::vault::exec::launch(crate::vault::exec::Launch {
            cmd: &cmd,
            argv: &e.argv,
            secrets,
            stdio,
            umask: e.umask,
            spool: self
                .leak_spool
                .clone()
                .map(|d| (d, format!("exec:{}", e.argv[0]))),
        });
        let running = match launched {
            Ok(r) => r,
            Err(err) => {
                revoke_leases(&mut self.lock(), &lease_ids);
                return Err(RpcError::new(
                    rpc::FAILED,
                    format!("cannot run {:?}: {err}", e.argv[0]),
                ));
            }
        };
        let pgid = running.pid();
        {
            // Registered and checked under one lock: a killswitch (or heartbeat failure) that
            // revoked the leases while the command was being launched stops it now.
            let mut s = self.lock();
            s.running.insert(exec_no, pgid);
            if let Some(h) = crate::vault::lease::Holder::of(pgid) {
                s.leases.hold(&lease_ids, h);
            }
            // Persisted (with their holder, for a daemon that dies meanwhile) off the path.
            let d = self.clone();
            tokio::task::spawn_blocking(move || d.lock().leases.save());
            if lease_ids.iter().any(|id| s.leases.check(id).is_err()) {
                kill_group(pgid, libc::SIGTERM);
            }
        }
        let mut wait = tokio::task::spawn_blocking(move || running.wait());
        let mut caller_here = true;
        let status = loop {
            if !caller_here {
                // Given a moment to stop on SIGTERM; then it is killed.
                match tokio::time::timeout(CALLER_GONE_GRACE, &mut wait).await {
                    Ok(r) => break r,
                    Err(_) => {
                        kill_group(pgid, libc::SIGKILL);
                        break (&mut wait).await;
                    }
                }
            }
            tokio::select! {
                r = &mut wait => break r,
                f = conn.frame(self.limits.max_frame_bytes) => match f {
                    Ok(Some(line)) => {
                        let sig = serde_json::from_slice::<Request>(&line)
                            .ok()
                            .filter(|r| r.method == "signal")
                            .and_then(|r| params::<api::SignalRequest>(r.params).ok())
                            .map(|p| p.signal)
                            .filter(|s| crate::vault::exec::FORWARDED_SIGNALS.contains(s));
                        if let Some(sig) = sig {
                            kill_group(pgid, sig);
                        }
                    }
                    // The caller is gone (killed, however) or broke the protocol: its
                    // leases end now, and its command goes too.
                    _ => {
                        revoke_leases(&mut self.lock(), &lease_ids);
                        kill_group(pgid, libc::SIGTERM);
                        caller_here = false;
                    }
                },
            }
        };
        {
            // Revoked now; recorded (audit, lease file) after the answer is on its way: the
            // caller is not kept waiting for the disk. A daemon that dies in between recovers
            // these leases as live and revokes them again, audited.
            let mut s = self.lock();
            s.running.remove(&exec_no);
            let revoked = s.leases.revoke_unsaved(&lease_ids);
            let d = self.clone();
            tokio::task::spawn_blocking(move || record_revoked(&mut d.lock(), &revoked));
        }
        use std::os::unix::process::ExitStatusExt;
        match status {
            Ok(Ok(st)) => typed(
                &api::ExecReply {
                    exit_code: st.code(),
                    signal: st.signal(),
                },
                vec![],
            ),
            _ => Err(RpcError::new(rpc::INTERNAL, "lost track of the command")),
        }
    }

    pub(super) async fn await_approval(&self, r: api::RequestRef) -> Result<Reply, RpcError> {
        let (mut rx, context, secret, command) = {
            let s = self.lock();
            let p = s.pending.get(&r.request).ok_or_else(|| {
                RpcError::new(rpc::NOT_FOUND, format!("no pending request {}", r.request))
            })?;
            (
                p.tx.subscribe(),
                p.context.clone(),
                p.secrets.join(", "),
                p.command.display.clone(),
            )
        };
        // A caller may wait less than the approval timeout; the request then stays pending.
        let limit = self.limits.approval_timeout;
        let wait = r
            .wait_ms
            .map_or(limit, |ms| Duration::from_millis(ms).min(limit));
        let waited = tokio::time::timeout(wait, rx.wait_for(|d| d.is_some())).await;
        let decision = match waited {
            Ok(Ok(d)) => *d,
            Err(_) if wait < limit => {
                return reply(json!({"request": r.request, "decision": "pending"}), vec![]);
            }
            _ => None,
        };
        match decision {
            Some(Decision::Allow) => {
                reply(json!({"request": r.request, "decision": "allow"}), vec![])
            }
            Some(Decision::Deny) => Err(denied(&context, &secret, &command, "a human denied it")),
            None => {
                let mut s = self.lock();
                if let Some(p) = s.pending.remove(&r.request) {
                    for scope in p.scopes() {
                        let _ =
                            s.audit
                                .append(&p.event(&scope, "timeout-denied", Some(&r.request)));
                    }
                }
                Err(denied(
                    &context,
                    &secret,
                    &command,
                    "no human approved it before the approval timeout",
                ))
            }
        }
    }

    pub(super) async fn approve(&self, a: api::ApproveRequest) -> Result<Reply, RpcError> {
        if !self.lock().pending.contains_key(&a.request) {
            return Err(
                RpcError::new(rpc::NOT_FOUND, format!("no pending request {}", a.request))
                    .with(next("guard vault pending", "list pending requests")),
            );
        }
        if a.allow {
            self.human(a.passphrase, "approve", None, false).await?;
        }
        let mut s = self.lock();
        let p = s.pending.remove(&a.request).ok_or_else(|| {
            RpcError::new(rpc::NOT_FOUND, format!("no pending request {}", a.request))
        })?;
        let d = if a.allow {
            Decision::Allow
        } else {
            Decision::Deny
        };
        let outcome = if a.allow { "approved" } else { "denied" };
        // A denial is remembered when the keys are at hand; without them it only answers now.
        let key = s.keys.get(&p.context).map(keys::approval_key);
        for scope in p.scopes() {
            let ev = p.event(&scope, outcome, Some(&a.request));
            let done = match &key {
                Some(k) => s.decide(ev, &scope, d, &p.command.display, k),
                None => s.audit.append(&ev).map_err(audit_err),
            };
            if let Err(e) = done {
                let _ = p.tx.send(Some(Decision::Deny));
                return Err(e);
            }
        }
        let _ = p.tx.send(Some(d));
        reply(
            json!({"request": a.request, "decision": d, "context": p.context,
                   "secrets": p.secrets, "command": p.command.display}),
            vec![],
        )
    }

    pub(super) fn pending(&self) -> Result<Reply, RpcError> {
        let s = self.lock();
        let v: Vec<Value> = s.pending.iter().map(|(id, p)| p.info(id)).collect();
        reply(json!({"pending": v}), vec![])
    }

    /// Asks a human to approve `argv` using `names` without running it: answers `granted` when
    /// every name is approved already, else opens (or joins) the pending request.
    pub(super) fn request_access(&self, a: api::AccessRequest) -> Result<Reply, RpcError> {
        check_scope("request_access", &a.scope)?;
        let mut s = self.lock();
        let (cmd, key) = resolve_scope(&mut s, &a.scope)?;
        let names: Vec<&str> = a.scope.names.iter().map(String::as_str).collect();
        let missing = unapproved(&mut s, &a.scope.context, &names, &cmd, &key)?;
        if missing.is_empty() {
            return reply(
                json!({"status": "granted", "context": a.scope.context, "secrets": a.scope.names,
                       "command": cmd.display}),
                vec![],
            );
        }
        let caller = a.caller.as_ref().map(api::Caller::cleaned);
        request_approval(&mut s, &a.scope.context, missing, cmd, caller)
    }

    /// Audits an agent's call that touches no secret (`guard mcp`'s text tools).
    pub(super) fn note(&self, n: api::NoteRequest) -> Result<Reply, RpcError> {
        let c = n.caller.cleaned();
        let tool: String = n
            .tool
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(40)
            .collect();
        self.lock()
            .audit
            .append(
                &Event {
                    op: "mcp",
                    outcome: &tool,
                    ..Default::default()
                }
                .asked_by(Some(&c)),
            )
            .map_err(audit_err)?;
        reply(json!({"noted": true}), vec![])
    }

    pub(super) async fn grant(&self, g: api::GrantRequest) -> Result<Reply, RpcError> {
        check_scope("grant", &g.scope)?;
        self.human(g.passphrase, "grant", None, false).await?;
        let mut s = self.lock();
        let (cmd, key) = resolve_scope(&mut s, &g.scope)?;
        let (d, outcome) = if g.deny {
            (Decision::Deny, "deny")
        } else {
            (Decision::Allow, "allow")
        };
        for n in &g.scope.names {
            let scope = Scope {
                context: g.scope.context.clone(),
                secret: n.clone(),
                command: cmd.fingerprint.clone(),
            };
            s.decide(
                scope.event("grant", outcome, None),
                &scope,
                d,
                &cmd.display,
                &key,
            )?;
        }
        reply(
            json!({"context": g.scope.context, "secrets": g.scope.names, "command": cmd.display,
                   "fingerprint": cmd.fingerprint, "decision": d}),
            vec![],
        )
    }

    /// Write one value to the caller's stdout descriptor, after a passphrase check.
    pub(super) async fn print(
        &self,
        p: api::PrintRequest,
        conn: &mut FrameReader,
    ) -> Result<Reply, RpcError> {
        let out = conn.take_fds(1).and_then(|mut v| v.pop()).ok_or_else(|| {
            RpcError::new(
                rpc::INVALID_PARAMS,
                "print needs the caller's stdout passed with the request",
            )
        })?;
        self.human(p.passphrase, "print", None, false).await?;
        let (version, value) = {
            let mut s = self.lock();
            let mut st = s.open_store(&p.context)?;
            let (version, value) = st.value(&p.name, p.version).map_err(store_err)?;
            s.audit
                .append(&Event {
                    op: "print",
                    outcome: "ok",
                    context: Some(&p.context),
                    secret: Some(&p.name),
                    version: Some(version),
                    ..Default::default()
                })
                .map_err(audit_err)?;
            (version, value)
        };
        let written = tokio::task::spawn_blocking(move || write_value(out, &value)).await;
        match written {
            Ok(Ok(())) => typed(
                &api::SecretVersion {
                    context: p.context,
                    name: p.name,
                    version,
                },
                vec![],
            ),
            _ => Err(RpcError::new(
                rpc::FAILED,
                "could not write to the caller's stdout",
            )),
        }
    }

    pub(super) async fn unlock(&self, u: api::UnlockRequest) -> Result<Reply, RpcError> {
        let ttl = match &u.ttl {
            Some(t) => Some(
                config::parse_duration(t)
                    .map_err(|e| RpcError::new(rpc::INVALID_PARAMS, e.to_string()))?
                    .min(config::MAX_UNLOCK),
            ),
            None => None,
        };
        self.human(u.passphrase, "unlock", ttl, u.seal_first)
            .await?;
        let mut s = self.lock();
        publish_fingerprints(&mut s);
        let secs = s.keys.expires_in().map(|d| d.as_secs());
        reply(
            json!({"unlocked": true, "contexts": store::list_contexts(&s.paths),
                   "unlocked_for_secs": secs}),
            vec![next("guard vault lock", "forget the keys now")],
        )
    }

    pub(super) fn revoke(&self, r: api::RevokeRequest) -> Result<Reply, RpcError> {
        let mut s = self.lock();
        let n = if r.all {
            let n = s.leases.revoke_where(|_| true);
            let _ = s.audit.append(&Event {
                op: "revoke",
                outcome: "all",
                detail: Some(&format!("{n} leases")),
                ..Default::default()
            });
            n
        } else if let Some(id) = r.lease {
            if revoke_leases(&mut s, std::slice::from_ref(&id)) == 0 {
                return Err(RpcError::new(rpc::NOT_FOUND, format!("no live lease {id}")));
            }
            1
        } else {
            return Err(RpcError::new(
                rpc::INVALID_PARAMS,
                "give a lease id or all=true",
            ));
        };
        typed(
            &api::RevokeReply { revoked: n },
            vec![next("guard vault status", "see remaining leases")],
        )
    }
    /// Rotates a secret unless a rotation of it is running already (then that one is the
    /// rotation: one new version, not two).
    pub(super) async fn rotate(
        &self,
        context: &str,
        name: &str,
        why: &str,
    ) -> Result<u32, RpcError> {
        let token = {
            let mut s = self.lock();
            self.rotation_token(&mut s, context, name)
        };
        let Some(token) = token else {
            return Err(RpcError::new(
                rpc::FAILED,
                format!("{name:?} in {context:?} is being rotated already"),
            ));
        };
        self.rotate_holding(&token, why).await
    }

    /// The right to rotate `context`/`name` until dropped; `None` while another holds it.
    pub(super) fn rotation_token(
        &self,
        s: &mut State,
        context: &str,
        name: &str,
    ) -> Option<RotationToken> {
        let key = (context.to_string(), name.to_string());
        s.rotating.insert(key.clone()).then(|| RotationToken {
            state: self.state.clone(),
            key,
        })
    }

    /// Runs the secret's hook and stores its output as the next version.
    pub(super) async fn rotate_holding(
        &self,
        token: &RotationToken,
        why: &str,
    ) -> Result<u32, RpcError> {
        let (context, name) = (token.key.0.as_str(), token.key.1.as_str());
        let (cmd, shell) = {
            let mut s = self.lock();
            let mut st = s.open_store(context)?;
            let e = st.meta(name).map_err(store_err)?;
            let cmd = e.rotate_via.clone().ok_or_else(|| {
                RpcError::new(
                    rpc::FAILED,
                    rotate::RotateError::NoHook { name: name.into() }.to_string(),
                )
            })?;
            (cmd, e.rotate_shell)
        };
        let hook = rotate::Hook {
            context,
            name,
            command: &cmd,
            shell,
            timeout: self.limits.rotation_timeout,
        };
        let value = match rotate::run_hook(&hook).await {
            Ok(v) => v,
            Err(e) => {
                let mut s = self.lock();
                let _ = s.audit.append(&Event {
                    op: "rotate",
                    outcome: "error",
                    context: Some(context),
                    secret: Some(name),
                    detail: Some(why),
                    ..Default::default()
                });
                return Err(RpcError::new(rpc::FAILED, e.to_string()));
            }
        };
        let mut s = self.lock();
        let mut st = s.open_store(context)?;
        let v = st
            .put(name, value, PutOptions::default())
            .map_err(store_err)?;
        s.audit
            .append(&Event {
                op: "rotate",
                outcome: "ok",
                context: Some(context),
                secret: Some(name),
                version: Some(v),
                detail: Some(why),
                ..Default::default()
            })
            .map_err(audit_err)?;
        st.save().map_err(store_err)?;
        publish_fingerprints(&mut s);
        Ok(v)
    }

    pub(super) async fn killswitch(
        &self,
        rotate_all: bool,
        wipe: bool,
        why: &str,
    ) -> api::KillswitchReply {
        let revoked = {
            let mut s = self.lock();
            let n = s.leases.revoke_where(|_| true);
            for (_, p) in s.pending.drain() {
                let _ = p.tx.send(Some(Decision::Deny));
            }
            // Running commands hold values already: stop them.
            for pgid in s.running.values() {
                kill_group(*pgid, libc::SIGTERM);
            }
            let _ = s.audit.append(&Event {
                op: "killswitch",
                outcome: "revoked",
                detail: Some(&format!("{why}: {n} leases")),
                ..Default::default()
            });
            n
        };
        let mut rotated = Vec::new();
        let mut errors = Vec::new();
        if rotate_all {
            let targets = secrets_where(&mut self.lock(), |e| e.rotate_via.is_some());
            for (c, n) in targets {
                match self.rotate(&c, &n, why).await {
                    Ok(version) => rotated.push(api::SecretVersion {
                        context: c,
                        name: n,
                        version,
                    }),
                    Err(e) => errors.push(api::RotateFailure {
                        context: c,
                        name: n,
                        error: e.message,
                    }),
                }
            }
        }
        if wipe {
            let mut s = self.lock();
            let _ = s.audit.append(&Event {
                op: "killswitch",
                outcome: "wipe",
                detail: Some(why),
                ..Default::default()
            });
            let dir = s.paths.contexts();
            wipe_dir(&dir);
            let _ = s.approvals.forget_all();
            s.keys.lock();
        }
        api::KillswitchReply {
            revoked,
            rotated,
            rotate_errors: errors,
            wiped: wipe,
        }
    }
}

/// Overwrite files with zeros before unlinking (best effort; the identity is what matters).
pub(super) fn wipe_dir(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            wipe_dir(&p);
        } else if let Ok(m) = std::fs::metadata(&p) {
            let _ = std::fs::write(&p, vec![0u8; m.len() as usize]);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// What `op` (`grant`, `request_access`) checks of its scope before anything else.
fn check_scope(op: &str, sc: &api::CommandScope) -> Result<(), RpcError> {
    if sc.names.is_empty() || sc.argv.is_empty() {
        return Err(RpcError::new(
            rpc::INVALID_PARAMS,
            format!("{op} needs secret names and a command"),
        ));
    }
    check_pass_env(&sc.pass_env)
}

/// The command an approval of `sc` names and the context's approval key, once every named
/// secret is known to exist.
fn resolve_scope(
    s: &mut State,
    sc: &api::CommandScope,
) -> Result<(Resolved, Zeroizing<[u8; 32]>), RpcError> {
    let mut st = s.open_store(&sc.context)?;
    for n in &sc.names {
        store::check_name("secret", n).map_err(store_err)?;
        st.meta(n).map_err(store_err)?;
    }
    s.command_and_key(&sc.context, &sc.argv, &sc.cwd, &sc.env, &sc.pass_env)
}

/// The names among `names` no human has approved for `cmd` yet; one a human denied ends the
/// request (audited).
fn unapproved(
    s: &mut State,
    context: &str,
    names: &[&str],
    cmd: &Resolved,
    key: &[u8; 32],
) -> Result<Vec<String>, RpcError> {
    let mut missing = Vec::new();
    for name in names {
        let scope = Scope {
            context: context.to_string(),
            secret: name.to_string(),
            command: cmd.fingerprint.clone(),
        };
        match s.approvals.get(&scope, key) {
            Some(Decision::Allow) => {}
            Some(Decision::Deny) => {
                s.audit
                    .append(&scope.event("exec", "denied", None))
                    .map_err(audit_err)?;
                return Err(denied(context, name, &cmd.display, "a human denied it"));
            }
            None => missing.push(name.to_string()),
        }
    }
    Ok(missing)
}

/// Open (or join) a request for a human's approval of `cmd` using `secrets`.
pub(super) fn request_approval(
    s: &mut State,
    context: &str,
    secrets: Vec<String>,
    cmd: Resolved,
    caller: Option<api::Caller>,
) -> Result<Reply, RpcError> {
    let existing = s.pending.iter().find(|(_, p)| {
        p.context == context && p.secrets == secrets && p.command.fingerprint == cmd.fingerprint
    });
    let (id, info) = match existing {
        Some((id, p)) => (id.clone(), p.info(id)),
        None => {
            let id = crate::vault::random_id("req");
            let (tx, _rx) = watch::channel(None);
            let p = Pending {
                context: context.to_string(),
                secrets,
                command: cmd,
                caller,
                tx,
            };
            let scopes: Vec<Scope> = p.scopes().collect();
            let events: Vec<Event> = scopes
                .iter()
                .map(|scope| p.event(scope, "requested", Some(&id)))
                .collect();
            s.audit.append_all(&events).map_err(audit_err)?;
            let info = p.info(&id);
            s.pending.insert(id.clone(), p);
            (id, info)
        }
    };
    let mut data = info;
    data["status"] = json!("approval_required");
    data["request"] = json!(id);
    reply(
        data,
        vec![next(
            "guard vault pending",
            "what waits for a human's approval (a human approves with the vault passphrase)",
        )],
    )
}

/// Revoke the live leases among `ids`, auditing each; returns how many were revoked.
pub(super) fn revoke_leases(s: &mut State, ids: &[String]) -> usize {
    let revoked = s.leases.revoke_unsaved(ids);
    record_revoked(s, &revoked);
    revoked.len()
}

/// Audits revoked leases (one write for all) and persists the lease table.
pub(super) fn record_revoked(s: &mut State, revoked: &[crate::vault::lease::Lease]) {
    if revoked.is_empty() {
        return;
    }
    let events: Vec<Event> = revoked
        .iter()
        .map(|l| Event {
            op: "revoke",
            outcome: "ok",
            lease: Some(&l.id),
            context: Some(&l.context),
            secret: Some(&l.secret),
            ..Default::default()
        })
        .collect();
    let _ = s.audit.append_all(&events);
    s.leases.save();
}

pub(super) fn kill_group(pgid: u32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the child's own process group only.
        unsafe { libc::kill(-(pgid as i32), sig) };
    }
}

/// Write a value to a descriptor the caller passed (a newline after it on a terminal).
pub(super) fn write_value(fd: OwnedFd, value: &SecretValue) -> std::io::Result<()> {
    use std::io::Write;
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(fd.as_raw_fd()) } == 1;
    let mut f = std::fs::File::from(fd);
    f.write_all(value.expose_secret().as_bytes())?;
    if tty {
        f.write_all(b"\n")?;
    }
    f.flush()
}

/// The fingerprints of every version of every value in `contexts` (fingerprint ids per
/// [`leak::fingerprint_id`]), and the versions too short to fingerprint.
pub(super) fn fingerprint_set(
    s: &mut State,
    contexts: &[String],
) -> Result<(crate::engine::known::KnownSet, Vec<String>), RpcError> {
    let key = crate::fingerprint::random_key()
        .map_err(|e| RpcError::new(rpc::FAILED, format!("no random key: {e}")))?;
    let mut set = crate::engine::known::KnownSet::new(key);
    let mut skipped = Vec::new();
    for c in contexts {
        let mut st = s.open_store(c)?;
        for info in st.infos().map_err(store_err)? {
            for v in info.versions {
                let (id, value) = st.value(&info.name, Some(v)).map_err(store_err)?;
                let fid = leak::fingerprint_id(c, &info.name);
                if set.add(&fid, id, value.expose_secret().as_bytes()).is_err() {
                    skipped.push(format!("{c}/{} v{id}", info.name));
                }
            }
        }
    }
    Ok((set, skipped))
}

/// Writes `fingerprints.fp` in the vault directory — every version of every stored value, for
/// `guard redact --fingerprints` — after the values changed. Only with every context unlocked
/// (a partial set would stop redacting the rest); a failure is logged, never fatal.
pub(super) fn publish_fingerprints(s: &mut State) {
    let contexts = store::list_contexts(&s.paths);
    if contexts.iter().any(|c| s.keys.get(c).is_none()) {
        return;
    }
    let path = s.paths.fingerprints();
    match fingerprint_set(s, &contexts) {
        Ok((set, _)) => {
            if let Err(e) = crate::fingerprint::save(&path, &set) {
                eprintln!("guard vault daemon: publishing fingerprints: {e}");
            }
        }
        Err(e) => eprintln!("guard vault daemon: publishing fingerprints: {}", e.message),
    }
}

/// A secret's rotation in progress (`State::rotating`); dropping it ends it.
pub(super) struct RotationToken {
    state: Arc<Mutex<State>>,
    key: (String, String),
}

impl Drop for RotationToken {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.lock() {
            s.rotating.remove(&self.key);
        }
    }
}
