//! A database dropped and created again with the same OID between two backups (issue 9, item 10; the
//! scenario of PostgreSQL 17's 006_db_file_copy.pl): `CREATE DATABASE … OID = … STRATEGY FILE_COPY`
//! copies the template's files byte for byte, so their pages keep the template's old LSNs at the very
//! paths the reference backup holds for the dropped database. An incremental backup must store that
//! database's files whole, whether the changes come from block-change summaries or, in a gap, from page
//! LSNs: the gap made by another archiver, by lost summaries with the WAL recycled, and by a
//! `wal_level = minimal` period (where `STRATEGY WAL_LOG` writes no WAL for the pages either); in the
//! default tablespace and in another one. A database that was not recreated (`steady`) keeps the
//! incremental form, so that storing everything whole would not pass.
//!
//! Each restore is checked three ways: pg_dumpall equal to the source's, `pg_amcheck` (heap and B-tree
//! with `heapallindexed` and parent checks) clean, and `pg_checksums --check` clean once stopped.

use pg_test::{pg_bin, run_ok, Archiving, Cluster, PgDir};
use std::process::Command;
use strata_core::manifest::Manifest;

/// The OIDs the recreated databases keep.
const SHOP: u32 = 100_000;
const SHOP2: u32 = 100_001;

/// A cluster with a tablespace `extra` and three databases — `shop`, and `shop2` in `extra`, to be
/// recreated, and `steady` in `extra`, only updated — and a full backup of it.
fn cluster_with_a_full_backup(name: &str) -> (Archiving, PgDir) {
    let ts = PgDir::new(&format!("strata-ts-{name}-"));
    let a = Archiving::new(name, "autovacuum = off");
    let c = &a.cluster;
    c.psql(
        "postgres",
        &format!(
            "CREATE TABLESPACE extra LOCATION '{}';
             CREATE DATABASE shop OID = {SHOP} STRATEGY FILE_COPY;
             CREATE DATABASE shop2 OID = {SHOP2} TABLESPACE extra;
             CREATE DATABASE steady TABLESPACE extra;",
            ts.path().display()
        ),
    );
    for db in ["shop", "shop2"] {
        c.psql(
            db,
            "CREATE TABLE old_orders (id int PRIMARY KEY, customer text, total numeric);
             INSERT INTO old_orders SELECT g, 'customer ' || g % 97, g FROM generate_series(1, 20000) g;
             CREATE INDEX old_orders_customer ON old_orders (customer);
             CREATE TABLE old_notes (id int, note text);
             INSERT INTO old_notes SELECT g, repeat('n', 200) FROM generate_series(1, 5000) g;
             CREATE VIEW old_view AS SELECT customer, sum(total) FROM old_orders GROUP BY 1;
             VACUUM ANALYZE;",
        );
    }
    c.psql(
        "steady",
        "CREATE TABLE s (id int PRIMARY KEY, v text);
         INSERT INTO s SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
         VACUUM ANALYZE;",
    );
    // `steady` has existed long before the full backup (as a database normally has): the incr may
    // then trust its page LSNs, which the test checks so that "store everything whole" cannot pass.
    let pg_version = c
        .datadir
        .join(std::path::Path::new(&steady_table(c)).with_file_name("PG_VERSION"));
    run_ok(
        Command::new("touch")
            .args(["-m", "-d", "2 hours ago"])
            .arg(&pg_version),
    );
    a.backup("full");
    (a, ts)
}

/// The path of `steady`'s table, `pg_tblspc/<extra>/PG_15_…/<steady>/<relfilenode>`.
fn steady_table(c: &Cluster) -> String {
    c.psql("steady", "SELECT pg_relation_filepath('s')")
}

/// Drops `db` and creates it again with the same `oid` and `options` (strategy, template, tablespace),
/// with other tables and data; updates `steady`.
fn recreate(c: &Cluster, db: &str, oid: u32, options: &str) {
    c.psql(
        "postgres",
        &format!("DROP DATABASE {db}; CREATE DATABASE {db} OID = {oid} {options};"),
    );
    c.psql(
        db,
        "CREATE TABLE new_things (id int PRIMARY KEY, note text);
         INSERT INTO new_things SELECT g, 'new ' || g FROM generate_series(1, 3000) g;",
    );
    c.psql("steady", "UPDATE s SET v = 'changed' WHERE id % 100 = 0");
}

fn manifest(a: &Archiving, label: &str) -> Manifest {
    let (path, key) = a.manifest_object(label);
    let bytes = std::fs::read(path).expect("read the manifest");
    Manifest::from_bytes(&key, label, &bytes).expect("parse the manifest")
}

/// Takes an incr and checks its method; restores it and compares it with the source (dump, amcheck,
/// checksums); then checks that the recreated databases' relation files were stored whole, and
/// `steady`'s table in incremental form.
fn incr_restores_the_recreated_databases(
    a: &Archiving,
    ts: &PgDir,
    method: &str,
    recreated: &[u32],
) {
    let c = &a.cluster;
    let incr = a.backup("incr");
    assert_eq!(
        c.psql(
            "postgres",
            &format!("SELECT kind || ' ' || method FROM strata_backups WHERE label = '{incr}'")
        ),
        format!("incr {method}")
    );
    let source = c.dumpall_with(&["--no-unlogged-table-data"]);
    let ts_restored = PgDir::new(&format!("strata-ts-{}-restored-", c.name));
    let r = a.restore_new(
        &format!("{}-restored", c.name),
        &[
            "--set",
            &incr,
            "--type",
            "immediate",
            "--target-action",
            "promote",
            "--tablespace-map",
            &format!("extra={}", ts_restored.path().display()),
        ],
    );
    r.start();
    r.wait_recovered(false);
    let restored = r.dumpall_with(&["--no-unlogged-table-data"]).replace(
        &ts_restored.path().display().to_string(),
        &ts.path().display().to_string(),
    );
    pg_test::assert_same_dump(&restored, &source, &format!("restore of {incr}"));
    run_ok(
        Command::new(pg_bin("pg_amcheck"))
            .arg("-h")
            .arg(r.socket_dir())
            .arg("-p")
            .arg(r.port.to_string())
            .args([
                "-U",
                "postgres",
                "--all",
                "--install-missing",
                "--heapallindexed",
                "--parent-check",
            ]),
    );
    r.stop();
    run_ok(
        Command::new(pg_bin("pg_checksums"))
            .arg("--check")
            .arg("-D")
            .arg(&r.datadir),
    );

    // Before the fix the restore above already failed; this says why.
    let m = manifest(a, &incr);
    let reason = c.psql(
        "postgres",
        &format!("SELECT coalesce(method_reason, '') FROM strata_backups WHERE label = '{incr}'"),
    );
    for db in recreated {
        if method == "page-lsn" {
            assert!(
                reason.contains(&db.to_string()),
                "{db} not named in: {reason}"
            );
        }
        let relations: Vec<_> = m
            .files
            .iter()
            .filter(|f| {
                pgformat::relfile::parse_relation_path(&f.path)
                    .is_some_and(|(rel, _, _)| rel.db_node == *db)
            })
            .collect();
        assert!(
            relations.len() > 100,
            "{db}: {} relation files",
            relations.len()
        );
        for f in relations {
            assert!(
                f.incremental.is_none(),
                "{}: a recreated database's file must not be stored in incremental form",
                f.path
            );
            let is_fsm = f.path.ends_with("_fsm");
            assert!(
                is_fsm || f.pieces.iter().all(|p| p.backup.is_none()),
                "{}: a recreated database's file must not reference the older backups",
                f.path
            );
        }
    }
    let steady_table = steady_table(c);
    let steady = m.files.iter().find(|f| f.path == steady_table).unwrap();
    assert!(
        steady.incremental.is_some(),
        "{steady_table}: a database that was not recreated keeps the incremental form"
    );
}

fn switch_and_archive(a: &Archiving) {
    let wal = a.switch_wal();
    a.wait_archived(&wal);
}

#[test]
fn databases_recreated_with_their_oid_while_another_archiver_ran_are_stored_whole() {
    let (a, ts) = cluster_with_a_full_backup("recreated-gap");
    let c = &a.cluster;
    // Another archiver takes over for a while: those segments have no summaries.
    c.psql(
        "postgres",
        "ALTER SYSTEM SET archive_library = ''; ALTER SYSTEM SET archive_command = '/bin/true';
         SELECT pg_reload_conf();",
    );
    recreate(c, "shop", SHOP, "STRATEGY FILE_COPY TEMPLATE template0");
    recreate(
        c,
        "shop2",
        SHOP2,
        "STRATEGY FILE_COPY TEMPLATE template1 TABLESPACE extra",
    );
    switch_and_archive(&a);
    c.psql(
        "postgres",
        "ALTER SYSTEM RESET archive_library; ALTER SYSTEM RESET archive_command;
         SELECT pg_reload_conf();",
    );
    switch_and_archive(&a);
    incr_restores_the_recreated_databases(&a, &ts, "page-lsn", &[SHOP, SHOP2]);
}

#[test]
fn a_database_recreated_with_its_oid_then_summaries_lost_and_wal_recycled_is_stored_whole() {
    let (a, ts) = cluster_with_a_full_backup("recreated-recycled");
    let c = &a.cluster;
    let summaries = a.repo.path().join("main/summary/00000001");
    let before: Vec<_> = std::fs::read_dir(&summaries)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    recreate(c, "shop", SHOP, "STRATEGY FILE_COPY TEMPLATE template1");
    switch_and_archive(&a);
    // The summaries written since the full are lost, and the WAL they were made from is no longer in
    // pg_wal (so the backup cannot summarize it on the spot either).
    c.psql(
        "postgres",
        "ALTER SYSTEM SET wal_keep_size = 0; SELECT pg_reload_conf();",
    );
    switch_and_archive(&a);
    c.psql("postgres", "CHECKPOINT");
    switch_and_archive(&a);
    c.psql("postgres", "CHECKPOINT");
    for entry in std::fs::read_dir(&summaries).unwrap() {
        let entry = entry.unwrap();
        if !before.contains(&entry.file_name()) {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    incr_restores_the_recreated_databases(&a, &ts, "page-lsn", &[SHOP]);
}

#[test]
fn databases_recreated_with_their_oid_during_a_wal_level_minimal_period_are_stored_whole() {
    let (a, ts) = cluster_with_a_full_backup("recreated-minimal");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "ALTER SYSTEM SET wal_level = minimal; ALTER SYSTEM SET archive_mode = off;
         ALTER SYSTEM SET max_wal_senders = 0;",
    );
    c.stop();
    c.start();
    // With wal_level = minimal, STRATEGY WAL_LOG does not log the copied pages either.
    // Segments completed while archive_mode is off are never archived: a gap in the summaries.
    a.switch_wal();
    recreate(c, "shop", SHOP, "STRATEGY FILE_COPY TEMPLATE template0");
    recreate(
        c,
        "shop2",
        SHOP2,
        "STRATEGY WAL_LOG TEMPLATE template1 TABLESPACE extra",
    );
    a.switch_wal();
    c.psql(
        "postgres",
        "ALTER SYSTEM RESET wal_level; ALTER SYSTEM RESET archive_mode;
         ALTER SYSTEM RESET max_wal_senders;",
    );
    c.stop();
    c.start();
    switch_and_archive(&a);
    incr_restores_the_recreated_databases(&a, &ts, "page-lsn", &[SHOP, SHOP2]);
}

#[test]
fn databases_recreated_with_their_oid_under_block_change_summaries_are_stored_whole() {
    // The summaries hold the DBASE create record: every file of the new database is copied whole.
    let (a, ts) = cluster_with_a_full_backup("recreated-summarized");
    let c = &a.cluster;
    recreate(c, "shop", SHOP, "STRATEGY FILE_COPY TEMPLATE template0");
    recreate(
        c,
        "shop2",
        SHOP2,
        "STRATEGY WAL_LOG TEMPLATE template1 TABLESPACE extra",
    );
    switch_and_archive(&a);
    incr_restores_the_recreated_databases(&a, &ts, "block-summaries", &[SHOP, SHOP2]);
}
