//! Full backups taken from SQL and restored with `strata restore`, on real PostgreSQL 15 clusters:
//! the restored cluster's `pg_dumpall` equals the source's, for a quiet cluster with several databases,
//! a tablespace, an unlogged table and large tables, and for a backup taken under a pgbench workload.

use pg_test::{pg_bin, run_as_postgres, Archiving, PgDir};
use std::process::Command;

/// Tables bigger than one 8 MB chunk, a database with a tablespace, an unlogged table.
fn load_varied_data(a: &Archiving, ts_dir: &PgDir) {
    let c = &a.cluster;
    c.psql(
        "postgres",
        &format!(
            "CREATE TABLESPACE extra LOCATION '{}';
             CREATE DATABASE shop;
             CREATE DATABASE archive_db TABLESPACE extra;
             CREATE ROLE clerk LOGIN;",
            ts_dir.path().display()
        ),
    );
    c.psql(
        "shop",
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer text, total numeric, at timestamptz);
         INSERT INTO orders SELECT g, 'customer ' || (g % 997), (g * 37 % 10000) / 100.0,
                '2026-01-01'::timestamptz + g * interval '1 minute'
           FROM generate_series(1, 300000) g;
         CREATE INDEX ON orders (customer);
         CREATE TABLE blobs (id int, payload bytea);
         INSERT INTO blobs SELECT g, decode(md5(g::text) || md5((g * 7)::text), 'hex')
           FROM generate_series(1, 50000) g;
         CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, note text);
         INSERT INTO scratch SELECT g, 'temporary ' || g FROM generate_series(1, 1000) g;
         GRANT SELECT ON orders TO clerk;",
    );
    c.psql(
        "archive_db",
        "CREATE TABLE history (id int, what text);
         INSERT INTO history SELECT g, repeat('h', g % 50) FROM generate_series(1, 20000) g;
         CREATE TABLE moved (x int) TABLESPACE pg_default;
         INSERT INTO moved SELECT generate_series(1, 1000);",
    );
}

#[test]
fn a_full_backup_restores_to_the_same_dump_with_tablespaces_and_unlogged_tables() {
    let ts_dir = PgDir::new("strata-ts-");
    let a = Archiving::new("full-varied", "");
    load_varied_data(&a, &ts_dir);
    let c = &a.cluster;

    // A member of strata_operator may take a backup; a plain role may not.
    c.psql(
        "postgres",
        "CREATE ROLE operator LOGIN; GRANT strata_operator TO operator; CREATE ROLE nobody LOGIN;",
    );
    let denied = c
        .try_psql("postgres", "SET ROLE nobody; SELECT backup_start('full');")
        .unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");
    let label = c.psql(
        "postgres",
        "SET ROLE operator; SELECT backup_start('full');",
    );
    assert!(label.ends_with('F') && label.len() == 16, "label {label}");
    let source_dump = c.dumpall_with(&["--no-unlogged-table-data"]);

    // The listing shows the backup with its facts.
    let row = c.psql(
        "postgres",
        &format!(
            "SELECT kind, requested_kind, prior IS NULL, start_lsn < stop_lsn, timeline, \
                    database_size > 40000000, stored_size > 0, stored_size < database_size, \
                    file_count > 900, page_checksum_errors \
             FROM strata_backups WHERE label = '{label}'"
        ),
    );
    assert_eq!(row, "full|full|t|t|1|t|t|t|t|0");
    let progress = c.psql(
        "postgres",
        "SELECT phase, files_done = files_total, percent_done FROM backup_progress()",
    );
    assert_eq!(progress, "done|t|100");
    // Small files were bundled: far fewer objects than files.
    let objects = std::fs::read_dir(a.repo.path().join("main/backup").join(&label).join("data"))
        .unwrap()
        .count();
    assert!(objects < 60, "{objects} data objects for ~1000 files");

    // Restore to a new directory (the tablespace elsewhere: the source still uses its location).
    let ts_new = PgDir::new("strata-ts-restored-");
    let r = a.restore_new(
        "full-varied-restored",
        &[
            "--set",
            &label,
            "--type",
            "immediate",
            "--target-action",
            "promote",
            "--tablespace-map",
            &format!("extra={}", ts_new.path().display()),
        ],
    );
    assert!(r.datadir.join("backup_label").exists());
    assert!(r.datadir.join("recovery.signal").exists());
    assert!(
        !r.datadir.join("postmaster.pid").exists()
            && !r.datadir.join("pg_wal/000000010000000000000001").exists(),
        "excluded files must not be restored"
    );
    r.start();
    r.wait_recovered(false);
    // The only expected difference: the tablespace's new location.
    let restored_dump = r.dumpall_with(&["--no-unlogged-table-data"]).replace(
        &ts_new.path().display().to_string(),
        &ts_dir.path().display().to_string(),
    );
    pg_test::assert_same_dump(&restored_dump, &source_dump, "full backup");
    // The unlogged table exists and is empty, as after a crash; the tablespace is at its new place.
    assert_eq!(r.psql("shop", "SELECT count(*) FROM scratch"), "0");
    let link = std::fs::read_link(r.datadir.join("pg_tblspc").join(c.psql(
        "postgres",
        "SELECT oid FROM pg_tablespace WHERE spcname = 'extra'",
    )))
    .unwrap();
    assert_eq!(link, ts_new.path());
    assert_eq!(
        r.psql("archive_db", "SELECT count(*) FROM history"),
        "20000"
    );
    r.stop();

    // strata info shows the backup and the archive.
    let info = a.strata(&["info", "--output", "json"]);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains(&label), "{text}");
    let info = a.strata(&["info"]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains(&label) && text.contains("full"), "{text}");
}

#[test]
fn a_backup_under_a_pgbench_workload_restores_to_the_end_of_the_archive() {
    let a = Archiving::new("full-pgbench", "");
    let c = &a.cluster;
    let pgbench = |args: &[&str]| {
        let out = run_as_postgres(
            Command::new(pg_bin("pgbench"))
                .arg("-h")
                .arg(c.socket_dir())
                .arg("-p")
                .arg(c.port.to_string())
                .args(["-U", "postgres"])
                .args(args)
                .arg("postgres"),
        );
        assert!(
            out.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    pgbench(&["-i", "-s", "5", "-q"]);
    std::thread::scope(|s| {
        let workload = s.spawn(|| pgbench(&["-c", "4", "-T", "15", "-n"]));
        std::thread::sleep(std::time::Duration::from_secs(3));
        let label = a.backup("full");
        assert!(label.ends_with('F'));
        workload.join().unwrap();
    });
    // Everything the workload wrote reaches the archive.
    let last = a.switch_wal();
    a.wait_archived(&last);
    let source_dump = c.dumpall();

    let r = a.restore_new("full-pgbench-restored", &[]);
    r.start();
    r.wait_recovered(false);
    pg_test::assert_same_dump(&r.dumpall(), &source_dump, "backup under pgbench");
}

#[test]
fn a_corrupt_data_page_is_reported_by_the_backup() {
    let a = Archiving::new("page-checksum", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE victim AS SELECT g, md5(g::text) FROM generate_series(1, 10000) g; CHECKPOINT;",
    );
    let rel = c.psql("postgres", "SELECT pg_relation_filepath('victim')");
    c.stop();
    // Flip one byte in the tuple area of block 2 (not the checksum field): a checksum failure.
    let path = c.datadir.join(&rel);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2 * 8192 + 5000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    c.start();
    let (label, stderr) = c
        .psql_full("postgres", "SELECT backup_start('full')")
        .unwrap();
    assert!(
        stderr.contains("failed their checksum") && stderr.contains(&format!("{rel} blocks [2]")),
        "{stderr}"
    );
    assert_eq!(
        c.psql(
            "postgres",
            &format!("SELECT page_checksum_errors FROM strata_backups WHERE label = '{label}'")
        ),
        "1"
    );
}
