//! `strata check`: the repository-side health checks (see `strata_core::check`) for an operator or a
//! monitoring script, without a server: the repository reachable and writable, the stanza (and, with
//! `--pgdata`, that it holds that data directory's cluster), the newest backups' ages against
//! `strata.backup_max_age_*`, a local repository's file system usage, the last verification. The
//! server's own checks (its settings, a WAL switch archived end to end, the archiver's backlog) are in
//! `SELECT * FROM strata_check()`. Exit 0 all ok, 1 warnings, 2 errors.

use crate::repo_args::RepoArgs;
use anyhow::{bail, Result};
use std::path::PathBuf;
use strata_core::check::{self, MaxAges, Row, Status};
use strata_core::{catalog, Repo};

#[derive(clap::Args)]
pub struct Args {
    /// A data directory: check that the stanza holds its cluster (from global/pg_control)
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Output format: text or json
    #[arg(long, default_value = "text", value_name = "text|json")]
    pub output: String,
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub fn run(args: Args) -> Result<i32> {
    if args.output != "text" && args.output != "json" {
        bail!("--output '{}': expected text or json", args.output);
    }
    let rows = checks(&args);
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            println!("{:<20} {:<8} {}", r.check, r.status.name(), r.message);
        }
    }
    Ok(check::exit_code(&rows))
}

fn checks(args: &Args) -> Vec<Row> {
    let mut rows = Vec::new();
    let settings = (|| {
        let file = args.repo.settings()?;
        let get = |n: &str| file.get(n);
        let ages = MaxAges::from_settings(get)?;
        let warn = match file.get("strata.repo_usage_warn") {
            None => 80,
            Some(v) => match v.trim().trim_matches('\'').parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => bail!("strata.repo_usage_warn = '{v}': expected a percentage from 1 to 100"),
            },
        };
        let policy = args.repo.retention_policy(1, &[])?;
        Ok((args.repo.resolve()?, ages, warn, policy))
    })();
    let (config, ages, warn) = match settings {
        Ok((config, ages, warn, _)) => {
            rows.push(Row::new(
                "settings",
                Status::Ok,
                "the strata.* settings are valid",
            ));
            (config, ages, warn)
        }
        Err(e) => {
            rows.push(Row::new("settings", Status::Error, format!("{e:#}")));
            return rows;
        }
    };
    let repo = match Repo::open_config(&config) {
        Ok(r) => r,
        Err(e) => {
            rows.push(Row::new("repository", Status::Error, e.to_string()));
            return rows;
        }
    };
    rows.push(check::repository_writable(&repo));
    let cluster = match &args.pgdata {
        None => None,
        Some(dir) => {
            let control = dir.join("global/pg_control");
            match std::fs::read(&control)
                .ok()
                .and_then(|b| pgformat::control::system_identifier(&b))
            {
                Some(id) => Some(id),
                None => {
                    rows.push(Row::new(
                        "pgdata",
                        Status::Error,
                        format!(
                            "cannot read the system identifier from {}",
                            control.display()
                        ),
                    ));
                    None
                }
            }
        }
    };
    let identity = check::stanza_identity(&repo, cluster);
    let no_stanza = identity.status == Status::Error;
    rows.push(identity);
    if no_stanza {
        return rows;
    }
    match catalog::list_backups(&repo) {
        Ok(backups) => rows.extend(check::backup_ages(&backups, &ages, chrono::Utc::now())),
        Err(e) => rows.push(Row::new("backups", Status::Error, e.to_string())),
    }
    rows.extend(check::repository_usage(&repo, warn));
    rows.push(check::last_verify(&repo, chrono::Utc::now()));
    rows
}
