//! Archiving refuses what is wrong, and loses nothing meanwhile: bad `strata.*` settings rejected with
//! messages that name them, an invalid stanza at server start archiving nothing (PostgreSQL keeps the
//! WAL) until it is fixed, and another cluster refused by a stanza that is not its own.

use pg_test::{Archiving, Cluster};

#[test]
fn bad_settings_are_rejected_with_clear_messages() {
    let a = Archiving::new("badset", "");
    let c = &a.cluster;
    for (sql, expect) in [
        (
            "ALTER SYSTEM SET strata.compress_type = 'gzip'",
            "Available values: zstd, lz4, none",
        ),
        (
            "ALTER SYSTEM SET strata.repo1 = 'var/lib/strata'",
            "relative paths are not allowed",
        ),
        (
            "ALTER SYSTEM SET strata.repo1 = '/var/lib/strata'",
            "file:///var/lib/strata",
        ),
        (
            "ALTER SYSTEM SET strata.repo1 = 'file://var/lib/strata'",
            "absolute path",
        ),
        (
            "ALTER SYSTEM SET strata.repo1 = 'ftp://host/x'",
            "unsupported URL scheme",
        ),
        ("ALTER SYSTEM SET strata.stanza = '../x'", "letters, digits"),
        (
            "ALTER SYSTEM SET strata.compress_level = 99",
            "strata.compress_level",
        ),
    ] {
        let err = c.try_psql("postgres", sql).expect_err(sql);
        assert!(err.contains(expect), "{sql}: {err}");
    }
    c.psql("postgres", "ALTER SYSTEM SET strata.compress_type = 'lz4'");
    c.psql("postgres", "SELECT pg_reload_conf()");

    // A repository that does not exist: clear WARNING, nothing lost.
    c.psql(
        "postgres",
        "ALTER SYSTEM SET strata.repo1 = 'file:///nonexistent/strata'",
    );
    c.psql("postgres", "SELECT pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let wal = a.switch_wal();
    c.wait_for("archiving to fail", 60, || a.failed_count() > 0);
    assert!(
        c.log()
            .contains("repository directory /nonexistent/strata does not exist"),
        "{}",
        c.log()
    );
    assert!(c
        .wal_dir()
        .join("archive_status")
        .join(format!("{wal}.ready"))
        .exists());
    // Back to the real repository (lz4 now): catches up.
    c.psql("postgres", "ALTER SYSTEM RESET strata.repo1");
    c.psql("postgres", "SELECT pg_reload_conf()");
    a.wait_archived(&wal);
    // The compression is recorded in the object's header (the key does not depend on it).
    let stored = std::fs::read(a.archived_object("main", &wal)).unwrap();
    let header = strata_core::object::ObjectHeader::decode("wal", &stored).unwrap();
    assert_eq!(
        header.compress,
        strata_core::compress::CompressType::Lz4,
        "stored with lz4 after the reload"
    );
}

#[test]
fn an_invalid_stanza_at_server_start_archives_nothing_until_it_is_fixed() {
    // Later lines win: the harness's strata.stanza = 'main' is overridden by a bad value.
    let a = Archiving::new("badstanza", "strata.stanza = '../bad'");
    let c = &a.cluster;
    assert!(
        c.log()
            .contains("WARNING:  pg_strata: invalid setting strata.stanza = '../bad'"),
        "{}",
        c.log()
    );
    // Not silently replaced by the default.
    assert_eq!(c.psql("postgres", "SHOW strata.stanza"), "../bad");
    let wal = a.switch_wal();
    c.wait_for("archiving to fail", 60, || a.failed_count() > 0);
    let before = a.failed_count();
    let wal2 = a.switch_wal();
    c.wait_for("archiving to fail again", 60, || a.failed_count() > before);
    for w in [&wal, &wal2] {
        assert!(c
            .wal_dir()
            .join("archive_status")
            .join(format!("{w}.ready"))
            .exists());
    }
    let log = c.log();
    assert!(
        log.contains(&format!(
            "could not archive WAL file \"{wal}\": invalid setting strata.stanza"
        )),
        "{log}"
    );
    assert_eq!(
        std::fs::read_dir(a.repo.path()).unwrap().count(),
        0,
        "nothing may be archived into a default stanza"
    );
    let e = c
        .try_psql("postgres", "SELECT backup_start('full')")
        .unwrap_err();
    assert!(e.contains("strata.stanza"), "{e}");

    // Fixed and reloaded: archiving catches up, into the configured stanza.
    c.psql("postgres", "ALTER SYSTEM SET strata.stanza = 'fixed'");
    c.psql("postgres", "SELECT pg_reload_conf()");
    let wal3 = a.switch_wal();
    a.wait_archived(&wal3);
    assert!(a.repo.path().join("fixed/strata.repo").exists());
    assert!(a.archived_object("fixed", &wal).exists());
    assert!(!a.repo.path().join("main").exists());
}

#[test]
fn another_cluster_cannot_archive_into_the_same_stanza() {
    let a = Archiving::new("owner", "");
    let w = a.switch_wal();
    a.wait_archived(&w);
    let other = Cluster::init(
        "intruder",
        &format!(
            "shared_preload_libraries = 'pg_strata'\narchive_mode = on\narchive_library = 'pg_strata'\n\
             strata.repo1 = '{}'\nstrata.stanza = 'main'\n",
            a.repo_url()
        ),
    );
    other.start();
    other.psql("postgres", "SELECT txid_current()");
    let wal = other.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    other.wait_for("refusal", 60, || {
        other.log().contains("belongs to another cluster")
    });
    assert!(other
        .wal_dir()
        .join("archive_status")
        .join(format!("{wal}.ready"))
        .exists());
    // The owner is unaffected.
    let w2 = a.switch_wal();
    a.wait_archived(&w2);
}
