//! `strata restore` treats the repository and the target directories as untrusted, on real clusters,
//! run as root as the README recommends: a tampered manifest (paths leaving the data directory, object
//! keys leaving the backup, sizes that do not add up, a tablespace location pointing anywhere) is
//! refused before anything is written; `--delta` follows no link the postgres user placed in the data
//! directory, never deletes a repository, a non-tablespace directory or another cluster's data
//! directory (without `--force`); a directory a running server uses is never written; bad limits and
//! overlapping targets are refused up front and leave nothing behind.

use pg_test::{Archiving, Cluster, PgDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `strata restore --pgdata DIR args...` run as the test's user (root in CI), not as postgres.
fn restore_as_me(a: &Archiving, pgdata: &Path, args: &[&str]) -> Output {
    let pgdata = pgdata.display().to_string();
    let mut all = vec!["restore", "--pgdata", pgdata.as_str()];
    all.extend_from_slice(args);
    a.strata(&all)
}

fn manifest_path(a: &Archiving, label: &str) -> PathBuf {
    a.repo
        .path()
        .join("main/backup")
        .join(label)
        .join("manifest.json")
}

/// The manifest as one JSON object, to edit by hand.
fn read_manifest(a: &Archiving, label: &str) -> Value {
    strata_core::manifest::to_plain_json(&std::fs::read(manifest_path(a, label)).unwrap()).unwrap()
}

/// Writes an edited manifest with its checksums recomputed, as someone who can write the repository
/// could: what the checksums do not catch, validation must.
fn write_manifest(a: &Archiving, label: &str, m: &Value) {
    std::fs::write(
        manifest_path(a, label),
        strata_core::manifest::from_plain_json(m),
    )
    .unwrap();
}

fn assert_refused(o: &Output, needles: &[&str]) {
    assert!(!o.status.success(), "expected a refusal: {}", stderr(o));
    for n in needles {
        assert!(stderr(o).contains(n), "missing '{n}' in: {}", stderr(o));
    }
}

/// A cluster with a table and a full backup whose WAL is archived; returns the label.
fn backed_up(name: &str, extra: &str) -> (Archiving, String) {
    let a = Archiving::new(name, extra);
    a.cluster.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    );
    let label = a.backup("full");
    let last = a.switch_wal();
    a.wait_archived(&last);
    (a, label)
}

#[test]
fn a_tampered_manifest_cannot_make_a_root_restore_write_or_read_outside() {
    let (a, label) = backed_up("hostile-manifest", "");
    let original = read_manifest(&a, &label);
    let work = PgDir::new("strata-hostile-");
    // A file outside every target, which a root-run restore could overwrite.
    let victim = work.path().join("victim");
    std::fs::write(&victim, b"root's file\n").unwrap();
    let victim_abs = victim.display().to_string();
    let target = work.path().join("restore/data");
    let depth = target.components().count();
    let climb = format!("{}{}", "../".repeat(depth), &victim_abs[1..]);

    let file_paths = [
        climb.clone(),
        victim_abs.clone(),
        format!("base/{climb}"),
        "base//x".to_string(),
        "base/./x".to_string(),
        "base/x\u{0}y".to_string(),
    ];
    for bad in &file_paths {
        let mut m = original.clone();
        let mut entry = m["files"][0].clone();
        entry["path"] = Value::String(bad.clone());
        m["files"].as_array_mut().unwrap().push(entry);
        write_manifest(&a, &label, &m);
        let o = restore_as_me(&a, &target, &[]);
        assert_refused(&o, &["refused", &label]);
        assert_eq!(std::fs::read(&victim).unwrap(), b"root's file\n", "{bad}");
        assert!(
            !target.exists(),
            "{bad}: a refused restore wrote {target:?}"
        );
    }
    // A `..` directory entry would create a directory outside.
    let mut m = original.clone();
    m["directories"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"path": format!("{climb}.d"), "mode": 511}));
    write_manifest(&a, &label, &m);
    assert_refused(&restore_as_me(&a, &target, &[]), &["refused", "'..'"]);
    assert!(!work.path().join("victim.d").exists());

    // Object keys that leave the backup, a piece outside its object, a size that does not add up, a
    // set-user-id mode: refused, naming the entry.
    type Edit = Box<dyn Fn(&mut Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "data/<number>",
            Box::new(|m: &mut Value| {
                m["files"][0]["pieces"][0]["object"] = "../../../archive/x".into()
            }),
        ),
        (
            "not a backup label",
            Box::new(|m: &mut Value| m["files"][0]["pieces"][0]["backup"] = "../../x".into()),
        ),
        (
            "does not hold",
            Box::new(|m: &mut Value| m["files"][0]["pieces"][0]["offset"] = 1_000_000_000.into()),
        ),
        (
            "add up to",
            Box::new(|m: &mut Value| {
                let size = m["files"][0]["size"].as_u64().unwrap();
                m["files"][0]["size"] = (size + 8192).into();
            }),
        ),
        (
            "mode",
            Box::new(|m: &mut Value| m["files"][0]["mode"] = 0o4755.into()),
        ),
        (
            "tablespace",
            Box::new(|m: &mut Value| {
                m["tablespaces"] =
                    serde_json::json!([{"oid": 16999, "name": "evil", "location": "/"}])
            }),
        ),
    ];
    for (needle, edit) in edits {
        let mut m = original.clone();
        edit(&mut m);
        write_manifest(&a, &label, &m);
        let o = restore_as_me(&a, &target, &[]);
        assert_refused(&o, &["refused", needle]);
        assert!(!target.exists(), "{needle}");
    }
    write_manifest(&a, &label, &original);
    let o = restore_as_me(&a, &target, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn delta_never_follows_links_or_deletes_outside_its_targets() {
    let (a, label) = backed_up("hostile-delta", "");
    let work = PgDir::new("strata-delta-trust-");
    let pgdata = work.path().join("data");
    let o = restore_as_me(&a, &pgdata, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The postgres user (who owns the restored directory) plants links to root's files.
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"root's\n").unwrap();
    std::fs::remove_file(pgdata.join("PG_VERSION")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), pgdata.join("PG_VERSION")).unwrap();
    let db = std::fs::read_dir(pgdata.join("base"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    std::fs::remove_dir_all(&db).unwrap();
    std::os::unix::fs::symlink(&outside, &db).unwrap();
    // The operator keeps WAL on another disk: that pg_wal link is kept, only WAL files are removed
    // through it.
    let wal_disk = work.path().join("wal_disk");
    std::fs::create_dir(&wal_disk).unwrap();
    std::fs::write(wal_disk.join("000000010000000000000009"), b"old wal").unwrap();
    std::fs::write(wal_disk.join("README"), b"operator's notes").unwrap();
    std::fs::write(wal_disk.join("00000001.conf"), b"not WAL").unwrap();
    // A pg_wal link to a system directory is refused, not cleaned.
    std::fs::remove_dir_all(pgdata.join("pg_wal")).unwrap();
    std::os::unix::fs::symlink("/etc", pgdata.join("pg_wal")).unwrap();
    assert_refused(
        &restore_as_me(&a, &pgdata, &["--delta"]),
        &["pg_wal", "/etc"],
    );
    std::fs::remove_file(pgdata.join("pg_wal")).unwrap();
    std::fs::create_dir(pgdata.join("pg_wal")).unwrap();
    std::fs::remove_dir_all(pgdata.join("pg_wal")).unwrap();
    std::os::unix::fs::symlink(&wal_disk, pgdata.join("pg_wal")).unwrap();
    let o = restore_as_me(&a, &pgdata, &["--delta"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_link(pgdata.join("pg_wal")).unwrap(), wal_disk);
    assert!(wal_disk.join("README").exists() && wal_disk.join("archive_status").is_dir());
    assert!(
        wal_disk.join("00000001.conf").exists(),
        "only exact WAL names are removed"
    );
    assert!(!wal_disk.join("000000010000000000000009").exists());
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"root's\n");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing written through the directory link"
    );
    let meta = std::fs::symlink_metadata(pgdata.join("PG_VERSION")).unwrap();
    assert!(meta.is_file(), "the link is replaced by the backup's file");
    assert!(std::fs::symlink_metadata(&db).unwrap().is_dir());

    // --delta onto the repository, or a directory holding it, is refused; the repository stays.
    for dir in [a.repo.path().to_path_buf(), a.repo.path().join("main")] {
        let o = restore_as_me(&a, &dir, &["--delta", "--force"]);
        assert_refused(&o, &["repository"]);
    }
    let parent = a.repo.path().parent().unwrap().to_path_buf();
    assert_refused(
        &restore_as_me(&a, &parent, &["--delta", "--force"]),
        &["repository"],
    );
    assert!(manifest_path(&a, &label).exists());

    // A directory that is not a data directory, and another cluster's data directory: refused
    // without --force.
    let notes = work.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("todo.txt"), b"keep me").unwrap();
    assert_refused(
        &restore_as_me(&a, &notes, &["--delta"]),
        &["no PG_VERSION", "--force"],
    );
    assert!(notes.join("todo.txt").exists());
    let other = Cluster::init("hostile-other", "");
    let o = restore_as_me(&a, &other.datadir, &["--delta"]);
    assert_refused(&o, &["another cluster", "system identifier", "--force"]);
    assert!(other.datadir.join("global/pg_control").exists());
    let o = restore_as_me(&a, &other.datadir, &["--delta", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Limits: refused up front, nothing left (no staging directory either).
    let fresh = work.path().join("fresh");
    let o = restore_as_me(&a, &fresh, &["--process-max", "100000"]);
    assert_refused(&o, &["--process-max", "1 to 64"]);
    assert!(!fresh.exists() && !work.path().join(".fresh.strata-restore").exists());

    // --archive-mode off: the restored copy does not archive into the stanza it came from.
    let o = restore_as_me(
        &a,
        &fresh,
        &[
            "--archive-mode",
            "off",
            "--type",
            "immediate",
            "--target-action",
            "promote",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let auto = std::fs::read_to_string(fresh.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("archive_mode = 'off'"), "{auto}");
    let copy = Cluster::restored("hostile-copy", PgDir::new("strata-copy-"), fresh.clone());
    copy.start();
    copy.wait_recovered(false);
    assert_eq!(copy.psql("postgres", "SHOW archive_mode"), "off");
    assert_eq!(copy.psql("postgres", "SELECT count(*) FROM t"), "20000");
    copy.stop();
}

#[test]
fn tablespace_targets_must_be_plausible_and_unused() {
    let ts = PgDir::new("strata-ts-trust-");
    let a = Archiving::new("hostile-ts", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        &format!("CREATE TABLESPACE extra LOCATION '{}'", ts.path().display()),
    );
    c.psql(
        "postgres",
        "CREATE TABLE moved TABLESPACE extra AS SELECT g FROM generate_series(1, 5000) g",
    );
    let label = a.backup("full");
    let last = a.switch_wal();
    a.wait_archived(&last);
    let work = PgDir::new("strata-ts-work-");
    let pgdata = work.path().join("data");

    // The source still runs with its tablespace at that location: a restore there is refused naming
    // the server, with or without --delta, and never suggests --delta.
    let pid = std::fs::read_to_string(c.datadir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let o = restore_as_me(&a, &pgdata, &[]);
    assert_refused(&o, &["in use by a running PostgreSQL", &pid]);
    assert!(!stderr(&o).contains("add --delta"), "{}", stderr(&o));
    assert!(!pgdata.exists());
    let o = restore_as_me(&a, &pgdata, &["--delta"]);
    assert_refused(&o, &["in use by a running PostgreSQL", &pid]);
    assert_eq!(c.psql("postgres", "SELECT count(*) FROM moved"), "5000");

    // A tablespace mapped onto the data directory itself: refused up front, nothing left.
    let o = restore_as_me(
        &a,
        &pgdata,
        &["--tablespace-map", &format!("extra={}", pgdata.display())],
    );
    assert_refused(&o, &["one is inside the other"]);
    assert!(!pgdata.exists());

    // A tampered location pointing at an unrelated directory: --delta refuses to touch it.
    let unrelated = work.path().join("unrelated");
    std::fs::create_dir(&unrelated).unwrap();
    for f in ["a", "b", "c", "d"] {
        std::fs::write(unrelated.join(f), f).unwrap();
    }
    let mut m = read_manifest(&a, &label);
    let original = m.clone();
    m["tablespaces"][0]["location"] = Value::String(unrelated.display().to_string());
    write_manifest(&a, &label, &m);
    let o = restore_as_me(&a, &pgdata, &[]);
    assert!(
        o.status.success() || stderr(&o).contains("not empty"),
        "{}",
        stderr(&o)
    );
    let o = restore_as_me(&a, &pgdata, &["--delta"]);
    assert_refused(&o, &["no PG_15_* directory"]);
    assert_eq!(std::fs::read_dir(&unrelated).unwrap().count(), 4);
    // Run as root, a location the backup names is not created where nothing of the cluster's owner
    // is (it could be /root/.ssh): refused without --tablespace-map, nothing made.
    let home_ssh = work.path().join("home/alice/.ssh");
    m["tablespaces"][0]["location"] = Value::String(home_ssh.display().to_string());
    write_manifest(&a, &label, &m);
    if unsafe { libc::geteuid() } == 0 {
        let o = restore_as_me(&a, &work.path().join("fresh"), &[]);
        assert_refused(&o, &["--tablespace-map"]);
        assert!(!work.path().join("home").exists() && !work.path().join("fresh").exists());
    }
    // System directories are never targets.
    for loc in ["/etc", "/usr/lib", "/"] {
        m["tablespaces"][0]["location"] = Value::String(loc.into());
        write_manifest(&a, &label, &m);
        let o = restore_as_me(&a, &work.path().join("sys"), &[]);
        assert!(!o.status.success(), "{loc}");
        assert!(stderr(&o).contains(loc), "{loc}: {}", stderr(&o));
    }
    write_manifest(&a, &label, &original);
}
