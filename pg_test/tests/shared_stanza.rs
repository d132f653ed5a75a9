//! A stanza written by two servers with the same system identifier: a copy restored from the source's
//! backup and started on another port, whose postgresql.conf still archives into the source's
//! repository and stanza (as after any restore to a test machine). Each server has its own "one backup
//! at a time" slot, so their backups really run at the same time:
//! - both start a full in the same second: each claims its own label, both backups restore;
//! - the copy takes a backup while the source's is copying: the copy's start-up clean-up keeps the
//!   source's unfinished backup (it is not abandoned), which completes and restores.

use pg_test::{assert_same_dump, Archiving, Cluster};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The source (archiving, with a table) and a copy restored from its full backup, promoted and running,
/// archiving into the same repository and stanza.
fn source_and_copy(name: &str, rows: u32) -> (Archiving, Cluster) {
    let a = Archiving::new(name, "strata.compress_level = 1\nstrata.process_max = 1");
    a.cluster.psql(
        "postgres",
        &format!(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS a, md5((g + 1)::text) AS b \
             FROM generate_series(1, {rows}) g"
        ),
    );
    let full = a.backup("full");
    let copy = a.restore_new(
        &format!("{name}-copy"),
        &[
            "--set",
            &full,
            "--type",
            "immediate",
            "--target-action",
            "promote",
        ],
    );
    copy.start();
    copy.wait_recovered(false);
    let sysid = "SELECT system_identifier FROM pg_control_system()";
    assert_eq!(
        copy.psql("postgres", sysid),
        a.cluster.psql("postgres", sysid)
    );
    assert_eq!(
        copy.psql("postgres", "SHOW strata.repo1"),
        a.cluster.psql("postgres", "SHOW strata.repo1"),
        "the copy archives into the source's repository"
    );
    (a, copy)
}

/// Restores `label` (consistent at its end, on its own timeline) with archiving off, and checks that
/// it holds the same data as `origin_dump`.
fn assert_restores(a: &Archiving, label: &str, origin_dump: &str) {
    let r = a.restore_new(
        &format!("check-{}", label.replace('_', "-")),
        &[
            "--set",
            label,
            "--type",
            "immediate",
            "--target-timeline",
            "current",
        ],
    );
    r.append_conf("archive_mode = off");
    r.start();
    r.wait_recovered(true);
    assert_same_dump(&r.dumpall(), origin_dump, &format!("backup {label}"));
    r.stop();
}

fn sleep_until_just_after_a_second_boundary() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = now.subsec_millis() as u64;
    std::thread::sleep(Duration::from_millis(1000 - into + 50));
}

#[test]
fn two_servers_starting_a_full_in_the_same_second_each_get_their_own_label_and_a_sound_backup() {
    let (a, copy) = source_and_copy("same-second", 20000);
    let src = &a.cluster;
    let mut taken = Vec::new();
    let mut collided = false;
    for _ in 0..4 {
        // Both servers choose their label within a few ms of each other, in the same second.
        sleep_until_just_after_a_second_boundary();
        let (on_src, on_copy) = std::thread::scope(|s| {
            let h1 = s.spawn(|| src.psql_full("postgres", "SELECT backup_start('full')"));
            let h2 = s.spawn(|| copy.psql_full("postgres", "SELECT backup_start('full')"));
            (h1.join().unwrap(), h2.join().unwrap())
        });
        let (l1, n1) = on_src.unwrap_or_else(|e| panic!("source's backup failed: {e}"));
        let (l2, n2) = on_copy.unwrap_or_else(|e| panic!("copy's backup failed: {e}"));
        assert_ne!(l1, l2, "two backups got the same label");
        collided |= n1.contains("already claimed") || n2.contains("already claimed");
        taken.push((l1, l2));
        if collided {
            break;
        }
    }
    assert!(
        collided,
        "the two servers never chose their label in the same second: {taken:?}"
    );
    let listed = src.psql(
        "postgres",
        "SELECT string_agg(label, ' ') FROM strata_backups",
    );
    // The backup pushed into the next second may end within its real first second: its recorded
    // stop time is never before its (label's) start time.
    let backwards = src.psql(
        "postgres",
        "SELECT count(*) || ' ' || coalesce(string_agg(label, ' '), '') FROM strata_backups \
         WHERE stop_time < start_time",
    );
    assert_eq!(backwards.trim(), "0", "backups that stop before they start");
    let (src_dump, copy_dump) = (src.dumpall(), copy.dumpall());
    for (l1, l2) in &taken {
        assert!(
            listed.contains(l1.as_str()) && listed.contains(l2.as_str()),
            "{listed}"
        );
        assert_restores(&a, l1, &src_dump);
        assert_restores(&a, l2, &copy_dump);
    }
}

#[test]
fn a_backup_of_the_copy_never_removes_the_sources_backup_in_progress() {
    let (a, copy) = source_and_copy("in-progress", 1_000_000);
    let src = &a.cluster;
    // Make the source's backup slow (the slowest zstd level), so that the copy's runs meanwhile.
    src.psql(
        "postgres",
        "ALTER SYSTEM SET strata.compress_level = 19; SELECT pg_reload_conf();",
    );
    let src_label = src.psql("postgres", "SELECT backup_start('full', wait => false)");
    src.wait_for("the source's backup to copy", 60, || {
        src.psql(
            "postgres",
            "SELECT phase = 'copying files' AND bytes_done > 0 FROM backup_progress()",
        ) == "t"
    });
    let copy_label = copy.psql("postgres", "SELECT backup_start('full')");
    assert_eq!(
        src.psql("postgres", "SELECT phase FROM backup_progress()"),
        "copying files",
        "the source's backup must still be running for this test to mean anything"
    );
    let log = copy.log();
    assert!(
        log.contains(&format!("kept unfinished backup {src_label}")),
        "the copy's clean-up saw the source's backup and kept it:\n{log}"
    );
    assert!(
        !log.contains(&format!("removed unfinished backup {src_label}")),
        "{log}"
    );

    src.wait_for("the source's backup to finish", 600, || {
        let phase = src.psql("postgres", "SELECT phase FROM backup_progress()");
        assert_ne!(
            phase,
            "failed",
            "{}",
            src.psql("postgres", "SELECT error FROM backup_progress()")
        );
        phase == "done"
    });
    let listed = src.psql(
        "postgres",
        "SELECT string_agg(label, ' ') FROM strata_backups",
    );
    assert!(
        listed.contains(&src_label) && listed.contains(&copy_label),
        "{listed}"
    );
    assert_restores(&a, &src_label, &src.dumpall());
    assert_restores(&a, &copy_label, &copy.dumpall());
}
