//! Errors a caller can tell apart without reading the message: the SQLSTATE of pg_strata's ERRORs (what
//! pg_cron's job history and client code see) and the exit codes of `strata` (what scripts see), on a
//! real cluster and repository.

use pg_test::{Archiving, Cluster, PgDir};
use std::path::Path;

/// Runs SQL with verbose errors; the stderr of the ERROR it must raise.
fn error_of(c: &Cluster, sql: &str) -> String {
    match c.try_psql("postgres", &format!("\\set VERBOSITY verbose\n{sql}")) {
        Ok(out) => panic!("expected an ERROR from {sql}, got: {out}"),
        Err(e) => e,
    }
}

/// Whether a verbose psql error carries `sqlstate` ("ERROR:  XX001: ...").
fn has_sqlstate(stderr: &str, sqlstate: &str) -> bool {
    stderr.contains(&format!("ERROR:  {sqlstate}:"))
}

#[test]
fn sql_errors_carry_a_sqlstate_that_says_what_went_wrong() {
    let a = Archiving::new("sqlstate", "");
    let c = &a.cluster;

    // An unknown kind: invalid_parameter_value.
    let e = error_of(c, "SELECT backup_start('weekly')");
    assert!(has_sqlstate(&e, "22023"), "{e}");

    // A second backup while one runs: object_in_use, from whichever sessions lost.
    let results: Vec<Result<String, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    c.try_psql(
                        "postgres",
                        "\\set VERBOSITY verbose\nSELECT backup_start('full')",
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused.len(), 2, "one backup runs: {results:?}");
    for e in refused {
        assert!(
            has_sqlstate(e, "55006") && e.contains("already running"),
            "{e}"
        );
    }

    // The repository directory is gone (an unmounted disk): undefined_file, naming the directory.
    let moved = a.repo.path().with_extension("moved");
    std::fs::rename(a.repo.path(), &moved).unwrap();
    for sql in ["SELECT * FROM backup_list()", "SELECT backup_start('incr')"] {
        let e = error_of(c, sql);
        assert!(has_sqlstate(&e, "58P01"), "{sql}: {e}");
        assert!(e.contains(&a.repo.path().display().to_string()), "{e}");
    }
    std::fs::rename(&moved, a.repo.path()).unwrap();
    let label = a.backup("incr");
    assert!(label.ends_with('I'), "{label}");
}

fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn strata_exit_codes_tell_a_missing_from_a_damaged_from_a_refused_restore() {
    let a = Archiving::new("exitcodes", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let full = a.backup("full");
    c.psql("postgres", "UPDATE t SET g = g + 1 WHERE g % 10 = 0");
    let incr = a.backup("incr");
    let root = PgDir::new("strata-exitcodes-");
    let target = root.path().join("data");

    // Not found: 3 (an unknown backup, an unknown stanza).
    let o = a.restore_into(&target, &["--set", "20200101-000000F"]);
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("20200101-000000F"), "{}", stderr(&o));
    let o = pg_test::run_as_postgres(std::process::Command::new(pg_test::strata_bin()).args([
        "info",
        "--repo",
        &a.repo_url(),
        "--stanza",
        "nosuch",
    ]));
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("stanza 'nosuch' does not exist"),
        "{}",
        stderr(&o)
    );

    // A broken chain (the full the incr is built on is gone): 4, nothing written.
    let (manifest, _) = a.manifest_object(&full);
    let aside = manifest.with_extension("aside");
    std::fs::rename(&manifest, &aside).unwrap();
    let o = a.restore_into(&target, &["--set", &incr]);
    assert_eq!(code(&o), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be restored"), "{}", stderr(&o));
    assert!(!target.exists());
    std::fs::rename(&aside, &manifest).unwrap();

    // A damaged manifest: 4, naming the backup.
    let good = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &good[..good.len() / 2]).unwrap();
    let o = a.restore_into(&target, &["--set", &full]);
    assert_eq!(code(&o), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains(&full), "{}", stderr(&o));
    assert!(!target.exists());
    std::fs::write(&manifest, &good).unwrap();

    // A target that is not empty: 5.
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("something"), b"x").unwrap();
    pg_test::give_to_postgres(root.path());
    let o = a.restore_into(&target, &["--set", &incr]);
    assert_eq!(code(&o), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not empty"), "{}", stderr(&o));
    assert!(Path::new(&target.join("something")).exists());

    // archive-get keeps restore_command's contract: 1 for a file not archived, 2 for an error.
    let dest = root.path().join("wal");
    let o = a.archive_get("0000000100000000000000FE", &dest);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    let o = a.archive_get("not-a-wal-name", &dest);
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
}

#[test]
fn a_misspelt_setting_is_named_by_the_server_and_by_strata_never_with_its_value() {
    let a = Archiving::new("misspelt", "");
    let c = &a.cluster;
    let backup = a.backup("full");

    // postgresql.conf: PostgreSQL names the line on reload and drops it; archiving goes on.
    c.append_conf("strata.repo1_cipher_pas = 'hunter2-in-conf'");
    c.psql("postgres", "SELECT pg_reload_conf()");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !c.log().contains("strata.repo1_cipher_pas") {
        assert!(std::time::Instant::now() < deadline, "{}", c.log());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let log = c.log();
    assert!(
        log.contains("invalid configuration parameter name \"strata.repo1_cipher_pas\""),
        "{log}"
    );
    // SET refuses it (a placeholder nothing reads would hide the typo).
    let e = error_of(c, "SET strata.retention_ful = 3");
    assert!(e.contains("strata.retention_ful"), "{e}");
    assert!(
        a.backup("incr").ends_with('I'),
        "archiving and backups go on"
    );

    // `strata --config` that file: a warning naming the line and the nearest setting, then it works.
    let conf = c.datadir.join("postgresql.conf");
    let conf_arg = conf.display().to_string();
    let o = pg_test::run_as_postgres(
        std::process::Command::new(pg_test::strata_bin()).args(["info", "--config", &conf_arg]),
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("WARNING")
            && err.contains("strata.repo1_cipher_pas")
            && err.contains("did you mean strata.repo1_cipher_pass?"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(&backup));
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!c.log().contains("hunter2"), "{}", c.log());

    // `--repo-option` with a misspelt name: refused (exit 2), named, its value never shown.
    let o = a.strata(&["info", "--repo-option", "repo1_cipher_pas=hunter2-on-flag"]);
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("repo1_cipher_pas") && err.contains("did you mean strata.repo1_cipher_pass?"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
