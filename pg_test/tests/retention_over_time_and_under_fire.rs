//! Retention on real clusters, the parts that need time or a second process: the age and
//! recovery-window policies decided at a moved clock (`strata expire --at`), `retention_archive`
//! leaving older backups restorable only to their end, an expiry killed half-way and finished by the
//! next, and an expiry that keeps what a running restore reads (its lease).

use pg_test::{stderr, stdout};
use pg_test::{Archiving, PgDir};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strata_core::manifest::Manifest;

fn manifest(a: &Archiving, label: &str) -> Manifest {
    let (path, key) = a.manifest_object(label);
    Manifest::from_bytes(&key, label, &std::fs::read(path).unwrap()).unwrap()
}

fn listed(a: &Archiving) -> String {
    a.cluster.psql(
        "postgres",
        "SELECT coalesce(string_agg(label, ',' ORDER BY label), '') FROM backup_list()",
    )
}

/// RFC 3339 of a backup's end moved by `days` and `millis`.
fn at(m: &Manifest, days: i64, millis: i64) -> String {
    (m.stop_time + chrono::Duration::days(days) + chrono::Duration::milliseconds(millis))
        .to_rfc3339()
}

/// Restores `label` to its end into a new directory and compares with `dump`. Without a lease: a
/// restore's lease keeps its chain for a day, and these tests expire after restoring.
fn restores_to(a: &Archiving, label: &str, dump: &str) {
    let r = a.restore_new(
        &format!("ret-{}", &label[label.len() - 8..]),
        &["--set", label, "--type", "immediate", "--no-lease"],
    );
    r.start();
    r.wait_recovered(true);
    pg_test::assert_same_dump(&r.dumpall(), dump, label);
    r.stop();
}

#[test]
fn age_and_window_policies_decide_by_the_backups_end_times() {
    let a = Archiving::new("retention-time", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    let f1 = a.backup("full");
    c.psql("postgres", "UPDATE t SET id = id + 1");
    let i1 = a.backup("incr");
    std::thread::sleep(Duration::from_millis(1100));
    let f2 = a.backup("full");
    std::thread::sleep(Duration::from_millis(1100));
    c.psql("postgres", "UPDATE t SET id = id + 1");
    let f3 = a.backup("full");
    let f3_dump = c.dumpall();
    let (m1, m2) = (manifest(&a, &i1), manifest(&a, &f2));

    // Age: 2 days, decided 2 days and half a second after f2's end: f3 ended inside the period, f2 is
    // the newest full older than it (the base for the period's start); f1 and its incr go.
    let o = a.strata(&[
        "expire",
        "--dry-run",
        "--retention-full=2",
        "--retention-full-type=time",
        "--at",
        &at(&m2, 2, 500),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for gone in [&f1, &i1] {
        assert!(
            out.contains(&format!("would expire backup {gone}:")),
            "{out}"
        );
    }
    for kept in [&f2, &f3] {
        assert!(!out.contains(&format!("backup {kept}:")), "{out}");
    }
    // Decided a day earlier, everything is inside the period.
    let o = a.strata(&[
        "expire",
        "--dry-run",
        "--retention-full=2",
        "--retention-full-type=time",
        "--at",
        &at(&m2, 1, 0),
    ]);
    assert!(
        stdout(&o).contains("would expire 0 backups"),
        "{}",
        stdout(&o)
    );

    // Recovery window of a day, decided just after the window's start passed i1's end: i1 is the
    // base for the window's start (kept with its full); nothing goes.
    let window = |when: &str, extra: &[&str]| {
        let mut args = vec!["expire", "--retention-window", "1 day", "--at", when];
        args.extend_from_slice(extra);
        a.strata(&args)
    };
    let o = window(&at(&m1, 1, 500), &["--dry-run"]);
    assert!(
        stdout(&o).contains("would expire 0 backups"),
        "{}",
        stdout(&o)
    );
    // Past f2's end: f2 is the base; f1 and i1 go — unless minimum redundancy keeps three fulls.
    let o = window(
        &at(&m2, 1, 500),
        &["--dry-run", "--retention-min-full", "3"],
    );
    assert!(
        stdout(&o).contains("would expire 0 backups"),
        "{}",
        stdout(&o)
    );
    let o = window(&at(&m2, 1, 500), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(listed(&a), format!("{f2},{f3}"));
    restores_to(&a, &f3, &f3_dump);

    // Bad values are refused naming the setting.
    for (flag, value) in [
        ("--retention-window", "7 fortnights"),
        ("--retention-full-type", "weekly"),
        ("--retention-archive-type", "hourly"),
        ("--retention-archive", "-2"),
    ] {
        let o = a.strata(&[
            "expire",
            &format!("{flag}={value}"),
            "--retention-full",
            "1",
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let setting = format!("strata.{}", flag[2..].replace('-', "_"));
        assert!(stderr(&o).contains(&setting), "{flag}: {}", stderr(&o));
    }
    let o = a.strata(&["expire", "--retention-full", "1", "--at", "next tuesday"]);
    assert!(stderr(&o).contains("--at"), "{}", stderr(&o));
}

#[test]
fn archive_retention_leaves_older_backups_restorable_to_their_end_only() {
    let a = Archiving::new(
        "retention-archive",
        "strata.retention_full = 3\nstrata.retention_archive = 1",
    );
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g AS id, 'a' AS v FROM generate_series(1, 3000) g",
    );
    let mut dumps = BTreeMap::new();
    let mut fulls = Vec::new();
    for round in 0..3 {
        let full = a.backup("full");
        dumps.insert(full.clone(), c.dumpall());
        fulls.push(full);
        // WAL after each backup, in segments of its own.
        for step in 0..2 {
            c.psql(
                "postgres",
                &format!("UPDATE t SET v = 'r{round}s{step}' WHERE id % 5 = {step}"),
            );
            let wal = a.switch_wal();
            a.wait_archived(&wal);
        }
    }
    let final_dump = c.dumpall();
    // The last backup's end-of-run expiry applied the policy: the WAL between the older fulls is gone,
    // each keeps its own start-to-stop segments.
    let o = a.strata(&[
        "expire",
        "--retention-full",
        "3",
        "--retention-archive",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("backup {} restores to its end only", fulls[0])),
        "{}",
        stdout(&o)
    );
    let segments = a.archived_segment_names();
    let m0 = manifest(&a, &fulls[0]);
    let m2 = manifest(&a, &fulls[2]);
    assert!(segments.contains(&m0.start_wal_file) && segments.contains(&m0.stop_wal_file));
    let after_m0 = pgformat::lsn::segment_file_name(1, m0.stop_lsn.0 / (16 << 20) + 1, 16 << 20);
    assert!(!segments.contains(&after_m0), "{after_m0} in {segments:?}");
    assert!(segments.iter().any(|s| s > &m2.stop_wal_file));

    // Listings say which backups restore to their end only.
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT string_agg(pitr::text, ',' ORDER BY label) FROM strata_backups"
        ),
        "false,false,true"
    );
    let info = stdout(&a.strata(&["info"]));
    assert!(
        info.contains("restorable: to its end only (WAL file"),
        "{info}"
    );

    // The oldest full restores to its end; a recovery past it is refused before writing, naming the
    // first missing segment.
    restores_to(&a, &fulls[0], &dumps[&fulls[0]]);
    let target = PgDir::new("strata-retention-gap-");
    let data = target.path().join("data");
    let o = a.restore_into(&data, &["--set", &fulls[0]]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains(&after_m0), "{}", stderr(&o));
    assert!(stderr(&o).contains("--type immediate"), "{}", stderr(&o));
    assert!(!data.exists());
    // The newest restores to the archive's end (the source's current data).
    c.psql("postgres", "CHECKPOINT");
    let r = a.restore_new("ret-archive-newest", &["--set", &fulls[2]]);
    r.start();
    r.wait_recovered(false);
    pg_test::assert_same_dump(
        &r.dumpall(),
        &final_dump,
        "the newest full, replayed to the end",
    );
    r.stop();
}

#[test]
fn a_killed_expiry_is_finished_by_the_next_and_every_listed_backup_restores() {
    let a = Archiving::new("retention-kill", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 2000) g",
    );
    let mut dumps = BTreeMap::new();
    let mut labels = Vec::new();
    for round in 0..3 {
        let full = a.backup("full");
        dumps.insert(full.clone(), c.dumpall());
        c.psql(
            "postgres",
            &format!("UPDATE t SET id = id + 1 WHERE id % 3 = {round}"),
        );
        let incr = a.backup("incr");
        dumps.insert(incr.clone(), c.dumpall());
        labels.push(full);
        labels.push(incr);
        let wal = a.switch_wal();
        a.wait_archived(&wal);
    }
    // Slowed down (a pause before every deletion), killed with SIGKILL while a backup is half
    // removed (marked, its manifest gone, objects left).
    let mut child = Command::new(pg_test::strata_bin())
        .args(["expire", "--retention-full", "1", "--repo"])
        .arg(a.repo_url())
        .args(["--stanza", "main"])
        .env(strata_core::testhook::EXPIRE_PAUSE, "150")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let backup_dir = a.repo.path().join("main/backup");
    let started = Instant::now();
    loop {
        let half_removed = labels[..4].iter().any(|l| {
            let dir = backup_dir.join(l);
            dir.join("expiring").exists()
                && !dir.join("manifest.json").exists()
                && (dir.join("claim.json").exists() || dir.join("data").exists())
        });
        if half_removed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the expiry never got half-way"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Whatever is listed restores to its source; the half-removed backup is not listed.
    let now_listed = listed(&a);
    let survivors: Vec<&String> = labels
        .iter()
        .filter(|l| now_listed.split(',').any(|x| x == l.as_str()))
        .collect();
    assert!(survivors.len() < labels.len(), "{now_listed}");
    for label in &survivors {
        restores_to(&a, label, &dumps[label.as_str()]);
    }
    // The next expiry finishes the job: it removes the interrupted one's rest first.
    let o = a.strata(&["expire", "--retention-full", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("whose expiry was interrupted"),
        "{}",
        stdout(&o)
    );
    assert_eq!(listed(&a), labels[4..].join(","));
    let dirs: Vec<String> = std::fs::read_dir(&backup_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
}

#[test]
fn an_expiry_keeps_what_a_running_restore_reads() {
    let a = Archiving::new("retention-lease", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 20000) g",
    );
    let f1 = a.backup("full");
    c.psql("postgres", "UPDATE t SET id = id + 1 WHERE id % 4 = 0");
    let i1 = a.backup("incr");
    let i1_dump = c.dumpall();
    c.psql("postgres", "UPDATE t SET id = id + 1");
    let f2 = a.backup("full");

    // A slow restore of i1 (a pause before each file) as the postgres user.
    let root = PgDir::new("strata-restore-lease-");
    let data = root.path().join("data");
    let mut restore = Command::new("runuser");
    restore
        .args(["-u", "postgres", "--"])
        .arg(pg_test::strata_bin())
        .arg("restore")
        .arg("--pgdata")
        .arg(&data)
        .args(["--set", &i1, "--type", "immediate", "--repo"])
        .arg(a.repo_url())
        .args(["--stanza", "main"])
        .env(strata_core::testhook::RESTORE_PAUSE, "15")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = restore.spawn().unwrap();
    let stanza_dir = a.repo.path().join("main");
    let lease_exists = || {
        std::fs::read_dir(&stanza_dir).unwrap().any(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.starts_with("lease-") && name.ends_with(".json")
        })
    };
    let started = Instant::now();
    while !lease_exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no lease taken"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The policy keeps only f2; the restore's chain is kept while it reads (and after, for its
    // recovery's WAL).
    let o = a.strata(&["expire", "--retention-full", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for label in [&f1, &i1] {
        assert!(
            out.contains(&format!("kept backup {label}: a restore holds a lease")),
            "{out}"
        );
    }
    let done = child.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", stderr(&done));
    let r = pg_test::Cluster::restored("ret-lease", root, data);
    r.start();
    r.wait_recovered(true);
    pg_test::assert_same_dump(&r.dumpall(), &i1_dump, "the incr restored during an expiry");
    r.stop();
    assert_eq!(listed(&a), format!("{f1},{i1},{f2}"));
    // The finished restore's lease stays for its recovery, shown by strata info.
    let info = stdout(&a.strata(&["info"]));
    assert!(
        info.contains("lease: ") && info.contains(&format!("{f1}, {i1} and the WAL")),
        "{info}"
    );

    // Once the lease is gone (it lapses a day after the restore; removed here), the policy applies.
    for e in std::fs::read_dir(&stanza_dir).unwrap() {
        let path = e.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("lease-")
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    let o = a.strata(&["expire", "--retention-full", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(listed(&a), f2);
}

#[test]
fn diff_retention_keeps_the_newest_diffs_with_their_incrs_and_their_full() {
    let a = Archiving::new("retention-diff", "");
    let c = &a.cluster;
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 3000) g",
    );
    let full = a.backup("full");
    c.psql("postgres", "UPDATE t SET id = id + 1 WHERE id % 3 = 0");
    let diff1 = a.backup("diff");
    c.psql("postgres", "UPDATE t SET id = id + 1 WHERE id % 5 = 0");
    let incr1 = a.backup("incr");
    c.psql("postgres", "UPDATE t SET id = id + 1 WHERE id % 7 = 0");
    let diff2 = a.backup("diff");
    c.psql("postgres", "UPDATE t SET id = id + 1 WHERE id % 11 = 0");
    let incr2 = a.backup("incr");
    let incr2_dump = c.dumpall();
    assert!(incr1.starts_with(&format!("{full}_")) && diff2.ends_with('D'));

    // One diff kept: the newest, with the incr built on it and the full it is built on; the older
    // diff goes with its incr, though its full stays.
    let o = a.strata(&["expire", "--retention-diff", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for gone in [&diff1, &incr1] {
        assert!(out.contains(&format!("expired backup {gone}:")), "{out}");
    }
    assert_eq!(listed(&a), format!("{full},{diff2},{incr2}"));
    restores_to(&a, &incr2, &incr2_dump);
}
