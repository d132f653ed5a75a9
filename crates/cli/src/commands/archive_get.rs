//! `strata archive-get WALFILE DESTPATH`: what `restore_command` calls.
//!
//! With several repositories, they are tried in order: the first that has the file serves it. A
//! repository that does not have it, or fails (down, unreachable, a damaged object), passes to the
//! next, so that a recovery one repository can serve is never stopped by another. Exit 0 restored; 1
//! when no repository has it and none failed (nothing printed: recovery probes for files that do not
//! exist); 2 when none served it and one failed (each failure on stderr).

use crate::repo_args::RepoArgs;
use anyhow::Result;
use std::path::PathBuf;
use strata_core::archive::{archive_get, GetOutcome};
use strata_core::Repo;

#[derive(clap::Args)]
pub struct Args {
    /// WAL file name as PostgreSQL asks for it (%f), e.g. 000000010000000000000003 or 00000002.history
    pub walfile: String,
    /// Where to write it (%p)
    pub destpath: PathBuf,
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub fn run(args: Args) -> Result<i32> {
    let set = args.repo.resolve_all()?;
    let several = set.repos().len() > 1;
    let mut failed = None;
    for config in set.repos() {
        let got = Repo::open_config(config)
            .and_then(|repo| archive_get(&repo, &args.walfile, &args.destpath));
        match got {
            Ok(GetOutcome::Restored { .. }) => return Ok(0),
            Ok(GetOutcome::NotFound) => {}
            Err(e) if several => {
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
        // The others did not have it; one that failed might have: an error, not "not archived".
        Some(_) => {
            eprintln!(
                "strata: error: {} was not found in any repository that could be read",
                args.walfile
            );
            Ok(2)
        }
        // Recovery asks for files that do not exist (the next timeline's history, the segment after the
        // last one): not an error, and nothing to print.
        None => Ok(1),
    }
}
