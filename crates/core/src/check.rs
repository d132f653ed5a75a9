//! Health checks that tell an operator what to fix (`strata check`, `strata_check()`): the repository
//! reachable and writable, the stanza's identity and cluster, the age of the newest backups against
//! the promised maximum, the repository's file system usage, the last verification. Each is one row:
//! a name, ok / warning / error, and a message that names the setting or the fix. The server adds the
//! checks only it can make (its settings, a WAL switch archived end to end, the archiver's backlog).

use crate::manifest::{BackupKind, ManifestHead};
use crate::repo::Repo;
use crate::Result;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Error,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Error => "error",
        }
    }
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub check: String,
    pub status: Status,
    pub message: String,
}

impl Row {
    pub fn new(check: &str, status: Status, message: impl Into<String>) -> Row {
        Row {
            check: check.to_string(),
            status,
            message: message.into(),
        }
    }
}

/// The worst status of `rows` (ok when there are none).
pub fn worst(rows: &[Row]) -> Status {
    rows.iter().map(|r| r.status).max().unwrap_or(Status::Ok)
}

/// `strata check`'s exit code: 0 all ok, 1 warnings, 2 errors.
pub fn exit_code(rows: &[Row]) -> i32 {
    match worst(rows) {
        Status::Ok => 0,
        Status::Warning => 1,
        Status::Error => 2,
    }
}

/// The most a backup of each kind may be old (`strata.backup_max_age_full/_diff/_incr`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaxAges {
    pub full: Option<Duration>,
    pub diff: Option<Duration>,
    pub incr: Option<Duration>,
}

impl MaxAges {
    /// Reads `strata.backup_max_age_*` (intervals like '8 days'; empty: no limit).
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<MaxAges> {
        let read = |kind: &str| {
            let name = format!("strata.backup_max_age_{kind}");
            crate::retention::policy::parse_interval(&name, &get(&name).unwrap_or_default())
        };
        Ok(MaxAges {
            full: read("full")?,
            diff: read("diff")?,
            incr: read("incr")?,
        })
    }
}

/// The repository answers and takes a write: a probe object created and deleted.
pub fn repository_writable(repo: &Repo) -> Row {
    let name = "repository";
    if let Err(e) = repo.storage().check_root() {
        return Row::new(name, Status::Error, e.to_string());
    }
    let key = match repo.keys().check_probe(&format!(
        "{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )) {
        Ok(k) => k,
        Err(e) => return Row::new(name, Status::Error, e.to_string()),
    };
    let written = repo.storage().put_new(&key, b"pg_strata check\n".to_vec());
    let deleted = repo.storage().delete(&key);
    match (written, deleted) {
        (Ok(_), Ok(())) => Row::new(
            name,
            Status::Ok,
            format!("{} is reachable and writable", repo.describe()),
        ),
        (Err(e), _) | (_, Err(e)) => Row::new(
            name,
            Status::Error,
            format!("{} cannot be written: {e}", repo.describe()),
        ),
    }
}

/// The stanza exists and, when `cluster` (its system identifier) is known, holds that cluster.
pub fn stanza_identity(repo: &Repo, cluster: Option<u64>) -> Row {
    let name = "stanza";
    match repo.identity() {
        Ok(id) => match cluster {
            Some(sysid) if sysid != id.system_identifier => Row::new(
                name,
                Status::Error,
                format!(
                    "stanza '{}' holds cluster {}, this is cluster {sysid}: set strata.stanza to a \
                     stanza of its own",
                    repo.stanza(),
                    id.system_identifier
                ),
            ),
            _ => Row::new(
                name,
                Status::Ok,
                format!(
                    "stanza '{}' holds cluster {} (PostgreSQL {})",
                    repo.stanza(),
                    id.system_identifier,
                    id.pg_version
                ),
            ),
        },
        Err(e) => Row::new(name, Status::Error, e.to_string()),
    }
}

/// The newest backup of each kind against its maximum age; a full counts as a diff and as an incr,
/// a diff as an incr (each is at least as recent a restore point). One row per kind with a limit.
pub fn backup_ages(backups: &[ManifestHead], max: &MaxAges, now: DateTime<Utc>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (kind, limit) in [
        (BackupKind::Full, max.full),
        (BackupKind::Diff, max.diff),
        (BackupKind::Incr, max.incr),
    ] {
        let Some(limit) = limit else { continue };
        let name = format!("backup_age_{}", kind.name());
        let covers = |m: &&ManifestHead| match kind {
            BackupKind::Full => m.kind == BackupKind::Full,
            BackupKind::Diff => m.kind != BackupKind::Incr,
            BackupKind::Incr => true,
        };
        let newest = backups.iter().filter(covers).max_by_key(|m| m.stop_time);
        let setting = format!("strata.backup_max_age_{}", kind.name());
        rows.push(match newest {
            None => Row::new(
                &name,
                Status::Error,
                format!(
                    "no {kind} backup in the repository ({setting} is set): take one with SELECT \
                     backup_start('{kind}')"
                ),
            ),
            Some(m) => {
                let age = now - m.stop_time;
                let text = describe_age(age);
                if age > limit {
                    Row::new(
                        &name,
                        Status::Error,
                        format!(
                            "the newest {kind} backup, {}, ended {text} ago, more than {setting} \
                             ({}): check the schedule (cron.job_run_details) and the server log",
                            m.label,
                            describe_age(limit)
                        ),
                    )
                } else {
                    Row::new(
                        &name,
                        Status::Ok,
                        format!("the newest {kind} backup, {}, ended {text} ago", m.label),
                    )
                }
            }
        });
    }
    rows
}

fn describe_age(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    if s >= 2 * 86_400 {
        format!("{:.1} days", s as f64 / 86_400.0)
    } else if s >= 2 * 3600 {
        format!("{:.1} hours", s as f64 / 3600.0)
    } else if s >= 120 {
        format!("{} minutes", s / 60)
    } else {
        format!("{s} seconds")
    }
}

/// The file system of a local repository, against `warn_percent` used (an S3 bucket has no such
/// limit: no row).
pub fn repository_usage(repo: &Repo, warn_percent: u32) -> Option<Row> {
    let root = repo.storage().local_root()?;
    let name = "repository_usage";
    let c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Some(Row::new(
            name,
            Status::Error,
            format!(
                "cannot read the usage of {}: {}",
                root.display(),
                std::io::Error::last_os_error()
            ),
        ));
    }
    // As df counts: used against what is usable by users (blocks reserved for root left out).
    let used_bytes = st.f_blocks.saturating_sub(st.f_bfree) as f64 * st.f_frsize as f64;
    let avail = st.f_bavail as f64 * st.f_frsize as f64;
    if used_bytes + avail <= 0.0 {
        return None;
    }
    let used = 100.0 * used_bytes / (used_bytes + avail);
    let text = format!(
        "{} is {used:.0}% full ({:.1} GB free)",
        root.display(),
        avail / 1e9
    );
    Some(if used >= f64::from(warn_percent) {
        Row::new(
            name,
            Status::Warning,
            format!(
                "{text}, over strata.repo_usage_warn ({warn_percent}%): set a retention policy \
                 (strata.retention_full) or add space before archiving stops"
            ),
        )
    } else {
        Row::new(name, Status::Ok, text)
    })
}

/// The last verification (`strata verify`, `backup_verify()`): when, and what it found.
pub fn last_verify(repo: &Repo, now: DateTime<Utc>) -> Row {
    let name = "verify";
    match crate::verify::last(repo) {
        Ok(None) => Row::new(
            name,
            Status::Warning,
            "the repository was never verified: schedule SELECT * FROM backup_verify() (or strata \
             verify) daily",
        ),
        Ok(Some(v)) => {
            let ago = describe_age(now - v.finished);
            if v.errors > 0 {
                Row::new(
                    name,
                    Status::Error,
                    format!(
                        "the last verification ({ago} ago) found {} errors: run strata verify for \
                         the details",
                        v.errors
                    ),
                )
            } else {
                Row::new(
                    name,
                    Status::Ok,
                    format!(
                        "last verified {ago} ago: no errors, {} warnings",
                        v.warnings
                    ),
                )
            }
        }
        Err(e) => Row::new(name, Status::Warning, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;

    #[test]
    fn backup_ages_count_a_full_as_every_kind_and_name_the_setting() {
        let now = Utc::now();
        let mut full = sample().head;
        full.kind = BackupKind::Full;
        full.stop_time = now - Duration::days(3);
        let mut incr = full.clone();
        incr.kind = BackupKind::Incr;
        incr.stop_time = now - Duration::hours(1);
        let max = MaxAges {
            full: Some(Duration::days(2)),
            diff: Some(Duration::days(4)),
            incr: Some(Duration::hours(2)),
        };
        let rows = backup_ages(&[full.clone(), incr], &max, now);
        let status: Vec<(&str, Status)> =
            rows.iter().map(|r| (r.check.as_str(), r.status)).collect();
        assert_eq!(
            status,
            vec![
                ("backup_age_full", Status::Error),
                ("backup_age_diff", Status::Ok),
                ("backup_age_incr", Status::Ok)
            ]
        );
        assert!(rows[0].message.contains("strata.backup_max_age_full"));
        // No backup at all with a limit set: an error.
        let rows = backup_ages(&[], &max, now);
        assert!(rows.iter().all(|r| r.status == Status::Error));
        assert_eq!(exit_code(&rows), 2);
        assert_eq!(exit_code(&[]), 0);
        let bad = MaxAges::from_settings(|n| {
            (n == "strata.backup_max_age_diff").then(|| "fortnight".to_string())
        })
        .unwrap_err();
        assert!(
            bad.to_string().contains("strata.backup_max_age_diff"),
            "{bad}"
        );
    }
}
