//! `guard scan`: files, directories and stdin.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::baseline::Baseline;
use crate::config::Config;
use crate::engine::{Backend, Engine};
use crate::finding::Reveal;
use crate::report::{self, Format, Totals};
use crate::rules::Ruleset;
use crate::scan::{self, walk::Progress, FindingOptions, ScanOptions};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    Human,
    Json,
    Jsonl,
    Sarif,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum BackendArg {
    /// Hyperscan prefilter (when built in), regex-automata confirm
    Auto,
    /// regex-automata only (same findings, no C++ library)
    Regex,
}

#[derive(Args)]
#[command(after_help = "Examples:
  guard scan .                           scan the current directory (.gitignore honoured)
  guard scan --format sarif -o out.sarif src/
  cat app.log | guard scan -             scan stdin
  guard scan --write-baseline .guard-baseline.json .
  guard scan --baseline .guard-baseline.json .   report only new findings

Exit status: 0 no findings, 1 findings, 2 error (e.g. a path that does not exist).")]
pub struct ScanArgs {
    /// Files or directories to scan; `-` reads stdin
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = FormatArg::Human)]
    format: FormatArg,
    /// Write the report to FILE instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print secrets in clear text (redacted by default in every format)
    #[arg(long)]
    show_secrets: bool,
    /// Config file (default: ./guard.toml, else guard.toml at the git root)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Suppress findings recorded in this baseline file
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Record the current findings (ids only, never secrets) into FILE and exit 0
    #[arg(long, value_name = "FILE")]
    write_baseline: Option<PathBuf>,
    /// Do not honour .gitignore/.ignore files
    #[arg(long)]
    no_ignore: bool,
    /// Scan hidden files and directories
    #[arg(long)]
    hidden: bool,
    /// Skip files larger than SIZE (e.g. 500K, 10M, 1G)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_file_size: Option<u64>,
    /// Scan files that look binary (NUL in the first 8 KiB)
    #[arg(long)]
    binary: bool,
    /// Match backend: hyperscan prefilter or regex-automata only; findings are identical
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Worker threads (default: all cores)
    #[arg(short = 'j', long)]
    threads: Option<usize>,
    /// Colour: auto (when stdout is a terminal), always, never
    #[arg(long, value_enum, default_value_t = ColorArg::Auto)]
    color: ColorArg,
    /// No progress bar
    #[arg(short, long)]
    quiet: bool,
    /// Do not read or write the compiled-database cache
    #[arg(long)]
    no_cache: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let m = match s[i..].to_ascii_uppercase().trim_end_matches(['B', 'I']) {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                other => return Err(format!("unknown size unit {other:?} (use K, M or G)")),
            };
            (&s[..i], m)
        }
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("{s:?} is not a size like 10M"))
}

/// Builds the engine from the builtin rules plus the config; shared by `scan` and `rules`.
pub fn load_engine(config: &Config, backend: BackendArg, cache: bool) -> anyhow::Result<Engine> {
    let mut rules = Ruleset::builtin().context("builtin rules")?;
    config.apply_rules(&mut rules)?;
    let engine = Engine::builder(rules)
        .allowlist(config.allowlist()?)
        .backend(if backend == BackendArg::Regex {
            Backend::RegexOnly
        } else {
            Backend::Auto
        })
        .cache(cache)
        .build()?;
    for w in engine.warnings() {
        eprintln!("guard: warning: {w}");
    }
    Ok(engine)
}

struct Bar(Option<indicatif::ProgressBar>);

impl Progress for Bar {
    fn bytes(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
}

pub fn run(a: ScanArgs) -> anyhow::Result<i32> {
    let config = Config::discover(a.config.as_deref())?;
    let engine = load_engine(&config, a.backend, !a.no_cache)?;
    let reveal = if a.show_secrets {
        Reveal::Shown
    } else {
        Reveal::Redacted
    };
    let findings_opts = FindingOptions {
        reveal,
        id_key: std::env::var_os("GUARD_FINDING_KEY").map(|k| k.into_encoded_bytes()),
    };
    let opts = ScanOptions {
        findings: findings_opts.clone(),
        max_file_size: a.max_file_size,
        binary: a.binary,
        hidden: a.hidden,
        no_ignore: a.no_ignore,
        path_allow: config.path_allowlist()?,
        threads: a.threads,
    };
    let baseline = a.baseline.as_deref().map(Baseline::load).transpose()?;

    let bar = if !a.quiet && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {binary_bytes} scanned ({binary_bytes_per_sec})",
            )
            .expect("template is valid"),
        );
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    let progress = Bar(bar);

    let (stdin_paths, fs_paths): (Vec<_>, Vec<_>) =
        a.paths.iter().cloned().partition(|p| p.as_os_str() == "-");
    let mut summary = scan::scan_paths(&engine, &fs_paths, &opts, &progress);
    if !stdin_paths.is_empty() {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        match scan::stream::scan_reader(&engine, &mut lock, "-", &findings_opts, &mut |n| {
            progress.bytes(n)
        }) {
            Ok(f) => {
                summary.files += 1;
                summary.findings.extend(f);
            }
            Err(source) => summary.errors.push(scan::ScanError::Io {
                path: "-".into(),
                source,
            }),
        }
    }
    if let Some(b) = &progress.0 {
        b.finish_and_clear();
    }
    for e in &summary.errors {
        eprintln!("guard: {e}");
    }

    if let Some(path) = &a.write_baseline {
        Baseline::from_findings(&summary.findings).save(path)?;
        eprintln!(
            "guard: wrote {} finding id(s) to {}",
            summary.findings.len(),
            path.display()
        );
        return Ok(if summary.errors.is_empty() {
            0
        } else {
            super::EXIT_ERROR
        });
    }

    let before = summary.findings.len();
    if let Some(b) = &baseline {
        let ids = b.ids();
        summary.findings.retain(|f| !ids.contains(&f.id));
    }
    let totals = Totals {
        files: summary.files,
        bytes: summary.bytes,
        findings: summary.findings.len() as u64,
        suppressed_by_baseline: (before - summary.findings.len()) as u64,
        skipped_binary: summary.skipped_binary,
        skipped_large: summary.skipped_large,
        errors: summary.errors.len() as u64,
    };

    let (out, is_tty): (Box<dyn Write>, bool) = match &a.output {
        Some(p) => (
            Box::new(std::io::BufWriter::new(
                std::fs::File::create(p)
                    .with_context(|| format!("cannot create {}", p.display()))?,
            )),
            false,
        ),
        None => (
            Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            std::io::stdout().is_terminal(),
        ),
    };
    let color = match a.color {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => is_tty && std::env::var_os("NO_COLOR").is_none(),
    };
    let format = match a.format {
        FormatArg::Human => Format::Human,
        FormatArg::Json => Format::Json,
        FormatArg::Jsonl => Format::Jsonl,
        FormatArg::Sarif => Format::Sarif,
    };
    let mut sink = report::sink(format, out, &engine, reveal, color);
    for f in &summary.findings {
        sink.finding(f)?;
    }
    sink.finish(&totals)?;
    drop(sink);

    Ok(if !summary.errors.is_empty() {
        super::EXIT_ERROR
    } else if summary.findings.is_empty() {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10"), Ok(10));
        assert_eq!(parse_size("10K"), Ok(10240));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("x").is_err());
    }
}
