//! `strata archive-get WALFILE DESTPATH`: what `restore_command` calls. With `--prefetch N`, each call
//! serves its segment from a spool beside DESTPATH when a prefetcher already fetched it, and starts a
//! prefetcher (a detached `strata archive-get --prefetch-worker`) for the next N segments when none
//! runs (see `strata_core::archive::prefetch`).

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
    if args.prefetch_worker {
        let config = args.repo.resolve()?;
        let repo = Repo::open_config(&config)?;
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
    let config = args.repo.resolve()?;
    let repo = Repo::open_config(&config)?;
    match archive_get(&repo, &args.walfile, &args.destpath)? {
        GetOutcome::Restored { .. } => {
            if prefetching {
                start_prefetcher(&args, &spool);
            }
            Ok(0)
        }
        // Recovery asks for files that do not exist (the next timeline's history, the segment after the
        // last one): not an error, and nothing to print. The end of the archive: the spool goes.
        GetOutcome::NotFound => {
            if prefetching && !args.walfile.ends_with(".history") {
                prefetch::remove_spool(&spool);
            }
            Ok(1)
        }
    }
}

/// Starts a prefetcher for the segments after this one, unless one runs (detached: its own process
/// group, so that the signals PostgreSQL sends restore_command's group do not reach it).
fn start_prefetcher(args: &Args, spool: &Path) {
    if prefetch::prefetcher_running(spool) {
        return;
    }
    let spawned = (|| -> Result<()> {
        let exe = std::env::current_exe().context("the strata binary's path")?;
        let mut cmd = Command::new(exe);
        cmd.arg("archive-get")
            .arg(&args.walfile)
            .arg(&args.destpath)
            .arg("--prefetch-worker")
            .arg("--prefetch")
            .arg(args.prefetch.to_string())
            .arg("--spool")
            .arg(spool);
        if let Some(r) = &args.repo.repo {
            cmd.arg("--repo").arg(r);
        }
        if let Some(s) = &args.repo.stanza {
            cmd.arg("--stanza").arg(s);
        }
        if let Some(c) = &args.repo.config {
            cmd.arg("--config").arg(c);
        }
        if let Some(f) = &args.repo.cipher_pass_file {
            cmd.arg("--cipher-pass-file").arg(f);
        }
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
