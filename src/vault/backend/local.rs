//! The `local` backend: the context's age store ([`crate::vault::store::ContextStore`]),
//! decrypted per operation and written back atomically by `save`.

use super::{PutOptions, SecretMeta, SecretStore};
use crate::vault::store::SecretInfo;
use crate::vault::store::{ContextStore, StoreError};
use crate::vault::SecretValue;

impl SecretStore for ContextStore {
    fn backend(&self) -> &'static str {
        "local"
    }
    fn names(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(self.data.secrets.keys().cloned().collect())
    }
    fn meta(&mut self, name: &str) -> Result<SecretMeta, StoreError> {
        Ok(self.entry(name)?.meta())
    }
    fn value(
        &mut self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(u32, SecretValue), StoreError> {
        let (id, v) = ContextStore::value(self, name, version)?;
        Ok((id, v.clone()))
    }
    fn put(&mut self, name: &str, value: SecretValue, opts: PutOptions) -> Result<u32, StoreError> {
        ContextStore::put(self, name, value, opts)
    }
    fn mark_compromised(&mut self, name: &str, id: u32) -> Result<(), StoreError> {
        ContextStore::mark_compromised(self, name, id)
    }
    fn remove(&mut self, name: &str) -> Result<(), StoreError> {
        ContextStore::remove(self, name)
    }
    fn save(&mut self) -> Result<(), StoreError> {
        ContextStore::save(self)
    }
    fn infos(&mut self) -> Result<Vec<SecretInfo>, StoreError> {
        Ok(ContextStore::infos(self))
    }
}
