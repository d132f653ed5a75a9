//! Point-in-time recovery with `strata restore --type time|lsn|xid|name`: between two known committed
//! transactions A and B, every kind of target gives exactly A's rows; `--target-action promote` leaves a
//! writable server on a new timeline whose history file reaches the archive.

use pg_test::Archiving;

struct Targets {
    time: String,
    lsn: String,
    xid: String,
}

/// Commits A, records the targets just after it (and a restore point), commits B, archives everything.
fn two_transactions(a: &Archiving) -> Targets {
    let c = &a.cluster;
    c.psql("postgres", "CREATE TABLE events (id int, what text)");
    a.backup("full");
    let xid = c.psql(
        "postgres",
        "BEGIN; INSERT INTO events VALUES (1, 'A'); SELECT txid_current(); COMMIT;",
    );
    // Let the clock move past A's commit before recording the time target, and past the target before B.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let time = c.psql(
        "postgres",
        "SELECT to_char(clock_timestamp(), 'YYYY-MM-DD HH24:MI:SS.USOF')",
    );
    let lsn = c.psql(
        "postgres",
        "SELECT pg_create_restore_point('before_b'); SELECT pg_current_wal_insert_lsn();",
    );
    let lsn = lsn.lines().last().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    c.psql("postgres", "INSERT INTO events VALUES (2, 'B')");
    let last = a.switch_wal();
    a.wait_archived(&last);
    Targets { time, lsn, xid }
}

fn rows(c: &pg_test::Cluster) -> String {
    c.psql(
        "postgres",
        "SELECT string_agg(what, ',' ORDER BY id) FROM events",
    )
}

#[test]
fn every_target_type_stops_between_the_two_transactions() {
    let a = Archiving::new("pitr", "");
    let t = two_transactions(&a);

    for (name, args) in [
        ("time", vec!["--type", "time", "--target", t.time.as_str()]),
        ("xid", vec!["--type", "xid", "--target", t.xid.as_str()]),
        ("name", vec!["--type", "name", "--target", "before_b"]),
    ] {
        let r = a.restore_new(&format!("pitr-{name}"), &args);
        r.start();
        r.wait_recovered(true);
        assert_eq!(rows(&r), "A", "--type {name}");
        r.stop();
    }

    // LSN target with promote: a writable server on timeline 2, whose history file is archived.
    let r = a.restore_new(
        "pitr-lsn",
        &[
            "--type",
            "lsn",
            "--target",
            &t.lsn,
            "--target-action",
            "promote",
        ],
    );
    r.start();
    r.wait_recovered(false);
    assert_eq!(rows(&r), "A");
    r.psql("postgres", "INSERT INTO events VALUES (3, 'C')");
    assert_eq!(
        r.psql(
            "postgres",
            "SELECT timeline_id FROM pg_control_checkpoint()"
        ),
        "2"
    );
    r.wait_for("00000002.history in the archive", 60, || {
        a.archived_files().iter().any(|f| f == "00000002.history")
    });
    r.stop();
}

#[test]
fn a_time_target_without_set_picks_the_newest_backup_before_it() {
    let a = Archiving::new("pitr-choice", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1)",
    );
    let first = a.backup("full");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = c.psql(
        "postgres",
        "SELECT to_char(clock_timestamp(), 'YYYY-MM-DD HH24:MI:SSOF')",
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = a.backup("full");
    assert_ne!(first, second);
    // The chosen backup is named in the restore's output.
    let root = pg_test::PgDir::new("strata-choice-");
    // Run as root (as `sudo strata restore` would): the files still go to the cluster's owner.
    let out = std::process::Command::new(pg_test::strata_bin())
        .args(["restore", "--pgdata"])
        .arg(root.path().join("data"))
        .args(["--type", "time", "--target", &between])
        .args(["--repo", &a.repo_url(), "--stanza", "main"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&first) && !text.contains(&second), "{text}");
    let label = std::fs::read_to_string(root.path().join("data/backup_label")).unwrap();
    assert!(label.contains(&format!("LABEL: {first}")), "{label}");
    use std::os::unix::fs::MetadataExt;
    let owner = |p: &std::path::Path| std::fs::metadata(p).unwrap().uid();
    let source_owner = owner(&c.datadir);
    for f in [
        "",
        "PG_VERSION",
        "global/pg_control",
        "backup_label",
        "base",
    ] {
        assert_eq!(
            owner(&root.path().join("data").join(f)),
            source_owner,
            "owner of {f}"
        );
    }
}
