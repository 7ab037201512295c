//! Encoded content: base64 (standard and URL-safe), hex and URL-encoded runs are decoded and the
//! decoded bytes scanned by the same engine ([`Engine::scan_block`] on each decoded run — no
//! second matching loop). A match inside is reported at the encoded run's location, marked with
//! the encoding (`base64`, `hex`, `url`; `base64+url` for a URL-encoded run inside base64).
//!
//! Bounds, so the cost stays proportional to the input:
//! - a run is at least [`MIN_RUN`] characters (shorter runs decode to fewer bytes than most tokens);
//! - each run decodes to at most [`MAX_DECODED`] bytes (a longer run is decoded up to that point);
//! - decoded runs are decoded again at most once ([`MAX_DEPTH`] levels in all);
//! - a run that overlaps a match of the input itself is not decoded (a token that is also valid
//!   base64 — a JWT, an AWS secret key — is already reported);
//! - base64 runs must mix upper and lower case (text encoded in base64 always does; identifiers
//!   and paths mostly do not), and a base64 or hex run whose first [`PROBE`] decoded bytes are
//!   not mostly printable text (an image, a hash, random key material) is not scanned: secrets are
//!   text, and this is what keeps lockfile hashes and inline images cheap.
//!
//! Block mode only: files and blobs scanned whole. Stream mode (stdin, pipes, files over the
//! mapping limit) does not decode.

use std::ops::Range;

use base64::Engine as _;

use super::{Engine, EngineError, Match, RuleIndex, Scratch};

/// Shortest run (in characters) that is decoded.
pub const MIN_RUN: usize = 24;
/// Most bytes one run decodes to; the rest of a longer run is not decoded.
pub const MAX_DECODED: usize = 64 * 1024;
/// Levels of decoding: a run, and runs inside its decoded bytes.
pub const MAX_DEPTH: usize = 2;
/// Decoded bytes inspected to decide whether a run holds text.
pub const PROBE: usize = 96;

/// How a run is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Base64,
    Hex,
    Url,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Base64 => "base64",
            Encoding::Hex => "hex",
            Encoding::Url => "url",
        }
    }
}

/// An encoded run of the input: `hay[start..end]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub start: usize,
    pub end: usize,
    pub encoding: Encoding,
}

/// A match found in decoded bytes, placed at the outermost encoded run.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedMatch {
    /// The encoded run of the input the match was decoded from.
    pub run: Range<u64>,
    /// The encodings peeled off, outermost first, joined by `+`.
    pub encoding: String,
    pub rule: RuleIndex,
    /// The secret as decoded (what the finding id and `--show-secrets` use).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for DecodedMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedMatch")
            .field("run", &self.run)
            .field("encoding", &self.encoding)
            .field("rule", &self.rule)
            .field(
                "secret",
                &format_args!("[REDACTED; {} bytes]", self.secret.len()),
            )
            .finish()
    }
}

/// The base64 alphabets (standard and URL-safe), as a lookup table.
static B64: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_');
        i += 1;
    }
    t
};

fn is_b64(b: u8) -> bool {
    B64[b as usize]
}

/// Characters a URL-encoded run may contain besides `%XX` (RFC 3986 unreserved and reserved,
/// minus the quotes and brackets that delimit values in text).
fn is_url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?#@!$&*+,;=%".contains(&b)
}

/// The encoded runs of `hay` worth decoding, in order of their start.
pub fn runs(hay: &[u8]) -> Vec<Run> {
    let mut out = Vec::new();
    // Base64 and hex: maximal runs of the base64 alphabets, plus `=` padding. A run of at least
    // MIN_RUN bytes contains one of every MIN_RUN-th position, so only those are probed and a
    // run is grown from a probe that hits: most bytes of ordinary text are never looked at (a
    // byte-by-byte pass cost as much as the whole scan of a source tree).
    let n = hay.len();
    let mut pos = MIN_RUN - 1;
    while pos < n {
        if !is_b64(hay[pos]) {
            pos += MIN_RUN;
            continue;
        }
        let mut start = pos;
        while start > 0 && is_b64(hay[start - 1]) {
            start -= 1;
        }
        let mut end = pos + 1;
        while end < n && is_b64(hay[end]) {
            end += 1;
        }
        // The next run starts after `end` (not in the alphabet), so it holds `end + MIN_RUN`
        // or a later probe.
        pos = end + MIN_RUN;
        if end - start < MIN_RUN {
            continue;
        }
        let body = &hay[start..end];
        let mut padded = end;
        while padded < n && hay[padded] == b'=' && padded - end < 2 {
            padded += 1;
        }
        // One pass: upper case, lower case, and whether every byte is a hex digit.
        let (mut upper, mut lower, mut hex) = (false, false, true);
        for &b in body {
            upper |= b.is_ascii_uppercase();
            lower |= b.is_ascii_lowercase();
            hex &= b.is_ascii_hexdigit();
        }
        if hex && body.len().is_multiple_of(2) {
            out.push(Run {
                start,
                end,
                encoding: Encoding::Hex,
            });
        } else if upper && lower {
            out.push(Run {
                start,
                end: padded,
                encoding: Encoding::Base64,
            });
        }
    }
    // URL encoding: maximal runs of URL characters holding at least two `%XX` escapes.
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'%', &hay[i..]) {
        let p = i + p;
        let mut start = p;
        while start > 0 && is_url(hay[start - 1]) {
            start -= 1;
        }
        let mut end = p;
        let mut escapes = 0;
        while end < hay.len() && is_url(hay[end]) {
            if hay[end] == b'%'
                && hay.get(end + 1).is_some_and(u8::is_ascii_hexdigit)
                && hay.get(end + 2).is_some_and(u8::is_ascii_hexdigit)
            {
                escapes += 1;
                end += 3;
            } else {
                end += 1;
            }
        }
        if escapes >= 2 && end - start >= MIN_RUN {
            out.push(Run {
                start,
                end,
                encoding: Encoding::Url,
            });
        }
        i = end.max(p + 1);
    }
    out.sort_by_key(|r| (r.start, r.end));
    out
}

/// Mostly printable ASCII text (tabs and line ends count): at least 7 bytes in 8.
fn looks_like_text(b: &[u8]) -> bool {
    let ok = b
        .iter()
        .filter(|&&c| (0x20..0x7f).contains(&c) || matches!(c, b'\t' | b'\n' | b'\r'))
        .count();
    !b.is_empty() && ok * 8 >= b.len() * 7
}

fn b64_engine(url_safe: bool) -> base64::engine::GeneralPurpose {
    let cfg = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let alphabet = if url_safe {
        &base64::alphabet::URL_SAFE
    } else {
        &base64::alphabet::STANDARD
    };
    base64::engine::GeneralPurpose::new(alphabet, cfg)
}

/// Decodes base64 text of either alphabet (not both mixed), up to `MAX_DECODED` bytes.
fn decode_base64(run: &[u8]) -> Option<Vec<u8>> {
    let body: &[u8] = &run[..run.len() - run.iter().rev().take_while(|&&b| b == b'=').count()];
    let std = body.iter().any(|b| matches!(b, b'+' | b'/'));
    let url = body.iter().any(|b| matches!(b, b'-' | b'_'));
    if std && url {
        return None;
    }
    let engine = b64_engine(url);
    // Decode whole quanta only (a run cut short loses its last partial quantum).
    let quanta = |n: usize| n - n % 4;
    let probe_len = quanta(body.len().min(PROBE / 3 * 4));
    let mut probe = [0u8; PROBE];
    let got = engine.decode_slice(&body[..probe_len], &mut probe).ok()?;
    if !looks_like_text(&probe[..got]) {
        return None;
    }
    let mut take = body.len().min(MAX_DECODED / 3 * 4);
    if body.len() % 4 == 1 || take < body.len() {
        take = quanta(take);
    }
    engine.decode(&body[..take]).ok()
}

fn decode_hex(run: &[u8]) -> Option<Vec<u8>> {
    let probe_len = run.len().min(PROBE * 2) / 2;
    let mut probe = [0u8; PROBE];
    hex::decode_to_slice(&run[..probe_len * 2], &mut probe[..probe_len]).ok()?;
    if !looks_like_text(&probe[..probe_len]) {
        return None;
    }
    let take = run.len().min(MAX_DECODED * 2);
    hex::decode(&run[..take - take % 2]).ok()
}

fn decode_url(run: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(run.len().min(MAX_DECODED));
    let mut i = 0;
    while i < run.len() && out.len() < MAX_DECODED {
        if run[i] == b'%' {
            if let Some(b) = run
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(run[i]);
        i += 1;
    }
    out
}

/// The decoded bytes of `run`, or `None` when it does not decode to text.
pub fn decode(hay: &[u8], run: &Run) -> Option<Vec<u8>> {
    let bytes = &hay[run.start..run.end];
    match run.encoding {
        Encoding::Base64 => decode_base64(bytes),
        Encoding::Hex => decode_hex(bytes),
        Encoding::Url => Some(decode_url(bytes)),
    }
}

impl Engine {
    /// The matches inside the encoded runs of `hay` (one complete input), `direct` being the
    /// input's own matches ([`Engine::scan_block`]): runs overlapping them are not decoded. Each
    /// decoded run is scanned with [`Engine::scan_block`]; the inline `guard:allow` marker is
    /// looked for on the run's own line of `hay`. Ordered by run, then by position inside it.
    pub fn scan_encoded(
        &self,
        scratch: &mut Scratch,
        hay: &[u8],
        direct: &[Match],
    ) -> Result<Vec<DecodedMatch>, EngineError> {
        let mut out = Vec::new();
        let runs = runs(hay);
        if runs.is_empty() {
            return Ok(out);
        }
        let mut d = 0;
        for run in runs {
            // `direct` is sorted by start; skip the matches that end before this run.
            while d < direct.len() && (direct[d].end as usize) <= run.start {
                d += 1;
            }
            let overlaps = direct[d..]
                .iter()
                .take_while(|m| (m.start as usize) < run.end)
                .any(|m| (m.end as usize) > run.start);
            if overlaps || self.allow.allows_line(hay, run.start, run.end) {
                continue;
            }
            let range = run.start as u64..run.end as u64;
            self.decode_level(
                scratch,
                hay,
                &run,
                &range,
                run.encoding.as_str(),
                1,
                &mut out,
            )?;
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn decode_level(
        &self,
        scratch: &mut Scratch,
        hay: &[u8],
        run: &Run,
        outer: &Range<u64>,
        encoding: &str,
        depth: usize,
        out: &mut Vec<DecodedMatch>,
    ) -> Result<(), EngineError> {
        let Some(decoded) = decode(hay, run) else {
            return Ok(());
        };
        let found = self.scan_block(scratch, &decoded)?;
        for m in &found {
            out.push(DecodedMatch {
                run: outer.clone(),
                encoding: encoding.to_string(),
                rule: m.rule,
                secret: decoded[m.secret_start as usize..m.secret_end as usize].to_vec(),
            });
        }
        if depth < MAX_DEPTH {
            for inner in runs(&decoded) {
                let overlaps = found
                    .iter()
                    .any(|m| (m.start as usize) < inner.end && (m.end as usize) > inner.start);
                if !overlaps {
                    let enc = format!("{encoding}+{}", inner.encoding.as_str());
                    self.decode_level(scratch, &decoded, &inner, outer, &enc, depth + 1, out)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Ruleset;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn finds_runs_of_each_encoding() {
        let text = format!(
            "a = {}\nb = {}\nc = postgres%3A%2F%2Fuser%3Apass%40host%2Fdb\nshort = QUJD\nident = some_long_snake_case_identifier_name\n",
            b64("user:correct horse battery"),
            hex::encode("hello hex world, hi!")
        );
        let r = runs(text.as_bytes());
        let kinds: Vec<Encoding> = r.iter().map(|r| r.encoding).collect();
        assert_eq!(kinds, [Encoding::Base64, Encoding::Hex, Encoding::Url]);
        assert_eq!(
            decode(text.as_bytes(), &r[0]).as_deref(),
            Some(&b"user:correct horse battery"[..])
        );
        assert_eq!(
            decode(text.as_bytes(), &r[1]).as_deref(),
            Some(&b"hello hex world, hi!"[..])
        );
        assert_eq!(
            decode(text.as_bytes(), &r[2]).as_deref(),
            Some(&b"postgres://user:pass@host/db"[..])
        );
    }

    /// The probing search finds exactly the maximal runs a byte-by-byte pass finds.
    #[test]
    fn probing_finds_every_long_run() {
        let naive = |hay: &[u8]| -> Vec<(usize, usize)> {
            let mut v = Vec::new();
            let mut i = 0;
            while i < hay.len() {
                if !is_b64(hay[i]) {
                    i += 1;
                    continue;
                }
                let s = i;
                while i < hay.len() && is_b64(hay[i]) {
                    i += 1;
                }
                if i - s >= MIN_RUN {
                    v.push((s, i));
                }
            }
            v
        };
        let mut seed = 7u64;
        for len in [0usize, 1, 23, 24, 25, 47, 48, 49, 200, 1000] {
            for _ in 0..50 {
                let hay: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        // Mostly alphabet, sometimes a separator: runs of every length.
                        if (seed >> 33).is_multiple_of(29) {
                            b' '
                        } else {
                            b"aB3/_-+9zZ"[(seed >> 40) as usize % 10]
                        }
                    })
                    .collect();
                let got: Vec<(usize, usize)> = runs(&hay)
                    .iter()
                    .filter(|r| r.encoding != Encoding::Url)
                    .map(|r| {
                        (
                            r.start,
                            r.start + hay[r.start..].iter().take_while(|&&b| is_b64(b)).count(),
                        )
                    })
                    .collect();
                let want: Vec<(usize, usize)> = naive(&hay)
                    .into_iter()
                    .filter(|&(s, e)| {
                        let b = &hay[s..e];
                        (b.len().is_multiple_of(2) && b.iter().all(u8::is_ascii_hexdigit))
                            || (b.iter().any(u8::is_ascii_uppercase)
                                && b.iter().any(u8::is_ascii_lowercase))
                    })
                    .collect();
                assert_eq!(got, want, "{}", String::from_utf8_lossy(&hay));
            }
        }
    }

    #[test]
    fn binary_payloads_are_not_scanned() {
        // A SHA-256 in hex and random bytes in base64 decode to non-text: skipped.
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let r = runs(sha.as_bytes());
        assert_eq!(r.len(), 1);
        assert_eq!(decode(sha.as_bytes(), &r[0]), None);
        let rnd: Vec<u8> = (0..60u32)
            .map(|i| (i.wrapping_mul(97) % 251) as u8)
            .collect();
        let enc = base64::engine::general_purpose::STANDARD.encode(&rnd);
        let r = runs(enc.as_bytes());
        assert_eq!(decode(enc.as_bytes(), &r[0]), None);
    }

    #[test]
    fn decoded_size_is_capped() {
        let big = b64(&"x = 1\n".repeat(MAX_DECODED / 3));
        let r = runs(big.as_bytes());
        let d = decode(big.as_bytes(), &r[0]).expect("text");
        assert!(
            d.len() <= MAX_DECODED && d.len() > MAX_DECODED - 4,
            "{}",
            d.len()
        );
    }

    fn engine() -> Engine {
        Engine::builder(Ruleset::builtin().expect("rules"))
            .build()
            .expect("engine")
    }

    fn gh_token() -> String {
        let random = "EncodedContentTestToken0000000";
        let crc = super::super::validate::base62_crc(crc32fast::hash(random.as_bytes()));
        format!("ghp_{random}{}", std::str::from_utf8(&crc).expect("ascii"))
    }

    #[test]
    fn a_token_inside_base64_and_inside_base64_of_url_encoding() {
        let e = engine();
        let mut s = e.scratch().expect("scratch");
        let tok = gh_token();
        let inner = format!("GITHUB_TOKEN={tok}");
        let line1 = format!("config: {}\n", b64(&inner));
        // The token's first letter percent-encoded too: only URL-decoding reveals it.
        let url = format!("token%3D%67{}%26scope%3Drepo", &tok[1..]);
        let line2 = format!("blob: {}\n", b64(&format!("next={url} ok")));
        let hay = format!("{line1}{line2}");
        let direct = e.scan_block(&mut s, hay.as_bytes()).expect("scan");
        assert!(direct.is_empty());
        let found = e
            .scan_encoded(&mut s, hay.as_bytes(), &direct)
            .expect("scan");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].encoding, "base64");
        assert_eq!(found[0].run.start, 8);
        assert_eq!(found[0].secret, tok.as_bytes());
        assert_eq!(e.rule(found[0].rule).id.0, "github.pat_classic");
        assert_eq!(found[1].encoding, "base64+url");
        assert_eq!(found[1].run.start as usize, line1.len() + 6);
        // A run that is itself a match is not decoded again; guard:allow on the line silences.
        let allowed = format!("config: {} # guard:allow\n", b64(&inner));
        assert!(e
            .scan_encoded(&mut s, allowed.as_bytes(), &[])
            .expect("scan")
            .is_empty());
        let m = Match {
            start: 8,
            end: 9,
            rule: RuleIndex(0),
            secret_start: 8,
            secret_end: 9,
        };
        assert!(e
            .scan_encoded(&mut s, line1.as_bytes(), &[m])
            .expect("scan")
            .is_empty());
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let m = DecodedMatch {
            run: 0..4,
            encoding: "hex".into(),
            rule: RuleIndex(0),
            secret: b"hunter2-secret".to_vec(),
        };
        let d = format!("{m:?}");
        assert!(!d.contains("hunter2") && d.contains("REDACTED"), "{d}");
    }
}
