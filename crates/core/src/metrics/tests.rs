//! The figures read from a fabricated stanza and the text made of them.

use super::*;
use crate::config::RepoUrl;
use crate::manifest::tests::{label, sample, sample_incr, time};
use crate::manifest::BackupKind;
use crate::Repo;

const SEG: u32 = 16 << 20;

fn stanza() -> (tempfile::TempDir, Repo) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::open(&RepoUrl::Local(dir.path().into()), "main").unwrap();
    crate::identity::ensure(&repo, 7_300_000_000_000_000_001, 15, SEG).unwrap();
    (dir, repo)
}

fn put(repo: &Repo, key: &crate::paths::RepoKey, len: usize) {
    repo.storage().put_new(key, vec![7; len]).unwrap();
}

/// A full and an incr on timeline 1, a full on timeline 2; WAL on both timelines and a history file;
/// a summary; a verification.
fn fabricated() -> (tempfile::TempDir, Repo) {
    let (dir, repo) = stanza();
    let (s, k) = (repo.storage(), repo.keys());
    let full = sample();
    let mut incr = sample_incr(&full, "20261123-020000F_20261124-020000I");
    incr.start_time = time("2026-11-24T02:00:00Z");
    incr.stop_time = time("2026-11-24T02:01:30Z");
    incr.stored_size = 1000;
    incr.read_size = 4000;
    incr.database_size = 9000;
    let mut full2 = sample();
    full2.label = label("20261125-020000F");
    full2.timeline = 2;
    full2.start_wal_file = "000000020000000000000002".into();
    full2.stop_wal_file = "000000020000000000000002".into();
    full2.start_time = time("2026-11-25T02:00:00Z");
    full2.stop_time = time("2026-11-25T02:10:00Z");
    for m in [&full, &incr, &full2] {
        s.put_new(&k.backup_manifest(&m.label).unwrap(), m.to_bytes())
            .unwrap();
    }
    put(
        &repo,
        &k.archive_file("000000010000000000000002", SEG).unwrap(),
        100,
    );
    put(
        &repo,
        &k.archive_file("000000010000000000000003", SEG).unwrap(),
        200,
    );
    put(
        &repo,
        &k.archive_file("000000020000000000000004", SEG).unwrap(),
        300,
    );
    put(&repo, &k.archive_file("00000002.history", SEG).unwrap(), 10);
    put(
        &repo,
        &k.summary(
            1,
            pgformat::lsn::Lsn(0x200_0000),
            pgformat::lsn::Lsn(0x300_0000),
        ),
        50,
    );
    crate::verify::record(
        &repo,
        &crate::verify::LastResult {
            finished: time("2026-11-26T03:00:00Z"),
            seconds: 12.5,
            set: None,
            backups_checked: 3,
            errors: 2,
            warnings: 1,
        },
    )
    .unwrap();
    (dir, repo)
}

#[test]
fn figures_come_from_the_stanza() {
    let (_dir, repo) = fabricated();
    let f = RepoFigures::collect(&repo).unwrap();
    assert_eq!(f.damaged_backups, 0);
    let counts: Vec<_> = f.backups.iter().map(|k| (k.kind, k.count)).collect();
    assert_eq!(
        counts,
        vec![
            (BackupKind::Full, 2),
            (BackupKind::Diff, 0),
            (BackupKind::Incr, 1)
        ]
    );
    let newest_full = f.backups[0].last.as_ref().unwrap();
    assert_eq!(newest_full.label, "20261125-020000F");
    assert_eq!(newest_full.duration_seconds, 600.0);
    let incr = f.backups[2].last.as_ref().unwrap();
    assert_eq!(
        (incr.stored_bytes, incr.read_bytes, incr.database_bytes),
        (1000, 4000, 9000)
    );
    assert_eq!(incr.duration_seconds, 90.0);
    assert!(f.backups[1].last.is_none());
    assert_eq!(f.wal_bytes, 610);
    assert_eq!(f.summary_bytes, 50);
    assert!(f.backup_bytes > 0);
    assert_eq!(f.wal_segments, vec![(1, 2), (2, 1)]);
    assert_eq!(f.archived_up_to_lsn, Some(5 * u64::from(SEG)));
    let t = |s: &str| time(s).timestamp() as f64;
    assert_eq!(
        f.recoverable_from,
        vec![
            (1, t("2026-11-23T02:00:05Z")),
            (2, t("2026-11-25T02:10:00Z"))
        ]
    );
    let v = f.verify.as_ref().unwrap();
    assert_eq!((v.errors, v.warnings, v.seconds), (2, 1, 12.5));
    assert_eq!(f.pg_version, 15);
    // The cached form round-trips.
    let report = RepoReport::collect(&repo, 1.0);
    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(serde_json::from_str::<RepoReport>(&json).unwrap(), report);
}

#[test]
fn the_text_has_every_figure_with_its_labels() {
    let (_dir, repo) = fabricated();
    let report = RepoReport::collect(&repo, 1000.0);
    let server = ServerFigures {
        pg_version: "15.20".into(),
        archived_segments: 42,
        archive_failures: 3,
        summaries_missing: 1,
        last_archive_success: Some(1_795_000_000.5),
        archive_lag_bytes: Some(8192),
        ready_files: Some(0),
        backup_failures: [1, 0, 2],
        backup_running: false,
    };
    let source = Source {
        stanza: "main",
        version: "0.1.0",
        now: 1010.0,
    };
    let text = render(&source, Some(&server), &report);
    for line in [
        "strata_info{stanza=\"main\",version=\"0.1.0\",pg_version=\"15.20\"} 1",
        "# TYPE strata_backup_failures_total counter",
        "strata_backup_failures_total{stanza=\"main\",kind=\"incr\"} 2",
        "strata_archived_segments_total{stanza=\"main\"} 42",
        "strata_archive_failures_total{stanza=\"main\"} 3",
        "strata_archive_last_success_timestamp_seconds{stanza=\"main\"} 1795000000.5",
        "strata_archive_lag_bytes{stanza=\"main\"} 8192",
        "strata_archive_ready_files{stanza=\"main\"} 0",
        "strata_summaries_missing_total{stanza=\"main\"} 1",
        "strata_repository_up{stanza=\"main\"} 1",
        "strata_repository_figures_age_seconds{stanza=\"main\"} 10",
        "strata_backups{stanza=\"main\",kind=\"full\"} 2",
        "strata_backups{stanza=\"main\",kind=\"diff\"} 0",
        "strata_backup_last_duration_seconds{stanza=\"main\",kind=\"incr\"} 90",
        "strata_backup_last_stored_bytes{stanza=\"main\",kind=\"incr\"} 1000",
        "strata_backup_last_read_bytes{stanza=\"main\",kind=\"incr\"} 4000",
        "strata_repository_bytes{stanza=\"main\",kind=\"wal\"} 610",
        "strata_repository_bytes{stanza=\"main\",kind=\"summaries\"} 50",
        "strata_repository_wal_segments{stanza=\"main\",timeline=\"2\"} 1",
        "strata_verify_last_errors{stanza=\"main\"} 2",
        "strata_verify_last_duration_seconds{stanza=\"main\"} 12.5",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
    // No diff was taken: its time is absent, not zero.
    assert!(!text
        .contains("strata_backup_last_success_timestamp_seconds{stanza=\"main\",kind=\"diff\"}"));
    // Every family has its HELP and TYPE lines before its samples, once.
    let mut seen = std::collections::BTreeSet::new();
    let mut current = String::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            current = rest.split(' ').next().unwrap().to_string();
            assert!(seen.insert(current.clone()), "{current} twice");
        } else if !l.starts_with("# TYPE ") {
            let name = l.split(['{', ' ']).next().unwrap();
            assert_eq!(name, current, "{l}");
        }
    }
}

#[test]
fn the_cli_text_has_the_repository_figures_only() {
    let (_dir, repo) = fabricated();
    let report = RepoReport::collect(&repo, 5.0);
    let source = Source {
        stanza: "main",
        version: "0.1.0",
        now: 5.0,
    };
    let text = render(&source, None, &report);
    assert!(text.contains("strata_info{stanza=\"main\",version=\"0.1.0\",pg_version=\"15\"} 1"));
    assert!(text.contains("strata_backups{"));
    assert!(!text.contains("_total"), "{text}");
    assert!(!text.contains("strata_archive_lag_bytes"), "{text}");
}

#[test]
fn an_unreadable_repository_is_down_with_no_figures() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::open(&RepoUrl::Local(dir.path().into()), "nostanza").unwrap();
    let report = RepoReport::collect(&repo, 5.0);
    assert!(report.figures.is_none());
    assert!(
        report.error.as_deref().unwrap().contains("nostanza"),
        "{report:?}"
    );
    let source = Source {
        stanza: "nostanza",
        version: "0.1.0",
        now: 65.0,
    };
    let text = render(&source, None, &report);
    assert!(text.contains("strata_repository_up{stanza=\"nostanza\"} 0"));
    assert!(text.contains("strata_repository_figures_age_seconds{stanza=\"nostanza\"} 60"));
    assert!(!text.contains("strata_backups"));
}

#[test]
fn archive_lag_counts_from_the_newest_archived_segment() {
    let seg = u64::from(SEG);
    // Archived up to the end of segment 3 (this server), insert position 1000 bytes into segment 5.
    let insert = 5 * seg + 1000;
    assert_eq!(
        archive_lag(insert, SEG, Some("000000010000000000000003"), None),
        Some(seg + 1000)
    );
    // The repository knows of a newer one (archived by someone else, or before a restart).
    assert_eq!(
        archive_lag(insert, SEG, Some("000000010000000000000003"), Some(5 * seg)),
        Some(1000)
    );
    assert_eq!(archive_lag(insert, SEG, None, Some(5 * seg)), Some(1000));
    // Ahead (a switch archived an empty segment): zero, not negative.
    assert_eq!(archive_lag(3 * seg, SEG, None, Some(5 * seg)), Some(0));
    // Nothing archived at all, or a history file: unknown.
    assert_eq!(archive_lag(insert, SEG, None, None), None);
    assert_eq!(
        archive_lag(insert, SEG, Some("00000002.history"), None),
        None
    );
}
