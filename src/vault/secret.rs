//! The one type that holds a secret value in memory.
//!
//! Design decision: values are `Zeroizing<String>` (secrets are text: tokens, passwords, keys in
//! PEM) so the heap buffer is wiped on drop; there is no derived `Debug`/`Display` — the manual
//! `Debug` prints only the length — and the only way to the bytes is [`SecretValue::expose_secret`],
//! which makes every read greppable in review.

use std::fmt;
use zeroize::Zeroizing;

/// A secret value. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }
    /// The plaintext. Call sites are the audit surface of this crate: keep them few.
    pub fn expose_secret(&self) -> &str {
        self.0.as_str()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.0.len())
    }
}

impl serde::Serialize for SecretValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose_secret())
    }
}

impl<'de> serde::Deserialize<'de> for SecretValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretValue::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn debug_never_shows_the_value() {
        let v = SecretValue::new("fake-value-for-debug-test".into());
        let shown = format!("{v:?}");
        assert!(!shown.contains("fake-value"), "{shown}");
        assert!(shown.contains("25 bytes"));
    }
}
