//! The fingerprint stage: recognising *known* values (stored secrets) in the input, raw and
//! encoded, from keyed fingerprints — the set never holds a value.
//!
//! For every value and each of its encodings (raw; base64 standard and URL-safe at all three
//! alignments, so a value inside a larger base64 blob is found; hex lower and upper case;
//! URL-encoded; JSON-escaped) a [`KnownSet`] keeps:
//! - keyed 32-bit hashes of the [`ANCHOR`]-byte windows at the first [`MAX_STRIDE`] offsets of the
//!   encoded form (the *anchors*),
//! - a keyed MAC (HMAC-SHA256, truncated to 128 bits) of the whole encoded form, and its length.
//!
//! The scan ([`KnownMatcher`]) tests one anchor position every `stride` bytes (stride = up to
//! [`MAX_STRIDE`], less only when a stored form is too short for it): per tested position one
//! probe of a 512 KiB filter that stays in L2, whatever the number of stored values; the ~3% that
//! pass it probe a 2 MiB filter, and the rare survivors a sorted table. Only on an anchor hit is
//! the full MAC computed over the candidate span. A hit names the entry (id, version, encoding),
//! never the value. Cost is flat in the number of values. [`KnownStream`] runs the stage over a
//! stream with its own copy of the bytes it needs, so it can run on another thread.
//!
//! What a reader of a fingerprint file can learn: the key is in the file (any guard process must
//! be able to match), so a value with little entropy can be brute-forced from its MAC, as from any
//! hash; the 32-bit anchors reveal at most the first `ANCHOR + MAX_STRIDE - 1` bytes of an
//! encoded form to a brute-force search. Values shorter than [`MIN_VALUE_LEN`] are refused: they
//! would redact noise and be guessable.
//!
//! Forms longer than [`MAX_PIECE`] are fingerprinted as consecutive pieces of that length (the
//! last one aligned to the end), so a long value (a PEM key, a certificate bundle) is redacted
//! piece by piece and the hold-back stays bounded.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;

/// Bytes hashed per anchor.
pub const ANCHOR: usize = 8;
/// Anchor positions tested per round of the scan.
const BATCH: usize = 8;
/// Anchors kept per form: one every `stride` positions is then enough to find any occurrence.
pub const MAX_STRIDE: usize = 8;
/// Shortest value that may be fingerprinted.
pub const MIN_VALUE_LEN: usize = 8;
/// Longest span one entry covers; longer forms are split into pieces.
pub const MAX_PIECE: usize = 16 * 1024;
/// Words of the second anchor filter: 2^18 × 64 bits = 2 MiB, two bits per anchor in one word.
/// With 10,000 values × every encoding (~480k anchors) about 0.3% of the positions it is asked
/// about pass it.
const FILTER_WORDS: usize = 1 << 18;
/// Words of the first anchor filter, probed at every tested position: 2^16 × 64 bits = 512 KiB,
/// so it stays in a core's L2 (the 2 MiB one alone lived in L3: 12 ns a probe while Hyperscan ran
/// on the other core); three bits per anchor in one word, ~3% of positions pass it.
const NEAR_WORDS: usize = 1 << 16;

/// The filter word and its two-bit mask for an anchor hash (bits 0–17 pick the word, 18–23 and
/// 24–29 the bits).
#[inline]
fn filter_slot(h: u32) -> (usize, u64) {
    let w = h as usize & (FILTER_WORDS - 1);
    (w, (1u64 << ((h >> 18) & 63)) | (1u64 << ((h >> 24) & 63)))
}

/// The first filter's word and three-bit mask: from a remix of the hash, so it errs
/// independently of the second filter.
#[inline]
fn near_slot(h: u32) -> (usize, u64) {
    let x = u64::from(h).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let w = (x >> 48) as usize & (NEAR_WORDS - 1);
    (
        w,
        (1u64 << ((x >> 42) & 63)) | (1u64 << ((x >> 36) & 63)) | (1u64 << ((x >> 30) & 63)),
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    Raw,
    Base64,
    Base64Url,
    HexLower,
    HexUpper,
    UrlEncoded,
    JsonEscaped,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Base64 => "base64",
            Encoding::Base64Url => "base64url",
            Encoding::HexLower => "hex",
            Encoding::HexUpper => "HEX",
            Encoding::UrlEncoded => "url-encoded",
            Encoding::JsonEscaped => "json-escaped",
        }
    }
}

/// One fingerprinted form of one version of one value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownEntry {
    /// The secret's name (not secret).
    pub id: String,
    pub version: u32,
    pub encoding: Encoding,
    /// Length of the fingerprinted span in bytes.
    pub len: u32,
    /// Keyed hashes of the `ANCHOR` bytes at offsets `0..anchors.len()` of the span.
    pub anchors: Vec<u32>,
    /// HMAC-SHA256 of the span, first 16 bytes, hex.
    pub mac: String,
    /// Whether the span contains a newline (else stream mode settles it at every newline).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub newline: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KnownError {
    #[error("a value of {len} bytes is too short to fingerprint (the minimum is {MIN_VALUE_LEN}: shorter values would redact noise and be easy to guess)")]
    TooShort { len: usize },
    #[error("the secret name must not be empty")]
    EmptyId,
}

/// The fingerprints of a set of values under one key. `Debug` shows counts, never the key.
#[derive(Clone, Serialize, Deserialize)]
pub struct KnownSet {
    /// Hex of the 32-byte key.
    key: String,
    entries: Vec<KnownEntry>,
}

impl fmt::Debug for KnownSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnownSet")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac_of(key: &[u8; 32], bytes: &[u8]) -> [u8; 16] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(bytes);
    let full = m.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The two 64-bit multipliers of the anchor hash, derived from the key.
fn anchor_keys(key: &[u8; 32]) -> (u64, u64) {
    let d = mac_of(key, b"guard anchor hash v1");
    let a = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
    let b = u64::from_le_bytes(d[8..].try_into().expect("8 bytes"));
    (a, b | 1)
}

#[inline]
fn anchor_hash(k: (u64, u64), window: u64) -> u32 {
    let mut h = (window ^ k.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h = h.wrapping_mul(k.1);
    (h >> 32) as u32
}

#[inline]
fn window_at(bytes: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(bytes[i..i + ANCHOR].try_into().expect("ANCHOR bytes"))
}

/// Every distinct encoded form of `value` that guard recognises.
pub fn encodings(value: &[u8]) -> Vec<(Encoding, Vec<u8>)> {
    let mut out: Vec<(Encoding, Vec<u8>)> = vec![(Encoding::Raw, value.to_vec())];
    let push = |out: &mut Vec<(Encoding, Vec<u8>)>, e: Encoding, form: Vec<u8>| {
        if form.len() >= MIN_VALUE_LEN && !out.iter().any(|(_, f)| *f == form) {
            out.push((e, form));
        }
    };
    for (enc, engine) in [
        (
            Encoding::Base64,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
        ),
        (
            Encoding::Base64Url,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ),
    ] {
        for align in 0..3usize {
            // The value preceded by `align` bytes: the characters that depend only on the value
            // are the same whatever those bytes (or the ones after it) are.
            let mut buf = vec![0u8; align];
            buf.extend_from_slice(value);
            let chars = engine.encode(&buf).into_bytes();
            let skip = [0, 2, 3][align];
            let whole = (align + value.len()) * 8 / 6;
            if whole > skip {
                push(&mut out, enc, chars[skip..whole].to_vec());
            }
        }
    }
    push(
        &mut out,
        Encoding::HexLower,
        hex::encode(value).into_bytes(),
    );
    push(
        &mut out,
        Encoding::HexUpper,
        hex::encode_upper(value).into_bytes(),
    );
    let mut url = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            url.push(b);
        } else {
            url.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    push(&mut out, Encoding::UrlEncoded, url);
    if let Ok(s) = std::str::from_utf8(value) {
        let json = serde_json::to_string(s).expect("a str serializes");
        push(
            &mut out,
            Encoding::JsonEscaped,
            json.as_bytes()[1..json.len() - 1].to_vec(),
        );
    }
    out
}

impl KnownSet {
    /// An empty set under `key` (32 random bytes: the caller's, the engine does no I/O).
    pub fn new(key: [u8; 32]) -> KnownSet {
        KnownSet {
            key: hex::encode(key),
            entries: Vec::new(),
        }
    }

    fn key(&self) -> [u8; 32] {
        let mut k = [0u8; 32];
        // Checked when loaded (`validate`) and written by `new`.
        hex::decode_to_slice(&self.key, &mut k).expect("key is 64 hex chars");
        k
    }

    /// Checks a set read from a file: key and MAC shapes, lengths, anchors.
    pub fn validate(&self) -> Result<(), String> {
        let mut k = [0u8; 32];
        hex::decode_to_slice(&self.key, &mut k).map_err(|_| "the key is not 64 hex digits")?;
        for (i, e) in self.entries.iter().enumerate() {
            let mut m = [0u8; 16];
            let bad = |what: &str| format!("entry {} ({}): {what}", i + 1, e.id);
            hex::decode_to_slice(&e.mac, &mut m)
                .map_err(|_| bad("the MAC is not 32 hex digits"))?;
            let len = e.len as usize;
            if !(MIN_VALUE_LEN..=MAX_PIECE).contains(&len) {
                return Err(bad("length out of range"));
            }
            let want = MAX_STRIDE.min(len + 1 - ANCHOR);
            if e.anchors.len() != want {
                return Err(bad("wrong number of anchors"));
            }
            if e.id.is_empty() {
                return Err(bad("empty name"));
            }
        }
        Ok(())
    }

    pub fn entries(&self) -> &[KnownEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Fingerprints `value` (every encoding) as version `version` of `id`.
    pub fn add(&mut self, id: &str, version: u32, value: &[u8]) -> Result<(), KnownError> {
        if id.is_empty() {
            return Err(KnownError::EmptyId);
        }
        if value.len() < MIN_VALUE_LEN {
            return Err(KnownError::TooShort { len: value.len() });
        }
        let key = self.key();
        let k = anchor_keys(&key);
        for (encoding, form) in encodings(value) {
            for piece in pieces(form.len()) {
                let span = &form[piece];
                let n = MAX_STRIDE.min(span.len() + 1 - ANCHOR);
                self.entries.push(KnownEntry {
                    id: id.to_string(),
                    version,
                    encoding,
                    len: span.len() as u32,
                    anchors: (0..n).map(|j| anchor_hash(k, window_at(span, j))).collect(),
                    mac: hex::encode(mac_of(&key, span)),
                    newline: span.contains(&b'\n'),
                });
            }
        }
        Ok(())
    }

    /// Drops every entry of `id`.
    pub fn remove(&mut self, id: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| e.id != id);
        before - self.entries.len()
    }
}

/// Piece ranges of a form of `len` bytes.
fn pieces(len: usize) -> Vec<std::ops::Range<usize>> {
    if len <= MAX_PIECE {
        #[allow(clippy::single_range_in_vec_init)] // one piece: the whole form
        return vec![0..len];
    }
    let mut v: Vec<_> = (0..len / MAX_PIECE)
        .map(|i| i * MAX_PIECE..(i + 1) * MAX_PIECE)
        .collect();
    if !len.is_multiple_of(MAX_PIECE) {
        v.push(len - MAX_PIECE..len);
    }
    v
}

/// A known value found in the input: `start..end` (absolute) is the entry's span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KnownHit {
    pub start: u64,
    pub end: u64,
    /// Index into [`KnownSet::entries`].
    pub entry: u32,
}

/// A candidate from an anchor hit, waiting for its last byte to verify the MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Candidate {
    pub start: u64,
    pub end: u64,
    pub entry: u32,
}

/// The compiled form of a [`KnownSet`]: immutable, `Send + Sync`.
pub struct KnownMatcher {
    set: KnownSet,
    key: [u8; 32],
    k: (u64, u64),
    stride: usize,
    /// Fixed sizes: a masked index needs no bounds check.
    filter: Box<[u64; FILTER_WORDS]>,
    near: Box<[u64; NEAR_WORDS]>,
    /// (anchor hash, entry, offset of the anchor in the span), sorted: one flat allocation,
    /// searched only for the rare position that passes the filter.
    table: Vec<(u32, u32, u8)>,
    /// Each entry's MAC, decoded once (a candidate is checked without allocating).
    macs: Vec<[u8; 16]>,
    max_len: usize,
    line_local: bool,
}

impl fmt::Debug for KnownMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnownMatcher")
            .field("entries", &self.set.entries.len())
            .field("stride", &self.stride)
            .finish_non_exhaustive()
    }
}

impl KnownMatcher {
    pub fn new(set: KnownSet) -> KnownMatcher {
        let key = set.key();
        let k = anchor_keys(&key);
        let stride = set
            .entries
            .iter()
            .map(|e| e.anchors.len())
            .min()
            .unwrap_or(MAX_STRIDE)
            .clamp(1, MAX_STRIDE);
        let mut filter: Box<[u64; FILTER_WORDS]> = vec![0u64; FILTER_WORDS]
            .into_boxed_slice()
            .try_into()
            .expect("FILTER_WORDS long");
        let mut near: Box<[u64; NEAR_WORDS]> = vec![0u64; NEAR_WORDS]
            .into_boxed_slice()
            .try_into()
            .expect("NEAR_WORDS long");
        let mut table = Vec::with_capacity(set.entries.len() * stride);
        for (i, e) in set.entries.iter().enumerate() {
            for (j, &h) in e.anchors.iter().enumerate().take(stride) {
                let (w, mask) = filter_slot(h);
                filter[w] |= mask;
                let (w, mask) = near_slot(h);
                near[w] |= mask;
                table.push((h, i as u32, j as u8));
            }
        }
        let max_len = set
            .entries
            .iter()
            .map(|e| e.len as usize)
            .max()
            .unwrap_or(0);
        table.sort_unstable();
        let line_local = !set.entries.iter().any(|e| e.newline);
        // Validated when loaded; a MAC that does not decode can never match.
        let macs = set
            .entries
            .iter()
            .map(|e| {
                let mut m = [0u8; 16];
                hex::decode_to_slice(&e.mac, &mut m).map_or([0xff; 16], |()| m)
            })
            .collect();
        KnownMatcher {
            macs,
            line_local,
            set,
            key,
            k,
            stride,
            filter,
            near,
            table,
            max_len,
        }
    }

    pub fn set(&self) -> &KnownSet {
        &self.set
    }

    pub fn entry(&self, i: u32) -> &KnownEntry {
        &self.set.entries[i as usize]
    }

    /// Distance between tested anchor positions.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// No entry spans a newline: an occurrence lies within one line.
    pub fn line_local(&self) -> bool {
        self.line_local
    }

    /// Longest span of any entry.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tests the anchor positions `q` (multiples of the stride, absolute) with
    /// `from <= q` and `q + ANCHOR <= base + hay.len()`; returns the next untested position.
    /// `hay` starts at absolute `base`; callers keep `from - (stride - 1) >= base` bytes.
    pub(crate) fn anchors(
        &self,
        hay: &[u8],
        base: u64,
        from: u64,
        out: &mut Vec<Candidate>,
    ) -> u64 {
        let s = self.stride as u64;
        let mut q = from.max(base).div_ceil(s) * s;
        let total = base + hay.len() as u64;
        if self.set.entries.is_empty() {
            return (total + 1).div_ceil(s) * s;
        }
        // Eight positions per round (`test_batch`).
        let stride = self.stride;
        if stride == MAX_STRIDE {
            // The common case (every stored form at least 15 bytes long): 64 bytes, eight
            // windows side by side, no bounds check per window.
            while q + (BATCH * MAX_STRIDE) as u64 <= total {
                let at = (q - base) as usize;
                let block: &[u8; BATCH * MAX_STRIDE] = hay[at..at + BATCH * MAX_STRIDE]
                    .try_into()
                    .expect("64 bytes");
                let window = |i: usize| {
                    let w = &block[i * MAX_STRIDE..(i + 1) * MAX_STRIDE];
                    u64::from_le_bytes(w.try_into().expect("8 bytes"))
                };
                self.test_batch(q, MAX_STRIDE, window, out);
                q += (BATCH * MAX_STRIDE) as u64;
            }
        }
        while q + ((BATCH - 1) * stride + ANCHOR) as u64 <= total {
            let at = (q - base) as usize;
            self.test_batch(q, stride, |i| window_at(hay, at + i * stride), out);
            q += (BATCH * stride) as u64;
        }
        let near = &*self.near;
        while q + ANCHOR as u64 <= total {
            let h = anchor_hash(self.k, window_at(hay, (q - base) as usize));
            let (w, mask) = near_slot(h);
            if near[w] & mask == mask {
                self.candidates_at(h, q, out);
            }
            q += s;
        }
        q
    }

    /// Tests the [`BATCH`] positions `q + i * stride`, whose windows `window(i)` reads: their
    /// first-filter words are loaded independently (the loads overlap), and one branch covers
    /// all of them.
    #[inline(always)]
    fn test_batch(
        &self,
        q: u64,
        stride: usize,
        window: impl Fn(usize) -> u64,
        out: &mut Vec<Candidate>,
    ) {
        let mut hs = [0u32; BATCH];
        let mut pass = 0u32;
        for (i, h) in hs.iter_mut().enumerate() {
            *h = anchor_hash(self.k, window(i));
            let (w, mask) = near_slot(*h);
            pass |= u32::from(self.near[w] & mask == mask) << i;
        }
        while pass != 0 {
            let i = pass.trailing_zeros() as usize;
            pass &= pass - 1;
            self.candidates_at(hs[i], q + (i * stride) as u64, out);
        }
    }

    /// The candidates of an anchor hash `h` that passed the filter at absolute position `q`.
    #[inline]
    fn candidates_at(&self, h: u32, q: u64, out: &mut Vec<Candidate>) {
        let (w, mask) = filter_slot(h);
        if self.filter[w] & mask != mask {
            return;
        }
        let from = self.table.partition_point(|t| t.0 < h);
        for &(_, e, j) in self.table[from..].iter().take_while(|t| t.0 == h) {
            let Some(start) = q.checked_sub(j as u64) else {
                continue;
            };
            out.push(Candidate {
                start,
                end: start + self.set.entries[e as usize].len as u64,
                entry: e,
            });
        }
    }

    /// Whether the candidate's bytes (all inside `hay`, which starts at `base`) carry its MAC.
    pub(crate) fn verify(&self, hay: &[u8], base: u64, c: &Candidate) -> bool {
        if c.start < base || c.end > base + hay.len() as u64 {
            return false;
        }
        let span = &hay[(c.start - base) as usize..(c.end - base) as usize];
        mac_of(&self.key, span) == self.macs[c.entry as usize]
    }

    /// Every known value in a whole input, sorted.
    pub fn find_all(&self, hay: &[u8]) -> Vec<KnownHit> {
        let mut cands = Vec::new();
        self.anchors(hay, 0, 0, &mut cands);
        let mut hits: Vec<KnownHit> = cands
            .iter()
            .filter(|c| self.verify(hay, 0, c))
            .map(|c| KnownHit {
                start: c.start,
                end: c.end,
                entry: c.entry,
            })
            .collect();
        hits.sort();
        hits.dedup();
        hits
    }
}

/// The fingerprint stage over a stream: its own copy of the bytes it may still need (a
/// candidate's span, the last anchor window), so it can run beside the rule stages — on another
/// thread ([`StreamScanner::with_known`](super::stream::StreamScanner::with_known)) — and give
/// the same hits for any chunking.
pub struct KnownStream {
    matcher: std::sync::Arc<KnownMatcher>,
    buf: Vec<u8>,
    /// Absolute offset of `buf[0]`.
    base: u64,
    /// Next anchor position to test.
    next: u64,
    /// Just past the last newline fed.
    line_end: u64,
    /// Anchor hits whose span has not fully arrived.
    candidates: Vec<Candidate>,
    /// Verified hits not yet taken.
    hits: Vec<KnownHit>,
    /// Every known value starting before this offset has been found.
    settled: u64,
}

impl KnownStream {
    pub fn new(matcher: std::sync::Arc<KnownMatcher>) -> KnownStream {
        KnownStream {
            matcher,
            buf: Vec::new(),
            base: 0,
            next: 0,
            line_end: 0,
            candidates: Vec::new(),
            hits: Vec::new(),
            settled: 0,
        }
    }

    /// Every known value starting before this offset has been found.
    pub fn settled(&self) -> u64 {
        self.settled
    }

    /// Hits found since the last call, in the order found.
    pub fn take_hits(&mut self) -> Vec<KnownHit> {
        std::mem::take(&mut self.hits)
    }

    /// Returns hits taken out (while the stage ran elsewhere) to the front of the queue.
    #[cfg_attr(not(feature = "hyperscan"), allow(dead_code))]
    pub(crate) fn put_back_hits(&mut self, mut hits: Vec<KnownHit>) {
        hits.append(&mut self.hits);
        self.hits = hits;
    }

    /// Appends `chunk` (the end of the input when `eof`): tests its anchors, verifies the
    /// candidates whose span is complete, drops the bytes no candidate can need.
    pub fn feed(&mut self, chunk: &[u8], eof: bool) {
        self.append(chunk, None);
        self.settle(eof);
    }

    /// The first anchor position at or after `at`: where another thread that tests the rest of
    /// a chunk starts ([`KnownMatcher::anchors`] from there, then [`KnownStream::add_tested`]).
    #[cfg_attr(not(feature = "hyperscan"), allow(dead_code))]
    pub(crate) fn align(&self, at: u64) -> u64 {
        let s = self.matcher.stride() as u64;
        at.max(self.next).div_ceil(s) * s
    }

    #[cfg_attr(not(feature = "hyperscan"), allow(dead_code))]
    pub(crate) fn matcher(&self) -> &std::sync::Arc<KnownMatcher> {
        &self.matcher
    }

    /// The first half of [`KnownStream::feed`]: appends `chunk` and tests its anchors, only
    /// those before `limit` (an [`KnownStream::align`]ed position) when given.
    pub(crate) fn append(&mut self, chunk: &[u8], limit: Option<u64>) {
        if let Some(p) = memchr::memrchr(b'\n', chunk) {
            self.line_end = self.base + (self.buf.len() + p + 1) as u64;
        }
        self.buf.extend_from_slice(chunk);
        let mut end = self.buf.len();
        if let Some(l) = limit {
            // Positions `q < l` are those whose window ends before `l + ANCHOR - 1`.
            end = end.min((l + ANCHOR as u64 - 1).saturating_sub(self.base) as usize);
        }
        self.next =
            self.matcher
                .anchors(&self.buf[..end], self.base, self.next, &mut self.candidates);
    }

    /// Candidates found by another thread from the `limit` of [`KnownStream::append`] on, and
    /// the position where it stopped.
    #[cfg_attr(not(feature = "hyperscan"), allow(dead_code))]
    pub(crate) fn add_tested(&mut self, candidates: &[Candidate], next: u64) {
        self.candidates.extend_from_slice(candidates);
        self.next = next;
    }

    /// The second half of [`KnownStream::feed`]: verifies, settles, drops what is not needed.
    pub(crate) fn settle(&mut self, eof: bool) {
        let m = &self.matcher;
        let total = self.base + self.buf.len() as u64;
        // With no stored form holding a newline, a candidate across a line end cannot match, and
        // nothing can still start before the last newline: complete lines settle at once.
        let line_end = if m.line_local() { self.line_end } else { 0 };
        let (buf, base, hits) = (&self.buf, self.base, &mut self.hits);
        self.candidates.retain(|c| {
            if c.start < line_end && c.end > line_end {
                return false;
            }
            if c.end > total {
                return !eof;
            }
            if m.verify(buf, base, c) {
                hits.push(KnownHit {
                    start: c.start,
                    end: c.end,
                    entry: c.entry,
                });
            }
            false
        });
        let untested = self
            .next
            .saturating_sub(m.stride() as u64 - 1)
            .max(line_end);
        let first_candidate = self.candidates.iter().map(|c| c.start).min();
        self.settled = if eof {
            u64::MAX
        } else {
            first_candidate.unwrap_or(u64::MAX).min(untested)
        };
        // Keep what a candidate or the next anchor window may read.
        let keep = first_candidate
            .unwrap_or(u64::MAX)
            .min(self.next.saturating_sub(m.stride() as u64 - 1))
            .clamp(self.base, total);
        self.buf.drain(..(keep - self.base) as usize);
        self.base = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_with(values: &[(&str, &[u8])]) -> KnownMatcher {
        let mut s = KnownSet::new([7u8; 32]);
        for (id, v) in values {
            s.add(id, 1, v).expect("long enough");
        }
        KnownMatcher::new(s)
    }

    fn found(m: &KnownMatcher, hay: &[u8]) -> Vec<(String, Encoding, usize, usize)> {
        m.find_all(hay)
            .iter()
            .map(|h| {
                let e = m.entry(h.entry);
                (e.id.clone(), e.encoding, h.start as usize, h.end as usize)
            })
            .collect()
    }

    const VALUE: &[u8] = b"fake-Stored-Value/42+xyz";

    #[test]
    fn refuses_short_values_and_empty_names() {
        let mut s = KnownSet::new([1; 32]);
        assert_eq!(
            s.add("a", 1, b"short"),
            Err(KnownError::TooShort { len: 5 })
        );
        assert_eq!(s.add("", 1, VALUE), Err(KnownError::EmptyId));
        assert!(s.is_empty());
    }

    #[test]
    fn finds_raw_value_anywhere() {
        let m = set_with(&[("api", VALUE)]);
        for pre in 0..9 {
            let mut hay = b"x".repeat(pre);
            hay.extend_from_slice(VALUE);
            hay.extend_from_slice(b" tail");
            assert_eq!(
                found(&m, &hay),
                vec![("api".into(), Encoding::Raw, pre, pre + VALUE.len())],
                "prefix {pre}"
            );
        }
        assert!(found(&m, b"fake-Stored-Value/42+xy! nothing").is_empty());
    }

    #[test]
    fn finds_every_encoding_inside_larger_blobs() {
        let m = set_with(&[("api", VALUE)]);
        let std = base64::engine::general_purpose::STANDARD;
        let url = base64::engine::general_purpose::URL_SAFE;
        for pre in 0..3 {
            for post in 0..3 {
                let mut blob = b"{\"k\":\"".to_vec()[..pre + 3].to_vec();
                blob.extend_from_slice(VALUE);
                blob.extend_from_slice(&b"!!!"[..post]);
                for (enc, text) in [
                    (Encoding::Base64, std.encode(&blob)),
                    (Encoding::Base64Url, url.encode(&blob)),
                ] {
                    let hits = found(&m, format!("data: {text}\n").as_bytes());
                    // Where the two alphabets agree, the forms are one (kept as standard).
                    assert!(
                        hits.iter().any(|h| h.1 == enc || h.1 == Encoding::Base64),
                        "{enc:?} pre {pre} post {post}: {hits:?}"
                    );
                }
            }
        }
        let hexed = format!(
            "hex={} HEX={}",
            hex::encode(VALUE),
            hex::encode_upper(VALUE)
        );
        let kinds: Vec<_> = found(&m, hexed.as_bytes()).iter().map(|h| h.1).collect();
        assert_eq!(kinds, vec![Encoding::HexLower, Encoding::HexUpper]);
        let q = "https://x/?t=fake-Stored-Value%2F42%2Bxyz&a=1";
        assert_eq!(found(&m, q.as_bytes())[0].1, Encoding::UrlEncoded);
    }

    #[test]
    fn json_escaped_and_long_values() {
        let v = b"line one \"quoted\"\n\tsecret-part-9f8e7d";
        let m = set_with(&[("multi", v)]);
        let doc = format!(
            "{{\"v\":{}}}",
            serde_json::to_string(std::str::from_utf8(v).unwrap()).unwrap()
        );
        assert!(found(&m, doc.as_bytes())
            .iter()
            .any(|h| h.1 == Encoding::JsonEscaped));
        // A value longer than a piece is found piece by piece, covering all of it.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let long: Vec<u8> = (0..MAX_PIECE * 2 + 100)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefghijklmnopqrstuvwxyz012345"[(x % 32) as usize]
            })
            .collect();
        let m = set_with(&[("pem", &long)]);
        let mut hay = b"prefix ".to_vec();
        hay.extend_from_slice(&long);
        let raw: Vec<_> = found(&m, &hay)
            .into_iter()
            .filter(|h| h.1 == Encoding::Raw)
            .collect();
        assert_eq!(raw.len(), 3);
        assert_eq!(raw[0].2, 7);
        assert_eq!(raw.last().unwrap().3, hay.len());
    }

    #[test]
    fn short_forms_lower_the_stride_and_still_match() {
        let m = set_with(&[("eight", b"AbCd1234")]);
        assert_eq!(m.stride(), 1);
        for pre in 0..5 {
            let hay = format!("{}AbCd1234.", "-".repeat(pre));
            assert_eq!(found(&m, hay.as_bytes()).len(), 1, "{hay}");
        }
    }

    #[test]
    fn serialized_set_holds_no_value_and_round_trips() {
        let mut s = KnownSet::new([9; 32]);
        s.add("db", 3, VALUE).unwrap();
        let text = serde_json::to_string(&s).unwrap();
        for (_, form) in encodings(VALUE) {
            let form = String::from_utf8(form).unwrap();
            assert!(!text.contains(&form[..12]), "file leaks a form");
        }
        let back: KnownSet = serde_json::from_str(&text).unwrap();
        back.validate().unwrap();
        assert_eq!(back.entries(), s.entries());
        assert!(!format!("{s:?}").contains(&s.key));
    }
}
