//! WAL prefetch for recovery (`strata archive-get --prefetch N`, written into restore_command by
//! `strata restore`): a recovery over many archived segments replays everything and equals the source,
//! and the spool is gone when recovery ends; a damaged segment is never put into the spool, and asking
//! for it reports the damage.

use pg_test::Archiving;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn recovery_with_prefetch_equals_the_source_and_leaves_no_spool() {
    let a = Archiving::new("prefetch", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    );
    let _full = a.backup("full");
    let mut last = String::new();
    for round in 0..14 {
        c.psql(
            "postgres",
            &format!(
                "UPDATE t SET v = md5(v || '{round}') WHERE id % 3 = {}",
                round % 3
            ),
        );
        last = a.switch_wal();
    }
    a.wait_archived(&last);
    let dump = c.dumpall();

    let r = a.restore_new("prefetch", &["--no-lease", "--archive-mode", "off"]);
    let auto = std::fs::read_to_string(r.datadir.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("--prefetch 8"), "{auto}");
    r.start();
    r.wait_recovered(false);
    pg_test::assert_same_dump(&r.dumpall(), &dump, "replayed with prefetch");
    // The end of the archive removed the spool (a last prefetcher may still be finishing).
    let spool = r.datadir.join("pg_wal/strata_spool");
    let started = Instant::now();
    while spool.exists() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!spool.exists(), "the spool is still there");
    let log = r.log();
    assert!(log.contains("restored log file"), "{log}");
    r.stop();
}

#[test]
fn a_damaged_segment_is_never_spooled_and_asking_for_it_reports_the_damage() {
    let a = Archiving::new("prefetch-damage", "");
    let c = &a.cluster;
    c.psql("postgres", "CREATE TABLE t (id int)");
    let mut names = Vec::new();
    for i in 0..6 {
        c.psql("postgres", &format!("INSERT INTO t VALUES ({i})"));
        names.push(a.switch_wal());
    }
    a.wait_archived(names.last().unwrap());
    // The third of the six damaged.
    let damaged = &names[2];
    let obj = a.archived_object("main", damaged);
    let mut bytes = std::fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&obj, &bytes).unwrap();

    let dir = pg_test::PgDir::new("strata-prefetch-");
    let spool = dir.path().join("spool");
    let get = |name: &str| {
        Command::new(pg_test::strata_bin())
            .args(["archive-get", name])
            .arg(dir.path().join("RECOVERYXLOG"))
            .args(["--prefetch", "4", "--spool"])
            .arg(&spool)
            .arg("--repo")
            .arg(a.repo_url())
            .args(["--stanza", "main"])
            .output()
            .unwrap()
    };
    let o = get(&names[0]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The prefetcher fetched the next ones, all but the damaged one.
    let started = Instant::now();
    while !spool.join(&names[3]).exists() || !spool.join(&names[1]).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing prefetched"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !spool.join(damaged).exists(),
        "a damaged segment in the spool"
    );
    // The next call is served from the spool; the damaged one is fetched and refused, nothing written.
    let o = get(&names[1]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        !spool.join(&names[1]).exists(),
        "served, so taken out of the spool"
    );
    std::fs::remove_file(dir.path().join("RECOVERYXLOG")).unwrap();
    let o = get(damaged);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(damaged.as_str()), "{err}");
    assert!(!dir.path().join("RECOVERYXLOG").exists());
}
