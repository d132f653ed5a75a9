//! Chains of incremental backups on real PostgreSQL 15 clusters: a broken chain (a corrupted
//! incremental object, a missing backup in the middle, a backup of another cluster in the chain) is
//! refused before anything is written, with a message naming what is wrong; after a point-in-time
//! restore with promote, incremental and differential backups on the new timeline build on the old
//! timeline's backups from before the branch point (never on one from after it), find the changed blocks
//! from both timelines' summaries, and restore correctly.

use pg_test::{Archiving, PgDir};
use std::path::{Path, PathBuf};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn backup_dir(a: &Archiving, label: &str) -> PathBuf {
    a.repo.path().join("main/backup").join(label)
}

/// A restore of `label` into a new directory must fail with a message containing every `needles`, and
/// leave no directory behind.
fn assert_refused(a: &Archiving, label: &str, needles: &[&str]) {
    let root = PgDir::new("strata-refused-");
    let target = root.path().join("data");
    let o = a.restore_into(&target, &["--set", label]);
    assert!(!o.status.success(), "restore of {label} should be refused");
    for n in needles {
        assert!(stderr(&o).contains(n), "missing '{n}' in: {}", stderr(&o));
    }
    assert!(
        !target.exists(),
        "a refused restore left {}",
        target.display()
    );
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// A cluster archiving into its own repository, with a table `t` of 50000 rows.
fn archiving_with_a_table(name: &str) -> Archiving {
    let a = Archiving::new(name, "");
    a.cluster.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g;",
    );
    a
}

#[test]
fn a_broken_chain_is_refused_before_anything_is_written() {
    let a = archiving_with_a_table("broken-chain");
    let c = &a.cluster;
    let full = a.backup("full");
    c.psql("postgres", "UPDATE t SET v = 'one' WHERE id % 50 = 0");
    let incr1 = a.backup("incr");
    c.psql("postgres", "UPDATE t SET v = 'two' WHERE id % 70 = 0");
    let incr2 = a.backup("incr");

    // A corrupted incremental object: named, nothing written.
    let object = backup_dir(&a, &incr2).join("data/00000000");
    let len = std::fs::metadata(&object).unwrap().len() as usize;
    flip_byte(&object, len / 2);
    assert_refused(&a, &incr2, &[&format!("{incr2}/data/00000000"), "corrupt"]);
    flip_byte(&object, len / 2);

    // The backup in the middle of the chain is gone.
    let manifest = backup_dir(&a, &incr1).join("manifest.json");
    let aside = backup_dir(&a, &incr1).join("manifest.json.aside");
    std::fs::rename(&manifest, &aside).unwrap();
    assert_refused(&a, &incr2, &[&incr1, "is missing", &incr2]);
    std::fs::rename(&aside, &manifest).unwrap();

    // The full the chain starts from is another cluster's backup.
    let other = Archiving::new("other-cluster", "");
    let other_full = other.backup("full");
    let ours = backup_dir(&a, &full);
    let ours_aside = a.repo.path().join("main/ours-aside");
    std::fs::rename(&ours, &ours_aside).unwrap();
    let theirs = backup_dir(&other, &other_full);
    std::fs::create_dir_all(ours.join("data")).unwrap();
    for entry in std::fs::read_dir(theirs.join("data")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), ours.join("data").join(entry.file_name())).unwrap();
    }
    // Relabelled with the checksums recomputed (a relabelled copy alone is refused as modified).
    let theirs_manifest = std::fs::read(theirs.join("manifest.json")).unwrap();
    let plain = strata_core::manifest::to_plain_json(&theirs_manifest).unwrap();
    let text = serde_json::to_string(&plain)
        .unwrap()
        .replace(&other_full, &full);
    let relabelled = strata_core::manifest::from_plain_json(&serde_json::from_str(&text).unwrap());
    std::fs::write(ours.join("manifest.json"), relabelled).unwrap();
    assert_refused(&a, &incr2, &["belongs to cluster", &full]);
    std::fs::remove_dir_all(&ours).unwrap();
    std::fs::rename(&ours_aside, &ours).unwrap();

    // Repaired, the chain restores.
    let r = a.restore_new(
        "broken-chain-repaired",
        &["--set", &incr2, "--type", "immediate"],
    );
    r.start();
    r.wait_recovered(true);
    assert_eq!(
        r.psql("postgres", "SELECT count(*) FROM t WHERE v = 'two'"),
        "714"
    );
    r.stop();
}

#[test]
fn after_a_promote_backups_on_the_new_timeline_build_on_the_old_timelines_past() {
    let a = archiving_with_a_table("timelines");
    let c = &a.cluster;
    let full = a.backup("full");
    c.psql("postgres", "UPDATE t SET v = 'kept' WHERE id % 100 = 0");
    let branch = c.psql("postgres", "SELECT pg_current_wal_lsn()");
    // After the branch point: not part of the new timeline's history.
    c.psql("postgres", "UPDATE t SET v = 'lost' WHERE id % 100 = 1");
    let old_incr = a.backup("incr");
    c.stop();

    let promoted = a.restore_new(
        "timelines-promoted",
        &[
            "--set",
            &full,
            "--type",
            "lsn",
            "--target",
            &branch,
            "--target-action",
            "promote",
        ],
    );
    promoted.start();
    promoted.wait_recovered(false);
    let p = &promoted;
    assert_eq!(
        p.psql(
            "postgres",
            "SELECT timeline_id FROM pg_control_checkpoint()"
        ),
        "2"
    );
    assert_eq!(
        p.psql("postgres", "SELECT count(*) FROM t WHERE v = 'lost'"),
        "0"
    );
    p.psql(
        "postgres",
        "UPDATE t SET v = 'new timeline' WHERE id % 100 = 2",
    );
    let incr = p.psql("postgres", "SELECT backup_start('incr')");
    let diff = p.psql("postgres", "SELECT backup_start('diff')");
    for (label, kind) in [(&incr, "incr"), (&diff, "diff")] {
        let row = p.psql(
            "postgres",
            &format!(
                "SELECT kind, prior, timeline, method FROM strata_backups WHERE label = '{label}'"
            ),
        );
        // Built on the full (before the branch point), never on the old timeline's later incr; the
        // changed blocks come from timeline 1's summaries up to the branch point, then timeline 2's.
        assert_eq!(row, format!("{kind}|{full}|2|block-summaries"), "{label}");
    }
    assert!(!incr.contains(&old_incr) && !diff.contains(&old_incr));
    let source = p.dumpall();
    p.stop();

    for (label, name) in [(&incr, "timelines-incr"), (&diff, "timelines-diff")] {
        let r = a.restore_new(name, &["--set", label, "--type", "immediate"]);
        r.start();
        r.wait_recovered(true);
        pg_test::assert_same_dump(
            &r.dumpall(),
            &source,
            &format!("backup {label} on timeline 2"),
        );
        r.stop();
    }
}
