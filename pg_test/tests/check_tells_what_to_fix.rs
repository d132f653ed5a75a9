//! `strata_check()` and `strata check` on a real cluster: all ok on a healthy one (a WAL switch
//! archived end to end with its summary), then one fault at a time, each an error row naming the
//! setting or the fix — archive_mode off, the repository gone, a backup older than
//! `strata.backup_max_age_full` — and the CLI's exit codes (0 ok, 1 warnings, 2 errors).

use pg_test::Archiving;

/// `check:status` of every row, in order.
fn statuses(a: &Archiving) -> String {
    a.cluster.psql(
        "postgres",
        "SELECT string_agg(\"check\" || ':' || status, ',') FROM strata_check(30)",
    )
}

fn message(a: &Archiving, check: &str) -> String {
    a.cluster.psql(
        "postgres",
        &format!("SELECT message FROM strata_check(30) WHERE \"check\" = '{check}'"),
    )
}

#[test]
fn check_reports_each_fault_with_its_fix() {
    // The usage threshold at 100%: this machine's disk must not decide the outcome (tested below).
    let a = Archiving::new(
        "check",
        "strata.backup_max_age_full = '1 day'\nstrata.repo_usage_warn = 100",
    );
    let c = &a.cluster;
    let full = a.backup("full");
    c.psql("postgres", "SELECT count(*) FROM backup_verify()");

    // Healthy: every row ok, the WAL switch reached the repository with its summary.
    let all = statuses(&a);
    assert_eq!(
        all,
        "settings:ok,archive_mode:ok,archive_library:ok,shared_preload_libraries:ok,wal_level:ok,\
         archiver:ok,repository:ok,stanza:ok,backup_age_full:ok,repository_usage:ok,verify:ok,\
         wal_archived:ok",
    );
    assert!(message(&a, "wal_archived").contains("and its summary reached"));
    assert!(message(&a, "backup_age_full").contains(&full));
    let data = c.psql("postgres", "SHOW data_directory");
    let usage_conf = a.repo.path().join("usage.conf");
    std::fs::write(&usage_conf, "strata.repo_usage_warn = 100\n").unwrap();
    let usage_conf = usage_conf.display().to_string();
    let o = a.strata(&["check", "--pgdata", &data, "--config", &usage_conf]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{out}");
    // Another cluster's data directory: the stanza is not its.
    let other = pg_test::Cluster::init("check-other", "");
    let o = a.strata(&["check", "--pgdata", &other.datadir.display().to_string()]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("set strata.stanza"), "{out}");

    // A file system fuller than strata.repo_usage_warn (any is more than 1% full): a warning.
    c.psql(
        "postgres",
        "ALTER SYSTEM SET strata.repo_usage_warn = 1; SELECT pg_reload_conf()",
    );
    assert!(statuses(&a).contains("repository_usage:warning"));
    assert!(message(&a, "repository_usage").contains("strata.repo_usage_warn"));
    c.psql(
        "postgres",
        "ALTER SYSTEM SET strata.repo_usage_warn = 100; SELECT pg_reload_conf()",
    );

    // The newest full older than strata.backup_max_age_full.
    c.psql(
        "postgres",
        "ALTER SYSTEM SET strata.backup_max_age_full = '1 second'; SELECT pg_reload_conf()",
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(statuses(&a).contains("backup_age_full:error"));
    let m = message(&a, "backup_age_full");
    assert!(
        m.contains("strata.backup_max_age_full") && m.contains(&full),
        "{m}"
    );
    let conf = a.repo.path().join("check.conf");
    std::fs::write(&conf, "strata.backup_max_age_full = '1 second'\n").unwrap();
    let o = a.strata(&["check", "--config", &conf.display().to_string()]);
    assert_eq!(o.status.code(), Some(2));
    let e = c
        .try_psql(
            "postgres",
            "ALTER SYSTEM SET strata.backup_max_age_diff = 'fortnight'",
        )
        .unwrap_err();
    assert!(e.contains("strata.backup_max_age_diff"), "{e}");
    c.psql(
        "postgres",
        "ALTER SYSTEM RESET strata.backup_max_age_full; SELECT pg_reload_conf()",
    );

    // The repository gone (an unmounted disk): an error naming it, nothing else attempted.
    let aside = a.repo.path().with_extension("aside");
    std::fs::rename(a.repo.path(), &aside).unwrap();
    let rows = statuses(&a);
    assert!(rows.contains("repository:error"), "{rows}");
    assert!(!rows.contains("wal_archived"), "{rows}");
    let o = a.strata(&["check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&a.repo.path().display().to_string()));
    std::fs::rename(&aside, a.repo.path()).unwrap();

    // archive_mode off: an error with the fix, and no WAL switch attempted.
    c.psql("postgres", "ALTER SYSTEM SET archive_mode = off");
    c.stop();
    c.start();
    let rows = statuses(&a);
    assert!(rows.contains("archive_mode:error"), "{rows}");
    assert!(!rows.contains("wal_archived"), "{rows}");
    assert!(message(&a, "archive_mode").contains("set it to on"));
    c.psql("postgres", "ALTER SYSTEM RESET archive_mode");
    c.stop();
    c.start();
    assert!(statuses(&a).contains("wal_archived:ok"));
}
