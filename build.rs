//! Embeds every `rules/*.toml` into the binary, parsed and analysed at build time: start-up
//! then only deserializes one JSON document (parsing ~600 TOML rules and analysing their
//! patterns at every start cost ~40 ms, which a pre-commit hook pays on every commit).
//!
//! A builtin rule that does not parse or whose pattern is refused fails the build, naming the
//! file and rule; the checks are the loader's own (`src/pattern.rs` is compiled in here too).
use std::{env, fs, path::Path};

#[path = "src/pattern.rs"]
#[allow(dead_code)]
mod pattern;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed=src/pattern.rs");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut rules = Vec::new();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .expect("rule file names should be UTF-8")
            .to_string();
        let text = fs::read_to_string(f).expect("rule files should be readable UTF-8");
        let doc: toml::Value =
            toml::from_str(&text).unwrap_or_else(|e| panic!("rules/{name}: {}", e.message()));
        let Some(list) = doc.get("rule").and_then(|r| r.as_array()) else {
            continue;
        };
        for spec in list {
            let id = spec.get("id").and_then(|v| v.as_str()).unwrap_or("?");
            let pat = spec
                .get("pattern")
                .and_then(|v| v.as_str())
                .unwrap_or_else(|| panic!("rules/{name}: rule {id} has no pattern"));
            let info =
                pattern::analyze(pat).unwrap_or_else(|e| panic!("rules/{name}: rule {id}: {e}"));
            for a in spec
                .get("allow")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                let a = a.as_str().unwrap_or_default();
                if let Err(e) = pattern::byte_regex(a) {
                    panic!("rules/{name}: rule {id}: allow regex {a:?} does not compile: {e}");
                }
            }
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("id") && l.contains(&format!("\"{id}\"")))
                .map_or(0, |i| i + 1);
            rules.push(serde_json::json!({
                "origin": name,
                "line": line,
                "spec": serde_json::to_value(spec).expect("TOML converts to JSON"),
                "max_len": info.max_len,
                "spans_newline": info.spans_newline,
                "start_literals": info.start_literals,
            }));
        }
    }
    let out = std::path::PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(
        out.join("builtin_rules.json"),
        serde_json::to_string(&rules).expect("serializes"),
    )
    .expect("OUT_DIR should be writable");
    fs::write(
        out.join("builtin_rules.rs"),
        "pub(crate) static BUILTIN_RULES_JSON: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/builtin_rules.json\"));\n",
    )
    .expect("OUT_DIR should be writable");
}
