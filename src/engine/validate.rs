//! Offline validators: a token's own structure, checked without contacting the provider.
//!
//! GitHub (`ghp_` …) and npm (`npm_`) tokens end in six base62 characters that encode the CRC32 of
//! the 30 random characters before them; a random string of the right shape passes by chance with
//! probability ~2⁻³², which is what lets those rules run at `high` confidence with no context.

use base64::Engine as _;

use crate::rules::Validator;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub fn validate(v: Validator, secret: &[u8]) -> bool {
    match v {
        Validator::GithubChecksum => {
            crc_token(secret, &[b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"])
        }
        Validator::NpmChecksum => crc_token(secret, &[b"npm_"]),
        Validator::Jwt => jwt(secret),
        Validator::PypiMacaroon => pypi(secret),
    }
}

/// Base62 of `n`, zero-padded to six digits (the checksum tail of GitHub and npm tokens).
pub fn base62_crc(n: u32) -> [u8; 6] {
    let mut out = [b'0'; 6];
    let mut n = n as u64;
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

fn crc_token(secret: &[u8], prefixes: &[&[u8]]) -> bool {
    let Some(body) = prefixes.iter().find_map(|p| secret.strip_prefix(*p)) else {
        return false;
    };
    if body.len() != 36 || !body.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let (random, check) = body.split_at(30);
    base62_crc(crc32fast::hash(random)) == check
}

fn b64url_decode(seg: &[u8]) -> Option<Vec<u8>> {
    let trimmed: Vec<u8> = seg.iter().copied().filter(|&b| b != b'=').collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()
}

fn jwt(secret: &[u8]) -> bool {
    let mut parts = secret.split(|&b| b == b'.');
    let (Some(header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some(h) = b64url_decode(header) else {
        return false;
    };
    let Ok(serde_json::Value::Object(h)) = serde_json::from_slice::<serde_json::Value>(&h) else {
        return false;
    };
    h.contains_key("alg") && b64url_decode(payload).is_some()
}

fn pypi(secret: &[u8]) -> bool {
    let Some(body) = secret.strip_prefix(b"pypi-") else {
        return false;
    };
    // The macaroon is long; its location caveat sits near the start, so decode a prefix
    // on a 4-byte boundary instead of the whole token.
    let n = body.len().min(64) / 4 * 4;
    b64url_decode(&body[..n]).is_some_and(|d| d.windows(8).any(|w| w == b"pypi.org"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github(prefix: &str, random: &str) -> String {
        let crc = base62_crc(crc32fast::hash(random.as_bytes()));
        format!(
            "{prefix}{random}{}",
            std::str::from_utf8(&crc).expect("ascii")
        )
    }

    #[test]
    fn github_checksum_accepts_valid_rejects_tampered() {
        let t = github("ghp_", "FAKEt0kenF0rTestsOnly000000000");
        assert!(validate(Validator::GithubChecksum, t.as_bytes()));
        let mut bad = t.clone().into_bytes();
        bad[10] ^= 0x01;
        assert!(!validate(Validator::GithubChecksum, &bad));
        assert!(!validate(
            Validator::GithubChecksum,
            format!("ghx_{}", &t[4..]).as_bytes()
        ));
        assert!(!validate(Validator::NpmChecksum, t.as_bytes()));
        let n = github("npm_", "FAKEt0kenF0rTestsOnly000000000");
        assert!(validate(Validator::NpmChecksum, n.as_bytes()));
    }

    #[test]
    fn base62_is_zero_padded_big_endian() {
        assert_eq!(&base62_crc(0), b"000000");
        assert_eq!(&base62_crc(61), b"00000z");
        assert_eq!(&base62_crc(62), b"000010");
    }

    #[test]
    fn jwt_needs_alg_header() {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let good = format!(
            "{}.{}.c2ln",
            enc(r#"{"alg":"HS256","typ":"JWT"}"#),
            enc(r#"{"sub":"x"}"#)
        );
        assert!(validate(Validator::Jwt, good.as_bytes()));
        let bad = format!("{}.{}.c2ln", enc(r#"{"typ":"JWT"}"#), enc("{}"));
        assert!(!validate(Validator::Jwt, bad.as_bytes()));
        assert!(!validate(Validator::Jwt, b"a.b"));
    }

    #[test]
    fn pypi_needs_location() {
        let enc = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let body = enc(b"\x02\x01\x08pypi.org\x02\x01\x00fake-macaroon-for-tests-only-0000000000");
        assert!(validate(
            Validator::PypiMacaroon,
            format!("pypi-{body}").as_bytes()
        ));
        let other = enc(b"\x02\x01\x08test.org\x02\x01\x00fake-macaroon-for-tests-only-0000000000");
        assert!(!validate(
            Validator::PypiMacaroon,
            format!("pypi-{other}").as_bytes()
        ));
    }
}
