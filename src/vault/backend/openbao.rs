//! The `openbao` backend: values in an OpenBao (or HashiCorp Vault) KV v2 engine, one KV secret
//! per guard secret at `<mount>/data/<prefix>/<context>/<name>`, `{"value": …}`.
//!
//! - Versions are KV versions: a rotation writes a new one, old ones stay readable (and keep
//!   being redacted). Each write is check-and-set on the version guard read, so the id a `put`
//!   announced (and the audit record named) is the id the server gives, or the write fails.
//! - guard's own metadata (rotation hook, schedule, leak policy, compromised versions and the
//!   lease prefix to revoke upstream) is the secret's `custom_metadata`, written before the value
//!   so a new secret never exists without its options.
//! - A deleted or destroyed KV version is not a version for guard.
//! - `revoke_prefix` (custom metadata `guard.revoke_prefix`, set with `--revoke-prefix`) names
//!   OpenBao leases issued alongside the value (a database engine's dynamic credentials, say);
//!   a leak revokes them with `sys/leases/revoke-prefix`.
//! - Blocking HTTP with short timeouts (connect 3 s, whole request 15 s): a server that is down
//!   fails the operation at once with its address, and the leak loop keeps the event spooled.

use super::binding::{Auth, OpenBaoConfig};
use super::{PutOptions, SecretMeta, SecretStore, VersionMeta};
use crate::vault::store::{check_name, check_value_len, LeakPolicy, StoreError};
use crate::vault::SecretValue;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;
use zeroize::Zeroizing;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirects(0)
            .build()
    })
}

/// The characters a mount or prefix may use (they become URL path segments).
pub fn valid_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.ends_with('/')
        && !p.contains("//")
        && !p.split('/').any(|s| s == "." || s == "..")
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b))
}

/// A thin KV v2 / sys client for one binding.
pub struct Client<'a> {
    cfg: &'a OpenBaoConfig,
}

/// What a request answered: 404 is `None`, any other failure an error naming `op`.
type Answer = Result<Option<Zeroizing<String>>, StoreError>;

impl<'a> Client<'a> {
    pub fn new(cfg: &'a OpenBaoConfig) -> Self {
        Self { cfg }
    }

    fn err(&self, op: &str, reason: impl Into<String>) -> StoreError {
        StoreError::Backend {
            address: self.cfg.address.clone(),
            op: op.to_string(),
            reason: reason.into(),
        }
    }

    fn request(&self, method: &str, path: &str, body: Option<&[u8]>, op: &str) -> Answer {
        let token = self.token(false)?;
        match self.request_with(&token, method, path, body, op) {
            // An AppRole token that expired or was revoked: log in again, once.
            Err(StoreError::Backend { reason, .. })
                if reason.starts_with("HTTP 403")
                    && matches!(self.cfg.auth, Auth::AppRole { .. }) =>
            {
                let token = self.token(true)?;
                self.request_with(&token, method, path, body, op)
            }
            other => other,
        }
    }

    /// The token to send: the configured one, or an AppRole login's (cached per process until
    /// shortly before it expires; `fresh` logs in again).
    fn token(&self, fresh: bool) -> Result<SecretValue, StoreError> {
        let (mount, role_id, secret_id) = match &self.cfg.auth {
            Auth::Token { token } => return Ok(token.clone()),
            Auth::AppRole {
                mount,
                role_id,
                secret_id,
            } => (mount, role_id, secret_id),
        };
        type Cache = std::sync::Mutex<HashMap<String, (SecretValue, std::time::Instant)>>;
        static TOKENS: OnceLock<Cache> = OnceLock::new();
        let key = format!("{} {mount} {role_id}", self.cfg.address);
        let cache = TOKENS.get_or_init(Default::default);
        if !fresh {
            let c = cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((t, until)) = c.get(&key) {
                if std::time::Instant::now() < *until {
                    return Ok(t.clone());
                }
            }
        }
        let body = Zeroizing::new(
            serde_json::to_vec(
                &json!({"role_id": role_id, "secret_id": secret_id.expose_secret()}),
            )
            .unwrap_or_default(),
        );
        let op = "logging in with AppRole";
        let none = SecretValue::new(String::new());
        let answer = self
            .request_with(
                &none,
                "POST",
                &format!("auth/{mount}/login"),
                Some(&body),
                op,
            )?
            .ok_or_else(|| self.err(op, format!("no AppRole auth at auth/{mount}")))?;
        #[derive(Deserialize)]
        struct Login {
            auth: LoginAuth,
        }
        #[derive(Deserialize)]
        struct LoginAuth {
            client_token: SecretValue,
            #[serde(default)]
            lease_duration: u64,
        }
        let login: Login = serde_json::from_str(&answer)
            .map_err(|e| self.err(op, format!("unexpected answer ({e})")))?;
        let ttl = std::time::Duration::from_secs(login.auth.lease_duration.max(60));
        // Renewed a little before it expires.
        let until = std::time::Instant::now() + ttl.mul_f64(0.8);
        cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (login.auth.client_token.clone(), until));
        Ok(login.auth.client_token)
    }

    fn request_with(
        &self,
        token: &SecretValue,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        op: &str,
    ) -> Answer {
        let url = format!("{}/v1/{}", self.cfg.address.trim_end_matches('/'), path);
        let mut req = agent().request(method, &url).set("X-Vault-Request", "true");
        if !token.is_empty() {
            req = req.set("X-Vault-Token", token.expose_secret());
        }
        if let Some(ns) = &self.cfg.namespace {
            req = req.set("X-Vault-Namespace", ns);
        }
        let res = match body {
            Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
            None => req.call(),
        };
        match res {
            Ok(r) => {
                let body = Zeroizing::new(
                    r.into_string()
                        .map_err(|e| self.err(op, format!("reading the answer: {e}")))?,
                );
                Ok(Some(body))
            }
            Err(ureq::Error::Status(404, r)) => {
                // A 404 with errors is a missing mount or a permission problem worth naming;
                // an empty one is "no such secret".
                let text = r.into_string().unwrap_or_default();
                match server_errors(&text) {
                    Some(e) if !e.is_empty() => Err(self.err(op, format!("404: {e}"))),
                    _ => Ok(None),
                }
            }
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                let why = server_errors(&text).unwrap_or_default();
                Err(self.err(op, format!("HTTP {code}: {why}")))
            }
            Err(ureq::Error::Transport(t)) => Err(self.err(
                op,
                format!("cannot reach the server ({t}); is it running, and is the address right?"),
            )),
        }
    }

    fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        op: &str,
    ) -> Result<Option<Value>, StoreError> {
        match self.request(method, path, body, op)? {
            None => Ok(None),
            Some(t) if t.trim().is_empty() => Ok(Some(Value::Null)),
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| self.err(op, format!("not JSON ({e})"))),
        }
    }

    /// Checks the token (`auth/token/lookup-self`) and that the mount is a KV v2 engine.
    pub fn check(&self) -> Result<(), StoreError> {
        self.json("GET", "auth/token/lookup-self", None, "checking the token")?
            .ok_or_else(|| self.err("checking the token", "no such endpoint"))?;
        let tune = self
            .json(
                "GET",
                &format!("sys/mounts/{}/tune", self.cfg.mount),
                None,
                "reading the mount",
            )?
            .ok_or_else(|| {
                self.err(
                    "reading the mount",
                    format!("no mount {:?}", self.cfg.mount),
                )
            })?;
        let version = tune
            .pointer("/data/options/version")
            .or_else(|| tune.pointer("/options/version"))
            .and_then(Value::as_str);
        if version != Some("2") {
            return Err(self.err(
                "reading the mount",
                format!(
                    "mount {:?} is not a KV version 2 engine (`bao secrets enable -version=2 \
                     -path={} kv`)",
                    self.cfg.mount, self.cfg.mount
                ),
            ));
        }
        Ok(())
    }

    /// `sys/leases/revoke-prefix/<prefix>`: every OpenBao lease under it ends now.
    pub fn revoke_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        if !valid_path(prefix) {
            return Err(self.err(
                "revoking leases",
                format!("invalid lease prefix {prefix:?}"),
            ));
        }
        self.request(
            "PUT",
            &format!("sys/leases/revoke-prefix/{prefix}"),
            Some(b"{}"),
            "revoking leases",
        )?;
        Ok(())
    }
}

/// The `errors` array of an OpenBao error answer, joined.
fn server_errors(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct E {
        #[serde(default)]
        errors: Vec<String>,
    }
    serde_json::from_str::<E>(text)
        .ok()
        .map(|e| e.errors.join("; "))
}

/// Seconds since the epoch of an RFC 3339 UTC time as OpenBao writes it
/// (`2026-11-30T09:19:27.729665853Z`); 0 if it is not one.
fn unix_seconds(t: &str) -> u64 {
    let p = |a: usize, b: usize| t.get(a..b).and_then(|s| s.parse::<i64>().ok());
    let (Some(y), Some(m), Some(d), Some(h), Some(mi), Some(s)) =
        (p(0, 4), p(5, 7), p(8, 10), p(11, 13), p(14, 16), p(17, 19))
    else {
        return 0;
    };
    // Days from civil (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + s).unwrap_or(0)
}

/// A secret as the server has it.
#[derive(Clone)]
struct Remote {
    meta: SecretMeta,
    /// KV's `current_version` (0: no such secret), the check-and-set base of the next write.
    kv_current: u32,
}

enum Op {
    /// Write the secret's custom metadata as cached.
    Meta(String),
    /// Write the value as version `expect` (check-and-set on `expect - 1`).
    Put {
        name: String,
        value: SecretValue,
        expect: u32,
    },
    Remove(String),
}

/// One context on OpenBao, for one operation.
pub struct OpenBaoStore {
    ctx: String,
    cfg: OpenBaoConfig,
    cache: HashMap<String, Remote>,
    staged: Vec<Op>,
}

const K_ROTATE_VIA: &str = "guard.rotate_via";
const K_ROTATE_SHELL: &str = "guard.rotate_shell";
const K_ROTATE_EVERY: &str = "guard.rotate_every";
const K_ON_LEAK: &str = "guard.on_leak";
const K_COMPROMISED: &str = "guard.compromised";
const K_REVOKE_PREFIX: &str = "guard.revoke_prefix";
const K_DESCRIPTION: &str = "guard.description";

impl OpenBaoStore {
    pub fn new(ctx: &str, cfg: OpenBaoConfig) -> Self {
        Self {
            ctx: ctx.to_string(),
            cfg,
            cache: HashMap::new(),
            staged: Vec::new(),
        }
    }

    fn client(&self) -> Client<'_> {
        Client::new(&self.cfg)
    }

    fn path(&self, kind: &str, name: &str) -> String {
        format!(
            "{}/{kind}/{}/{}/{name}",
            self.cfg.mount, self.cfg.prefix, self.ctx
        )
    }

    fn not_found(&self, name: &str) -> StoreError {
        StoreError::NotFound {
            context: self.ctx.clone(),
            name: name.to_string(),
        }
    }

    /// The secret as the server has it (cached for this operation); `None` if it has none.
    fn remote(&mut self, name: &str) -> Result<Option<&mut Remote>, StoreError> {
        check_name("secret", name)?;
        if !self.cache.contains_key(name) {
            let Some(v) = self.client().json(
                "GET",
                &self.path("metadata", name),
                None,
                &format!("reading {name:?}"),
            )?
            else {
                return Ok(None);
            };
            let r = parse_metadata(&v);
            self.cache.insert(name.to_string(), r);
        }
        Ok(self.cache.get_mut(name))
    }

    fn custom_metadata(r: &Remote) -> Value {
        let m = &r.meta;
        let mut c = serde_json::Map::new();
        if let Some(v) = &m.rotate_via {
            c.insert(K_ROTATE_VIA.into(), json!(v));
        }
        if m.rotate_shell {
            c.insert(K_ROTATE_SHELL.into(), json!("true"));
        }
        if let Some(v) = &m.rotate_every {
            c.insert(K_ROTATE_EVERY.into(), json!(v));
        }
        if let Some(p) = m.on_leak {
            let s = serde_json::to_value(p).unwrap_or(Value::Null);
            c.insert(K_ON_LEAK.into(), s);
        }
        let bad: Vec<String> = m
            .versions
            .iter()
            .filter(|v| v.compromised)
            .map(|v| v.id.to_string())
            .collect();
        if !bad.is_empty() {
            c.insert(K_COMPROMISED.into(), json!(bad.join(",")));
        }
        if let Some(p) = &m.revoke_prefix {
            c.insert(K_REVOKE_PREFIX.into(), json!(p));
        }
        if let Some(d) = &m.description {
            c.insert(K_DESCRIPTION.into(), json!(d));
        }
        json!({ "custom_metadata": c })
    }
}

fn parse_metadata(v: &Value) -> Remote {
    let d = &v["data"];
    let custom = &d["custom_metadata"];
    let s = |k: &str| custom.get(k).and_then(Value::as_str).map(str::to_string);
    let compromised: Vec<u32> = s(K_COMPROMISED)
        .unwrap_or_default()
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let mut versions: Vec<VersionMeta> = d["versions"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, x)| {
                    !x["destroyed"].as_bool().unwrap_or(false)
                        && x["deletion_time"].as_str().unwrap_or("").is_empty()
                })
                .filter_map(|(id, x)| {
                    let id: u32 = id.parse().ok()?;
                    Some(VersionMeta {
                        id,
                        created: unix_seconds(x["created_time"].as_str().unwrap_or("")),
                        compromised: compromised.contains(&id),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|v| v.id);
    Remote {
        meta: SecretMeta {
            rotate_via: s(K_ROTATE_VIA),
            rotate_shell: s(K_ROTATE_SHELL).as_deref() == Some("true"),
            rotate_every: s(K_ROTATE_EVERY),
            description: s(K_DESCRIPTION),
            on_leak: s(K_ON_LEAK).and_then(|p| serde_json::from_value::<LeakPolicy>(json!(p)).ok()),
            versions,
            revoke_prefix: s(K_REVOKE_PREFIX),
        },
        kv_current: d["current_version"].as_u64().unwrap_or(0) as u32,
    }
}

impl SecretStore for OpenBaoStore {
    fn backend(&self) -> &'static str {
        "openbao"
    }

    fn names(&mut self) -> Result<Vec<String>, StoreError> {
        let path = format!(
            "{}/metadata/{}/{}/",
            self.cfg.mount, self.cfg.prefix, self.ctx
        );
        let Some(v) = self.client().json("LIST", &path, None, "listing secrets")? else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = v["data"]["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter(|k| !k.ends_with('/') && check_name("secret", k).is_ok())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    fn meta(&mut self, name: &str) -> Result<SecretMeta, StoreError> {
        let missing = self.not_found(name);
        let r = self.remote(name)?.ok_or(missing)?;
        if r.meta.versions.is_empty() {
            return Err(self.not_found(name));
        }
        Ok(r.meta.clone())
    }

    fn value(
        &mut self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(u32, SecretValue), StoreError> {
        let meta = self.meta(name)?;
        let id = version.or(meta.current_id()).unwrap_or(0);
        if meta.version(Some(id)).is_none() {
            return Err(StoreError::NoVersion {
                name: name.to_string(),
                version: id,
            });
        }
        let path = format!("{}?version={id}", self.path("data", name));
        let body = self
            .client()
            .request("GET", &path, None, &format!("reading {name:?}"))?
            .ok_or_else(|| StoreError::NoVersion {
                name: name.to_string(),
                version: id,
            })?;
        #[derive(Deserialize)]
        struct Resp {
            data: Data,
        }
        #[derive(Deserialize)]
        struct Data {
            data: Option<Payload>,
        }
        #[derive(Deserialize)]
        struct Payload {
            value: Option<SecretValue>,
        }
        // serde_json's errors name a position, never the text.
        let r: Resp = serde_json::from_str(&body).map_err(|e| {
            self.client().err(
                &format!("reading {name:?}"),
                format!("unexpected answer ({e})"),
            )
        })?;
        let value = r.data.data.and_then(|p| p.value).ok_or_else(|| {
            self.client().err(
                &format!("reading {name:?}"),
                format!("version {id} has no \"value\" field (not written by guard?)"),
            )
        })?;
        Ok((id, value))
    }

    fn put(&mut self, name: &str, value: SecretValue, opts: PutOptions) -> Result<u32, StoreError> {
        check_value_len(value.len())?;
        if let Some(p) = &opts.revoke_prefix {
            if !valid_path(p) {
                return Err(self
                    .client()
                    .err("writing", format!("invalid lease prefix {p:?}")));
            }
        }
        if self.remote(name)?.is_none() {
            self.cache.insert(
                name.to_string(),
                Remote {
                    meta: SecretMeta::default(),
                    kv_current: 0,
                },
            );
        }
        let r = self.cache.get_mut(name).expect("inserted above");
        opts.apply(&mut r.meta);
        r.kv_current += 1;
        let expect = r.kv_current;
        r.meta.versions.push(VersionMeta {
            id: expect,
            created: crate::vault::now_unix(),
            compromised: false,
        });
        self.staged.push(Op::Put {
            name: name.to_string(),
            value,
            expect,
        });
        Ok(expect)
    }

    fn mark_compromised(&mut self, name: &str, id: u32) -> Result<(), StoreError> {
        let missing = self.not_found(name);
        let r = self.remote(name)?.ok_or(missing)?;
        let v = r
            .meta
            .versions
            .iter_mut()
            .find(|v| v.id == id)
            .ok_or(StoreError::NoVersion {
                name: name.to_string(),
                version: id,
            })?;
        v.compromised = true;
        self.staged.push(Op::Meta(name.to_string()));
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), StoreError> {
        self.meta(name)?;
        self.cache.remove(name);
        self.staged.push(Op::Remove(name.to_string()));
        Ok(())
    }

    fn save(&mut self) -> Result<(), StoreError> {
        for op in std::mem::take(&mut self.staged) {
            match op {
                Op::Meta(name) => {
                    let Some(r) = self.cache.get(&name) else {
                        continue;
                    };
                    let body = serde_json::to_vec(&Self::custom_metadata(r)).unwrap_or_default();
                    self.client().request(
                        "POST",
                        &self.path("metadata", &name),
                        Some(&body),
                        &format!("writing the metadata of {name:?}"),
                    )?;
                }
                Op::Put {
                    name,
                    value,
                    expect,
                } => {
                    let op = format!("writing {name:?}");
                    if let Some(r) = self.cache.get(&name) {
                        let body =
                            serde_json::to_vec(&Self::custom_metadata(r)).unwrap_or_default();
                        self.client().request(
                            "POST",
                            &self.path("metadata", &name),
                            Some(&body),
                            &op,
                        )?;
                    }
                    let body = Zeroizing::new(
                        serde_json::to_vec(&json!({
                            "options": {"cas": expect - 1},
                            "data": {"value": value.expose_secret()},
                        }))
                        .unwrap_or_default(),
                    );
                    let answer =
                        self.client()
                            .json("POST", &self.path("data", &name), Some(&body), &op);
                    let got = match answer {
                        Err(StoreError::Backend { reason, .. })
                            if reason.contains("check-and-set") =>
                        {
                            return Err(StoreError::Conflict {
                                address: self.cfg.address.clone(),
                                name,
                            })
                        }
                        other => other?,
                    };
                    let version = got
                        .as_ref()
                        .and_then(|v| v.pointer("/data/version"))
                        .and_then(Value::as_u64);
                    if version != Some(u64::from(expect)) {
                        return Err(StoreError::Conflict {
                            address: self.cfg.address.clone(),
                            name,
                        });
                    }
                }
                Op::Remove(name) => {
                    self.client().request(
                        "DELETE",
                        &self.path("metadata", &name),
                        None,
                        &format!("removing {name:?}"),
                    )?;
                }
            }
        }
        Ok(())
    }

    fn revoke_upstream(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        let Some(prefix) = self
            .remote(name)?
            .and_then(|r| r.meta.revoke_prefix.clone())
        else {
            return Ok(None);
        };
        self.client().revoke_prefix(&prefix)?;
        Ok(Some(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_as_openbao_writes_them() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), 0);
        assert_eq!(
            unix_seconds("2026-11-30T09:19:27.729665853Z"),
            1_796_030_367
        );
        assert_eq!(unix_seconds("2000-02-29T12:00:00Z"), 951_825_600);
        assert_eq!(unix_seconds("garbage"), 0);
    }

    #[test]
    fn mount_and_prefix_paths() {
        assert!(valid_path("secret"));
        assert!(valid_path("teams/guard"));
        for bad in ["", "/x", "x/", "a//b", "a/../b", "a b", "a?b", "a%2fb"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
    }
}
