//! `guard mcp` driven by a real MCP client: the Python SDK's stdio client (PyPI `mcp`, installed
//! by `scripts/deps test` into `target/tools/mcp`), which starts `guard mcp` itself.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

use crate::scan::github_token;

/// The Python with the `mcp` package: `$GUARD_MCP_PYTHON`, else the venv `scripts/deps test`
/// makes.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("GUARD_MCP_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/mcp/bin/python");
    assert!(
        venv.exists(),
        "no Python MCP client: run scripts/deps test (PyPI mcp) or set GUARD_MCP_PYTHON"
    );
    venv
}

/// Runs `calls` through one MCP session; the tool list, then one answer per call.
fn session(calls: &Value, vault: &Path) -> (Value, Vec<Value>) {
    let out = assert_cmd::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py"))
        .arg(assert_cmd::cargo::cargo_bin("guard"))
        .env("GUARD_VAULT_DIR", vault)
        .env("XDG_STATE_HOME", vault.join("state"))
        .env("GUARD_NO_AUTOSTART", "1")
        .write_stdin(calls.to_string())
        .output()
        .expect("the MCP client runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap());
    let head = lines.next().expect("the tool list");
    (head, lines.collect())
}

/// initialize, tools/list, each text tool, and malformed calls (unknown tool, wrong types,
/// oversize input) answered as errors while the server keeps serving; no answer carries the
/// secret.
#[test]
fn a_real_mcp_client_lists_and_calls_the_text_tools() {
    let vault = tempfile::tempdir().unwrap();
    let token = github_token("FakeTokenForTheMcpTest");
    let text = format!("deploy:\n  GITHUB_TOKEN: {token}\n  region: eu\n");
    let calls = json!([
        {"tool": "scan_text", "args": {"text": text}},
        {"tool": "redact_text", "args": {"text": text}},
        {"tool": "no_such_tool", "args": {}},
        {"tool": "scan_text", "args": {"text": 42}},
        {"tool": "scan_text", "args": {}},
        {"tool": "redact_text", "args": {"text": "x".repeat((1 << 20) + 1)}},
        {"tool": "scan_text", "args": {"text": "nothing secret here"}},
        {"tool": "redact_text", "args": {"text": text}},
        {"tool": "redact_text", "args": {"text": text, "approve": true}},
    ]);
    let (head, answers) = session(&calls, vault.path());
    assert_eq!(head["server"], "guard");
    let tools = head["tools"].as_object().unwrap();
    for t in [
        "scan_text",
        "redact_text",
        "secrets_list",
        "secrets_exec",
        "secrets_request_access",
    ] {
        assert!(tools.contains_key(t), "{t} missing: {head}");
    }
    assert_eq!(
        tools["scan_text"]["properties"]["text"]["type"], "string",
        "{head}"
    );
    // secrets_exec's secrets are the vault's own `ExecSecret` (name, env, ttl).
    let exec = tools["secrets_exec"].to_string();
    for field in [
        "\"argv\"",
        "\"secrets\"",
        "\"ttl\"",
        "\"timeout_seconds\"",
        "\"purpose\"",
    ] {
        assert!(exec.contains(field), "{field} missing: {exec}");
    }
    assert!(
        tools["secrets_exec"]["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("purpose"))),
        "{exec}"
    );
    assert_eq!(answers.len(), 9, "{answers:?}");
    for a in &answers {
        assert!(!a.to_string().contains(&token[4..]), "a secret left: {a}");
    }
    let scan: Value = serde_json::from_str(answers[0]["ok"].as_str().unwrap()).unwrap();
    let f = &scan["findings"][0];
    assert_eq!(f["rule"], "github.pat_classic");
    assert_eq!(
        (f["line"].as_u64(), f["column"].as_u64()),
        (Some(2), Some(17))
    );
    assert_eq!(
        answers[1]["ok"],
        "deploy:\n  GITHUB_TOKEN: [REDACTED:github.pat_classic]\n  region: eu\n"
    );
    for (i, what) in [
        (2, "unknown tool"),
        (3, "wrong type"),
        (4, "missing text"),
        (5, "oversize"),
        (8, "unknown argument"),
    ] {
        assert!(
            answers[i].get("error").is_some() || answers[i].get("tool_error").is_some(),
            "{what} answered as a result: {}",
            answers[i]
        );
        assert!(answers[i].get("ok").is_none(), "{what}: {}", answers[i]);
    }
    assert!(answers[5].to_string().contains("at most"), "{}", answers[5]);
    let clean: Value = serde_json::from_str(answers[6]["ok"].as_str().unwrap()).unwrap();
    assert_eq!(clean["findings"], json!([]));
    assert_eq!(answers[7], answers[1], "still serving after the errors");
}

/// `secrets_list` answers names from the vault daemon, never values; with no vault it says why.
#[test]
fn secrets_list_without_a_vault_is_an_error_not_a_crash() {
    let vault = tempfile::tempdir().unwrap();
    let calls = json!([
        {"tool": "secrets_list", "args": {}},
        {"tool": "redact_text", "args": {"text": "still here"}},
    ]);
    let (_, answers) = session(&calls, &vault.path().join("none"));
    assert!(answers[0].get("ok").is_none(), "{}", answers[0]);
    assert_eq!(answers[1]["ok"], "still here");
}

/// `secrets_exec` through a real client: a command a human approved at the terminal gets the
/// stored value; what it prints comes back redacted (raw and base64) with its exit code; a
/// command nobody approved gets `approval_required`, and nothing the agent sends approves it.
#[test]
fn secrets_exec_runs_an_approved_command_and_returns_redacted_output() {
    let v = crate::vault::Vault::new();
    let value = crate::vault::fake_value("mcp-exec");
    v.add(
        "tok",
        &value,
        &["--description", "deploy token for the docs site"],
    );
    let script = "echo \"token=$TOK\"; printf %s \"$TOK\" | base64; exit 3";
    v.grant(&["tok"], &["sh", "-c", script]);
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&value)
    };
    let exec = |argv: Vec<&str>| {
        json!({"tool": "secrets_exec", "args": {
            "argv": argv, "cwd": v.work, "secrets": [{"name": "tok", "env": "TOK"}],
            "purpose": "print the token for the test"}})
    };
    let calls = json!([
        {"tool": "secrets_list", "args": {"purpose": "what can I use"}},
        exec(vec!["sh", "-c", script]),
        exec(vec!["sh", "-c", "echo $TOK"]),
        {"tool": "secrets_exec", "args": {"argv": [], "purpose": "nothing"}},
        {"tool": "secrets_exec", "args": {"argv": ["true"]}},
    ]);
    let (_, mut answers) = session(&calls, &v.dir);
    for a in &answers {
        let t = a.to_string();
        assert!(
            !t.contains(&value) && !t.contains(&b64[..12]),
            "a value left: {t}"
        );
    }
    let listed = result(&answers.remove(0));
    let tok = &listed["contexts"][0]["secrets"][0];
    assert_eq!(tok["name"], "tok", "{listed}");
    assert_eq!(tok["description"], "deploy token for the docs site");
    assert_eq!(tok["last_rotation"], Value::Null, "never rotated: {tok}");
    let ran: Value = serde_json::from_str(
        answers[0]["ok"]
            .as_str()
            .unwrap_or_else(|| panic!("{answers:?}")),
    )
    .unwrap();
    assert_eq!(ran["exit_code"], 3, "{ran}");
    let out = ran["stdout"].as_str().unwrap();
    // The raw value may be claimed by a rule's replacement (`token=…` is an assignment); the
    // base64 form only the injected value's fingerprints know.
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().all(|l| l.contains("[REDACTED:")), "{out}");
    assert_eq!(out.lines().nth(1), Some("[REDACTED:tok]"), "{out}");
    let pending: Value = serde_json::from_str(answers[1]["ok"].as_str().unwrap()).unwrap();
    assert_eq!(pending["status"], "approval_required", "{pending}");
    assert!(answers[2].get("ok").is_none(), "{}", answers[2]);
    assert!(answers[3].get("ok").is_none(), "no purpose: {}", answers[3]);
    // Audited with the client's name and the purpose it gave.
    let access: Vec<Value> = v
        .audit_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["op"] == "access")
        .collect();
    assert_eq!(access.len(), 1, "{access:?}");
    assert_eq!(access[0]["agent"], "guard-test-agent 1.0");
    assert_eq!(access[0]["purpose"], "print the token for the test");
    // The request waits for a human; the agent's session could not approve it.
    assert_eq!(
        v.status()["pending_approvals"].as_array().map(Vec::len),
        Some(1)
    );
}

/// The JSON result of a call that must have succeeded.
fn result(answer: &Value) -> Value {
    let text = answer["ok"]
        .as_str()
        .unwrap_or_else(|| panic!("not a result: {answer}"));
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Self-approval through MCP: the agent asks `secrets_request_access`, then tries to approve its
/// own request with every tool and argument it has — extra arguments, `guard vault approve` /
/// `grant` / `unlock` run through `secrets_exec` (even with the passphrase on their stdin, as if
/// the agent had learnt it), short waits. Nothing approves; the request stays pending. The human
/// then sees the agent's name and purpose at the terminal and approves, and `secrets_exec`
/// works; a second session waiting in `secrets_request_access` hears the human's answer.
#[test]
fn nothing_an_mcp_client_sends_approves_its_own_request() {
    let v = crate::vault::Vault::new();
    let value = crate::vault::fake_value("mcp-self");
    v.add("tok", &value, &[]);
    let guard = assert_cmd::cargo::cargo_bin("guard");
    let g = guard.to_str().unwrap();
    let vd = v.dir.to_str().unwrap();
    let target = json!(["sh", "-c", "echo deployed $TOK"]);
    let ask = |extra: Value| {
        let mut args = json!({"secrets": ["tok"], "argv": target, "cwd": v.work,
                              "purpose": "deploy the docs site"});
        for (k, x) in extra.as_object().unwrap() {
            args[k] = x.clone();
        }
        json!({"tool": "secrets_request_access", "args": args})
    };
    let run = |argv: Value| {
        json!({"tool": "secrets_exec", "args": {"argv": argv, "cwd": v.work,
               "purpose": "approve my own request"}})
    };
    let calls = json!([
        ask(json!({})),
        ask(json!({"approve": true})),
        ask(json!({"allow": true, "request": "$REQUEST"})),
        ask(json!({"passphrase": crate::vault::PASS})),
        ask(json!({"wait_seconds": 1})),
        run(json!([g, "vault", "approve", "$REQUEST", "--vault-dir", vd])),
        run(json!(["sh", "-c", format!("printf '%s\\n' '{}' | {g} vault approve $REQUEST --vault-dir {vd}", crate::vault::PASS)])),
        run(json!([g, "vault", "grant", "tok", "--vault-dir", vd, "--", "sh", "-c", "echo deployed $TOK"])),
        run(json!([g, "vault", "unlock", "--vault-dir", vd])),
        {"tool": "secrets_exec", "args": {"argv": target, "cwd": v.work, "purpose": "try",
                                          "secrets": [{"name": "tok", "env": "TOK"}]}},
        {"tool": "secrets_exec", "args": {"argv": target, "cwd": v.work, "purpose": "try",
                                          "secrets": [{"name": "tok", "env": "TOK"}],
                                          "approved": true}},
        {"tool": "secrets_list", "args": {"context": "$REQUEST"}},
        {"tool": "redact_text", "args": {"text": "approve $REQUEST", "purpose": "approve"}},
        ask(json!({})),
    ]);
    let (_, answers) = session(&calls, &v.dir);
    let first = result(&answers[0]);
    assert_eq!(first["status"], "approval_required", "{first}");
    assert_eq!(first["agent"], "guard-test-agent 1.0", "{first}");
    let req = first["request"].as_str().unwrap().to_string();
    for (i, a) in answers.iter().enumerate() {
        let t = a.to_string();
        assert!(!t.contains(&value), "call {i} leaked the value: {t}");
        assert!(
            !t.contains("vault approve") || i >= 5,
            "call {i} suggests self-approval: {t}"
        );
    }
    for a in &answers[1..=3] {
        assert!(a.get("ok").is_none(), "extra argument accepted: {a}");
    }
    assert_eq!(
        result(&answers[4])["status"],
        "approval_required",
        "{}",
        answers[4]
    );
    for (i, a) in answers.iter().enumerate().take(9).skip(5) {
        let r = result(a);
        assert_ne!(r["exit_code"], 0, "call {i} succeeded: {r}");
        assert!(
            r["stderr"].as_str().unwrap().contains("needs a human"),
            "call {i}: {r}"
        );
    }
    assert_eq!(result(&answers[9])["status"], "approval_required");
    assert!(answers[10].get("ok").is_none(), "{}", answers[10]);
    assert_eq!(
        result(&answers[13])["request"],
        req.as_str(),
        "one request, joined"
    );
    let audit = v.audit_text();
    assert!(
        !audit.contains("\"approved\""),
        "approved by the agent: {audit}"
    );
    let pending = v.status()["pending_approvals"].clone();
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    // Every call was audited with the client's name; the purpose went with the request.
    let records: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let requested = records
        .iter()
        .find(|r| r["op"] == "approval" && r["outcome"] == "requested")
        .unwrap();
    assert_eq!(requested["agent"], "guard-test-agent 1.0");
    assert_eq!(requested["purpose"], "deploy the docs site");
    let noted = records
        .iter()
        .filter(|r| r["op"] == "mcp" && r["agent"] == "guard-test-agent 1.0")
        .count();
    assert!(
        noted >= 2,
        "secrets_list and redact_text not audited: {audit}"
    );

    // A second session waits for the human's answer; the human approves at the terminal.
    let asked = |v: &crate::vault::Vault| {
        v.audit_text()
            .matches("\"outcome\":\"secrets_request_access\"")
            .count()
    };
    let asked_before = asked(&v);
    let calls = json!([
        ask(json!({"wait_seconds": 60})),
        {"tool": "secrets_exec", "args": {"argv": target, "cwd": v.work, "purpose": "deploy",
                                          "secrets": [{"name": "tok", "env": "TOK"}]}},
    ]);
    let dir = v.dir.clone();
    let waiting = std::thread::spawn(move || session(&calls, &dir).1);
    // The call is audited just before it asks the daemon and starts waiting: approve then
    // (with a margin), so the waiting session is the one that hears the answer.
    let t0 = std::time::Instant::now();
    while asked(&v) == asked_before && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = v.human_ok(
        &["vault", "approve", &req],
        &[(crate::vault::PASS_PROMPT, crate::vault::PASS)],
    );
    assert!(
        r.tty.contains("guard-test-agent") && r.tty.contains("deploy the docs site"),
        "the human is not told who asks and why: {:?}",
        r.tty
    );
    let answers = waiting.join().unwrap();
    assert_eq!(result(&answers[0])["status"], "approved", "{}", answers[0]);
    let ran = result(&answers[1]);
    assert_eq!(ran["exit_code"], 0, "{ran}");
    assert_eq!(ran["stdout"], "deployed [REDACTED:tok]\n", "{ran}");
}

/// How a one-liner of the exfiltration table must come back.
enum Expect {
    /// Redacted: no encoded form guard claims to cover ([`covered_forms`]) is left, and the
    /// output shows the redaction.
    Covered,
    /// A known limit (README "Known limits"): this shell pipeline recovers the value from the
    /// output, so the limit is real, and the README names it.
    Limit(&'static str, &'static str),
}

/// The encoded forms of `value` guard claims to cover in command output, as text whose
/// presence in an output means the value is recoverable: raw, base64 standard and URL-safe at
/// each of the three alignments (the characters that depend on the value alone), hex in both
/// cases, URL-encoded, JSON-escaped.
fn covered_forms(value: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    let v = value.as_bytes();
    let mut forms = vec![("raw".to_string(), value.to_string())];
    for (name, eng) in [
        ("base64", base64::engine::general_purpose::STANDARD_NO_PAD),
        (
            "base64url",
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ),
    ] {
        for k in 0..3 {
            let mut b = vec![b'x'; k];
            b.extend_from_slice(v);
            let e = eng.encode(&b);
            let (from, to) = (if k == 0 { 0 } else { 4 }, e.len() - 4);
            forms.push((format!("{name}@{k}"), e[from..to].to_string()));
        }
    }
    forms.push(("hex".into(), hex::encode(v)));
    forms.push(("HEX".into(), hex::encode_upper(v)));
    let url: String = v
        .iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect();
    forms.push(("url-encoded".into(), url));
    let json = serde_json::to_string(value).unwrap();
    forms.push(("json-escaped".into(), json[1..json.len() - 1].to_string()));
    forms
}

/// The covered forms any 16-character piece of which appears in `out`.
fn leaked_forms(value: &str, out: &str) -> Vec<String> {
    covered_forms(value)
        .into_iter()
        .filter(|(_, f)| {
            let c: Vec<char> = f.chars().collect();
            c.windows(16)
                .any(|w| out.contains(&w.iter().collect::<String>()))
        })
        .map(|(n, _)| n)
        .collect()
}

/// The exfiltration suite: one-liners an agent might get approved that print an injected
/// secret in some form, run through `secrets_exec` by the real MCP client. Each covered form
/// comes back redacted; each form guard does not cover is shown to be recoverable and is
/// listed in the README's known limits.
#[test]
fn exfiltration_one_liners_come_back_redacted_or_are_known_limits() {
    use Expect::*;
    let v = crate::vault::Vault::new();
    // `+`, `/`, `"` and `=` make the URL-encoded, JSON-escaped and base64 forms differ.
    let value = format!(
        "fake+Exfil/\"mcp\"={}",
        crate::vault::fake_value("x").replace("fake-x-", "")
    );
    v.add("tok", &value, &[]);
    // Only coreutils, sed and util-linux in the commands: the daemon runs them with its safe PATH.
    let table: Vec<(&str, String, Expect)> = vec![
        ("raw", "printf '%s\\n' \"$TOK\"".into(), Covered),
        ("in a sentence", "echo \"the token is $TOK, keep it\"".into(), Covered),
        ("on stderr", "echo \"$TOK\" >&2".into(), Covered),
        ("env dump", "env".into(), Covered),
        ("export -p", "export -p".into(), Covered),
        ("header", "echo \"Authorization: Bearer $TOK\"".into(), Covered),
        ("inside JSON, raw", "printf '{\"token\": \"%s\"}\\n' \"$TOK\"".into(), Covered),
        (
            "inside JSON, escaped",
            "printf '{\"token\": \"%s\"}\\n' \"$(printf %s \"$TOK\" | sed 's/\\\\/\\\\\\\\/g; s/\"/\\\\\"/g')\""
                .into(),
            Covered,
        ),
        ("base64, aligned", "printf %s \"$TOK\" | base64 -w0".into(), Covered),
        ("base64, offset 1", "printf 'x%s' \"$TOK\" | base64 -w0".into(), Covered),
        ("base64, offset 2", "printf 'xy%s' \"$TOK\" | base64 -w0".into(), Covered),
        (
            "base64url, unpadded",
            "printf %s \"$TOK\" | base64 -w0 | tr '+/' '-_' | tr -d =".into(),
            Covered,
        ),
        (
            "base64 of a JSON document",
            "printf '{\"t\":\"%s\"}' \"$TOK\" | base64 -w0".into(),
            Covered,
        ),
        ("hex", "printf %s \"$TOK\" | od -An -v -tx1 | tr -d ' \\n'".into(), Covered),
        (
            "HEX",
            "printf %s \"$TOK\" | od -An -v -tx1 | tr -d ' \\n' | tr a-f A-F".into(),
            Covered,
        ),
        (
            "URL-encoded",
            "printf '%s\\n' \"$TOK\" | sed 's/%/%25/g; s/+/%2B/g; s|/|%2F|g; s/\"/%22/g; s/=/%3D/g'".into(),
            Covered,
        ),
        (
            "one line in two writes",
            "printf %s \"$TOK\" | cut -c1-10 | tr -d '\\n'; sleep 0.3; printf '%s\\n' \"$TOK\" | cut -c11-"
                .into(),
            Covered,
        ),
        ("through a file", "echo \"$TOK\" > leaked.txt && cat leaked.txt".into(), Covered),
        (
            "reversed",
            "printf '%s\\n' \"$TOK\" | rev".into(),
            Limit("reversed", "rev"),
        ),
        (
            "halves on two lines",
            "printf '%s\\n' \"$TOK\" | cut -c1-14; printf '%s\\n' \"$TOK\" | cut -c15-".into(),
            Limit("split across lines", "tr -d '\\n'"),
        ),
        (
            "gzip + base64",
            "printf %s \"$TOK\" | gzip -c | base64 -w0".into(),
            Limit("compressed", "base64 -d | gzip -dc"),
        ),
        (
            "base32",
            "printf %s \"$TOK\" | base32 -w0".into(),
            Limit("base32", "base32 -d"),
        ),
        (
            "base64 twice",
            "printf %s \"$TOK\" | base64 -w0 | base64 -w0".into(),
            Limit("encoded twice", "base64 -d | base64 -d"),
        ),
        (
            "one character at a time",
            "printf %s \"$TOK\" | sed 's/./& /g'".into(),
            Limit("interleaved", "sed 's/\\(.\\) /\\1/g'"),
        ),
        (
            "spaced hex dump",
            "printf %s \"$TOK\" | od -An -v -tx1".into(),
            Limit(
                "hex dump",
                "python3 -c 'import sys; print(bytes.fromhex(sys.stdin.read()).decode())'",
            ),
        ),
        (
            "base64 wrapped across lines",
            "(printf '%040d' 0; printf %s \"$TOK\") | base64".into(),
            Limit("split across lines", "base64 -d"),
        ),
    ];
    assert!(table.len() >= 20);
    for (_, cmd, _) in &table {
        v.grant(&["tok"], &["sh", "-c", cmd]);
    }
    let calls: Vec<Value> = table
        .iter()
        .map(|(_, cmd, _)| {
            json!({"tool": "secrets_exec", "args": {
                "argv": ["sh", "-c", cmd], "cwd": v.work, "purpose": "exfiltration test",
                "secrets": [{"name": "tok", "env": "TOK"}]}})
        })
        .collect();
    let (_, answers) = session(&Value::Array(calls), &v.dir);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let limits = &readme[readme
        .find("Known limits of output redaction")
        .expect("README lists the known limits of output redaction")..];
    let mut failures = Vec::new();
    for ((label, cmd, expect), answer) in table.iter().zip(&answers) {
        let r = result(answer);
        assert_eq!(r["exit_code"], 0, "{label}: {r}");
        let out = format!(
            "{}{}",
            r["stdout"].as_str().unwrap(),
            r["stderr"].as_str().unwrap()
        );
        let leaked = leaked_forms(&value, &out);
        match expect {
            Covered => {
                if !leaked.is_empty() || !out.contains("[REDACTED:") {
                    failures.push(format!("{label} ({cmd}): {leaked:?} left in {out:?}"));
                }
            }
            Limit(name, recover) => {
                let got = crate::vault::with_input(
                    {
                        let mut c = std::process::Command::new("sh");
                        c.args(["-c", recover]);
                        c
                    },
                    out.as_bytes(),
                );
                let recovered = String::from_utf8_lossy(&got.stdout);
                assert!(
                    recovered.contains(&value),
                    "{label}: `{recover}` does not recover the value from {out:?}: not a limit"
                );
                assert!(
                    limits.contains(&format!("**{name}**")),
                    "README's known limits do not name **{name}** ({label})"
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "not redacted:\n{}",
        failures.join("\n")
    );
}

/// `secrets_exec` stops a command at `timeout_seconds` (SIGTERM to its process group), also a
/// background process it left holding its output (whose output is all returned, redacted);
/// timeouts out of range are refused.
#[test]
fn secrets_exec_stops_a_command_at_its_timeout() {
    let v = crate::vault::Vault::new();
    let run = |argv: Value, timeout: u64| {
        json!({"tool": "secrets_exec", "args": {"argv": argv, "cwd": v.work,
               "purpose": "timeout test", "timeout_seconds": timeout}})
    };
    let calls = json!([
        run(json!(["sleep", "30"]), 1),
        run(json!(["sh", "-c", "sleep 30 & echo started"]), 2),
        run(json!(["true"]), 0),
        run(json!(["true"]), 601),
    ]);
    let t = std::time::Instant::now();
    let (_, answers) = session(&calls, &v.dir);
    assert!(
        t.elapsed().as_secs() < 15,
        "took {:?}: {answers:?}",
        t.elapsed()
    );
    let stopped = result(&answers[0]);
    assert_eq!(stopped["timed_out"], true, "{stopped}");
    assert_eq!(stopped["signal"], libc::SIGTERM, "{stopped}");
    let bg = result(&answers[1]);
    assert_eq!(bg["timed_out"], true, "{bg}");
    assert_eq!(bg["stdout"], "started\n");
    for a in &answers[2..] {
        assert!(a.get("ok").is_none(), "out-of-range timeout accepted: {a}");
    }
}
