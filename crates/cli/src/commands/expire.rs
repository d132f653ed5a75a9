//! `strata expire`: removes the backups the retention policy does not keep, then the archived WAL and
//! summaries no kept backup needs (see `strata_core::retention`). The policy comes from the
//! `strata.retention_*` lines of `--config` (the server's postgresql.conf), overridden by the flags.
//! Every configured repository is expired with its own policy (`strata.repoN_retention_*`; repo1's are
//! the unnumbered names; the flags apply to each), or only `--repo-number N`.

use crate::repo_args::{for_each_repo, RepoArgs};
use anyhow::{bail, Result};
use strata_core::retention;
use strata_core::Repo;

#[derive(clap::Args)]
pub struct Args {
    /// Say what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Remove this backup and every backup built on it, whatever the policy
    #[arg(long, value_name = "LABEL")]
    pub set: Option<String>,
    /// With --set: remove it even when it (or a backup built on it) is pinned
    #[arg(long, requires = "set")]
    pub force: bool,
    /// Keep this many full backups (or, with --retention-full-type time, the fulls of this many days)
    #[arg(long, value_name = "N")]
    pub retention_full: Option<String>,
    /// How --retention-full counts: count or time
    #[arg(long, value_name = "count|time")]
    pub retention_full_type: Option<String>,
    /// Keep this many differential backups (a full counts as one)
    #[arg(long, value_name = "N")]
    pub retention_diff: Option<String>,
    /// Keep every backup needed to restore to any point of this interval, e.g. '7 days'
    #[arg(long, value_name = "INTERVAL")]
    pub retention_window: Option<String>,
    /// Never keep fewer full backups than this
    #[arg(long, value_name = "N")]
    pub retention_min_full: Option<String>,
    /// Keep the WAL for point-in-time recovery only after this many newest backups of
    /// --retention-archive-type (older kept backups then restore to their end only)
    #[arg(long, value_name = "N")]
    pub retention_archive: Option<String>,
    /// Which backups --retention-archive counts: full, diff (fulls and diffs) or incr (all)
    #[arg(long, value_name = "full|diff|incr")]
    pub retention_archive_type: Option<String>,
    /// Decide as if it were this time (RFC 3339, e.g. 2026-12-08T00:00:00Z): with --dry-run, what
    /// an expiry will remove then [default: now]
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub fn run(args: Args) -> Result<i32> {
    let set = args.repo.resolve_all()?;
    let several = set.repos().len() > 1;
    let header = |config: &strata_core::config::RepoConfig| {
        if several {
            println!("repo{}: {}", config.number, config.repo.display());
        }
    };
    if let Some(label) = &args.set {
        // The backup is removed from every repository that has it.
        let mut found = false;
        let mut last_missing = None;
        for_each_repo(&set, |config| {
            let repo = Repo::open_config(config)?;
            match retention::expire_set(&repo, label, args.force, args.dry_run) {
                Ok(report) => {
                    header(config);
                    print_report(&report);
                    found = true;
                    Ok(())
                }
                Err(e) if several && e.class() == strata_core::ErrorClass::NotFound => {
                    last_missing = Some(e);
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        })?;
        return match (found, last_missing) {
            (false, Some(e)) => Err(e.into()),
            _ => Ok(0),
        };
    }
    let overrides = [
        ("strata.retention_full", args.retention_full.clone()),
        (
            "strata.retention_full_type",
            args.retention_full_type.clone(),
        ),
        ("strata.retention_diff", args.retention_diff.clone()),
        ("strata.retention_window", args.retention_window.clone()),
        ("strata.retention_min_full", args.retention_min_full.clone()),
        ("strata.retention_archive", args.retention_archive.clone()),
        (
            "strata.retention_archive_type",
            args.retention_archive_type.clone(),
        ),
    ];
    let now = match &args.at {
        None => chrono::Utc::now(),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| {
                anyhow::anyhow!(
                    "--at '{t}': expected an RFC 3339 time like 2026-12-08T00:00:00Z ({e})"
                )
            })?
            .to_utc(),
    };
    let mut policies = Vec::new();
    for config in set.repos() {
        policies.push(args.repo.retention_policy(config.number, &overrides)?);
    }
    if policies.iter().all(|p| !p.is_set()) {
        bail!(
            "no retention policy is set: nothing would be expired; set strata.retention_full, \
             strata.retention_diff or strata.retention_window (in --config or as flags)"
        );
    }
    for_each_repo(&set, |config| {
        let i = set
            .repos()
            .iter()
            .position(|c| c.number == config.number)
            .unwrap_or(0);
        let policy = &policies[i];
        header(config);
        if !policy.is_set() {
            println!("retention: none (nothing expired)");
            return Ok(());
        }
        let repo = Repo::open_config(config)?;
        let report = retention::expire(&repo, policy, now, args.dry_run)?;
        print_report(&report);
        Ok(())
    })?;
    Ok(0)
}

fn print_report(report: &retention::ExpiryReport) {
    let verb = if report.dry_run {
        "would expire"
    } else {
        "expired"
    };
    println!("retention: {}", report.policy);
    for label in &report.leftovers {
        println!("removed the rest of backup {label}, whose expiry was interrupted");
    }
    for (label, why) in &report.backups {
        println!("{verb} backup {label}: {why}");
    }
    for label in &report.leased {
        println!("kept backup {label}: a restore holds a lease on it");
    }
    match (&report.wal_note, report.wal_kept_from) {
        (Some(note), _) => println!("archive: {note}"),
        (None, Some(from)) => println!(
            "archive: {verb} {} WAL files and {} summaries no kept backup needs (all WAL is kept \
             from {from})",
            report.wal_files, report.summaries
        ),
        (None, None) => {}
    }
    for label in &report.end_only {
        println!(
            "backup {label} restores to its end only: the WAL after it is not kept \
             (strata.retention_archive)"
        );
    }
    if report.leases_removed > 0 {
        println!("removed {} lapsed restore leases", report.leases_removed);
    }
    println!(
        "{verb} {} backups, {} WAL files, {} summaries: {:.1} MB",
        report.backups.len(),
        report.wal_files,
        report.summaries,
        report.bytes as f64 / 1e6
    );
}
