//! `strata archive-get WALFILE DESTPATH`: what `restore_command` calls.
//!
//! With several repositories, they are tried in order: the first that has the file serves it. A
//! repository that does not have it, or fails (down, unreachable, a damaged object), passes to the
//! next, so that a recovery one repository can serve is never stopped by another. Exit 0 restored; 1
//! when no repository has it and none failed (nothing printed: recovery probes for files that do not
//! exist); 2 when none served it and one failed (each failure on stderr).
//!
//! In archive recovery (PostgreSQL runs restore_command in the data directory; `recovery.signal`
//! there and no `standby.signal`), a failure exits `STOP_RECOVERY` instead — unless, with several
//! repositories, one that could be read does not have the file and none holds it damaged (the
//! archiver stores every file in every repository before it reports it archived, so it is not
//! archived, and recovery goes on with the repositories that work): PostgreSQL takes an
//! exit status of 125 or less for "not archived" and would end recovery early at a damaged or
//! unreadable segment, promote, and lose what follows; above 125 it stops recovery with FATAL, and a
//! start after the repair continues where it stopped. A standby keeps the usual codes: it asks again
//! later and never ends recovery by itself.
//!
//! With `--prefetch N`, each call first serves its segment from a spool beside DESTPATH when a
//! prefetcher already fetched it, and starts a prefetcher (this command again, detached, with
//! `--prefetch-worker`) for the next N segments when none runs (see `strata_core::archive::prefetch`).
//! The prefetcher reads the first repository; a segment it could not fetch is fetched by the call
//! that asks for it, through every repository.

use crate::repo_args::RepoArgs;
use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use strata_core::archive::{archive_get, prefetch, GetOutcome};
use strata_core::Repo;

#[derive(clap::Args)]
pub struct Args {
    /// WAL file name as PostgreSQL asks for it (%f), e.g. 000000010000000000000003 or 00000002.history
    pub walfile: String,
    /// Where to write it (%p)
    pub destpath: PathBuf,
    /// Fetch the next N segments ahead, in parallel, into the spool (0: none)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub prefetch: u32,
    /// The spool directory [default: strata_spool beside DESTPATH, i.e. pg_wal/strata_spool]
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Internal: be the prefetcher of the segments after WALFILE
    #[arg(long, hide = true)]
    pub prefetch_worker: bool,
    #[command(flatten)]
    pub repo: RepoArgs,
}

/// The exit status of a failure during archive recovery: above 125, so that PostgreSQL stops recovery
/// (FATAL) rather than end it; not 126/127 (PostgreSQL logs those as "command not found" and the
/// like) nor 128 + a signal number.
pub const STOP_RECOVERY: i32 = 200;

/// The exit status of a failed call (`code` as the command computed it): `STOP_RECOVERY` when the
/// caller is PostgreSQL in archive recovery, with a message saying what to do.
pub fn failure_code(code: i32) -> i32 {
    let archive_recovery =
        Path::new("recovery.signal").is_file() && !Path::new("standby.signal").exists();
    if !archive_recovery {
        return code;
    }
    eprintln!(
        "strata: archive-get failed during archive recovery: recovery stops here instead of ending \
         early without the rest of the WAL; repair what the error above names (the repository, its \
         passphrase, its reachability) and start the server again to continue, or set an earlier \
         recovery_target"
    );
    STOP_RECOVERY
}

/// Segments fetched at once by a prefetcher.
const PREFETCH_THREADS: usize = 4;

pub fn run(args: Args) -> Result<i32> {
    if args.prefetch > 64 {
        anyhow::bail!("--prefetch {}: expected 0 to 64 segments", args.prefetch);
    }
    let spool = args.spool.clone().unwrap_or_else(|| {
        args.destpath
            .parent()
            .unwrap_or(Path::new("."))
            .join("strata_spool")
    });
    let set = args.repo.resolve_all()?;
    if args.prefetch_worker {
        let Some(first) = set.repos().first() else {
            return Ok(0);
        };
        let repo = Repo::open_config(first)?;
        let seg = repo.identity()?.wal_segment_size;
        let names = prefetch::following(&args.walfile, seg, args.prefetch);
        prefetch::prefetch(&repo, &spool, &names, PREFETCH_THREADS)?;
        return Ok(0);
    }
    let prefetching = args.prefetch > 0;
    if prefetching && prefetch::take_from_spool(&spool, &args.walfile, &args.destpath) {
        start_prefetcher(&args, &spool);
        return Ok(0);
    }
    let several = set.repos().len() > 1;
    let mut failed = None;
    // Whether a repository that could be read does not have the file, and whether one holds it
    // damaged (then it is archived, whatever the others say).
    let (mut not_found, mut damaged) = (false, false);
    for config in set.repos() {
        let got = Repo::open_config(config)
            .and_then(|repo| archive_get(&repo, &args.walfile, &args.destpath));
        match got {
            Ok(GetOutcome::Restored { .. }) => {
                if prefetching {
                    start_prefetcher(&args, &spool);
                }
                return Ok(0);
            }
            Ok(GetOutcome::NotFound) => not_found = true,
            Err(e) if several => {
                damaged |= e.class() == strata_core::ErrorClass::Corrupt;
                eprintln!(
                    "strata: archive-get {}: repo{} ({}): {e}; trying the next repository",
                    args.walfile,
                    config.number,
                    config.repo.display()
                );
                failed = Some(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    match failed {
        // Held damaged, or no repository could say: an error (in archive recovery, one that stops it).
        Some(_) if damaged || !not_found => {
            eprintln!(
                "strata: error: {} was not found in any repository that could be read",
                args.walfile
            );
            Ok(failure_code(2))
        }
        // A repository that could be read does not have it, and none holds it damaged: the archiver
        // stores a file in every repository before it reports it archived, so it is not archived —
        // recovery goes on from the repositories that work (exit 2 says one failed).
        Some(_) => {
            eprintln!(
                "strata: {} is not in the repositories that could be read; taken as not archived",
                args.walfile
            );
            Ok(2)
        }
        // Recovery asks for files that do not exist (the next timeline's history, the segment after the
        // last one): not an error, and nothing to print. The end of the archive: the spool goes.
        None => {
            if prefetching && !args.walfile.ends_with(".history") {
                prefetch::remove_spool(&spool);
            }
            Ok(1)
        }
    }
}

/// Starts a prefetcher for the segments after this one, unless one runs: this command again, with
/// the same options (so the same repositories and settings) plus `--prefetch-worker` — detached, in
/// its own process group, so that the signals PostgreSQL sends restore_command's group do not reach
/// it.
fn start_prefetcher(args: &Args, spool: &Path) {
    if prefetch::prefetcher_running(spool) {
        return;
    }
    let spawned = (|| -> Result<()> {
        let exe = std::env::current_exe().context("the strata binary's path")?;
        let mut cmd = Command::new(exe);
        cmd.args(std::env::args_os().skip(1))
            .arg("--prefetch-worker");
        if args.spool.is_none() {
            cmd.arg("--spool").arg(spool);
        }
        // The same arguments (a --cipher-pass-file with them) and environment: nothing to add.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the prefetcher")?;
        Ok(())
    })();
    // Prefetching only saves time: without it every call fetches its own segment.
    let _ = spawned;
}
