//! Retention on a real cluster: `strata expire` with a count policy removes the oldest fulls with the
//! backups built on them and the WAL below the oldest kept backup's start; a dry run says exactly what
//! the real run then does; every remaining backup restores to its source's dump, and an expired one is
//! refused naming it.

use pg_test::Archiving;
use pg_test::{stderr, stdout};
use std::collections::BTreeMap;
use strata_core::manifest::Manifest;

fn manifest(a: &Archiving, label: &str) -> Manifest {
    let (path, key) = a.manifest_object(label);
    Manifest::from_bytes(&key, label, &std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn count_retention_keeps_the_newest_fulls_their_chains_and_their_wal() {
    let a = Archiving::new("retention", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g AS id, 'start' AS v FROM generate_series(1, 2000) g",
    );
    let mut dumps = BTreeMap::new();
    let mut labels = Vec::new();
    for round in 0..4 {
        c.psql(
            "postgres",
            &format!("UPDATE t SET v = 'full {round}' WHERE id % 7 = {round}"),
        );
        let full = a.backup("full");
        dumps.insert(full.clone(), c.dumpall());
        c.psql(
            "postgres",
            &format!("UPDATE t SET v = 'incr {round}' WHERE id % 11 = {round}"),
        );
        let incr = a.backup("incr");
        assert!(incr.starts_with(&format!("{full}_")), "{incr} on {full}");
        dumps.insert(incr.clone(), c.dumpall());
        labels.push(full);
        labels.push(incr);
        let wal = a.switch_wal();
        a.wait_archived(&wal);
    }
    let (expired, kept) = labels.split_at(4);

    // Nothing without a policy.
    let o = a.strata(&["expire"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no retention policy"), "{}", stderr(&o));
    let o = a.strata(&["expire", "--retention-full=-1"]);
    assert!(
        stderr(&o).contains("strata.retention_full"),
        "{}",
        stderr(&o)
    );

    // The dry run names what the real run then removes, and removes nothing.
    let files_before = a.archived_files();
    let o = a.strata(&["expire", "--dry-run", "--retention-full", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dry = stdout(&o);
    assert_eq!(a.archived_files(), files_before);
    assert_eq!(
        c.psql("postgres", "SELECT count(*) FROM backup_list()"),
        "8"
    );
    let o = a.strata(&["expire", "--retention-full", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let real = stdout(&o);
    assert_eq!(
        dry.replace("would expire", "expired"),
        real,
        "dry run:\n{dry}\nreal:\n{real}"
    );
    for label in expired {
        assert!(real.contains(&format!("expired backup {label}:")), "{real}");
    }

    // The listing holds exactly the kept backups.
    let listed = c.psql(
        "postgres",
        "SELECT string_agg(label, ',' ORDER BY label) FROM backup_list()",
    );
    assert_eq!(listed, kept.join(","));

    // The archive starts at the oldest kept backup's first segment.
    let oldest_kept = manifest(&a, &kept[0]);
    let segments = a.archived_segment_names();
    assert_eq!(
        segments.first(),
        Some(&oldest_kept.start_wal_file),
        "{segments:?}"
    );

    // Every kept backup restores to its source's dump; an expired one is refused naming it.
    for label in kept {
        let r = a.restore_new(
            &format!("retention-{}", &label[label.len() - 8..]),
            // Without a lease: a restore's lease keeps its chain for a day (see the lease test).
            &["--set", label, "--type", "immediate", "--no-lease"],
        );
        r.start();
        r.wait_recovered(true);
        pg_test::assert_same_dump(&r.dumpall(), &dumps[label], label);
        r.stop();
    }
    let target = pg_test::PgDir::new("strata-retention-expired-");
    let o = a.restore_into(&target.path().join("data"), &["--set", &expired[0]]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains(&expired[0]), "{}", stderr(&o));

    // Again: nothing left to expire.
    let o = a.strata(&["expire", "--retention-full", "2"]);
    assert!(
        stdout(&o).contains("expired 0 backups, 0 WAL files"),
        "{}",
        stdout(&o)
    );

    // strata info: the oldest point restorable, the policy in force is none without --config.
    let info = stdout(&a.strata(&["info"]));
    assert!(
        info.contains(&format!(
            "recoverable on timeline 1 from: {}",
            strata_core::manifest::time_text(oldest_kept.stop_time)
        )),
        "{info}"
    );
    // --set removes a backup with what is built on it (the newest full and its incr).
    let o = a.strata(&["expire", "--set", &kept[2]]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = c.psql(
        "postgres",
        "SELECT string_agg(label, ',' ORDER BY label) FROM backup_list()",
    );
    assert_eq!(listed, kept[..2].join(","));
}

#[test]
fn the_worker_expires_after_each_backup_and_backup_expire_reports_in_sql() {
    let a = Archiving::new("retention-auto", "strata.retention_full = 1");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 500) g",
    );
    let pinned = a.backup("full");
    let pinned_dump = c.dumpall();
    c.psql("postgres", "UPDATE t SET g = g + 1");
    let pinned_incr = a.backup("incr");
    assert_eq!(
        c.psql(
            "postgres",
            &format!("SELECT backup_keep('{pinned}', true, 'end of year audit')")
        ),
        "t"
    );
    c.psql("postgres", "UPDATE t SET g = g + 1");
    let first = a.backup("full");
    c.psql("postgres", "UPDATE t SET g = g + 1");
    let incr = a.backup("incr");
    let second = a.backup("full");
    // The new full replaced the old one and the incrs, at the end of its own backup; the pinned
    // full stays (its incr, not pinned, goes).
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT string_agg(label || ':' || pinned || ':' || coalesce(note, ''), ',' ORDER BY label) \
             FROM backup_list()"
        ),
        format!("{pinned}:true:end of year audit,{second}:false:")
    );
    let log = c.log();
    for label in [&pinned_incr, &first, &incr] {
        assert!(log.contains(&format!("expired backup {label}")), "{log}");
    }
    let info = stdout(&a.strata(&["info"]));
    assert!(info.contains("note: end of year audit"), "{info}");
    // The pinned backup keeps the WAL from its start: it restores.
    let r = a.restore_new(
        "retention-pinned",
        &["--set", &pinned, "--type", "immediate", "--no-lease"],
    );
    r.start();
    r.wait_recovered(true);
    pg_test::assert_same_dump(&r.dumpall(), &pinned_dump, "the pinned full");
    r.stop();
    // Unpinned, it goes at the next expiry.
    c.psql(
        "postgres",
        &format!("SELECT backup_keep('{pinned}', false)"),
    );
    let rows = c.psql(
        "postgres",
        "SELECT object || ':' || name FROM backup_expire() WHERE object = 'backup'",
    );
    assert_eq!(rows, format!("backup:{pinned}"));
    // Nothing more to expire; the dry run in SQL says so and names the archive's state.
    let rows = c.psql(
        "postgres",
        "SELECT object || ':' || name FROM backup_expire(dry_run => true) ORDER BY 1",
    );
    assert!(rows.starts_with("archive:"), "{rows}");
    assert!(!rows.contains("backup:"), "{rows}");

    // NULL arguments are errors that change nothing.
    for sql in [
        "SELECT * FROM backup_expire(NULL)",
        "SELECT backup_keep(NULL, true)",
        &format!("SELECT backup_keep('{second}', NULL)"),
    ] {
        let e = c.try_psql("postgres", sql).expect_err(sql);
        assert!(e.contains("must not be NULL"), "{sql}: {e}");
    }
    // The oldest restorable point per timeline, with the policy, and each backup's retention.
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT timeline || ':' || backup || ':' || policy FROM backup_recoverability()"
        ),
        format!("1:{second}:1 full backups")
    );
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT retention || ':' || pitr FROM strata_backups"
        ),
        "kept: retention policy:true"
    );

    // Bad settings are refused naming the setting; the policy in force stays.
    let e = c
        .try_psql(
            "postgres",
            "ALTER SYSTEM SET strata.retention_window = 'soon'",
        )
        .unwrap_err();
    assert!(e.contains("strata.retention_window"), "{e}");
    let e = c
        .try_psql("postgres", "ALTER SYSTEM SET strata.retention_full = -1")
        .unwrap_err();
    assert!(e.contains("strata.retention_full"), "{e}");
    let e = c
        .try_psql(
            "postgres",
            "ALTER SYSTEM SET strata.retention_full_type = 'weekly'",
        )
        .unwrap_err();
    assert!(e.contains("strata.retention_full_type"), "{e}");
}
