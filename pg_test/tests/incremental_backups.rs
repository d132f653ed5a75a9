//! Block-level incremental and differential backups on real PostgreSQL 15 clusters: a chain
//! full -> incr -> incr -> diff -> incr over a workload that changes, grows, shrinks, drops, rewrites
//! and creates relations and databases restores every backup to the source's dump at that moment; PITR
//! through the chain equals PITR from the full alone; one UPDATE makes the next incremental store
//! exactly the blocks it touched; a gap in the summaries falls back to page LSNs and still restores.

use pg_test::{Archiving, Cluster, PgDir};
use std::collections::BTreeMap;
use strata_core::manifest::Manifest;

/// Restores `--set label` with extra args into a new directory (tablespace `extra` remapped), starts
/// it, waits for it to reach its target (paused), and returns its dump with the tablespace path put
/// back to the source's.
fn restore_and_dump(a: &Archiving, name: &str, args: &[&str], ts_source: &PgDir) -> String {
    let ts_new = PgDir::new(&format!("strata-ts-{name}-"));
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend([
        "--target-action".into(),
        "pause".into(),
        "--tablespace-map".into(),
        format!("extra={}", ts_new.path().display()),
    ]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let r = a.restore_new(name, &all);
    r.start();
    r.wait_recovered(true);
    let dump = r.dumpall_with(&["--no-unlogged-table-data"]).replace(
        &ts_new.path().display().to_string(),
        &ts_source.path().display().to_string(),
    );
    r.stop();
    dump
}

fn listing(c: &Cluster, label: &str, columns: &str) -> String {
    c.psql(
        "postgres",
        &format!("SELECT {columns} FROM strata_backups WHERE label = '{label}'"),
    )
}

#[test]
fn a_chain_of_incrementals_and_a_differential_restores_every_backup_and_pitr_matches_the_full() {
    let ts = PgDir::new("strata-ts-chain-");
    // No data checksums: the truncated visibility map page then changes without WAL (the hard case).
    let a = Archiving::new_with("chain", "autovacuum = off", &[]);
    let c = &a.cluster;
    c.psql(
        "postgres",
        &format!(
            "CREATE TABLESPACE extra LOCATION '{}'; CREATE DATABASE shop;",
            ts.path().display()
        ),
    );
    c.psql(
        "shop",
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer text, total numeric, note text);
         INSERT INTO orders SELECT g, 'customer ' || (g % 997), g % 1000, '' FROM generate_series(1, 200000) g;
         CREATE INDEX orders_customer ON orders (customer);
         CREATE TABLE events (id int, payload text);
         INSERT INTO events SELECT g, repeat('e', 100) FROM generate_series(1, 100000) g;
         CREATE TABLE doomed (x int); INSERT INTO doomed SELECT generate_series(1, 10000);
         CREATE TABLE rewritten (id int PRIMARY KEY, v text);
         INSERT INTO rewritten SELECT g, md5(g::text) FROM generate_series(1, 50000) g;
         CREATE TABLE clustered (id int, v text); CREATE INDEX clustered_v ON clustered (v);
         INSERT INTO clustered SELECT g, md5(g::text) FROM generate_series(1, 30000) g;
         CREATE TABLE emptied (x int); INSERT INTO emptied SELECT generate_series(1, 10000);
         CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, note text);
         INSERT INTO scratch SELECT g, 'n' FROM generate_series(1, 1000) g;
         CREATE TABLE spaced (id int, v text) TABLESPACE extra;
         INSERT INTO spaced SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
         VACUUM ANALYZE;",
    );
    let full = a.backup("full");
    let mut dumps = vec![(full.clone(), c.dumpall_with(&["--no-unlogged-table-data"]))];

    // 1: changes, growth, a new table and index, TRUNCATE, the tablespace.
    c.psql(
        "shop",
        "UPDATE orders SET total = total + 1 WHERE id BETWEEN 1000 AND 3000;
         INSERT INTO orders SELECT g, 'late ' || g, 1, '' FROM generate_series(200001, 230000) g;
         CREATE TABLE fresh (id int PRIMARY KEY, v text);
         INSERT INTO fresh SELECT g, 'f' || g FROM generate_series(1, 5000) g;
         TRUNCATE emptied;
         INSERT INTO scratch SELECT g, 'm' FROM generate_series(1001, 2000) g;
         UPDATE spaced SET v = v || 'x' WHERE id % 10 = 0;",
    );
    let incr1 = a.backup("incr");
    dumps.push((incr1.clone(), c.dumpall_with(&["--no-unlogged-table-data"])));

    // 2: shrink with VACUUM truncation (heap and visibility map), DROP, VACUUM FULL, CLUSTER, a new
    // database.
    c.psql(
        "shop",
        "DELETE FROM events WHERE id > 20000; VACUUM events;
         DROP TABLE doomed;
         VACUUM FULL rewritten;
         CLUSTER clustered USING clustered_v;
         INSERT INTO emptied SELECT generate_series(1, 500);",
    );
    c.psql("postgres", "CREATE DATABASE newdb");
    c.psql(
        "newdb",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;",
    );
    let incr2 = a.backup("incr");
    dumps.push((incr2.clone(), c.dumpall_with(&["--no-unlogged-table-data"])));

    // A point in time between incr2 and the diff, for PITR.
    c.psql("shop", "UPDATE orders SET note = 'pitr' WHERE id % 500 = 0");
    let pitr_lsn = c.psql("postgres", "SELECT pg_current_wal_lsn()");
    let pitr_dump = c.dumpall_with(&["--no-unlogged-table-data"]);

    // 3: DROP DATABASE, a database in the tablespace, a catalog change: then a diff (since the full).
    c.psql(
        "postgres",
        "DROP DATABASE newdb; CREATE DATABASE later_db TABLESPACE extra",
    );
    c.psql(
        "later_db",
        "CREATE TABLE l (id int, v text); INSERT INTO l SELECT g, 'l' FROM generate_series(1, 3000) g;",
    );
    c.psql(
        "shop",
        "UPDATE orders SET note = 'diff' WHERE id % 1000 = 0;
         ALTER TABLE fresh ADD COLUMN extra int DEFAULT 7;",
    );
    let diff = a.backup("diff");
    dumps.push((diff.clone(), c.dumpall_with(&["--no-unlogged-table-data"])));

    // 4: shrink the big table, grow another, drop the tablespace's table: an incr on the diff.
    c.psql(
        "shop",
        "DELETE FROM orders WHERE id > 220000; VACUUM orders;
         INSERT INTO fresh SELECT g, 'g', 1 FROM generate_series(5001, 9000) g;
         DROP TABLE spaced;",
    );
    let incr3 = a.backup("incr");
    dumps.push((incr3.clone(), c.dumpall_with(&["--no-unlogged-table-data"])));

    // The listing: kinds, priors, references, the method, and far less stored than the database.
    let expect = [
        (&incr1, "incr", &full, format!("{{{full}}}")),
        (&incr2, "incr", &incr1, format!("{{{full},{incr1}}}")),
        (&diff, "diff", &full, format!("{{{full}}}")),
        (&incr3, "incr", &diff, format!("{{{full},{diff}}}")),
    ];
    let full_stored: u64 = listing(c, &full, "stored_size").parse().unwrap();
    for (label, kind, prior, refs) in expect {
        assert!(
            label.starts_with(&full) && label.len() == 33,
            "label {label}"
        );
        assert_eq!(
            listing(
                c,
                label,
                "kind, prior, \"references\", method, method_reason IS NULL"
            ),
            format!("{kind}|{prior}|{refs}|block-summaries|t"),
        );
        let stored: u64 = listing(c, label, "stored_size").parse().unwrap();
        let read: u64 = listing(c, label, "read_size").parse().unwrap();
        let size: u64 = listing(c, label, "database_size").parse().unwrap();
        // incr1 only changed blocks of existing relations (plus one small new table); the others also
        // store rewritten tables and a new database whole. The exact-block test is the precise one.
        let factor = if label == &incr1 { 5 } else { 1 };
        assert!(
            stored * factor < full_stored && read < size,
            "{label}: stored {stored}, read {read}, database {size}, full stored {full_stored}"
        );
    }
    let info = a.strata(&["info"]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains(&format!("incr backup: {incr3}"))
            && info.contains(&format!("references: {full}, {diff}"))
            && info.contains("method: block-summaries"),
        "{info}"
    );

    // Every backup of the chain restores to the source's dump at its end.
    for (i, (label, source_dump)) in dumps.iter().enumerate() {
        let restored = restore_and_dump(
            &a,
            &format!("chain-{i}"),
            &["--set", label, "--type", "immediate"],
            &ts,
        );
        pg_test::assert_same_dump(&restored, source_dump, &format!("backup {label}"));
    }

    // PITR through the chain (incr2, then WAL) and from the full alone reach the same state.
    let via_chain = restore_and_dump(
        &a,
        "chain-pitr-incr",
        &["--set", &incr2, "--type", "lsn", "--target", &pitr_lsn],
        &ts,
    );
    let via_full = restore_and_dump(
        &a,
        "chain-pitr-full",
        &["--set", &full, "--type", "lsn", "--target", &pitr_lsn],
        &ts,
    );
    pg_test::assert_same_dump(&via_full, &pitr_dump, "PITR via the full vs the source");
    pg_test::assert_same_dump(&via_chain, &via_full, "PITR via the chain vs via the full");

    // --delta over the restore of an older backup gives the newest one.
    let root = PgDir::new("strata-chain-delta-");
    let ts_delta = PgDir::new("strata-ts-chain-delta-");
    let pgdata = root.path().join("data");
    let map = format!("extra={}", ts_delta.path().display());
    for (set, extra) in [(&incr1, None), (&incr3, Some("--delta"))] {
        let mut args = vec![
            "--set",
            set.as_str(),
            "--type",
            "immediate",
            "--target-action",
            "pause",
        ];
        args.extend(["--tablespace-map", &map]);
        args.extend(extra);
        let out = a.restore_into(&pgdata, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r = Cluster::restored("chain-delta", root, pgdata);
    r.start();
    r.wait_recovered(true);
    let delta_dump = r.dumpall_with(&["--no-unlogged-table-data"]).replace(
        &ts_delta.path().display().to_string(),
        &ts.path().display().to_string(),
    );
    r.stop();
    pg_test::assert_same_dump(&delta_dump, &dumps[4].1, "--delta from incr1 to incr3");
}

/// The (path, block) pairs stored in incremental form by a backup, and the relation files it stored
/// whole (with pieces of its own).
fn stored_blocks(a: &Archiving, label: &str) -> (BTreeMap<String, Vec<u32>>, Vec<String>) {
    let keys = strata_core::paths::RepoKeys::new("main").unwrap();
    let (path, key) = a.manifest_object(label);
    let m = Manifest::from_bytes(&key, label, &std::fs::read(path).unwrap()).unwrap();
    let mut blocks = BTreeMap::new();
    let mut whole = Vec::new();
    for f in &m.files {
        let own_pieces = f.pieces.iter().any(|p| p.backup.is_none());
        if f.incremental.is_none() {
            if own_pieces && pgformat::relfile::parse_relation_path(&f.path).is_some() {
                whole.push(f.path.clone());
            }
            continue;
        }
        let mut list = Vec::new();
        for p in &f.pieces {
            let key = keys.backup_object(label, &p.object).unwrap().to_string();
            let bytes = std::fs::read(a.repo.path().join(&key)).unwrap();
            let stored = &bytes[p.offset as usize..(p.offset + p.length) as usize];
            let (_, plain) = strata_core::object::decode(&key, stored).unwrap();
            let inc = strata_core::incremental::Incremental::parse(&key, &plain).unwrap();
            list.extend(inc.block_numbers);
        }
        if !list.is_empty() {
            blocks.insert(f.path.clone(), list);
        }
    }
    (blocks, whole)
}

#[test]
fn one_update_makes_the_next_incremental_store_exactly_the_blocks_it_touched() {
    // No checksums and no wal_log_hints: reading pages sets hint bits without WAL, so that the only
    // WAL between the backups is the UPDATE's.
    let a = Archiving::new_with("oracle", "autovacuum = off", &[]);
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE EXTENSION pageinspect;
         CREATE TABLE t (id int, v char(200)) WITH (fillfactor = 100);
         INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 20000) g;
         ALTER TABLE t ADD PRIMARY KEY (id);
         VACUUM (FREEZE, ANALYZE);",
    );
    a.backup("full");
    let old_ctid = c.psql("postgres", "SELECT ctid FROM t WHERE id = 5000");
    // The page is full: the new version goes to another page (not HOT), with a new index entry.
    c.psql("postgres", "UPDATE t SET v = 'changed' WHERE id = 5000");
    let incr = a.backup("incr");
    let new_ctid = c.psql("postgres", "SELECT ctid FROM t WHERE id = 5000");
    let page = |ctid: &str| -> u32 {
        ctid.trim_matches(|ch| ch == '(' || ch == ')')
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let heap = c.psql("postgres", "SELECT pg_relation_filepath('t')");
    let index = c.psql("postgres", "SELECT pg_relation_filepath('t_pkey')");
    let leaf: u32 = c
        .psql(
            "postgres",
            &format!(
                "SELECT b FROM generate_series(1, pg_relation_size('t_pkey') / 8192 - 1) b
                 WHERE EXISTS (SELECT 1 FROM bt_page_items('t_pkey', b::int) i
                               WHERE i.htid = '{new_ctid}' OR '{new_ctid}' = ANY (i.tids))"
            ),
        )
        .parse()
        .unwrap();
    let mut heap_pages = vec![page(&old_ctid), page(&new_ctid)];
    heap_pages.sort();
    heap_pages.dedup();
    assert_ne!(
        page(&old_ctid),
        page(&new_ctid),
        "the update must not be HOT"
    );
    let expected: BTreeMap<String, Vec<u32>> = [
        (heap.clone(), heap_pages),
        (format!("{heap}_vm"), vec![0]),
        (index, vec![leaf]),
    ]
    .into_iter()
    .collect();
    let (blocks, whole) = stored_blocks(&a, &incr);
    assert_eq!(blocks, expected, "blocks stored by {incr}");
    // Free space maps are compared whole with the reference's: only the one the UPDATE changed (its
    // table's) may be stored again.
    assert!(
        whole.iter().all(|p| *p == format!("{heap}_fsm")),
        "only the table's free space map may be stored whole: {whole:?}"
    );
    assert_eq!(listing(c, &incr, "method"), "block-summaries");
}

#[test]
fn a_gap_in_the_summaries_falls_back_to_page_lsns_says_so_and_restores() {
    let ts = PgDir::new("strata-ts-gap-");
    let a = Archiving::new("gap", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        &format!("CREATE TABLESPACE extra LOCATION '{}'", ts.path().display()),
    );
    c.psql(
        "postgres",
        "CREATE TABLE g (id int PRIMARY KEY, v text);
         INSERT INTO g SELECT i, md5(i::text) FROM generate_series(1, 100000) i;
         VACUUM g;",
    );
    a.backup("full");
    // Another archiver takes over for a while: those segments have no summaries.
    c.psql(
        "postgres",
        "ALTER SYSTEM SET archive_library = ''; ALTER SYSTEM SET archive_command = '/bin/true';
         SELECT pg_reload_conf();",
    );
    c.psql("postgres", "UPDATE g SET v = 'gap' WHERE id % 100 = 0");
    let wal = a.switch_wal();
    a.wait_archived(&wal);
    c.psql(
        "postgres",
        "ALTER SYSTEM RESET archive_library; ALTER SYSTEM RESET archive_command;
         SELECT pg_reload_conf();",
    );
    c.psql("postgres", "UPDATE g SET v = 'after' WHERE id % 1000 = 1");
    let wal = a.switch_wal();
    a.wait_archived(&wal);
    let (incr, notices) = c
        .psql_full("postgres", "SELECT backup_start('incr')")
        .unwrap();
    assert!(
        notices.contains("page LSN") && notices.contains("do not cover"),
        "{notices}"
    );
    let row = listing(
        c,
        &incr,
        "kind, method, method_reason LIKE '%do not cover%'",
    );
    assert_eq!(row, "incr|page-lsn|t");
    let source = c.dumpall_with(&["--no-unlogged-table-data"]);
    let restored = restore_and_dump(
        &a,
        "gap-restored",
        &["--set", &incr, "--type", "immediate"],
        &ts,
    );
    pg_test::assert_same_dump(&restored, &source, "page-LSN incremental");
}
