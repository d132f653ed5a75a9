//! `strata archive-push WALPATH...`: archive WAL files from outside the server, with the same code the
//! in-server archiver uses (and the same block-change summaries), into every configured repository (or
//! `--repo-number N`'s): a file counts as archived only when all have it, as for the server's archiver.
//! Files are pushed in the order given, so that the summarizer can carry records across segment
//! boundaries.

use crate::repo_args::RepoArgs;
use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;
use strata_core::archive::multi::MultiPusher;
use strata_core::archive::{ServerFacts, SummaryReport};

#[derive(clap::Args)]
pub struct Args {
    /// WAL files to archive (segments, .history, .backup, .partial)
    #[arg(required = true)]
    pub walpaths: Vec<PathBuf>,
    /// System identifier of the cluster [default: read from the first segment's page header]
    #[arg(long)]
    pub system_identifier: Option<u64>,
    /// WAL segment size in bytes
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub wal_segment_size: u32,
    /// Compression type: zstd, lz4 or none [default: strata.compress_type from --config, else zstd]
    #[arg(long)]
    pub compress_type: Option<String>,
    /// Compression level [default: strata.compress_level from --config, else 3]
    #[arg(long, allow_hyphen_values = true)]
    pub compress_level: Option<i32>,
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub fn run(args: Args) -> Result<i32> {
    let mut repos = args.repo.resolve_all()?;
    let compress_type = match &args.compress_type {
        Some(t) => Some(
            t.parse()
                .map_err(|e: String| anyhow!("--compress-type: {e}"))?,
        ),
        None => None,
    };
    repos.set_compression(compress_type, args.compress_level);
    let first = &repos.repos()[0];
    strata_core::config::check_compress_level(first.compress_type, first.compress_level)?;
    let system_identifier = match args.system_identifier {
        Some(s) => s,
        None => first_system_identifier(&args.walpaths)?,
    };
    let facts = ServerFacts {
        system_identifier,
        pg_version: 15,
        wal_segment_size: args.wal_segment_size,
    };
    let mut pusher = MultiPusher::new(&repos, facts);
    let mut failed = false;
    for path in &args.walpaths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{}: not a file name", path.display()))?;
        match pusher.push(path, name) {
            Ok(done) => {
                for (number, report) in &done.reports {
                    if let SummaryReport::Missing(reason) = &report.summary {
                        eprintln!(
                            "strata: warning: summary of {name} is missing in repo{number}: {reason}"
                        );
                    }
                }
            }
            Err(e) => {
                eprintln!("strata: error: could not archive {}: {e}", path.display());
                failed = true;
            }
        }
    }
    Ok(if failed { 2 } else { 0 })
}

fn first_system_identifier(paths: &[PathBuf]) -> Result<u64> {
    for p in paths {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        if let Some(id) = pgformat::wal::segment_system_identifier(&bytes) {
            return Ok(id);
        }
    }
    Err(anyhow!("no WAL segment among the files to read the system identifier from: use --system-identifier"))
}
