//! `strata archive-get WALFILE DESTPATH`: what `restore_command` calls.

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
    let config = args.repo.resolve()?;
    let repo = Repo::open_config(&config)?;
    match archive_get(&repo, &args.walfile, &args.destpath)? {
        GetOutcome::Restored { .. } => Ok(0),
        // Recovery asks for files that do not exist (the next timeline's history, the segment after the
        // last one): not an error, and nothing to print.
        GetOutcome::NotFound => Ok(1),
    }
}
