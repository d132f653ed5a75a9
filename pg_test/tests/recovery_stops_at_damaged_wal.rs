//! A damaged WAL segment after the backup stops archive recovery instead of ending it early.
//! PostgreSQL takes a restore_command exit status up to 125 for "not archived": it would end recovery
//! at the damaged segment, promote onto a new timeline and silently lose every later commit. In archive
//! recovery `strata archive-get` exits 200 on any error, which makes PostgreSQL stop with FATAL; once
//! the object is repaired, starting again finishes recovery with every row. A standby, and a call made
//! by hand, keep exit 2.

use pg_test::{assert_same_dump, strata_bin, Archiving, PgDir};
use std::process::Command;

#[test]
fn a_damaged_segment_stops_recovery_and_the_repair_lets_it_finish() {
    let a = Archiving::new("stopdamaged", "");
    let c = &a.cluster;
    pg_test::write_rows(c, 0, 1000);
    a.backup("full");
    // Rows whose WAL lies after the backup: in the segment to be damaged, and in a later one.
    pg_test::write_rows(c, 1, 1000);
    let damaged = a.switch_wal();
    pg_test::write_rows(c, 2, 1000);
    let last = a.switch_wal();
    a.wait_archived(&last);
    let source = c.dumpall();

    let object = a.archived_object("main", &damaged);
    let good = std::fs::read(&object).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x10;
    std::fs::write(&object, &bad).unwrap();

    // The exit status depends on who calls: PostgreSQL in archive recovery, a standby, or a person.
    let exit_in = |signals: &[&str]| {
        let dir = PgDir::new("strata-getcwd-");
        for s in signals {
            std::fs::write(dir.path().join(s), "").unwrap();
        }
        let out = Command::new(strata_bin())
            .args([
                "archive-get",
                &damaged,
                "RECOVERYXLOG",
                "--repo",
                &a.repo_url(),
            ])
            .args(["--stanza", "main"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains("corrupt"), "{stderr}");
        assert!(
            !dir.path().join("RECOVERYXLOG").exists(),
            "a damaged segment was written"
        );
        (out.status.code(), stderr)
    };
    let (code, stderr) = exit_in(&["recovery.signal"]);
    assert_eq!(code, Some(200), "{stderr}");
    assert!(stderr.contains("start the server again"), "{stderr}");
    assert_eq!(exit_in(&["recovery.signal", "standby.signal"]).0, Some(2));
    assert_eq!(exit_in(&["standby.signal"]).0, Some(2));
    assert_eq!(exit_in(&[]).0, Some(2));

    // The restore itself succeeds (the segment is after the backup); recovery stops at it.
    let r = a.restore_new("stopdamaged-copy", &[]);
    // pg_ctl -w may see the server ready (hot standby opens once consistent) before it stops.
    let _ = r.try_start();
    r.wait_for("the server to stop at the damaged segment", 120, || {
        !r.datadir.join("postmaster.pid").exists()
    });
    let log = r.log();
    assert!(
        log.contains(&format!("could not restore file \"{damaged}\""))
            && log.contains("exit code 200")
            && log.contains("FATAL"),
        "recovery did not stop at {damaged}:\n{log}"
    );
    assert!(
        !log.contains("selected new timeline ID") && !log.contains("archive recovery complete"),
        "recovery ended early:\n{log}"
    );
    assert!(r.datadir.join("recovery.signal").exists());
    assert!(
        !a.archived_files().iter().any(|f| f.ends_with(".history")),
        "a new timeline reached the archive: {:?}",
        a.archived_files()
    );

    // Repaired, the same directory finishes recovery with every row.
    std::fs::write(&object, &good).unwrap();
    r.start();
    r.wait_recovered(false);
    assert_same_dump(&r.dumpall(), &source, "the copy recovered after the repair");
    r.stop();
}
