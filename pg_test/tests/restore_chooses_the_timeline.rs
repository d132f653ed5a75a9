//! Which timeline a restored server follows, decided by `strata restore` before it writes anything, on
//! the layout of PostgreSQL's own 003_timeline.pl: a copy restored from an earlier backup and promoted
//! to timeline 2 archives into the same stanza while the original goes on on timeline 1. A later backup
//! of the original restores and starts (`--type immediate` stays on its own timeline; a default restore
//! follows timeline 1 to its end, not the `latest` timeline 2 that forked before it); operator choices
//! that cannot work are refused with the reason; targets recovery could never reach and a damaged WAL
//! segment the backup needs are refused before anything is written.

use pg_test::{Archiving, PgDir};
use std::process::Output;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_refused(a: &Archiving, args: &[&str], needles: &[&str]) {
    let root = PgDir::new("strata-tl-refused-");
    let target = root.path().join("data");
    let o = a.restore_into(&target, args);
    assert!(!o.status.success(), "{args:?} should be refused");
    for n in needles {
        assert!(
            stderr(&o).contains(n),
            "{args:?}: missing '{n}' in: {}",
            stderr(&o)
        );
    }
    assert!(
        !target.exists(),
        "{args:?}: a refused restore left a directory"
    );
}

#[test]
fn a_backup_of_timeline_1_restores_when_a_forked_timeline_2_shares_the_stanza() {
    let a = Archiving::new("tl-fork", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000);",
    );
    let f1 = a.backup("full");
    c.psql(
        "postgres",
        "INSERT INTO t SELECT generate_series(1001, 2000)",
    );
    let last = a.switch_wal();
    a.wait_archived(&last);

    // A copy restored from the first backup and promoted: timeline 2, archiving into the same stanza
    // (its postgresql.conf is the source's).
    let copy = a.restore_new(
        "tl-fork-copy",
        &[
            "--set",
            &f1,
            "--type",
            "immediate",
            "--target-action",
            "promote",
        ],
    );
    copy.start();
    copy.wait_recovered(false);
    copy.psql("postgres", "INSERT INTO t VALUES (-1)");
    let seg = copy.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    copy.wait_for("timeline 2's WAL archived", 60, || {
        copy.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        ) >= seg
    });
    assert!(a.archived_object("main", "00000002.history").exists());
    copy.stop();

    // The original goes on on timeline 1 and takes a later backup.
    c.psql(
        "postgres",
        "INSERT INTO t SELECT generate_series(2001, 3000)",
    );
    let f2 = a.backup("full");
    c.psql(
        "postgres",
        "INSERT INTO t SELECT generate_series(3001, 4000)",
    );
    let last = a.switch_wal();
    a.wait_archived(&last);

    // --type immediate: its own timeline; it starts and has the data as of the backup.
    let r = a.restore_new(
        "tl-fork-immediate",
        &[
            "--set",
            &f2,
            "--type",
            "immediate",
            "--target-action",
            "promote",
            "--archive-mode",
            "off",
        ],
    );
    let auto = std::fs::read_to_string(r.datadir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("recovery_target_timeline = 'current'"),
        "{auto}"
    );
    r.start();
    r.wait_recovered(false);
    assert_eq!(
        r.psql("postgres", "SELECT count(*), min(id) FROM t"),
        "3000|1"
    );
    r.stop();

    // Default: timeline 1 to the end of the archive (timeline 2 forked before the backup ended).
    // (Restored copies that promote must not archive new timelines into the stanza: --archive-mode off.)
    let r = a.restore_new("tl-fork-end", &["--set", &f2, "--archive-mode", "off"]);
    let auto = std::fs::read_to_string(r.datadir.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("recovery_target_timeline = '1'"), "{auto}");
    r.start();
    r.wait_recovered(false);
    pg_test::assert_same_dump(&r.dumpall(), &c.dumpall(), "timeline 1 to its end");
    r.stop();

    // Choices that cannot work: refused with the reason and the timelines that would.
    assert_refused(
        &a,
        &["--set", &f2, "--target-timeline", "2"],
        &["branched off before the backup ended", "timeline(s) 1"],
    );
    assert_refused(
        &a,
        &["--set", &f2, "--target-timeline", "latest"],
        &["latest timeline in the archive, 2"],
    );
    assert_refused(
        &a,
        &["--set", &f2, "--target-timeline", "0"],
        &["not a timeline number"],
    );
    assert_refused(
        &a,
        &["--set", &f2, "--target-timeline", "9"],
        &["does not exist"],
    );
    // The first backup can follow timeline 2 (it forked after that backup ended).
    let r = a.restore_new(
        "tl-fork-two",
        &[
            "--set",
            &f1,
            "--target-timeline",
            "2",
            "--archive-mode",
            "off",
        ],
    );
    r.start();
    r.wait_recovered(false);
    assert_eq!(
        r.psql("postgres", "SELECT count(*) FROM t WHERE id = -1"),
        "1"
    );
    r.stop();

    // Targets that recovery from this backup could never reach.
    let m = strata_core::manifest::to_plain_json(
        &std::fs::read(
            a.repo
                .path()
                .join("main/backup")
                .join(&f2)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_refused(
        &a,
        &["--set", &f2, "--type", "lsn", "--target", "0/1000000"],
        &["consistent only from", m["stop_lsn"].as_str().unwrap()],
    );
    assert_refused(
        &a,
        &[
            "--type",
            "name",
            "--target",
            "x\nrecovery_target_action = 'shutdown'",
        ],
        &["newline"],
    );
    assert_refused(&a, &["--type", "xid", "--target", "2"], &["special"]);

    // A damaged WAL segment the backup needs to become consistent: refused before writing.
    let seg = m["stop_wal_file"].as_str().unwrap().to_string();
    let obj = a.archived_object("main", &seg);
    let good = std::fs::read(&obj).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x20;
    std::fs::write(&obj, &bad).unwrap();
    assert_refused(&a, &["--set", &f2], &[&seg, "damaged"]);
    std::fs::write(&obj, &good).unwrap();
}
