//! `strata verify`: reads back every object of the stanza (or of one backup and its chain) and checks
//! it against the manifests, the archive's continuity and summaries (see `strata_core::verify`); a
//! human summary or `--output json`; exit 0 all good, 1 warnings only, 2 errors found, 3 could not
//! run. The result is kept in the repository for monitoring. With several repositories each is verified
//! in turn (`--repo-number N`: one), the exit code is the worst, JSON an array of their reports.

use crate::repo_args::RepoArgs;
use anyhow::{bail, Result};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use strata_core::verify::{self, Options, Progress, Report, Severity};
use strata_core::Repo;

#[derive(clap::Args)]
pub struct Args {
    /// Verify only this backup and the backups it is built on
    #[arg(long, value_name = "LABEL")]
    pub set: Option<String>,
    /// Output format: text or json
    #[arg(long, default_value = "text", value_name = "text|json")]
    pub output: String,
    /// Parallel readers (1 to 64)
    #[arg(long, default_value_t = 2)]
    pub process_max: usize,
    #[command(flatten)]
    pub repo: RepoArgs,
}

/// Exit code when the verification could not run at all.
const COULD_NOT_RUN: i32 = 3;

pub fn run(args: Args) -> Result<i32> {
    if args.output != "text" && args.output != "json" {
        bail!("--output '{}': expected text or json", args.output);
    }
    if args.process_max == 0 || args.process_max > 64 {
        bail!("--process-max {}: expected 1 to 64", args.process_max);
    }
    let set = match args.repo.resolve_all() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("strata verify: could not verify: {e:#}");
            return Ok(COULD_NOT_RUN);
        }
    };
    let mut reports = Vec::new();
    let mut code = 0;
    for config in set.repos() {
        match verify_one(&args, config) {
            Ok(report) => {
                code = code.max(report.exit_code());
                if args.output == "text" {
                    print_text(&report);
                }
                reports.push(report);
            }
            Err(e) => {
                eprintln!(
                    "strata verify: could not verify repo{} ({}): {e:#}",
                    config.number,
                    config.repo.display()
                );
                code = COULD_NOT_RUN;
            }
        }
    }
    if args.output == "json" {
        // One repository: its report; several: an array of them.
        match reports.len() {
            1 if set.repos().len() == 1 => {
                println!("{}", serde_json::to_string_pretty(&reports[0])?)
            }
            _ => println!("{}", serde_json::to_string_pretty(&reports)?),
        }
    }
    Ok(code)
}

/// Verifies one repository and keeps the result in it.
fn verify_one(args: &Args, config: &strata_core::config::RepoConfig) -> Result<Report> {
    {
        let policy = args.repo.retention_policy(config.number, &[])?;
        let repo = Repo::open_config(config)?;
        let opts = Options {
            set: args.set.clone(),
            process_max: args.process_max,
            policy: Some(policy),
        };
        let progress = Progress::default();
        let done = AtomicBool::new(false);
        let never = AtomicBool::new(false);
        let report = std::thread::scope(|s| {
            if std::io::stderr().is_terminal() {
                s.spawn(|| draw_progress(&progress, &done));
            }
            let r = verify::run(&repo, &opts, &progress, &never);
            done.store(true, Ordering::Relaxed);
            r
        })?;
        if let Err(e) = verify::record(&repo, &report.last_result()) {
            eprintln!(
                "warning: the result could not be kept in the repository for monitoring: {e}"
            );
        }
        Ok(report)
    }
}

fn print_text(r: &Report) {
    let what = r.set.as_deref().map_or("the stanza".to_string(), |s| {
        format!("backup {s} and its chain")
    });
    println!("verify {what} ({} stanza '{}')", r.repo, r.stanza);
    for b in &r.backups {
        println!(
            "  backup {}: {} ({} objects, {:.1} MB)",
            b.label,
            b.status,
            b.objects,
            b.bytes as f64 / 1e6
        );
        for f in &b.findings {
            println!("    {}: {}: {}", severity(f.severity), f.object, f.reason);
        }
    }
    for t in &r.timelines {
        println!(
            "  timeline {}: {} segments, {} to {}",
            t.timeline,
            t.segments,
            t.first.as_deref().unwrap_or("-"),
            t.last.as_deref().unwrap_or("-")
        );
        for g in t.gaps.iter().filter(|g| g.expected) {
            println!(
                "    gap {} to {} ({} to {}), left by strata.retention_archive",
                g.first_missing, g.last_missing, g.from_lsn, g.to_lsn
            );
        }
        for f in &t.findings {
            println!("    {}: {}: {}", severity(f.severity), f.object, f.reason);
        }
    }
    println!(
        "{}: {} errors, {} warnings; {:.1} MB read in {:.1} s",
        r.status,
        r.errors,
        r.warnings,
        r.bytes_read as f64 / 1e6,
        r.seconds
    );
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn draw_progress(progress: &Progress, done: &AtomicBool) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while !done.load(Ordering::Relaxed) {
        bar.set_length(progress.bytes_total.load(Ordering::Relaxed));
        bar.set_position(progress.bytes_done.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}
