//! S3 repositories and several repositories at once, on real clusters against a real S3 server (moto on
//! 127.0.0.1 behind a gate that can be closed):
//! - S3 alone: archiving, a full + incr + diff chain, each backup restored (dump equal), PITR to a named
//!   restore point and to the end of the archive, recovery reading WAL through archive-get from S3;
//! - repo1 local + repo2 S3: every segment in both (byte-identical through archive-get from each),
//!   backups into each (an incr builds on its own repository's full), restores from each; the S3 server
//!   stopped for a while (`.ready` files kept, archiving catches up, nothing lost); then the local
//!   repository deleted (restore and archive-get from S3 alone);
//! - secrets: absent from the server log, `strata info`, manifests and error messages; a non-superuser
//!   can neither read nor set them.

use pg_test::cli::{conf_file, restore, strata, text};
use pg_test::s3::{S3Server, S3_KEY, S3_SECRET};
use pg_test::{assert_same_dump, strata_bin, write_rows, Archiving, PgDir};
use std::path::Path;
use std::process::Command;

#[test]
fn s3_alone_archives_backs_up_a_chain_and_restores_each_backup_and_any_point() {
    let s3 = S3Server::start("strata-e2e-alone");
    let a = Archiving::new("s3alone", &s3.conf(1, "pg"));
    let confdir = PgDir::new("strata-conf-alone-");
    let conf = conf_file(&confdir, &s3.conf(1, "pg"));
    let c = &a.cluster;

    write_rows(c, 1, 10000);
    a.archive_all();
    let full = a.backup("full");
    let dump_full = c.dumpall();
    write_rows(c, 2, 10000);
    let incr = a.backup("incr");
    let dump_incr = c.dumpall();
    write_rows(c, 3, 10000);
    c.psql("postgres", "DELETE FROM t WHERE id % 5 = 0; VACUUM t");
    let diff = a.backup("diff");
    let dump_diff = c.dumpall();
    let kinds = c.psql(
        "postgres",
        "SELECT string_agg(kind || ':' || coalesce(prior, '-') || ':' || repo, ' ' ORDER BY label) FROM strata_backups",
    );
    assert_eq!(kinds, format!("full:-:1 incr:{full}:1 diff:{full}:1"));
    // PITR: a named point, then more changes.
    c.psql(
        "postgres",
        "CREATE TABLE events (what text); INSERT INTO events VALUES ('A')",
    );
    c.psql("postgres", "SELECT pg_create_restore_point('before_b')");
    c.psql("postgres", "INSERT INTO events VALUES ('B')");
    a.archive_all();
    let dump_end = c.dumpall();

    // Everything is in the bucket: the segments, the summaries, the manifests.
    let keys = s3.keys("pg/main/");
    assert!(keys.iter().any(|k| k.contains("/archive/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with(".blkref")), "{keys:?}");
    for label in [&full, &incr, &diff] {
        assert!(
            keys.iter()
                .any(|k| k == &format!("pg/main/backup/{label}/manifest.json")),
            "{label}: {keys:?}"
        );
    }

    for (label, dump, name) in [
        (&full, &dump_full, "alone-full"),
        (&incr, &dump_incr, "alone-incr"),
        (&diff, &dump_diff, "alone-diff"),
    ] {
        let (r, _) = restore(name, &conf, &["--set", label, "--type", "immediate"], true);
        assert_same_dump(&r.dumpall(), dump, &format!("restore of {label} from S3"));
        r.stop();
    }
    // Recovery reads the WAL from S3 through archive-get (restore_command carries --config).
    let (r, _) = restore(
        "alone-pitr",
        &conf,
        &[
            "--type",
            "name",
            "--target",
            "before_b",
            "--target-action",
            "promote",
        ],
        false,
    );
    assert_eq!(
        r.psql("postgres", "SELECT string_agg(what, ',') FROM events"),
        "A"
    );
    let auto = std::fs::read_to_string(r.datadir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("--config") && auto.contains("--repo1 ''s3://"),
        "{auto}"
    );
    assert!(
        !auto.contains(S3_SECRET) && !auto.contains(S3_KEY),
        "{auto}"
    );
    r.stop();
    let (r, _) = restore("alone-end", &conf, &[], false);
    assert_same_dump(
        &r.dumpall(),
        &dump_end,
        "restore to the end of the archive from S3",
    );
    r.stop();
}

/// archive-get of `wal` from repository `n`: its bytes.
fn get_from(conf: &Path, local: &str, n: &str, wal: &str, dir: &Path) -> Vec<u8> {
    let dest = dir.join(format!("{wal}.{n}"));
    let out = Command::new(strata_bin())
        .args(["archive-get", wal])
        .arg(&dest)
        .args(["--repo", local, "--repo-number", n, "--config"])
        .arg(conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "archive-get {wal} from repo{n}: {}",
        text(&out)
    );
    std::fs::read(&dest).unwrap()
}

fn assert_every_segment_in_both(a: &Archiving, conf: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let local = a.repo_url();
    let names = a.archived_segment_names();
    assert!(names.len() >= 3, "{names:?}");
    for wal in &names {
        let one = get_from(conf, &local, "1", wal, dir.path());
        let two = get_from(conf, &local, "2", wal, dir.path());
        assert_eq!(one.len(), 16 << 20, "{wal}");
        assert!(one == two, "{wal} differs between repo1 and repo2");
    }
}

#[test]
fn local_and_s3_at_once_survive_s3_down_and_the_local_repository_lost() {
    let s3 = S3Server::start("strata-e2e-two");
    let a = Archiving::new("tworepos", &s3.conf(2, "pg"));
    let confdir = PgDir::new("strata-conf-two-");
    let conf = conf_file(&confdir, &s3.conf(2, "pg"));
    let local = a.repo_url();
    let c = &a.cluster;

    write_rows(c, 1, 10000);
    a.archive_all();
    let full1 = a.backup("full");
    let dump_full1 = c.dumpall();
    write_rows(c, 2, 10000);
    let full2 = c.psql("postgres", "SELECT backup_start('full', repo => 2)");
    write_rows(c, 3, 10000);
    let incr2 = c.psql("postgres", "SELECT backup_start('incr', repo => 2)");
    let dump_incr2 = c.dumpall();
    let listing = c.psql(
        "postgres",
        "SELECT string_agg(repo || ':' || kind || ':' || coalesce(prior, '-'), ' ' ORDER BY label, repo) FROM strata_backups",
    );
    assert_eq!(listing, format!("1:full:- 2:full:- 2:incr:{full2}"));
    let e = c
        .try_psql("postgres", "SELECT backup_start('full', repo => 3)")
        .unwrap_err();
    assert!(
        e.contains("strata.repo3") && e.contains("not configured"),
        "{e}"
    );
    a.archive_all();
    assert_every_segment_in_both(&a, &conf);

    // From each repository.
    let (r, out) = restore(
        "two-from1",
        &conf,
        &[
            "--repo",
            &local,
            "--repo-number",
            "1",
            "--set",
            &full1,
            "--type",
            "immediate",
        ],
        true,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("from repo1"),
        "{}",
        text(&out)
    );
    assert_same_dump(&r.dumpall(), &dump_full1, "full from repo1");
    r.stop();
    // repo2's incr without --repo-number: repo1 does not have it, repo2 does.
    let (r, out) = restore(
        "two-from2",
        &conf,
        &["--repo", &local, "--set", &incr2, "--type", "immediate"],
        true,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("from repo2"),
        "{}",
        text(&out)
    );
    assert_same_dump(&r.dumpall(), &dump_incr2, "incr from repo2");
    r.stop();

    // S3 down: archiving stalls (the .ready files stay), repo1 keeps up, nothing is lost.
    s3.gate.close();
    let failed_before = a.failed_count();
    write_rows(c, 4, 10000);
    let stalled = a.switch_wal();
    c.wait_for("a failed archive attempt", 120, || {
        a.failed_count() > failed_before
    });
    let ready = c
        .wal_dir()
        .join("archive_status")
        .join(format!("{stalled}.ready"));
    assert!(ready.exists(), "{stalled}.ready kept while repo2 is down");
    let err = a.status("last_error");
    assert!(err.contains("repo2"), "{err}");
    assert!(!err.contains(S3_SECRET), "{err}");
    write_rows(c, 5, 10000);
    let _ = a.switch_wal();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(ready.exists());
    s3.gate.open();
    a.archive_all();
    assert_every_segment_in_both(&a, &conf);

    // Secrets: not in the server log, strata info, the manifests, the local repository, error messages.
    let info = strata(&conf, &["info", "--repo", &local]);
    assert!(info.status.success(), "{}", text(&info));
    let info = text(&info);
    assert!(
        info.contains("(repo2)") && info.contains("s3://strata-e2e-two/pg"),
        "{info}"
    );
    // The manifests in the bucket, read with strata_core's own S3 client.
    let settings = strata_core::config::parse_conf(&std::fs::read_to_string(&conf).unwrap());
    let set = strata_core::config::RepoSet::from_settings(&|n| settings.get(n).cloned()).unwrap();
    let repo = strata_core::Repo::open_config(set.get(2).unwrap()).unwrap();
    for label in [&full2, &incr2] {
        let key = repo.keys().backup_manifest(label).unwrap();
        let body = repo.storage().get(&key).unwrap().expect("the manifest");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(label.as_str()), "{key}: not a manifest");
        assert!(!body.contains(S3_SECRET) && !body.contains(S3_KEY), "{key}");
    }
    let repo_grep = Command::new("grep")
        .args(["-r", "-l", S3_SECRET])
        .arg(a.repo.path())
        .output()
        .unwrap();
    assert!(repo_grep.stdout.is_empty(), "{}", text(&repo_grep));
    // A refused secret is not echoed (PostgreSQL itself logs the failing statement's text, see README).
    let e = c
        .try_psql(
            "postgres",
            "ALTER SYSTEM SET strata.repo2_s3_key_secret = E'bad\\001other-secret-value'",
        )
        .unwrap_err();
    assert!(
        !e.contains("other-secret-value") && e.contains("not shown"),
        "{e}"
    );
    c.psql("postgres", "SELECT pg_reload_conf()");
    // A non-superuser can neither read nor set them, nor see them listed.
    c.psql("postgres", "CREATE ROLE nobody_special LOGIN");
    for sql in [
        "SHOW strata.repo2_s3_key_secret",
        "SELECT current_setting('strata.repo2_s3_key_secret')",
        "SHOW strata.repo2_s3_key",
        "SET strata.repo2_s3_key_secret = 'x'",
    ] {
        let e = c
            .try_psql("postgres", &format!("SET ROLE nobody_special; {sql}"))
            .unwrap_err();
        assert!(e.contains("ERROR"), "{sql}: {e}");
    }
    let listed = c.psql(
        "postgres",
        "SET ROLE nobody_special; SELECT count(*) FROM pg_settings WHERE name LIKE 'strata.repo%key%'",
    );
    assert_eq!(listed, "0");
    assert_eq!(
        c.psql("postgres", "SHOW strata.repo2_s3_key_secret"),
        S3_SECRET
    );
    a.archive_all();
    let dump_last = c.dumpall();
    c.stop();
    let log = c.log();
    assert!(!log.contains(S3_SECRET), "the secret is in the server log");

    // The local repository lost: restore (the newest backup of the first repository that has one, so
    // repo2's incr) and archive-get from S3 alone.
    std::fs::remove_dir_all(a.repo.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wal = a.archived_segment_names_from_s3(&s3);
    let dest = dir.path().join("seg");
    let out = Command::new(strata_bin())
        .args(["archive-get", &wal])
        .arg(&dest)
        .args(["--repo", &local, "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("repo1"),
        "{}",
        text(&out)
    );
    let (r, out) = restore("two-s3only", &conf, &["--repo", &local], false);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{incr2} from repo2")),
        "{}",
        text(&out)
    );
    assert_same_dump(
        &r.dumpall(),
        &dump_last,
        "restore from S3 alone to the end of the archive",
    );
    r.stop();
}

trait S3Names {
    fn archived_segment_names_from_s3(&self, s3: &S3Server) -> String;
}

impl S3Names for Archiving {
    /// The newest archived segment's name, from the bucket's listing.
    fn archived_segment_names_from_s3(&self, s3: &S3Server) -> String {
        let mut names: Vec<String> = s3
            .keys("pg/main/archive/")
            .iter()
            .filter_map(|k| k.rsplit('/').next().map(str::to_string))
            .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        names.sort();
        names.pop().expect("segments in the bucket")
    }
}
