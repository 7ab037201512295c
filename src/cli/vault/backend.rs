//! `guard vault backend openbao|local`: where a context's values live. A human sets it (the
//! vault passphrase, at a terminal): the binding is written under the context's own key
//! ([`crate::vault::backend::binding`]), so an agent can neither read the token nor repoint it.

use super::{envelope, other, rpc_err, vault_passphrase, with_passphrase, Out};
use crate::vault::backend::binding::{self, Auth, Binding, OpenBaoConfig};
use crate::vault::backend::openbao::{self, Client as Bao};
use crate::vault::client::{Client, ClientError};
use crate::vault::rpc;
use crate::vault::{keys, store, SecretValue, VaultPaths};
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum BackendCmd {
    /// Keep the context's values in an OpenBao (or Vault) KV version 2 engine; checks the token
    /// and the mount first. The token comes from --token-file, else $BAO_TOKEN / $VAULT_TOKEN
    #[command(
        after_help = "Examples:\n  BAO_TOKEN=… guard vault backend openbao --address https://bao.example.com:8200\n  guard vault backend openbao --context prod --address http://127.0.0.1:8200 \\\n      --mount kv --prefix team/guard --token-file ~/.config/guard/bao-token\n\nValues go to <mount>/data/<prefix>/<context>/<name>; the context must hold no local\nsecrets yet. The token is stored encrypted under the context's key, never in config.toml."
    )]
    Openbao {
        #[arg(long, default_value = "default")]
        context: String,
        /// Server address [env: BAO_ADDR, VAULT_ADDR]
        #[arg(long)]
        address: Option<String>,
        /// The KV v2 mount
        #[arg(long, default_value = "secret")]
        mount: String,
        /// Path under the mount for guard's contexts
        #[arg(long, default_value = "guard")]
        prefix: String,
        /// OpenBao namespace [env: BAO_NAMESPACE]
        #[arg(long)]
        namespace: Option<String>,
        /// File holding the token (first line)
        #[arg(long, value_name = "FILE", conflicts_with = "approle_role_id")]
        token_file: Option<PathBuf>,
        /// Log in with AppRole instead of a token: the role id
        #[arg(long, value_name = "ID", requires = "approle_secret_id_file")]
        approle_role_id: Option<String>,
        /// File holding the AppRole secret id (first line)
        #[arg(long, value_name = "FILE", requires = "approle_role_id")]
        approle_secret_id_file: Option<PathBuf>,
        /// Where the AppRole auth method is mounted
        #[arg(long, value_name = "PATH", default_value = "approle")]
        approle_mount: String,
    },
    /// Keep the context's values in this machine's age store (the default). Values already in
    /// OpenBao stay there
    #[command(after_help = "Example:\n  guard vault backend local --context prod")]
    Local {
        #[arg(long, default_value = "default")]
        context: String,
    },
}

fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// The first line of `text` (a token or secret id read from a file or the environment).
fn credential(text: &str, what: &str) -> Result<SecretValue, ClientError> {
    let t = text.lines().next().unwrap_or("").trim();
    if t.is_empty() {
        return Err(rpc_err(rpc::INVALID_PARAMS, format!("the {what} is empty")));
    }
    Ok(SecretValue::new(t.to_string()))
}

fn read_credential(f: &PathBuf, what: &str) -> Result<SecretValue, ClientError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(f)
            .map_err(|e| other(format!("reading the {what} file {}: {e}", f.display())))?,
    );
    credential(&text, what)
}

/// How to authenticate: AppRole when a role id is given, else the token file, else
/// `$BAO_TOKEN` / `$VAULT_TOKEN`.
fn auth(
    token_file: Option<&PathBuf>,
    approle: Option<(String, &PathBuf, String)>,
) -> Result<Auth, ClientError> {
    if let Some((role_id, secret_file, mount)) = approle {
        if !openbao::valid_path(&mount) {
            return Err(rpc_err(
                rpc::INVALID_PARAMS,
                format!("--approle-mount {mount:?} is not a mount path"),
            ));
        }
        return Ok(Auth::AppRole {
            mount,
            role_id,
            secret_id: read_credential(secret_file, "AppRole secret id")?,
        });
    }
    let token = match token_file {
        Some(f) => read_credential(f, "token")?,
        None => {
            let env =
                Zeroizing::new(env_first(&["BAO_TOKEN", "VAULT_TOKEN"]).ok_or_else(|| {
                    rpc_err(
                        rpc::INVALID_PARAMS,
                        "no OpenBao credentials: give --token-file or --approle-role-id, or set \
                     BAO_TOKEN",
                    )
                })?);
            credential(&env, "token")?
        }
    };
    Ok(Auth::Token { token })
}

pub(super) fn run(paths: &VaultPaths, out: &Out, cmd: BackendCmd) -> Result<i32, ClientError> {
    let (context, binding) = match cmd {
        BackendCmd::Openbao {
            context,
            address,
            mount,
            prefix,
            namespace,
            token_file,
            approle_role_id,
            approle_secret_id_file,
            approle_mount,
        } => {
            let address = address
                .or_else(|| env_first(&["BAO_ADDR", "VAULT_ADDR"]))
                .ok_or_else(|| rpc_err(rpc::INVALID_PARAMS, "give --address (or set BAO_ADDR)"))?;
            if !(address.starts_with("http://") || address.starts_with("https://")) {
                return Err(rpc_err(
                    rpc::INVALID_PARAMS,
                    format!("--address {address:?} must start with http:// or https://"),
                ));
            }
            for (flag, v) in [("--mount", &mount), ("--prefix", &prefix)] {
                if !openbao::valid_path(v) {
                    return Err(rpc_err(
                        rpc::INVALID_PARAMS,
                        format!(
                            "{flag} {v:?}: letters, digits, '_', '-', '.' and '/' between parts"
                        ),
                    ));
                }
            }
            let cfg = OpenBaoConfig {
                address,
                mount,
                prefix,
                auth: auth(
                    token_file.as_ref(),
                    approle_role_id
                        .zip(approle_secret_id_file.as_ref())
                        .map(|(r, f)| (r, f, approle_mount)),
                )?,
                namespace: namespace.or_else(|| env_first(&["BAO_NAMESPACE"])),
            };
            (context, Binding::OpenBao(cfg))
        }
        BackendCmd::Local { context } => (context, Binding::Local),
    };
    store::check_name("context", &context).map_err(other)?;
    if !paths.identity(&context).exists() {
        return Err(other(store::StoreError::NoContext { context }));
    }
    // Checked before the passphrase is asked for: nothing to type if it cannot work.
    if let Binding::OpenBao(cfg) = &binding {
        Bao::new(cfg).check().map_err(other)?;
    }
    let pass = vault_passphrase(paths, &context)?;
    let identity = keys::read_identity(&paths.identity(&context), &pass).map_err(other)?;
    let kind = match &binding {
        Binding::Local => "local",
        Binding::OpenBao(_) => "openbao",
    };
    if kind == "openbao" {
        let local = store::ContextStore::open(paths, &context, &identity).map_err(other)?;
        if !local.data.secrets.is_empty() {
            return Err(rpc_err(
                rpc::INVALID_PARAMS,
                format!(
                    "context {context:?} holds {} secret(s) in its local store; guard does not \
                     move values between backends. Bind a new context instead \
                     (`guard vault init --context NEW`), or remove them first",
                    local.data.secrets.len()
                ),
            ));
        }
    }
    let location = match &binding {
        Binding::Local => json!(null),
        Binding::OpenBao(c) => json!({"address": c.address, "mount": c.mount, "prefix": c.prefix,
                                      "namespace": c.namespace}),
    };
    binding::write(paths, &context, &identity, binding).map_err(other)?;
    // A running daemon republishes its fingerprints from the new backend.
    if let Ok(mut c) = Client::connect(paths) {
        c.call("unlock", with_passphrase(json!({}), &pass))?;
    }
    let env = envelope(
        json!({"context": context, "backend": kind, "openbao": location}),
        vec![rpc::next(
            format!("guard vault list --context {context}"),
            "see the context's secrets on its backend",
        )],
    );
    Ok(out.ok(&env, |d| {
        format!(
            "context {} now keeps its values {}",
            d["context"].as_str().unwrap_or(""),
            match d["openbao"]["address"].as_str() {
                Some(a) => format!(
                    "in OpenBao at {a} ({}/data/{}/{})",
                    d["openbao"]["mount"].as_str().unwrap_or(""),
                    d["openbao"]["prefix"].as_str().unwrap_or(""),
                    d["context"].as_str().unwrap_or("")
                ),
                None => "in the local age store".into(),
            }
        )
    }))
}
