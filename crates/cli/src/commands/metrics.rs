//! `strata metrics [repo options]`: prints the repository's metrics in the Prometheus text format
//! (the same names, labels and help as the extension's endpoint, without the server's counters),
//! for node_exporter's textfile collector when the server is down or has no endpoint:
//!
//! ```text
//! strata metrics --config /etc/postgresql/15/main/postgresql.conf > /var/lib/node_exporter/strata.prom.$$ \
//!   && mv /var/lib/node_exporter/strata.prom.$$ /var/lib/node_exporter/strata.prom
//! ```
//!
//! A repository that cannot be read is reported in the text (`strata_repository_up 0`, the reason on
//! stderr) with exit 0, so that the file is replaced and an alert on `strata_repository_up` fires;
//! bad arguments exit 2 as usual.

use crate::repo_args::RepoArgs;
use anyhow::Result;
use strata_core::metrics::{self, RepoReport, Source};
use strata_core::Repo;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub fn run(args: Args) -> Result<i32> {
    let config = args.repo.resolve()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let report = match Repo::open_config(&config) {
        Ok(repo) => RepoReport::collect(&repo, now),
        Err(e) => RepoReport {
            collected_at: now,
            figures: None,
            error: Some(e.to_string()),
        },
    };
    if let Some(e) = &report.error {
        eprintln!("strata: cannot read the repository: {e}");
    }
    let source = Source {
        stanza: &config.stanza,
        version: env!("CARGO_PKG_VERSION"),
        now,
    };
    print!("{}", metrics::render(&source, None, &report));
    Ok(0)
}
