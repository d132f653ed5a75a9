//! `strata restore --pgdata DIR`: rebuild a data directory from a backup (server down), with the
//! recovery settings that make `pg_ctl start` replay the archive up to the chosen target.
//!
//! With several repositories the backup is taken from the first (in order, or `--repo-number N`'s)
//! that has it: a repository without it, or one that cannot be read, passes to the next. The
//! restore_command written reaches every configured repository (see `RepoArgs::archive_get_options`).

use crate::repo_args::{shell_quote, RepoArgs};
use anyhow::{anyhow, bail, Context, Result};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use strata_core::restore::{
    self, ArchiveMode, RecoveryTarget, RestoreOptions, RestoreProgress, TargetAction,
};
use strata_core::Repo;

#[derive(clap::Args)]
pub struct Args {
    /// Data directory to restore into: absent or empty, or existing with --delta
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,
    /// Backup to restore: a label or `latest` [default: latest, or for --type time/lsn the newest
    /// backup that ended before the target]
    #[arg(long, value_name = "LABEL|latest")]
    pub set: Option<String>,
    /// Recovery type: default (replay all archived WAL), immediate (stop once consistent), or stop at
    /// --target: time, lsn, xid, name
    #[arg(long = "type", value_name = "TYPE", default_value = "default")]
    pub recovery_type: String,
    /// Target for --type time ('2026-11-23 14:05:00+01'), lsn (0/3000028), xid (a transaction id) or
    /// name (a restore point)
    #[arg(long, value_name = "VALUE", allow_hyphen_values = true)]
    pub target: Option<String>,
    /// What the server does at the target: pause, promote or shutdown [PostgreSQL's default: pause]
    #[arg(long, value_name = "ACTION")]
    pub target_action: Option<String>,
    /// recovery_target_timeline: a timeline number or `latest`
    #[arg(long, value_name = "TLI|latest")]
    pub target_timeline: Option<String>,
    /// Restore over an existing directory: keep files whose content matches, rewrite the others,
    /// remove what the backup does not have
    #[arg(long)]
    pub delta: bool,
    /// Restore a tablespace elsewhere: NAME_OR_OID=DIR (repeatable)
    #[arg(long, value_name = "NAME_OR_OID=DIR")]
    pub tablespace_map: Vec<String>,
    /// Parallel threads (1 to 64)
    #[arg(long, default_value_t = 2)]
    pub process_max: usize,
    /// With --delta: overwrite a directory even if it is not provably a data directory of this
    /// backup's cluster (no PG_VERSION, or another system identifier in global/pg_control)
    #[arg(long)]
    pub force: bool,
    /// off: write archive_mode = off into postgresql.auto.conf, so that the restored copy does not
    /// archive into the repository it was restored from; preserve: keep the backup's setting
    #[arg(long, value_name = "off|preserve", default_value = "preserve")]
    pub archive_mode: String,
    /// WAL segments the restore_command fetches ahead of recovery, in parallel (0: one at a time)
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub prefetch: u32,
    /// Do not hold a lease in the repository (for a repository this restore cannot write; an expiry
    /// running meanwhile may then remove what the restore or its recovery reads)
    #[arg(long)]
    pub no_lease: bool,
    /// Restore only this user database (repeatable): the others' relation files are written as zeros
    /// (sparse), to be dropped once the server is up; template0, template1 and postgres are always
    /// restored
    #[arg(long, value_name = "NAME")]
    pub db_include: Vec<String>,
    /// Restore every database but this one (repeatable): its relation files are written as zeros
    #[arg(long, value_name = "NAME", conflicts_with = "db_include")]
    pub db_exclude: Vec<String>,
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub fn run(args: Args) -> Result<i32> {
    let target = RecoveryTarget::parse(&args.recovery_type, args.target.as_deref())?;
    let target_action = args
        .target_action
        .as_deref()
        .map(TargetAction::parse)
        .transpose()?;
    if let Some(t) = &args.target_timeline {
        if t != "latest" && t != "current" && t.parse::<u32>().is_err() {
            bail!("--target-timeline '{t}': expected a timeline number, latest or current");
        }
    }
    let tablespace_map = args
        .tablespace_map
        .iter()
        .map(|m| {
            let (k, v) = m
                .split_once('=')
                .ok_or_else(|| anyhow!("--tablespace-map '{m}': expected NAME_OR_OID=DIR"))?;
            let dir = PathBuf::from(v);
            if !dir.is_absolute() {
                bail!("--tablespace-map '{m}': the directory must be an absolute path");
            }
            Ok((k.to_string(), dir))
        })
        .collect::<Result<Vec<_>>>()?;
    if args.process_max == 0 || args.process_max > restore::PROCESS_MAX_LIMIT {
        bail!(
            "--process-max {}: expected 1 to {}",
            args.process_max,
            restore::PROCESS_MAX_LIMIT
        );
    }
    let archive_mode = ArchiveMode::parse(&args.archive_mode)?;
    let pgdata = std::path::absolute(&args.pgdata)
        .with_context(|| format!("--pgdata {}", args.pgdata.display()))?;
    let candidates = args.repo.resolve_all()?;
    let (get_options, outside_secrets) = args
        .repo
        .archive_get_options(&args.repo.resolve_configured()?)?;
    for name in &outside_secrets {
        eprintln!(
            "strata: note: {name} came from a flag or the environment and is not written into \
             restore_command: give the restored server the same (STRATA_{} in its environment, \
             or the setting in a --config file) or recovery cannot read that repository",
            name.trim_start_matches("strata.").to_ascii_uppercase()
        );
    }
    let exe = std::env::current_exe().context("cannot find the strata binary's own path")?;
    if args.prefetch > 64 {
        bail!("--prefetch {}: expected 0 to 64 segments", args.prefetch);
    }
    let mut restore_command = format!(
        "{} archive-get %f \"%p\" {get_options}",
        shell_quote(&exe.display().to_string()),
    );
    if args.prefetch > 0 {
        restore_command.push_str(&format!(" --prefetch {}", args.prefetch));
    }
    let opts = RestoreOptions {
        pgdata: pgdata.clone(),
        set: args.set,
        target,
        target_action,
        target_timeline: args.target_timeline,
        delta: args.delta,
        process_max: args.process_max,
        tablespace_map,
        restore_command,
        force: args.force,
        archive_mode,
        lease: !args.no_lease,
        db_include: args.db_include,
        db_exclude: args.db_exclude,
    };
    let several = candidates.repos().len() > 1;
    let started = Instant::now();
    let mut outcome = None;
    for config in candidates.repos() {
        let from = format!("repo{} ({})", config.number, config.repo.display());
        let progress = RestoreProgress::default();
        let done = std::sync::atomic::AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            if std::io::stderr().is_terminal() {
                s.spawn(|| draw_progress(&progress, &done));
            }
            let r = Repo::open_config(config).and_then(|repo| {
                restore::restore(&repo, &opts, &progress, &|label| {
                    println!(
                        "restoring backup {label} from {from} into {}",
                        pgdata.display()
                    );
                })
            });
            done.store(true, Ordering::Relaxed);
            r
        });
        match result {
            Ok(report) => {
                outcome = Some(Ok(report));
                break;
            }
            // Another repository may have it: a backup or stanza not found there, or a repository
            // that cannot be read. Anything else (a refused target, a damaged backup) is final.
            Err(e) if several && passes_to_next(&e) => {
                eprintln!("strata: {from}: {e}; trying the next repository");
                outcome = Some(Err(e));
            }
            Err(e) => {
                outcome = Some(Err(e));
                break;
            }
        }
    }
    let report = outcome.expect("at least one repository")?;
    println!(
        "restored backup {}: {} files written ({:.1} MB), {} files kept, {} entries removed, in {:.1} s",
        report.label,
        report.files_written,
        report.bytes_written as f64 / 1e6,
        report.files_kept,
        report.entries_removed,
        started.elapsed().as_secs_f64()
    );
    println!(
        "start the server with: pg_ctl -D {} start (recovery fetches WAL with strata archive-get)",
        pgdata.display()
    );
    warn_unreadable_pass_files(&args.repo, &pgdata);
    if !report.left_out.is_empty() {
        let drops: Vec<String> = report
            .left_out
            .iter()
            .map(|n| format!("DROP DATABASE \"{}\";", n.replace('"', "\"\"")))
            .collect();
        println!(
            "left out (their relation files are zeros; do not connect to them): {}; once the server \
             is up: {}",
            report.left_out.join(", "),
            drops.join(" ")
        );
    }
    Ok(0)
}

/// Run as root, warns about the passphrase files restore_command names that the restored server (the
/// data directory's owner) may not read: root reads anything, the server would stop at its first
/// archive-get. An approximation by owner, group and mode (supplementary groups and the directories
/// above are not looked at), hence "may".
fn warn_unreadable_pass_files(repo: &crate::repo_args::RepoArgs, pgdata: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let (Ok(owner), Ok(settings)) = (std::fs::metadata(pgdata), repo.settings()) else {
        return;
    };
    for n in 1..=strata_core::config::repos::MAX_REPOS {
        let Some(path) = settings.get(&format!("strata.repo{n}_cipher_pass_file")) else {
            continue;
        };
        let Ok(m) = std::fs::metadata(path.trim()) else {
            continue;
        };
        let mode = m.mode();
        let readable = (m.uid() == owner.uid() && mode & 0o400 != 0)
            || (m.gid() == owner.gid() && mode & 0o040 != 0)
            || mode & 0o004 != 0;
        if !readable {
            eprintln!(
                "strata: warning: the restored server runs as uid {} and may not be able to read \
                 {} (owner uid {}, mode {:o}), which its restore_command needs for repo{n}: give \
                 the file to that user",
                owner.uid(),
                path.trim(),
                m.uid(),
                mode & 0o7777
            );
        }
    }
}

/// Whether a restore that failed with `e` may be tried from the next repository.
fn passes_to_next(e: &strata_core::Error) -> bool {
    use strata_core::ErrorClass;
    matches!(e.class(), ErrorClass::NotFound | ErrorClass::Io)
}

fn draw_progress(progress: &RestoreProgress, done: &std::sync::atomic::AtomicBool) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while !done.load(Ordering::Relaxed) {
        bar.set_length(progress.bytes_total.load(Ordering::Relaxed));
        bar.set_position(progress.bytes_done.load(Ordering::Relaxed));
        bar.set_message(format!(
            "{}/{} files",
            progress.files_done.load(Ordering::Relaxed),
            progress.files_total.load(Ordering::Relaxed)
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}
