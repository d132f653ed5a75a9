//! The SQL face of retention: `backup_expire()`, `backup_keep()` and `backup_recoverability()`, and
//! the log lines of an expiry (on demand or after each backup).

use crate::backup_sql::time_to_pg;
use crate::{backup_state, status};
use pgrx::prelude::*;

/// Removes the backups the retention policy (`strata.retention_*`, per repository
/// `strata.repoN_retention_*`) does not keep, then the archived WAL and summaries no kept backup needs,
/// in every repository (or in `repo` only); with `dry_run`, only says what it would remove. Per
/// repository, one row per expired backup, then one for the archive. Refused while a backup runs (it
/// expires by itself when it ends). A repository that fails is a WARNING when others succeed.
#[pg_extern(volatile)]
fn backup_expire(
    dry_run: default!(Option<bool>, false),
    repo: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(object, String),
        name!(name, String),
        name!(detail, String),
        name!(repo, i32),
    ),
> {
    let Some(dry_run) = dry_run else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "backup_expire(): dry_run must not be NULL; nothing was expired",
            "Use dry_run => true to see what would be expired, false to expire it."
        );
    };
    if !status::available() {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "backup_expire() needs pg_strata in shared_preload_libraries",
            "Add pg_strata to shared_preload_libraries and restart the server."
        );
    }
    let s = backup_state::snapshot();
    if s.phase().running() {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            format!(
                "a backup is running ({}): it expires what the policy does not keep when it ends",
                s.label().unwrap_or_else(|| "starting".into())
            ),
            "Run backup_expire() after it, or let the backup do it."
        );
    }
    let repos = crate::repo_gucs::repos()
        .and_then(|r| r.select(repo.map(|n| u8::try_from(n).unwrap_or(0))))
        .unwrap_or_else(|e| crate::errors::raise("cannot expire", e));
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for config in repos.repos() {
        let number = config.number;
        let result = (|| {
            let policy = crate::repo_gucs::retention_policy(number)?;
            let repo = strata_core::Repo::open_config(config)?;
            strata_core::retention::expire_now(&repo, &policy, dry_run)
        })();
        match result {
            Ok(report) => {
                if !dry_run {
                    log_expiry(&report, number);
                    crate::metrics_cache::invalidate();
                }
                rows.extend(
                    expiry_rows(&report)
                        .into_iter()
                        .map(|(a, b, c)| (a, b, c, i32::from(number))),
                );
            }
            Err(e) => failed.push(e.in_repo(number)),
        }
    }
    if rows.is_empty() && !failed.is_empty() {
        let e = failed.remove(0);
        let e = match e {
            strata_core::Error::InRepo { error, .. } if repos.repos().len() == 1 => *error,
            e => e,
        };
        crate::errors::raise("cannot expire", e);
    }
    for e in failed {
        warning!("pg_strata: cannot expire {e}");
    }
    TableIterator::new(rows)
}

fn expiry_rows(report: &strata_core::retention::ExpiryReport) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    for label in &report.leftovers {
        rows.push((
            "backup".to_string(),
            label.clone(),
            "the rest of an interrupted expiry".to_string(),
        ));
    }
    for (label, why) in &report.backups {
        rows.push(("backup".to_string(), label.to_string(), why.clone()));
    }
    for label in &report.leased {
        rows.push((
            "backup".to_string(),
            label.to_string(),
            "kept: a restore holds a lease on it".to_string(),
        ));
    }
    let archive = match (&report.wal_note, report.wal_kept_from) {
        (Some(note), _) => note.clone(),
        (None, Some(from)) => {
            let mut d = format!(
                "{} WAL files and {} summaries no kept backup needs (all WAL is kept from {from})",
                report.wal_files, report.summaries
            );
            if !report.end_only.is_empty() {
                let labels: Vec<&str> = report.end_only.iter().map(|l| l.as_str()).collect();
                d.push_str(&format!(
                    "; restorable to their end only (strata.retention_archive): {}",
                    labels.join(", ")
                ));
            }
            d
        }
        (None, None) => String::new(),
    };
    rows.push((
        "archive".to_string(),
        format!("{} bytes in all", report.bytes),
        archive,
    ));
    rows
}

/// Pins a backup (`keep`: no retention policy expires it, nor its chain or the WAL from its start) or
/// unpins it, with an optional note (NULL keeps the note it has). Returns `keep`.
#[pg_extern(volatile)]
fn backup_keep(
    label: Option<&str>,
    keep: Option<bool>,
    note: default!(Option<&str>, "NULL"),
    repo: default!(Option<i32>, 1),
) -> bool {
    let (Some(label), Some(keep)) = (label, keep) else {
        let which = if label.is_none() { "label" } else { "keep" };
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("backup_keep(): {which} must not be NULL; nothing was changed"),
            "Name a backup (SELECT label FROM strata_backups) and keep true or false."
        );
    };
    let number = u8::try_from(repo.unwrap_or(1)).unwrap_or(0);
    (|| {
        let repo = strata_core::Repo::open_config(&crate::repo_gucs::repo(number)?)?;
        strata_core::retention::pin::set(&repo, label, keep, note)
    })()
    .map(|a| a.keep)
    .unwrap_or_else(|e| crate::errors::raise(&format!("cannot annotate backup {label}"), e))
}

/// One log line per expired backup and a summary.
pub fn log_expiry(report: &strata_core::retention::ExpiryReport, number: u8) {
    for label in &report.leftovers {
        log!("pg_strata: removed the rest of backup {label} from repo{number}, whose expiry was interrupted");
    }
    for (label, why) in &report.backups {
        log!("pg_strata: expired backup {label}: {why} (repo{number})");
    }
    if report.backups.is_empty() && report.wal_files == 0 && report.summaries == 0 {
        return;
    }
    log!(
        "pg_strata: expiry of repo{number} ({}): {} backups, {} WAL files, {} summaries, {} bytes freed{}",
        report.policy,
        report.backups.len(),
        report.wal_files,
        report.summaries,
        report.bytes,
        report
            .wal_note
            .as_deref()
            .map(|n| format!("; archive: {n}"))
            .unwrap_or_default()
    );
}

/// The oldest point each timeline can be restored to (the end of its oldest backup), with the
/// retention policy of the current settings, per repository (every configured one, or `repo`): what an
/// SRE checks against the promised recovery window.
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn backup_recoverability(
    repo: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(timeline, i64),
        name!(recoverable_from_time, Option<TimestampWithTimeZone>),
        name!(recoverable_from_lsn, String),
        name!(backup, String),
        name!(policy, String),
        name!(repo, i32),
    ),
> {
    let repos = crate::repo_gucs::repos()
        .and_then(|r| r.select(repo.map(|n| u8::try_from(n).unwrap_or(0))))
        .unwrap_or_else(|e| crate::errors::raise("cannot read the backups", e));
    let mut rows = Vec::new();
    for config in repos.repos() {
        let number = config.number;
        let read = (|| {
            let policy = crate::repo_gucs::retention_policy(number)?;
            let repo = strata_core::Repo::open_config(config)?;
            Ok::<_, strata_core::Error>((strata_core::catalog::list_backups(&repo)?, policy))
        })();
        // With several repositories, one that cannot be read is a WARNING: the others still answer.
        let (listing, policy) = match read {
            Ok(r) => r,
            Err(e) if repos.repos().len() > 1 => {
                warning!("backup_recoverability(): repo{number} left out: {e}");
                continue;
            }
            Err(e) => crate::errors::raise("cannot read the backups", e.in_repo(number)),
        };
        let mut oldest: std::collections::BTreeMap<u32, &strata_core::manifest::ManifestHead> =
            Default::default();
        for m in &listing {
            let e = oldest.entry(m.timeline).or_insert(m);
            if m.stop_lsn < e.stop_lsn {
                *e = m;
            }
        }
        rows.extend(oldest.into_values().map(|m| {
            (
                i64::from(m.timeline),
                time_to_pg(m.stop_time),
                m.stop_lsn.to_string(),
                m.label.to_string(),
                policy.describe(),
                i32::from(number),
            )
        }));
    }
    TableIterator::new(rows)
}
