#!/usr/bin/env python3
"""Offline checker for rules/*.toml and corpus/ (no cargo needed).

    python3 scripts/check-rules.py [--rules DIR] [--corpus DIR] [-v]

Checks, for every rule file:
  * TOML parses; required fields present with the right types; confidence in low|medium|high;
    validate (if any) is a known validator; id is `<file stem>.<name>` and unique across files;
  * the pattern uses only the bounded subset (no `*`, `+`, `{n,}`, lazy quantifiers, look-around,
    back-references, `$`/`^`/`\\z` anchors), no Rust class set operators (`&&`, `--`, `~~`) or
    unescaped `[` inside a class, compiles with Python `re` (bytes, i.e. ASCII classes), cannot
    match the empty string and has a maximum match length <= 16 KiB;
  * every example produces a finding (match + secret group + min_entropy + validator) and every
    negative example produces none; keywords (when given) occur in every example match;
and for every corpus case: running all rules (each rule: non-overlapping leftmost-first matches,
like the engine's confirm stage) gives exactly the `<rule_id> <line>` set in `<case>.expected`,
and each finding's match starts on the same line as its secret (so the label does not depend on
which of the two the engine reports). Exit status 0 when everything passes.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import re
import sys
import tomllib
import zlib
from pathlib import Path

try:
    from re import _parser as sre_parse  # Python 3.11+
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore

ROOT = Path(__file__).resolve().parent.parent
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANK = {"low": 0, "medium": 1, "high": 2}
REQUIRED = {"id": str, "name": str, "pattern": str, "confidence": str, "description": str,
            "references": list, "examples": list, "negative_examples": list}
OPTIONAL = {"keywords": list, "min_entropy": (int, float), "validate": str, "allow": list}
VALIDATORS = {"github_checksum", "npm_checksum", "jwt", "pypi_macaroon"}
MAX_MATCH = 16 * 1024


# ----------------------------------------------------------------------------------- validators
def shannon(b: bytes) -> float:
    if not b:
        return 0.0
    n = len(b)
    return -sum((c / n) * math.log2(c / n) for c in (b.count(bytes([x])) for x in set(b)))


def b62_6(n: int) -> str:
    out = ""
    for _ in range(6):
        n, r = divmod(n, 62)
        out = B62[r] + out
    return out


def crc_token(secret: bytes, prefixes) -> bool:
    body = next((secret[len(p):] for p in prefixes if secret.startswith(p)), None)
    if body is None or len(body) != 36 or not body.isalnum() or not body.isascii():
        return False
    return b62_6(zlib.crc32(body[:30])) == body[30:].decode()


def b64url_strict(seg: bytes):
    """Like base64's URL_SAFE_NO_PAD decode (canonical, no padding) after dropping '='."""
    seg = seg.replace(b"=", b"")
    if len(seg) % 4 == 1 or re.fullmatch(rb"[A-Za-z0-9_-]*", seg) is None:
        return None
    try:
        out = base64.urlsafe_b64decode(seg + b"=" * (-len(seg) % 4))
    except binascii.Error:
        return None
    if base64.urlsafe_b64encode(out).rstrip(b"=") != seg:  # non-zero trailing bits
        return None
    return out


def v_jwt(secret: bytes) -> bool:
    parts = secret.split(b".")
    if len(parts) != 3:
        return False
    h = b64url_strict(parts[0])
    if h is None:
        return False
    try:
        obj = json.loads(h)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(obj, dict) and "alg" in obj and b64url_strict(parts[1]) is not None


def v_pypi(secret: bytes) -> bool:
    if not secret.startswith(b"pypi-"):
        return False
    body = secret[5:]
    n = min(len(body), 64) // 4 * 4
    d = b64url_strict(body[:n])
    return d is not None and b"pypi.org" in d


def validate(name: str, secret: bytes) -> bool:
    return {
        "github_checksum": lambda s: crc_token(s, [b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"]),
        "npm_checksum": lambda s: crc_token(s, [b"npm_"]),
        "jwt": v_jwt,
        "pypi_macaroon": v_pypi,
    }[name](secret)


# ------------------------------------------------------------------------------ pattern checks
def syntax_problems(p: str) -> list[str]:
    """Scan the pattern text for constructs outside the bounded regex-automata/Hyperscan subset."""
    errs, i, n = [], 0, len(p)
    prev_quant = False  # previous token was a quantifier (so a following '?' would be lazy)
    while i < n:
        c = p[i]
        if c == "\\":
            e = p[i + 1] if i + 1 < n else ""
            if e.isdigit() and e != "0":
                errs.append(f"back-reference \\{e} at {i}")
            if e in "zZAG":
                errs.append(f"anchor \\{e} at {i} (window-dependent)")
            i += 2
            prev_quant = False
            continue
        if c == "[":
            j = i + 1
            if j < n and p[j] == "^":
                j += 1
            if j < n and p[j] == "]":
                j += 1
            while j < n and p[j] != "]":
                if p[j] == "\\":
                    j += 2
                    continue
                if p[j] == "[":
                    errs.append(f"unescaped '[' inside class at {j} (nested class in regex-automata)")
                if p[j:j + 2] in ("&&", "--", "~~"):
                    errs.append(f"class set operator {p[j:j + 2]!r} at {j}")
                j += 1
            if j >= n:
                errs.append("unterminated class")
            i = j + 1
            prev_quant = False
            continue
        if c == "(":
            if p.startswith("(?=", i) or p.startswith("(?!", i) or p.startswith("(?<=", i) or p.startswith("(?<!", i):
                errs.append(f"look-around at {i}")
            i += 1
            prev_quant = False
            # skip '?' of group syntax
            if i < n and p[i] == "?":
                i += 1
            continue
        if c in "*+":
            errs.append(f"unbounded '{c}' at {i}")
            i += 1
            prev_quant = True
            continue
        if c == "?":
            if prev_quant:
                errs.append(f"lazy/possessive quantifier at {i}")
            i += 1
            prev_quant = True
            continue
        if c == "{":
            m = re.match(r"\{(\d+)(,(\d*))?\}", p[i:])
            if not m:
                errs.append(f"literal '{{' at {i} must be escaped")
                i += 1
                prev_quant = False
                continue
            if m.group(2) and not m.group(3):
                errs.append(f"unbounded '{m.group(0)}' at {i}")
            elif m.group(3) and int(m.group(3)) < int(m.group(1)):
                errs.append(f"bad repetition {m.group(0)}")
            i += len(m.group(0))
            prev_quant = True
            continue
        if c in "^$":
            errs.append(f"anchor '{c}' at {i} (window-dependent)")
        if c == "}":
            errs.append(f"literal '}}' at {i} should be escaped")
        prev_quant = False
        i += 1
    if "(?i)" in p and not p.startswith("(?i)"):
        errs.append("inline (?i) only at the start (Python compatibility)")
    return errs


def compile_rule(p: str):
    rx = re.compile(p.encode())
    lo, hi = sre_parse.parse(p.encode()).getwidth()
    return rx, lo, hi


# ----------------------------------------------------------------------------------- findings
class Checked:
    def __init__(self, spec: dict):
        self.spec = spec
        self.id = spec["id"]
        self.rx = re.compile(spec["pattern"].encode())
        self.min_entropy = spec.get("min_entropy")
        self.validate = spec.get("validate")
        self.keywords = [k.lower().encode() for k in spec.get("keywords", [])]
        self.allow = [re.compile(a.encode()) for a in spec.get("allow", [])]

    def secret_span(self, m):
        if "secret" in self.rx.groupindex:
            return m.span("secret")
        if self.rx.groups >= 1:
            return m.span(1)
        return m.span()

    def findings(self, data: bytes, use_keywords: bool = True):
        """(match, secret bytes) for each reported finding."""
        if self.keywords and use_keywords:
            low = data.lower()
            if not any(k in low for k in self.keywords):
                return []
        out = []
        for m in self.rx.finditer(data):
            a, b = self.secret_span(m)
            if a < 0:
                continue
            s = data[a:b]
            if self.min_entropy is not None and shannon(s) < self.min_entropy:
                continue
            if self.validate and not validate(self.validate, s):
                continue
            if any(a.search(s) for a in self.allow):
                continue
            out.append((m, s))
        return out


def line_of(data: bytes, off: int) -> int:
    return data.count(b"\n", 0, off) + 1


# -------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", default=str(ROOT / "rules"))
    ap.add_argument("--corpus", default=str(ROOT / "corpus"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    errors: list[str] = []
    rules: list[Checked] = []
    ids: dict[str, str] = {}
    files = sorted(Path(args.rules).glob("*.toml"))
    for f in files:
        try:
            doc = tomllib.loads(f.read_text())
        except tomllib.TOMLDecodeError as e:
            errors.append(f"{f.name}: TOML: {e}")
            continue
        if set(doc) != {"rule"} or not isinstance(doc["rule"], list):
            errors.append(f"{f.name}: expected only [[rule]] tables")
            continue
        for spec in doc["rule"]:
            rid = spec.get("id", "?")
            where = f"{f.name}:{rid}"
            bad = False
            for k, t in REQUIRED.items():
                if k not in spec or not isinstance(spec[k], t) or (isinstance(spec[k], (str, list)) and not spec[k]):
                    errors.append(f"{where}: missing/invalid field {k}")
                    bad = True
            for k, t in OPTIONAL.items():
                if k in spec and not isinstance(spec[k], t):
                    errors.append(f"{where}: invalid type for {k}")
                    bad = True
            unknown = set(spec) - set(REQUIRED) - set(OPTIONAL)
            if unknown:
                errors.append(f"{where}: unknown fields {sorted(unknown)}")
            if bad:
                continue
            if not re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+", rid) or rid.split(".")[0] != f.stem:
                errors.append(f"{where}: id must be '{f.stem}.<name>' (lowercase)")
            if rid in ids:
                errors.append(f"{where}: duplicate id (also in {ids[rid]})")
            ids[rid] = f.name
            if spec["confidence"] not in ("low", "medium", "high"):
                errors.append(f"{where}: bad confidence {spec['confidence']!r}")
            if "validate" in spec and spec["validate"] not in VALIDATORS:
                errors.append(f"{where}: unknown validator {spec['validate']!r}")
            if any(not isinstance(k, str) or not k for k in spec.get("keywords", [])):
                errors.append(f"{where}: keywords must be non-empty strings")
            for e in syntax_problems(spec["pattern"]):
                errors.append(f"{where}: pattern: {e}")
            try:
                _, lo, hi = compile_rule(spec["pattern"])
            except re.error as e:
                errors.append(f"{where}: pattern does not compile: {e}")
                continue
            if lo == 0:
                errors.append(f"{where}: pattern can match the empty string")
            if hi > MAX_MATCH:
                errors.append(f"{where}: max match length {hi} > {MAX_MATCH}")
            r = Checked(spec)
            rules.append(r)
            for ex in spec["examples"]:
                data = ex.encode()
                fs = r.findings(data, use_keywords=False)
                if not fs:
                    m = r.rx.search(data)
                    why = "no match"
                    if m:
                        s = data[slice(*r.secret_span(m))]
                        why = (f"entropy {shannon(s):.2f} < {r.min_entropy}"
                               if r.min_entropy is not None and shannon(s) < r.min_entropy else "validator")
                    errors.append(f"{where}: example gives no finding ({why}): {ex[:90]!r}")
                for m, _ in fs:
                    if r.keywords and not any(k in m.group(0).lower() for k in r.keywords):
                        errors.append(f"{where}: no keyword in example match {m.group(0)[:60]!r}")
            for ex in spec["negative_examples"]:
                if r.findings(ex.encode(), use_keywords=False):
                    errors.append(f"{where}: negative example gives a finding: {ex[:90]!r}")
            if args.verbose:
                print(f"ok {rid} (max len {hi})")

    # corpus
    corpus = Path(args.corpus)
    cases = sorted(corpus.glob("*.txt")) if corpus.is_dir() else []
    for case in cases:
        exp_file = case.with_suffix(".expected")
        if not exp_file.exists():
            errors.append(f"corpus/{case.name}: missing .expected")
            continue
        expected_lines = exp_file.read_text().splitlines()
        expected = []
        for ln in expected_lines:
            parts = ln.split()
            if len(parts) != 2 or not parts[1].isdigit():
                errors.append(f"corpus/{exp_file.name}: bad line {ln!r}")
                continue
            expected.append((parts[0], int(parts[1])))
        if expected != sorted(expected, key=lambda x: (x[1], x[0])):
            errors.append(f"corpus/{exp_file.name}: not sorted by line then rule id")
        data = case.read_bytes()
        spans = []
        for r in rules:
            for m, _ in r.findings(data):
                a, _ = r.secret_span(m)
                ls, lsec = line_of(data, m.start()), line_of(data, a)
                if ls != lsec:
                    errors.append(f"corpus/{case.name}: {r.id} match starts on line {ls} but secret on {lsec}")
                spans.append((m.start(), m.end(), RANK[r.spec["confidence"]], r.id, ls))
        # Like the engine (scan::dedup_overlaps): of overlapping matches, only the most confident
        # survive; equally confident overlaps all stay.
        got = [(rid, ls) for (s0, e0, c0, rid, ls) in spans
               if not any(s1 < e0 and s0 < e1 and c1 > c0 for (s1, e1, c1, _, _) in spans)]
        got.sort(key=lambda x: (x[1], x[0]))
        if got != expected:
            missing = sorted(set(expected) - set(got), key=lambda x: (x[1], x[0]))
            extra = sorted(set(got) - set(expected), key=lambda x: (x[1], x[0]))
            dup = len(got) != len(set(got)) or len(expected) != len(set(expected))
            errors.append(f"corpus/{case.name}: missing {missing} unexpected {extra}" + (" (duplicates)" if dup else ""))
        elif args.verbose:
            print(f"ok corpus/{case.name}: {len(got)} findings")

    provs = {f.stem for f in files}
    for e in errors:
        print("ERROR", e)
    print(f"{len(rules)} rules in {len(provs)} provider files, {len(cases)} corpus cases: "
          + ("OK" if not errors else f"{len(errors)} error(s)"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
