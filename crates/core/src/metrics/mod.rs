//! Metrics in the Prometheus text format (0.0.4), one text for the extension (`strata_metrics()`,
//! the `GET /metrics` endpoint) and the CLI (`strata metrics`): the same names, labels and help.
//!
//! Every sample has a `stanza` label; per-kind samples add `kind`, per-timeline ones `timeline`. Base
//! units (seconds, bytes, unix-epoch seconds for times), counters end in `_total` and count since the
//! server started. Repository figures come from a `RepoReport` that callers cache (listing a stanza on
//! every scrape would be too slow); what has no value (no backup of a kind, never verified, nothing
//! archived since the server started) is left out rather than given a made-up number, so that an
//! alert on `absent(...)` or on age works.

pub mod figures;
pub mod http;
pub mod text;

pub use figures::{
    archive_lag, KindFigures, LastBackup, RepoFigures, RepoReport, ServerFigures, KINDS,
};
use text::Family;

/// Who is speaking, for the `strata_info` metric and the labels.
pub struct Source<'a> {
    pub stanza: &'a str,
    /// pg_strata's version.
    pub version: &'a str,
    /// Now, in unix seconds (for the age of the repository figures).
    pub now: f64,
}

/// The metrics as text.
pub fn render(source: &Source, server: Option<&ServerFigures>, repo: &RepoReport) -> String {
    text::render(&families(source, server, repo))
}

/// The metric families, in the order they are printed.
pub fn families(source: &Source, server: Option<&ServerFigures>, repo: &RepoReport) -> Vec<Family> {
    let st = source.stanza;
    let mut out = Vec::new();
    let pg_version = match (server, &repo.figures) {
        (Some(s), _) => s.pg_version.clone(),
        (None, Some(f)) => f.pg_version.to_string(),
        (None, None) => String::new(),
    };
    let mut info = Family::gauge(
        "strata_info",
        "pg_strata's version and the PostgreSQL version (the server's, or the stanza's from the CLI).",
    );
    info.add(
        &[
            ("stanza", st),
            ("version", source.version),
            ("pg_version", &pg_version),
        ],
        1.0,
    );
    out.push(info);
    if let Some(s) = server {
        out.extend(server_families(st, s));
    }
    out.extend(repo_families(source, repo));
    out
}

fn one(name: &'static str, help: &'static str, stanza: &str, value: Option<f64>) -> Family {
    let mut f = Family::gauge(name, help);
    if let Some(v) = value {
        f.add(&[("stanza", stanza)], v);
    }
    f
}

fn counter(name: &'static str, help: &'static str, stanza: &str, value: u64) -> Family {
    let mut f = Family::counter(name, help);
    f.add(&[("stanza", stanza)], value as f64);
    f
}

fn server_families(st: &str, s: &ServerFigures) -> Vec<Family> {
    let mut failures = Family::counter(
        "strata_backup_failures_total",
        "Backups that failed or were cancelled since the server started, by requested kind.",
    );
    for (kind, n) in KINDS.iter().zip(s.backup_failures) {
        failures.add(&[("stanza", st), ("kind", kind.name())], n as f64);
    }
    vec![
        failures,
        one(
            "strata_backup_running",
            "1 while a backup runs.",
            st,
            Some(f64::from(u8::from(s.backup_running))),
        ),
        counter(
            "strata_archived_segments_total",
            "WAL files archived since the server started (re-archived duplicates included).",
            st,
            s.archived_segments,
        ),
        counter(
            "strata_archive_failures_total",
            "Failed archiving attempts since the server started.",
            st,
            s.archive_failures,
        ),
        one(
            "strata_archive_last_success_timestamp_seconds",
            "When a WAL file was last archived (absent until one is, after a server start).",
            st,
            s.last_archive_success,
        ),
        one(
            "strata_archive_lag_bytes",
            "WAL written but not archived: the insert position minus the end of the newest archived segment.",
            st,
            s.archive_lag_bytes.map(|v| v as f64),
        ),
        one(
            "strata_archive_ready_files",
            "WAL files waiting for the archiver (.ready files in pg_wal/archive_status).",
            st,
            s.ready_files.map(|v| v as f64),
        ),
        counter(
            "strata_summaries_missing_total",
            "Archived segments whose block-change summary could not be made since the server started.",
            st,
            s.summaries_missing,
        ),
    ]
}

fn repo_families(source: &Source, repo: &RepoReport) -> Vec<Family> {
    let st = source.stanza;
    let mut out = vec![
        one(
            "strata_repository_up",
            "1 when the repository's figures could be read at the last attempt, 0 otherwise.",
            st,
            Some(f64::from(u8::from(repo.figures.is_some()))),
        ),
        one(
            "strata_repository_figures_age_seconds",
            "How old the repository figures are (they are cached).",
            st,
            Some((source.now - repo.collected_at).max(0.0)),
        ),
    ];
    let Some(f) = &repo.figures else {
        return out;
    };
    let mut count = Family::gauge("strata_backups", "Backups in the repository, by kind.");
    let mut last_time = Family::gauge(
        "strata_backup_last_success_timestamp_seconds",
        "When the newest backup of a kind stopped.",
    );
    let mut duration = Family::gauge(
        "strata_backup_last_duration_seconds",
        "How long the newest backup of a kind took.",
    );
    let mut stored = Family::gauge(
        "strata_backup_last_stored_bytes",
        "Bytes the newest backup of a kind stored (compressed).",
    );
    let mut read = Family::gauge(
        "strata_backup_last_read_bytes",
        "Bytes the newest backup of a kind read from the cluster.",
    );
    let mut database = Family::gauge(
        "strata_backup_last_database_bytes",
        "Size of the cluster the newest backup of a kind copied.",
    );
    for k in &f.backups {
        let labels = [("stanza", st), ("kind", k.kind.name())];
        count.add(&labels, k.count as f64);
        if let Some(b) = &k.last {
            last_time.add(&labels, b.stop_time);
            duration.add(&labels, b.duration_seconds);
            stored.add(&labels, b.stored_bytes as f64);
            read.add(&labels, b.read_bytes as f64);
            database.add(&labels, b.database_bytes as f64);
        }
    }
    out.extend([count, last_time, duration, stored, read, database]);
    out.push(one(
        "strata_backups_damaged",
        "Backups whose manifest exists but cannot be read.",
        st,
        Some(f.damaged_backups as f64),
    ));
    let mut bytes = Family::gauge(
        "strata_repository_bytes",
        "Bytes stored in the repository for the stanza, by kind (backups, wal, summaries).",
    );
    for (kind, v) in [
        ("backups", f.backup_bytes),
        ("wal", f.wal_bytes),
        ("summaries", f.summary_bytes),
    ] {
        bytes.add(&[("stanza", st), ("kind", kind)], v as f64);
    }
    out.push(bytes);
    let mut segments = Family::gauge(
        "strata_repository_wal_segments",
        "Complete WAL segments in the repository, by timeline.",
    );
    for (tli, n) in &f.wal_segments {
        segments.add(&[("stanza", st), ("timeline", &tli.to_string())], *n as f64);
    }
    out.push(segments);
    let mut recoverable = Family::gauge(
        "strata_recoverable_from_timestamp_seconds",
        "The oldest point a restore can reach on a timeline: the stop time of its oldest backup.",
    );
    for (tli, t) in &f.recoverable_from {
        recoverable.add(&[("stanza", st), ("timeline", &tli.to_string())], *t);
    }
    out.push(recoverable);
    let v = f.verify.as_ref();
    out.extend([
        one(
            "strata_verify_last_timestamp_seconds",
            "When the stanza was last verified (absent: never).",
            st,
            v.map(|v| v.finished),
        ),
        one(
            "strata_verify_last_duration_seconds",
            "How long the last verification took.",
            st,
            v.map(|v| v.seconds),
        ),
        one(
            "strata_verify_last_errors",
            "Errors the last verification found.",
            st,
            v.map(|v| v.errors as f64),
        ),
        one(
            "strata_verify_last_warnings",
            "Warnings the last verification found.",
            st,
            v.map(|v| v.warnings as f64),
        ),
    ]);
    out
}

#[cfg(test)]
mod tests;
