//! Look-ahead archiving on a real cluster (`strata.archive_process_max = 3`): a backlog of waiting
//! segments (archiving left unconfigured while a load ran) is drained with segments stored ahead by
//! the workers (`archive_status().stored_ahead_count`); the archiver killed with SIGKILL in the middle
//! (workers mid-way, segments stored ahead but not yet reported) loses nothing: after the crash restart
//! every segment is archived byte-identical, `strata verify` is clean, and an incremental backup over
//! the drained WAL (whose block-change summaries were made in segment order) restores equal.

use pg_test::{assert_same_dump, write_rows, Archiving};
use std::process::Command;

#[test]
fn a_backlog_is_stored_ahead_and_a_killed_archiver_loses_nothing() {
    // Slows each look-ahead worker after it stored a segment, so that the kill lands mid-drain (this
    // file's only test: the variable reaches only this cluster's server).
    std::env::set_var("STRATA_TEST_ARCHIVE_AHEAD_PAUSE_MS", "300");
    let a = Archiving::new("ahead", "strata.archive_process_max = 3\n");
    let c = &a.cluster;
    write_rows(c, 0, 20_000);
    a.backup("full");

    // Archiving unconfigured: the load's segments wait in pg_wal.
    c.psql("postgres", "ALTER SYSTEM SET strata.repo1 = ''");
    c.psql("postgres", "SELECT pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let archived_before = c.psql("postgres", "SELECT last_archived_wal FROM pg_stat_archiver");
    let mut waiting = Vec::new();
    for step in 1..=16 {
        write_rows(c, step, 20_000);
        waiting.push(a.switch_wal());
    }
    let ready = |c: &pg_test::Cluster| {
        std::fs::read_dir(c.wal_dir().join("archive_status"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".ready")
            })
            .count()
    };
    assert!(ready(c) >= 16, "only {} segments wait", ready(c));
    assert_eq!(
        c.psql("postgres", "SELECT last_archived_wal FROM pg_stat_archiver"),
        archived_before,
        "nothing is archived while unconfigured"
    );
    let dump = c.dumpall();

    // Configured again: the archiver drains the backlog, workers storing ahead.
    c.psql("postgres", "ALTER SYSTEM RESET strata.repo1");
    c.psql("postgres", "SELECT pg_reload_conf()");
    c.wait_for("segments stored ahead", 60, || {
        a.status("stored_ahead_count").parse::<i64>().unwrap() >= 2
    });
    assert!(ready(c) > 0, "the backlog drained before the kill");
    let pid = c.psql(
        "postgres",
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'",
    );
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    // The postmaster restarts after a crash of the archiver; it asks again for what was not reported.
    c.wait_for("the restart after the crash", 60, || {
        c.try_psql(
            "postgres",
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'",
        )
        .is_ok_and(|new| !new.is_empty() && new != pid)
    });
    a.archive_all();
    assert_eq!(a.failed_count(), 0, "{}", a.status("last_error"));
    assert_eq!(a.status("summaries_missing"), "0");

    // Every waiting segment is archived, byte for byte.
    let out = tempfile::tempdir().unwrap();
    for name in &waiting {
        let dest = out.path().join(name);
        let got = a.archive_get(name, &dest);
        assert!(got.status.success(), "{name}: {}", pg_test::stderr(&got));
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(c.wal_dir().join(name)).unwrap(),
            "segment {name} differs from pg_wal's"
        );
    }
    let verify = a.strata(&["verify"]);
    assert!(
        verify.status.success(),
        "strata verify: {}{}",
        pg_test::stdout(&verify),
        pg_test::stderr(&verify)
    );

    // The incremental copies what the summaries of the drained WAL say changed.
    a.backup("incr");
    let restored = a.restore_new("ahead-restored", &[]);
    restored.start();
    restored.wait_recovered(false);
    assert_same_dump(
        &restored.dumpall(),
        &dump,
        "restore of the incr after the drain",
    );
}
