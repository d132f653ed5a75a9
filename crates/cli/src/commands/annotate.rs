//! `strata annotate --set LABEL --keep|--no-keep [--note TEXT]`: pins a backup so that no retention
//! policy expires it (with its chain and the WAL from its start), or unpins it; the note is shown by
//! `strata info`.

use crate::repo_args::RepoArgs;
use anyhow::{bail, Result};
use strata_core::retention::pin;
use strata_core::Repo;

#[derive(clap::Args)]
pub struct Args {
    /// The backup to annotate
    #[arg(long, value_name = "LABEL")]
    pub set: String,
    /// Keep it whatever the retention policy says
    #[arg(long, conflicts_with = "no_keep")]
    pub keep: bool,
    /// Let the retention policy decide again
    #[arg(long)]
    pub no_keep: bool,
    /// A note shown with the backup
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub fn run(args: Args) -> Result<i32> {
    if !args.keep && !args.no_keep && args.note.is_none() {
        bail!("say what to change: --keep, --no-keep and/or --note TEXT");
    }
    let repo = Repo::open_config(&args.repo.resolve()?)?;
    let keep = if args.keep || args.no_keep {
        args.keep
    } else {
        pin::read(&repo, &args.set)?.is_some_and(|a| a.keep)
    };
    let a = pin::set(&repo, &args.set, keep, args.note.as_deref())?;
    println!(
        "backup {}: {}{}",
        args.set,
        if a.keep {
            "kept whatever the retention policy says"
        } else {
            "the retention policy decides"
        },
        a.note.map(|n| format!(" (note: {n})")).unwrap_or_default()
    );
    Ok(0)
}
