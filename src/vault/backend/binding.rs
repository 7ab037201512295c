//! `contexts/<ctx>/backend.age`: which backend a context's values live on, under the context's
//! own key. Age-encrypted to the context's identity (the OpenBao token stays as protected as the
//! local store) and MAC'd with a key derived from it, because age alone authenticates nothing:
//! anyone can encrypt to a public recipient. No file means the local store.

use crate::vault::keys;
use crate::vault::store::{self, StoreError};
use crate::vault::{SecretValue, VaultPaths};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Where an OpenBao-backed context keeps its values: KV v2 at `<mount>/data/<prefix>/<ctx>/<name>`.
#[derive(Clone, Serialize, Deserialize)]
pub struct OpenBaoConfig {
    /// `http://127.0.0.1:8200`, `https://bao.example.com`.
    pub address: String,
    /// The KV v2 mount (`secret` on a dev server).
    pub mount: String,
    /// Path under the mount that holds guard's contexts.
    pub prefix: String,
    /// How guard authenticates (never logged or printed).
    pub auth: Auth,
    /// OpenBao namespace, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl std::fmt::Debug for OpenBaoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBaoConfig")
            .field("address", &self.address)
            .field("mount", &self.mount)
            .field("prefix", &self.prefix)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// A token, or an AppRole (role id + secret id) that guard logs in with for a token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Auth {
    /// Sent as `X-Vault-Token`.
    Token { token: SecretValue },
    /// `auth/<mount>/login`; the token it returns is kept in memory until it expires.
    AppRole {
        mount: String,
        role_id: String,
        secret_id: SecretValue,
    },
}

#[derive(Debug)]
pub enum Binding {
    Local,
    OpenBao(OpenBaoConfig),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Body {
    Local,
    Openbao(OpenBaoConfig),
}

#[derive(Serialize, Deserialize)]
struct File {
    /// The context this binding is for (a file copied from another context fails).
    context: String,
    body: Body,
    /// HMAC-SHA256 over `context` and `body` (JSON), hex.
    mac: String,
}

const LABEL: &[u8] = b"guard backend binding v1";

fn mac(identity: &age::x25519::Identity, context: &str, body: &Body) -> Result<String, StoreError> {
    let key = keys::derived_key(identity, LABEL);
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&*key).expect("any key length");
    let json = Zeroizing::new(serde_json::to_vec(body).map_err(|e| StoreError::Encrypt {
        context: context.to_string(),
        reason: e.to_string(),
    })?);
    m.update(context.as_bytes());
    m.update(&[0]);
    m.update(&json);
    Ok(hex::encode(m.finalize().into_bytes()))
}

/// The context's binding, verified: the local store when there is no file.
pub fn read(
    paths: &VaultPaths,
    ctx: &str,
    identity: &age::x25519::Identity,
) -> Result<Binding, StoreError> {
    let path = paths.backend(ctx);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Binding::Local),
        Err(source) => {
            return Err(StoreError::Io {
                op: "open",
                path,
                source,
            })
        }
    };
    let bad = |reason: &str| StoreError::Binding {
        context: ctx.to_string(),
        path: path.clone(),
        reason: reason.to_string(),
    };
    let plain =
        store::age_decrypt(&path, file, identity).map_err(|_| bad("not encrypted to it"))?;
    let f: File = serde_json::from_slice(&plain).map_err(|_| bad("not a binding"))?;
    if f.context != ctx {
        return Err(bad("written for another context"));
    }
    let want = mac(identity, ctx, &f.body)?;
    // Constant time is not needed against a local forger who cannot compute any MAC, but costs
    // nothing.
    let same = want.len() == f.mac.len()
        && want
            .bytes()
            .zip(f.mac.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(bad("its MAC does not match"));
    }
    Ok(match f.body {
        Body::Local => Binding::Local,
        Body::Openbao(c) => Binding::OpenBao(c),
    })
}

/// Writes the binding (the caller holds the unlocked identity: a human typed the passphrase).
pub fn write(
    paths: &VaultPaths,
    ctx: &str,
    identity: &age::x25519::Identity,
    binding: Binding,
) -> Result<(), StoreError> {
    let body = match binding {
        Binding::Local => Body::Local,
        Binding::OpenBao(c) => Body::Openbao(c),
    };
    let mac = mac(identity, ctx, &body)?;
    let f = File {
        context: ctx.to_string(),
        body,
        mac,
    };
    let plain = Zeroizing::new(serde_json::to_vec(&f).map_err(|e| StoreError::Encrypt {
        context: ctx.to_string(),
        reason: e.to_string(),
    })?);
    let out = store::age_encrypt(identity, &plain, ctx)?;
    store::atomic_write(&paths.backend(ctx), &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(address: &str) -> OpenBaoConfig {
        OpenBaoConfig {
            address: address.into(),
            mount: "secret".into(),
            prefix: "guard".into(),
            auth: Auth::Token {
                token: SecretValue::new("fake-token-for-a-test".into()),
            },
            namespace: None,
        }
    }

    #[test]
    fn a_binding_verifies_only_under_its_context_key() {
        let dir = tempfile::tempdir().unwrap();
        let paths = VaultPaths::new(dir.path().join("v"));
        let (dev, prod) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        store::init_context(&paths, "dev", &dev).unwrap();
        store::init_context(&paths, "prod", &prod).unwrap();
        assert!(matches!(read(&paths, "dev", &dev), Ok(Binding::Local)));
        write(
            &paths,
            "dev",
            &dev,
            Binding::OpenBao(cfg("http://127.0.0.1:8200")),
        )
        .unwrap();
        match read(&paths, "dev", &dev).unwrap() {
            Binding::OpenBao(c) => assert_eq!(c.address, "http://127.0.0.1:8200"),
            other => panic!("{other:?}"),
        }
        // What a same-user agent can do without the identity: encrypt its own binding to the
        // context's public recipient, with any MAC it likes.
        let body = Body::Openbao(cfg("http://127.0.0.1:9999"));
        let forged = File {
            context: "dev".into(),
            mac: mac(&age::x25519::Identity::generate(), "dev", &body).unwrap(),
            body,
        };
        let plain = serde_json::to_vec(&forged).unwrap();
        let enc = store::age_encrypt(&dev, &plain, "dev").unwrap();
        std::fs::write(paths.backend("dev"), enc).unwrap();
        assert!(matches!(
            read(&paths, "dev", &dev),
            Err(StoreError::Binding { .. })
        ));
        // A genuine binding copied to another context does not verify there.
        write(
            &paths,
            "dev",
            &dev,
            Binding::OpenBao(cfg("http://127.0.0.1:8200")),
        )
        .unwrap();
        std::fs::copy(paths.backend("dev"), paths.backend("prod")).unwrap();
        assert!(matches!(
            read(&paths, "prod", &prod),
            Err(StoreError::Binding { .. })
        ));
        // The token is not in the file in the clear, nor in Debug.
        let raw = std::fs::read(paths.backend("dev")).unwrap();
        assert!(!raw.windows(10).any(|w| w == b"fake-token"));
        let Binding::OpenBao(c) = read(&paths, "dev", &dev).unwrap() else {
            panic!()
        };
        assert!(!format!("{c:?}").contains("fake-token"));
    }
}
