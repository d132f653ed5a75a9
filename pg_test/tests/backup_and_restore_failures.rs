//! What goes wrong around backups and restores, on real clusters: a cancelled backup and a killed
//! worker leave nothing listed and the next backup works; a flipped bit or a missing WAL segment is
//! refused before anything is written; `--delta` rewrites only what differs; bad input gets clear errors.

use pg_test::{Archiving, PgDir};
use std::path::{Path, PathBuf};
use std::process::Command;

fn listed_backups(a: &Archiving) -> String {
    a.cluster
        .psql("postgres", "SELECT count(*) FROM backup_list()")
}

fn backup_dirs(a: &Archiving) -> Vec<String> {
    match std::fs::read_dir(a.repo.path().join("main/backup")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    }
}

/// A cluster slow to back up: 100 MB of table and the slowest zstd level.
fn slow_backup_cluster(name: &str) -> Archiving {
    let a = Archiving::new(name, "strata.compress_level = 19\nstrata.process_max = 1");
    a.cluster.psql(
        "postgres",
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS a, md5((g + 1)::text) AS b \
         FROM generate_series(1, 1000000) g",
    );
    a
}

fn wait_copying(a: &Archiving) -> i32 {
    let c = &a.cluster;
    c.wait_for("the backup to copy", 60, || {
        c.psql("postgres", "SELECT phase FROM backup_progress()") == "copying files"
    });
    c.psql("postgres", "SELECT pid FROM backup_progress()")
        .parse()
        .unwrap()
}

/// A quick backup succeeds and is the only backup directory left in the repository.
fn next_backup_works(a: &Archiving) {
    a.cluster.psql(
        "postgres",
        "ALTER SYSTEM SET strata.compress_level = 1; SELECT pg_reload_conf();",
    );
    let done = a.backup("full");
    assert_eq!(listed_backups(a), "1");
    assert_eq!(backup_dirs(a), vec![done]);
}

fn wait_failed(a: &Archiving) {
    let c = &a.cluster;
    c.wait_for("the backup to stop", 60, || {
        c.psql("postgres", "SELECT phase FROM backup_progress()") == "failed"
    });
}

#[test]
fn a_cancelled_backup_leaves_nothing_and_the_next_one_works() {
    let a = slow_backup_cluster("cancel");
    let c = &a.cluster;
    let label = c.psql("postgres", "SELECT backup_start('full', wait => false)");
    wait_copying(&a);
    // A second backup while one runs is refused, naming it.
    let busy = c
        .try_psql("postgres", "SELECT backup_start('full')")
        .unwrap_err();
    assert!(
        busy.contains("already running") && busy.contains(&label),
        "{busy}"
    );
    assert_eq!(c.psql("postgres", "SELECT backup_cancel()"), "t");
    wait_failed(&a);
    let err = c.psql("postgres", "SELECT error FROM backup_progress()");
    assert!(err.contains("cancelled"), "{err}");
    assert_eq!(listed_backups(&a), "0");
    assert!(backup_dirs(&a).is_empty(), "{:?}", backup_dirs(&a));
    assert_eq!(c.psql("postgres", "SELECT backup_cancel()"), "f");

    // pg_cancel_backend and pg_terminate_backend on the worker stop it too.
    for signal in ["pg_cancel_backend", "pg_terminate_backend"] {
        c.psql("postgres", "SELECT backup_start('full', wait => false)");
        let pid = wait_copying(&a);
        c.psql("postgres", &format!("SELECT {signal}({pid})"));
        wait_failed(&a);
        assert_eq!(listed_backups(&a), "0", "after {signal}");
    }

    // Cancelling a waiting backup_start() (here by statement_timeout) cancels the backup.
    let e = c
        .try_psql(
            "postgres",
            "SET statement_timeout = '3s'; SELECT backup_start('full');",
        )
        .unwrap_err();
    assert!(e.contains("statement timeout"), "{e}");
    wait_failed(&a);
    assert_eq!(listed_backups(&a), "0");
    assert!(backup_dirs(&a).is_empty(), "{:?}", backup_dirs(&a));

    next_backup_works(&a);
}

#[test]
fn a_killed_worker_leaves_nothing_listed_and_the_next_backup_works() {
    let a = slow_backup_cluster("sigkill");
    let c = &a.cluster;
    c.psql("postgres", "SELECT backup_start('full', wait => false)");
    let pid = wait_copying(&a);
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    // The postmaster restarts every backend after a crash; wait until it accepts connections again.
    c.wait_for("the crash restart", 120, || {
        c.try_psql("postgres", "SELECT 1").is_ok_and(|s| s == "1")
    });
    assert_eq!(listed_backups(&a), "0");
    // The killed backup's objects are removed by the next one.
    next_backup_works(&a);
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every regular file under `dir` with its content, except the recovery settings that name the time.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() && !p.ends_with("postgresql.auto.conf") {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn delta_restore_rewrites_only_what_differs_and_corruption_is_refused_before_writing() {
    let a = Archiving::new("delta", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g",
    );
    let label = a.backup("full");
    let last = a.switch_wal();
    a.wait_archived(&last);

    // A fresh restore, then damage it: change one file, remove one, add one.
    let root = PgDir::new("strata-delta-");
    let pgdata = root.path().join("data");
    let fresh = root.path().join("fresh");
    let ok = a.restore_into(&pgdata, &[]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let ok = a.restore_into(&fresh, &[]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    std::fs::write(pgdata.join("PG_VERSION"), b"14\n").unwrap();
    std::fs::remove_file(pgdata.join("pg_hba.conf")).unwrap();
    std::fs::write(pgdata.join("base/stray_file"), b"junk").unwrap();

    // Without --delta a non-empty directory is refused, untouched.
    let refused = a.restore_into(&pgdata, &[]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--delta"), "{}", stderr(&refused));
    assert_eq!(std::fs::read(pgdata.join("PG_VERSION")).unwrap(), b"14\n");

    let delta = a.restore_into(&pgdata, &["--delta"]);
    assert!(delta.status.success(), "{}", stderr(&delta));
    let report = String::from_utf8_lossy(&delta.stdout);
    assert_eq!(
        tree(&pgdata),
        tree(&fresh),
        "delta result differs from a fresh restore"
    );
    // Rewritten: PG_VERSION and pg_hba.conf (damaged), postgresql.auto.conf (the first restore added
    // recovery settings) and global/pg_control (removed first and written last by every delta restore).
    // Removed: stray_file, and the first restore's backup_label and recovery.signal (written anew).
    assert!(
        report.contains("4 files written") && report.contains("3 entries removed"),
        "{report}"
    );

    // A flipped bit in one stored object: refused before writing, naming the object.
    let data_dir = a.repo.path().join("main/backup").join(&label).join("data");
    let mut objects: Vec<PathBuf> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    objects.sort();
    let victim = &objects[objects.len() / 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(victim, &bytes).unwrap();
    let target = root.path().join("never");
    let refused = a.restore_into(&target, &[]);
    assert!(!refused.status.success());
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr(&refused).contains(&name), "{}", stderr(&refused));
    assert!(!target.exists(), "nothing may be written");
    // Nor is anything left of the staging directory the files were being written into meanwhile.
    assert!(
        !root.path().join(".never.strata-restore").exists(),
        "staging left behind"
    );
    bytes[mid] ^= 0x10;
    std::fs::write(victim, &bytes).unwrap();

    // A missing WAL segment the backup needs: refused, naming the segment.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            a.repo
                .path()
                .join("main/backup")
                .join(&label)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let seg = manifest["start_wal_file"].as_str().unwrap().to_string();
    let seg_obj = a
        .repo
        .path()
        .join("main/archive")
        .join(&seg[..16])
        .join(format!("{seg}.zst"));
    let aside = seg_obj.with_extension("aside");
    std::fs::rename(&seg_obj, &aside).unwrap();
    let refused = a.restore_into(&target, &[]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains(&seg), "{}", stderr(&refused));
    assert!(!target.exists());
    std::fs::rename(&aside, &seg_obj).unwrap();
}

#[test]
fn bad_input_gets_clear_errors_and_writes_nothing() {
    let a = Archiving::new("bad-input", "");
    let c = &a.cluster;
    let e = c
        .try_psql("postgres", "SELECT backup_start('weekly')")
        .unwrap_err();
    assert!(
        e.contains("unknown backup kind 'weekly'") && e.contains("'full', 'diff' or 'incr'"),
        "{e}"
    );
    let (label, notices) = c
        .psql_full("postgres", "SELECT backup_start('incr')")
        .unwrap();
    assert!(label.ends_with('F'));
    assert!(notices.contains("taking a full backup"), "{notices}");

    let root = PgDir::new("strata-bad-");
    let target = root.path().join("data");
    let o = a.restore_into(&target, &["--set", "20200101-000000F"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("20200101-000000F") && stderr(&o).contains("not found"),
        "{}",
        stderr(&o)
    );
    assert!(!target.exists());
    for (ty, bad) in [("time", "yesterday-ish"), ("lsn", "0/XYZ"), ("xid", "-3")] {
        let o = a.restore_into(&target, &["--type", ty, "--target", bad]);
        assert!(!o.status.success(), "--type {ty} --target {bad}");
        assert!(stderr(&o).contains(bad), "{}", stderr(&o));
        assert!(!target.exists());
    }
    let o = a.restore_into(&target, &["--type", "time"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--target"), "{}", stderr(&o));
    assert!(!target.exists());
}
