//! `strata restore --db-include` / `--db-exclude` on a real cluster with three user databases (one of
//! them in a tablespace, and a table of the included one there too) and an incremental chain: one
//! database restored to a PITR target equals its source's dump at that moment, the left-out ones are
//! dropped cleanly, the data directory and the tablespace are much smaller on disk than a whole
//! restore's; then `--delta --db-exclude` over it brings a left-out database back and zeroes another.

use pg_test::Archiving;
use pg_test::{stderr, stdout};
use std::path::Path;

/// Disk blocks used under `dir`, in kB (what `du` says: sparse files count for nothing).
fn du_kb(dir: &Path) -> u64 {
    let out = std::process::Command::new("du")
        .arg("-sk")
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn one_database_restored_to_a_target_the_others_left_out() {
    let a = Archiving::new("dbinclude", "");
    let c = &a.cluster;
    let ts = pg_test::PgDir::new("strata-dbinc-ts-");
    c.psql(
        "postgres",
        &format!("CREATE TABLESPACE extra LOCATION '{}'", ts.path().display()),
    );
    for db in ["app", "crm", "logs"] {
        // logs lives in the tablespace.
        let place = if db == "logs" {
            " TABLESPACE extra"
        } else {
            ""
        };
        c.psql("postgres", &format!("CREATE DATABASE {db}{place}"));
        c.psql(
            db,
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v, repeat('x', 400) AS pad \
             FROM generate_series(1, 40000) g; CREATE INDEX ON t (id)",
        );
    }
    c.psql(
        "app",
        "CREATE TABLE in_ts TABLESPACE extra AS SELECT g AS id, md5(g::text) AS v \
         FROM generate_series(1, 5000) g",
    );
    let full = a.backup("full");
    for db in ["app", "crm", "logs"] {
        c.psql(db, "UPDATE t SET v = 'incr' WHERE id % 10 = 0");
    }
    let incr = a.backup("incr");
    let crm_at_incr = c.dump_db("crm");
    c.psql("app", "UPDATE t SET v = 'target' WHERE id % 7 = 0");
    let target = c.psql("postgres", "SELECT pg_current_wal_insert_lsn()");
    let app_at_target = c.dump_db("app");
    c.psql("app", "UPDATE t SET v = 'after' WHERE id % 5 = 0");
    c.psql("logs", "DELETE FROM t WHERE id % 2 = 0");
    let wal = a.switch_wal();
    a.wait_archived(&wal);

    // Unknown names are refused listing the databases; a system database cannot be excluded.
    let data = pg_test::PgDir::new("strata-dbinc-refused-");
    let o = a.restore_into(&data.path().join("d"), &["--db-include", "nosuch"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("app") && stderr(&o).contains("crm"),
        "{}",
        stderr(&o)
    );
    let o = a.restore_into(&data.path().join("d"), &["--db-exclude", "postgres"]);
    assert!(stderr(&o).contains("always"), "{}", stderr(&o));
    assert!(!data.path().join("d").exists());

    // The whole cluster and app alone, both restored from the incr (not started yet): app alone uses
    // far less disk.
    let ts_whole = pg_test::PgDir::new("strata-dbinc-ts-whole-");
    let ts_some = pg_test::PgDir::new("strata-dbinc-ts-some-");
    let map_whole = format!("extra={}", ts_whole.path().display());
    let map_some = format!("extra={}", ts_some.path().display());
    let whole = a.restore_new(
        "dbinc-whole",
        &[
            "--set",
            &incr,
            "--type",
            "immediate",
            "--no-lease",
            "--tablespace-map",
            &map_whole,
        ],
    );
    let args = [
        "--tablespace-map",
        &map_some,
        "--set",
        &incr,
        "--db-include",
        "app",
        "--type",
        "lsn",
        "--target",
        &target,
        "--target-action",
        "promote",
        "--no-lease",
        "--archive-mode",
        "off",
    ];
    let root = pg_test::PgDir::new("strata-restore-dbinc-");
    let datadir = root.path().join("data");
    let o = a.restore_into(&datadir, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("DROP DATABASE \"crm\"; DROP DATABASE \"logs\";"),
        "{}",
        stdout(&o)
    );
    // On disk (data directory and tablespace): app alone far less than the whole cluster, and in the
    // tablespace, where logs's files are sparse, far less again.
    let (whole_ts, some_ts) = (du_kb(ts_whole.path()), du_kb(ts_some.path()));
    let whole_kb = du_kb(&whole.datadir) + whole_ts;
    let some_kb = du_kb(&datadir) + some_ts;
    assert!(
        some_kb * 10 < whole_kb * 6,
        "app alone: {some_kb} kB, the whole cluster: {whole_kb} kB"
    );
    assert!(
        some_ts * 2 < whole_ts,
        "the tablespace with app alone: {some_ts} kB, whole: {whole_ts} kB"
    );
    drop(whole);

    // Recovery replays into the zeroed files; app equals its source at the target; the others drop.
    let r = pg_test::Cluster::restored("dbinc", root, datadir);
    r.start();
    r.wait_recovered(false);
    pg_test::assert_same_dump(&r.dump_db("app"), &app_at_target, "app at the target");
    r.psql("postgres", "DROP DATABASE crm");
    r.psql("postgres", "DROP DATABASE logs");
    assert_eq!(
        r.psql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"
        ),
        "app,postgres,template0,template1"
    );
    r.stop();

    // --delta --db-exclude over it, back to the incr's end: crm comes back whole, logs is zeros.
    let o = a.restore_into(
        &r.datadir,
        &[
            "--tablespace-map",
            &map_some,
            "--set",
            &incr,
            "--delta",
            "--db-exclude",
            "logs",
            "--type",
            "immediate",
            "--target-action",
            "promote",
            "--no-lease",
            "--archive-mode",
            "off",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("DROP DATABASE \"logs\";"),
        "{}",
        stdout(&o)
    );
    // The delta rewrote postgresql.conf from the backup: this copy's port and socket again.
    r.append_conf(&format!(
        "port = {}\nunix_socket_directories = '{}'",
        r.port,
        r.socket_dir().display()
    ));
    r.start();
    r.wait_recovered(false);
    pg_test::assert_same_dump(&r.dump_db("crm"), &crm_at_incr, "crm at the incr's end");
    r.psql("postgres", "DROP DATABASE logs");
    r.stop();
    let _ = full;
}
