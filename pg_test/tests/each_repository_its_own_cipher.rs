//! Each repository with its own cipher and passphrase, local and S3 at once: repo1 a local directory
//! encrypted with a passphrase file (`strata.repo1_cipher_pass_file`), repo2 an S3 bucket (moto on
//! 127.0.0.1) encrypted with its own passphrase (`strata.repo2_cipher_pass`). Archiving into both,
//! backups into each, restores from S3 (a chain; the end of the archive, recovery reading WAL through
//! archive-get with both passphrases); no stored object in either holds a table's text or a passphrase,
//! and every object is sealed; one repository's passphrase does not open the other; key rotation from
//! SQL (`backup_rekey()`, superuser only): a new data key, then a new passphrase, then a chain spanning
//! both keys restored with the new passphrase and refused with the old one.

use pg_test::cli::{conf_file, restore, strata, text};
use pg_test::s3::S3Server;
use pg_test::{assert_same_dump, contains_bytes, files_under, give_to_postgres, Archiving, PgDir};
use std::path::{Path, PathBuf};

const PASS1: &str = "local repository passphrase 4Tq";
const PASS2: &str = "s3 bucket passphrase Wm8";
const NEW_PASS2: &str = "rotated s3 passphrase Kd2";
const MARKER: &str = "STRATA-PER-REPO-MARKER-51c9";
const PASSES: [&str; 3] = [PASS1, PASS2, NEW_PASS2];

fn pass_file(dir: &PgDir, name: &str, pass: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, format!("{pass}\n")).unwrap();
    give_to_postgres(&p);
    p
}

/// Every file under `dir` with its bytes.
fn local_objects(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Neither the marker nor any passphrase is stored, and every object in the pg_strata format is
/// sealed (its encryption byte says AES-256-GCM, its clear digest field is zeros).
fn assert_nothing_in_clear(objects: &[(String, Vec<u8>)]) {
    let mut sealed = 0;
    for (name, bytes) in objects {
        assert!(
            !contains_bytes(bytes, MARKER.as_bytes()),
            "the marker in {name}"
        );
        for p in PASSES {
            assert!(
                !contains_bytes(bytes, p.as_bytes()),
                "a passphrase in {name}"
            );
        }
        if bytes.starts_with(b"STRATAOB") {
            assert_eq!(bytes[11], 1, "{name} is not encrypted");
            assert_eq!(&bytes[20..52], &[0u8; 32], "a digest in clear in {name}");
            sealed += 1;
        }
    }
    assert!(sealed > 10, "only {sealed} sealed objects");
}

/// A `--config` file for the CLI: repo1 (local) and repo2 (S3), repo1's passphrase file and, when
/// given, repo2's.
fn cli_conf(
    dir: &PgDir,
    local: &str,
    s3: &S3Server,
    pass1: &Path,
    pass2: Option<&Path>,
) -> PathBuf {
    let mut text = format!(
        "strata.repo1 = '{local}'\n{}strata.repo1_cipher_pass_file = '{}'\n",
        s3.conf(2, "pg"),
        pass1.display()
    );
    if let Some(p) = pass2 {
        text.push_str(&format!(
            "strata.repo2_cipher_pass_file = '{}'\n",
            p.display()
        ));
    }
    conf_file(dir, &text)
}

fn workload(a: &Archiving, step: u32) {
    a.cluster.psql(
        "postgres",
        &format!(
            "CREATE TABLE IF NOT EXISTS secrets (id int primary key, what text);
             INSERT INTO secrets SELECT g, '{MARKER} ' || g
               FROM generate_series({0} * 5000 + 1, {0} * 5000 + 5000) g;
             UPDATE secrets SET what = what || ' step {0}' WHERE id % 89 = {0};",
            step
        ),
    );
}

#[test]
fn each_repository_is_sealed_with_its_own_key_and_rotates_from_sql() {
    let s3 = S3Server::start("strata-e2e-ciphers");
    let keys = PgDir::new("strata-keys-");
    let pass1 = pass_file(&keys, "pass1", PASS1);
    let pass2 = pass_file(&keys, "pass2", PASS2);
    let new_pass2 = pass_file(&keys, "pass2-new", NEW_PASS2);
    let a = Archiving::new(
        "ciphers",
        &format!(
            "{}strata.repo1_cipher_type = 'aes-256-gcm'\nstrata.repo1_cipher_pass_file = '{}'\n\
             strata.repo2_cipher_type = 'aes-256-gcm'\nstrata.repo2_cipher_pass = '{PASS2}'\n",
            s3.conf(2, "pg"),
            pass1.display()
        ),
    );
    let c = &a.cluster;
    let local = a.repo_url();
    let confdir = PgDir::new("strata-conf-ciphers-");
    // The CLI's settings: both passphrases as files.
    let conf = cli_conf(&confdir, &local, &s3, &pass1, Some(&pass2));

    workload(&a, 1);
    a.archive_all();
    let full1 = a.backup("full");
    let full2 = c.psql("postgres", "SELECT backup_start('full', repo => 2)");
    workload(&a, 2);
    let incr2 = c.psql("postgres", "SELECT backup_start('incr', repo => 2)");
    let dump_incr2 = c.dumpall();
    workload(&a, 3);
    a.archive_all();
    let listing = c.psql(
        "postgres",
        "SELECT string_agg(repo || ':' || kind, ' ' ORDER BY repo, label) FROM strata_backups",
    );
    assert_eq!(listing, "1:full 2:full 2:incr", "{full1} {full2} {incr2}");

    // Both stanzas encrypted; nothing in clear in either.
    let id1 = std::fs::read_to_string(a.repo.path().join("main/strata.repo")).unwrap();
    let in_bucket = s3.stanza_objects("pg", "main");
    let object = |objects: &[(String, Vec<u8>)], key: &str| -> Vec<u8> {
        objects
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{key} not in the bucket"))
            .1
            .clone()
    };
    let id2 = String::from_utf8(object(&in_bucket, "pg/main/strata.repo")).unwrap();
    for id in [&id1, &id2] {
        assert!(id.contains("\"cipher\": \"aes-256-gcm\""), "{id}");
    }
    assert_nothing_in_clear(&local_objects(a.repo.path()));
    assert_nothing_in_clear(&in_bucket);

    // One repository's passphrase does not open the other's keyring.
    let swapped = PgDir::new("strata-conf-swapped-");
    let swapped = cli_conf(&swapped, &local, &s3, &pass1, Some(&pass1));
    let out = strata(&swapped, &["info", "--repo-number", "2"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("wrong cipher passphrase"),
        "{}",
        text(&out)
    );

    // The chain in S3, restored to its end.
    let (r, _) = restore(
        "ciphers-incr2",
        &conf,
        &["--set", &incr2, "--type", "immediate"],
        true,
    );
    assert_same_dump(&r.dumpall(), &dump_incr2, "repo2's incr");
    r.stop();

    // --cipher-pass-file is the passphrase of the repository --repo-number names; a wrong one is
    // refused before anything is written.
    let no_pass2 = PgDir::new("strata-conf-nopass2-");
    let no_pass2 = cli_conf(&no_pass2, &local, &s3, &pass1, None);
    let target = PgDir::new("strata-restore-wrongpass-");
    let pgdata = target.path().join("data");
    let out = strata(
        &no_pass2,
        &[
            "restore",
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--repo-number",
            "2",
            "--cipher-pass-file",
            pass1.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("wrong cipher passphrase"),
        "{}",
        text(&out)
    );
    assert!(
        !pgdata.exists(),
        "a refused restore left {}",
        pgdata.display()
    );

    // Rotation from SQL: superusers only; a new data key, then the keyring under a new passphrase.
    c.psql(
        "postgres",
        "CREATE ROLE backup_op LOGIN IN ROLE strata_operator",
    );
    let e = c
        .try_psql(
            "postgres",
            "SET ROLE backup_op; SELECT backup_rekey(2, true)",
        )
        .unwrap_err();
    assert!(e.contains("superusers only"), "{e}");
    let e = c
        .try_psql("postgres", "SELECT backup_rekey(2)")
        .unwrap_err();
    assert!(e.contains("say what to rotate"), "{e}");
    let said = c.psql("postgres", "SELECT backup_rekey(2, new_data_key => true)");
    assert!(said.contains("data key 2 added"), "{said}");
    let said = c.psql(
        "postgres",
        &format!(
            "SELECT backup_rekey(2, new_cipher_pass_file => '{}')",
            new_pass2.display()
        ),
    );
    assert!(said.contains("new passphrase"), "{said}");
    c.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET strata.repo2_cipher_pass = '';
             ALTER SYSTEM SET strata.repo2_cipher_pass_file = '{}';
             SELECT pg_reload_conf();",
            new_pass2.display()
        ),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    workload(&a, 4);
    let incr2b = c.psql("postgres", "SELECT backup_start('incr', repo => 2)");
    let dump_incr2b = c.dumpall();
    workload(&a, 5);
    a.archive_all();
    let dump_end = c.dumpall();
    // The new backup's objects use data key 2, its reference's data key 1.
    let in_bucket = s3.stanza_objects("pg", "main");
    let manifest =
        |label: &str| object(&in_bucket, &format!("pg/main/backup/{label}/manifest.json"));
    let key_id = |b: &[u8]| u32::from_le_bytes(b[56..60].try_into().unwrap());
    assert_eq!(key_id(&manifest(&incr2)), 1);
    assert_eq!(key_id(&manifest(&incr2b)), 2);

    // The old passphrase no longer opens repo2; the new one restores the chain spanning both keys, and
    // recovery to the end of the archive (restore_command carries both passphrase files).
    let out = strata(&conf, &["info", "--repo-number", "2"]);
    assert!(
        text(&out).contains("wrong cipher passphrase"),
        "{}",
        text(&out)
    );
    let (r, _) = restore(
        "ciphers-incr2b",
        &no_pass2,
        &[
            "--repo-number",
            "2",
            "--cipher-pass-file",
            new_pass2.to_str().unwrap(),
            "--set",
            &incr2b,
            "--type",
            "immediate",
        ],
        true,
    );
    assert_same_dump(&r.dumpall(), &dump_incr2b, "a chain spanning two data keys");
    r.stop();
    let (r, _) = restore(
        "ciphers-end",
        &no_pass2,
        &[
            "--repo-number",
            "2",
            "--cipher-pass-file",
            new_pass2.to_str().unwrap(),
        ],
        false,
    );
    assert_same_dump(&r.dumpall(), &dump_end, "the end of the archive from repo2");
    let auto = std::fs::read_to_string(r.datadir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains(&format!("repo2_cipher_pass_file={}", new_pass2.display())),
        "{auto}"
    );
    r.stop();

    // strata info tells what uses each data key.
    let out = strata(
        &no_pass2,
        &[
            "info",
            "--repo-number",
            "2",
            "--cipher-pass-file",
            new_pass2.to_str().unwrap(),
        ],
    );
    let info = text(&out);
    assert!(out.status.success(), "{info}");
    assert!(
        info.contains(&format!(
            "key 1: backups {full2}, {incr2}; archived WAL and summaries"
        )) && info.contains(&format!("key 2: backups {incr2b}")),
        "{info}"
    );

    // repo1's passphrase file lost: repo1 says so when used, repo2 still works.
    let lost = PgDir::new("strata-conf-lost1-");
    let lost = cli_conf(
        &lost,
        &local,
        &s3,
        Path::new("/nonexistent/pass1"),
        Some(&new_pass2),
    );
    let out = strata(&lost, &["info", "--repo-number", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = strata(&lost, &["info", "--repo-number", "1"]);
    assert!(
        !out.status.success() && text(&out).contains("strata.repo1_cipher_pass_file"),
        "{}",
        text(&out)
    );

    // backup_recoverability() per repository: each one's oldest backup.
    let rec = c.psql(
        "postgres",
        "SELECT string_agg(repo || ':' || backup, ' ' ORDER BY repo) FROM backup_recoverability()",
    );
    assert_eq!(rec, format!("1:{full1} 2:{full2}"));
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT backup FROM backup_recoverability(repo => 2)"
        ),
        full2
    );

    // strata_check() checks each repository, a WAL switch reaching both.
    let checks = c.psql(
        "postgres",
        "SELECT string_agg(\"check\" || ':' || status, ',') FROM strata_check(60) \
         WHERE \"check\" LIKE 'repo%' AND \"check\" NOT LIKE '%usage' AND \"check\" NOT LIKE '%verify'",
    );
    assert_eq!(
        checks,
        "repo1 repository:ok,repo1 stanza:ok,repo2 repository:ok,repo2 stanza:ok,\
         repo1 wal_archived:ok,repo2 wal_archived:ok"
    );

    // The secrets: hidden from everyone in SHOW, absent for a non-superuser, never in the log.
    assert_eq!(c.psql("postgres", "SHOW strata.repo2_cipher_pass"), "");
    c.psql(
        "postgres",
        &format!("ALTER SYSTEM SET strata.repo3_cipher_pass = '{PASS1}'; SELECT pg_reload_conf()"),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        c.psql("postgres", "SHOW strata.repo3_cipher_pass"),
        "********"
    );
    let listed = c.psql(
        "postgres",
        "SET ROLE backup_op; SELECT count(*) FROM pg_settings WHERE name LIKE 'strata.repo%cipher_pass'",
    );
    assert_eq!(listed, "0");
    c.stop();
    let log = c.log();
    for p in [PASS2, NEW_PASS2] {
        assert!(!log.contains(p), "a passphrase in the server log");
    }
}
