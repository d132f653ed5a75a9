//! WAL archiving through `archive_library = 'pg_strata'` on real PostgreSQL 15 clusters: every segment
//! comes back byte-identical through `strata archive-get`; duplicates, conflicting content, an unwritable
//! repository and bad settings behave as a DBA relies on.

use pg_test::{give_to_postgres, run_ok, strata_bin, Archiving, Cluster, PgDir};
use std::path::Path;
use std::process::Command;

fn write_load(c: &Cluster, rows: u32) {
    c.psql(
        "postgres",
        &format!(
            "INSERT INTO t SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, {rows}) g; \
             UPDATE t SET v = v || 'x' WHERE k % 7 = 0; DELETE FROM t WHERE k % 11 = 0;"
        ),
    );
}

/// A cluster with a loaded table whose first segment is archived; returns that segment's name too.
fn archived_table(name: &str, rows: u32) -> (Archiving, String) {
    let a = Archiving::new(name, "");
    a.cluster.psql("postgres", "CREATE TABLE t (k int, v text)");
    write_load(&a.cluster, rows);
    let first = a.switch_wal();
    a.wait_archived(&first);
    (a, first)
}

fn assert_all_archived_segments_come_back_identical(a: &Archiving, at_least: usize) {
    let names = a.archived_segment_names();
    assert!(
        names.len() >= at_least,
        "only {} segments archived: {names:?}",
        names.len()
    );
    let out_dir = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for name in &names {
        let original = a.cluster.wal_dir().join(name);
        let Ok(original) = std::fs::read(&original) else {
            continue;
        };
        let dest = out_dir.path().join(name);
        let out = a.archive_get(name, &dest);
        assert!(
            out.status.success(),
            "archive-get {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = std::fs::read(&dest).unwrap();
        assert!(got == original, "segment {name} differs after archive-get");
        compared += 1;
    }
    assert!(compared >= at_least, "compared only {compared} segments");
}

#[test]
fn twenty_segments_archive_and_come_back_byte_identical() {
    let a = Archiving::new("arch20", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t (k int, v text); CREATE INDEX ON t (k);",
    );
    let mut last = String::new();
    for i in 0..22 {
        write_load(c, 2000 + i * 100);
        if i % 5 == 0 {
            c.psql("postgres", "CHECKPOINT");
        }
        last = a.switch_wal();
    }
    a.wait_archived(&last);
    assert_all_archived_segments_come_back_identical(&a, 20);

    // The status a DBA checks.
    assert!(a.status("archived_count").parse::<i64>().unwrap() >= 22);
    assert_eq!(a.status("failed_count"), "0");
    assert!(a.status("summaries_written").parse::<i64>().unwrap() >= 22);
    assert_eq!(
        a.status("summaries_missing"),
        "0",
        "{}",
        a.status("last_summary_missing")
    );
    assert_eq!(a.status("last_archived_wal"), last);
    let (orig, stored): (i64, i64) = {
        let row = a.status("bytes_original || ' ' || bytes_stored");
        let mut it = row.split(' ').map(|x| x.parse::<i64>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    assert!(
        orig >= 22 * 16 * 1024 * 1024 && stored > 0 && stored < orig,
        "{orig} {stored}"
    );
    // One summary per segment.
    let summaries = std::fs::read_dir(a.repo.path().join("main/summary/00000001"))
        .unwrap()
        .count();
    assert!(summaries >= 22, "{summaries} summaries");
    // The repository knows its cluster.
    let identity = std::fs::read_to_string(a.repo.path().join("main/strata.repo")).unwrap();
    let sysid = c.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    );
    assert!(identity.contains(&sysid), "{identity}");
}

#[test]
fn archive_get_of_a_missing_file_exits_1_quietly_and_writes_nothing() {
    let a = Archiving::new("getmiss", "");
    let last = a.switch_wal();
    a.wait_archived(&last);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let out = a.archive_get("0000000100000000000000F0", &dest);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dest.exists());
    let out = a.archive_get("00000005.history", &dest);
    assert_eq!(out.status.code(), Some(1));

    // A wrong stanza is an error, not "not found": recovery must not silently stop early.
    let out = Command::new(strata_bin())
        .args(["archive-get", &last])
        .arg(&dest)
        .arg("--repo")
        .arg(a.repo_url())
        .args(["--stanza", "nosuch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stanza 'nosuch' does not exist"));
    assert!(!dest.exists());

    // Settings from a config file (the server's own postgresql.conf).
    let out = Command::new(strata_bin())
        .args(["archive-get", &last])
        .arg(&dest)
        .arg("--config")
        .arg(a.cluster.datadir.join("postgresql.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(a.cluster.wal_dir().join(&last)).unwrap()
    );
}

#[test]
fn corrupted_object_is_refused_by_archive_get_and_nothing_is_written() {
    let a = Archiving::new("getcorrupt", "");
    a.cluster.psql("postgres", "CREATE TABLE t (k int, v text)");
    write_load(&a.cluster, 3000);
    let last = a.switch_wal();
    a.wait_archived(&last);
    let key = a.archived_object("main", &last);
    let mut bytes = std::fs::read(&key).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    std::fs::write(&key, bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let out = a.archive_get(&last, &dest);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&last) && (err.contains("corrupt") || err.contains("checksum")),
        "{err}"
    );
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temporary file left"
    );
}

#[test]
fn duplicate_push_succeeds_and_conflicting_content_is_refused_keeping_ready() {
    let (a, first) = archived_table("dup", 2000);
    let c = &a.cluster;

    // Re-archiving the same segment (a crash before .ready became .done) succeeds without rewriting.
    let status_dir = c.wal_dir().join("archive_status");
    let key = a.archived_object("main", &first);
    let before = std::fs::metadata(&key).unwrap().modified().unwrap();
    std::fs::rename(
        status_dir.join(format!("{first}.done")),
        status_dir.join(format!("{first}.ready")),
    )
    .unwrap();
    give_to_postgres(&status_dir);
    write_load(c, 100);
    let second = a.switch_wal();
    a.wait_archived(&second);
    c.wait_for("duplicate archived", 60, || {
        !status_dir.join(format!("{first}.ready")).exists()
    });
    assert!(a.status("duplicate_count").parse::<i64>().unwrap() >= 1);
    assert_eq!(
        std::fs::metadata(&key).unwrap().modified().unwrap(),
        before,
        "object was rewritten"
    );
    // The CLI push of the identical file succeeds as well.
    let out = Command::new(strata_bin())
        .arg("archive-push")
        .arg(c.wal_dir().join(&first))
        .arg("--repo")
        .arg(a.repo_url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With a second repository: stored there too (repo1 has it already: the same bytes, success), and
    // archive-get from repo2 alone returns the segment byte for byte.
    let repo2 = PgDir::new("strata-repo2-push-");
    let repo2_url = format!("file://{}", repo2.path().display());
    let both = ["--repo", &a.repo_url(), "--repo2", &repo2_url];
    run_ok(
        Command::new(strata_bin())
            .arg("archive-push")
            .arg(c.wal_dir().join(&first))
            .args(both),
    );
    let back = repo2.path().join("back");
    run_ok(
        Command::new(strata_bin())
            .args(["archive-get", &first])
            .arg(&back)
            .args(both)
            .args(["--repo-number", "2"]),
    );
    assert!(
        std::fs::read(&back).unwrap() == std::fs::read(c.wal_dir().join(&first)).unwrap(),
        "{first} from repo2 differs"
    );

    // Plant a different object under the name of the segment being written now: when the server
    // archives it, the push must be refused, loudly, and the .ready file kept.
    // (A write first: at a segment boundary pg_walfile_name names the previous segment.)
    c.psql("postgres", "SELECT txid_current()");
    let current = c.psql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    );
    let fake_dir = tempfile::tempdir().unwrap();
    let fake = fake_dir.path().join(&current);
    std::fs::write(&fake, vec![7u8; 16 * 1024 * 1024]).unwrap();
    let sysid = c.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    );
    let out = Command::new(strata_bin())
        .arg("archive-push")
        .arg(&fake)
        .arg("--repo")
        .arg(a.repo_url())
        .args(["--system-identifier", &sysid])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed_before = a.failed_count();
    write_load(c, 100);
    let switched = a.switch_wal();
    assert_eq!(switched, current);
    c.wait_for("archiving to fail", 60, || a.failed_count() > failed_before);
    assert!(
        status_dir.join(format!("{current}.ready")).exists(),
        ".ready must be kept"
    );
    assert!(c.wal_dir().join(&current).exists(), "segment must be kept");
    let log = c.log();
    assert!(
        log.contains(&format!("could not archive WAL file \"{current}\""))
            && log.contains("different content"),
        "{log}"
    );
    let err = a.status("last_error");
    assert!(
        err.contains("stored BLAKE3") && err.contains("new BLAKE3"),
        "{err}"
    );
    let fake_key = a.archived_object("main", &current);
    assert_eq!(
        strata_core::object::decode("k", &std::fs::read(&fake_key).unwrap())
            .unwrap()
            .1,
        vec![7u8; 16 * 1024 * 1024],
        "the stored object must never be overwritten"
    );

    // Once the DBA removes the wrong object, archiving catches up by itself.
    std::fs::remove_file(&fake_key).unwrap();
    a.wait_archived(&current);
    assert_all_archived_segments_come_back_identical(&a, 2);
}

fn set_writable(path: &Path, writable: bool) {
    let mode = if writable { "u+w" } else { "a-w" };
    let status = Command::new("chmod")
        .args(["-R", mode])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn unwritable_repository_loses_nothing_and_archiving_catches_up() {
    let (a, _first) = archived_table("unwritable", 1000);
    let c = &a.cluster;

    set_writable(a.repo.path(), false);
    let mut pending = Vec::new();
    for _ in 0..3 {
        write_load(c, 1000);
        pending.push(a.switch_wal());
    }
    c.wait_for("archiving to fail", 60, || a.failed_count() > 0);
    let status_dir = c.wal_dir().join("archive_status");
    for wal in &pending {
        assert!(c.wal_dir().join(wal).exists(), "{wal} must stay in pg_wal");
        assert!(
            status_dir.join(format!("{wal}.ready")).exists(),
            "{wal} must stay .ready"
        );
    }
    let log = c.log();
    assert!(
        log.contains(&format!("could not archive WAL file \"{}\"", pending[0])),
        "{log}"
    );
    assert!(
        log.to_lowercase().contains("permission denied"),
        "the WARNING says why: {log}"
    );
    assert!(!log.contains("PANIC") && !log.contains("FATAL"), "{log}");

    set_writable(a.repo.path(), true);
    a.wait_archived(pending.last().unwrap());
    assert_all_archived_segments_come_back_identical(&a, 4);
    assert_eq!(
        a.status("summaries_missing"),
        "0",
        "{}",
        a.status("last_summary_missing")
    );
}

#[test]
fn a_repository_moved_away_is_never_recreated_and_archiving_catches_up_when_it_is_back() {
    let (a, _first) = archived_table("moved", 1000);
    let c = &a.cluster;
    let root = a.repo.path().to_path_buf();
    let away = root.with_file_name(format!(
        "{}.away",
        root.file_name().unwrap().to_string_lossy()
    ));
    let ready = |wal: &str| {
        c.wal_dir()
            .join("archive_status")
            .join(format!("{wal}.ready"))
            .exists()
    };

    // The repository's directory renamed away, as when the disk holding it is unmounted.
    std::fs::rename(&root, &away).unwrap();
    write_load(c, 1000);
    let wal = a.switch_wal();
    c.wait_for("archiving to fail", 60, || a.failed_count() > 0);
    assert!(ready(&wal), "{wal} must stay .ready");
    assert!(!root.exists(), "nothing may be created at the old path");
    let log = c.log();
    assert!(
        log.contains(&format!(
            "WARNING:  pg_strata: could not archive WAL file \"{wal}\""
        )) && log.contains("does not exist"),
        "{log}"
    );

    // An empty directory at the old path (the mount point left behind): the stanza is not recreated.
    std::fs::create_dir(&root).unwrap();
    give_to_postgres(&root);
    let before = a.failed_count();
    let wal2 = a.switch_wal();
    c.wait_for("archiving to fail again", 60, || a.failed_count() > before);
    assert!(ready(&wal) && ready(&wal2));
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "nothing may be written under the mount point"
    );
    assert!(
        c.log().contains("has no identity file strata.repo"),
        "{}",
        c.log()
    );
    assert_eq!(
        a.status("last_failed_wal"),
        wal,
        "the archiver retries the oldest segment"
    );

    // Back in place: archiving catches up by itself.
    std::fs::remove_dir(&root).unwrap();
    std::fs::rename(&away, &root).unwrap();
    let wal3 = a.switch_wal();
    a.wait_archived(&wal3);
    assert!(!ready(&wal) && !ready(&wal2));
    assert_all_archived_segments_come_back_identical(&a, 4);
}

#[test]
fn restore_command_recovery_and_promotion_archive_history_backup_and_partial_files() {
    let a = Archiving::new("promote", "");
    let c = &a.cluster;
    c.psql("postgres", "CREATE TABLE t (k int, v text)");
    write_load(c, 3000);
    // A backup history file (.backup) comes from pg_backup_stop, in the same session.
    c.psql(
        "postgres",
        "SELECT pg_backup_start('strata-test', true); SELECT pg_backup_stop(true);",
    );
    let last = a.switch_wal();
    a.wait_archived(&last);
    let backup_file = std::fs::read_dir(c.wal_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".backup"))
        .expect("a .backup file in pg_wal");
    c.wait_for("the .backup file archived", 60, || {
        c.wal_dir()
            .join("archive_status")
            .join(format!("{backup_file}.done"))
            .exists()
    });
    let rows_before = c.psql("postgres", "SELECT count(*) FROM t");

    // Archive recovery through `strata archive-get` as restore_command, then promotion to timeline 2.
    c.stop();
    c.append_conf(&format!(
        "restore_command = '{} archive-get %f %p --repo {} --stanza main'\nrecovery_target_timeline = 'latest'\n",
        strata_bin().display(),
        a.repo_url()
    ));
    std::fs::write(c.datadir.join("recovery.signal"), "").unwrap();
    give_to_postgres(&c.datadir.join("recovery.signal"));
    c.start();
    c.wait_for("promotion", 120, || {
        c.psql("postgres", "SELECT pg_is_in_recovery()") == "f"
    });
    assert_eq!(c.psql("postgres", "SELECT count(*) FROM t"), rows_before);
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT timeline_id FROM pg_control_checkpoint()"
        ),
        "2"
    );
    write_load(c, 500);
    let on_tl2 = a.switch_wal();
    assert!(on_tl2.starts_with("00000002"), "{on_tl2}");
    a.wait_archived(&on_tl2);

    let dir = tempfile::tempdir().unwrap();
    for name in ["00000002.history".to_string(), backup_file] {
        let dest = dir.path().join(&name);
        let out = a.archive_get(&name, &dest);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(c.wal_dir().join(&name)).unwrap(),
            "{name}"
        );
    }
    // The old timeline's last segment was archived as .partial, with its summary ending where valid WAL ends.
    let partial = a
        .archived_files()
        .into_iter()
        .find(|n| n.ends_with(".partial"))
        .expect("a .partial segment archived at promotion");
    let dest = dir.path().join(&partial);
    assert!(a.archive_get(&partial, &dest).status.success());
    assert_eq!(std::fs::read(&dest).unwrap().len(), 16 * 1024 * 1024);
    // The summaries of timeline 2 are kept apart from timeline 1's.
    let tl2 = a.repo.path().join("main/summary/00000002");
    assert!(
        std::fs::read_dir(&tl2).map(|d| d.count()).unwrap_or(0) >= 1,
        "no summaries for timeline 2"
    );
    assert_eq!(
        a.status("summaries_missing"),
        "0",
        "{}",
        a.status("last_summary_missing")
    );
    assert_eq!(a.status("failed_count"), "0", "{}", a.status("last_error"));
}
