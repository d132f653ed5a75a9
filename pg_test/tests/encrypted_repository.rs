//! An encrypted repository (`strata.repo1_cipher_type = 'aes-256-gcm'`): archiving, full and
//! incremental backups, restore with a dump compare and point-in-time recovery all work through the
//! cipher; no stored file holds a table's text or a known WAL segment's bytes; a flipped bit is refused
//! before restore writes anything; rotation changes the passphrase and adds data keys without
//! rewriting; the passphrase appears in no log and no output.

use pg_test::{assert_same_dump, contains_bytes, files_under, Archiving, PgDir};
use std::path::{Path, PathBuf};

const PASS: &str = "correct horse battery staple 7Qx";
const NEW_PASS: &str = "a brand new passphrase 9Zk";
const MARKER: &str = "STRATA-SECRET-MARKER-8d1f";

fn pass_file(dir: &PgDir, name: &str, pass: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, format!("{pass}\n")).unwrap();
    pg_test::give_to_postgres(&p);
    p
}

fn encrypted(name: &str) -> Archiving {
    Archiving::new(
        name,
        &format!("strata.repo1_cipher_type = 'aes-256-gcm'\nstrata.repo1_cipher_pass = '{PASS}'\n"),
    )
}

/// `strata ARGS --cipher-pass-file FILE` on the test's repository: (success, stdout, stderr).
fn strata(a: &Archiving, file: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    let f = file.to_str().unwrap();
    all.extend(["--cipher-pass-file", f]);
    let out = a.strata(&all);
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    for p in [PASS, NEW_PASS] {
        assert!(
            !o.contains(p) && !e.contains(p),
            "the passphrase in the output of {args:?}"
        );
    }
    (out.status.success(), o, e)
}

/// Data objects of a backup, sorted.
fn data_objects(a: &Archiving, label: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(a.repo.path().join("main/backup").join(label).join("data"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.to_string_lossy().contains('#'))
            .collect();
    v.sort();
    v
}

/// The key id in the header of the first object stored in a file (bytes 56..60 when encrypted).
fn key_id(path: &Path) -> u32 {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"STRATAOB");
    assert_eq!(b[11], 1, "{} is not encrypted", path.display());
    assert_eq!(
        &b[20..52],
        &[0u8; 32],
        "a plaintext digest in clear in {}",
        path.display()
    );
    u32::from_le_bytes(b[56..60].try_into().unwrap())
}

#[test]
fn an_encrypted_repository_backs_up_restores_and_hides_its_content() {
    let a = encrypted("crypt");
    let c = &a.cluster;
    let keys = PgDir::new("strata-pass-");
    // A name the configuration file must escape: restore writes it into restore_command.
    let good = pass_file(&keys, "it's a \\ \"pass\"\nfile", PASS);
    let wrong = pass_file(&keys, "wrong", "not the passphrase");

    c.psql(
        "postgres",
        &format!(
            "CREATE TABLE secrets (id int primary key, what text);
             INSERT INTO secrets SELECT g, '{MARKER} ' || g FROM generate_series(1, 5000) g;
             CREATE TABLE events (id int, what text);"
        ),
    );
    let full = a.backup("full");
    c.psql(
        "postgres",
        &format!("UPDATE secrets SET what = what || ' {MARKER}' WHERE id % 7 = 0"),
    );
    let incr = a.backup("incr");
    assert!(incr.contains(&full) && incr.ends_with('I'), "{incr}");
    c.psql("postgres", "INSERT INTO events VALUES (1, 'A')");
    c.psql("postgres", "SELECT pg_create_restore_point('before_b')");
    c.psql("postgres", "INSERT INTO events VALUES (2, 'B')");
    let last = a.switch_wal();
    a.wait_archived(&last);
    let source = c.dumpall();

    // The identity says it is encrypted; nothing stored holds the marker, the passphrase, a known
    // segment's first bytes (its page header with the system identifier), or a digest in clear.
    let id = std::fs::read_to_string(a.repo.path().join("main/strata.repo")).unwrap();
    assert!(id.contains("\"cipher\": \"aes-256-gcm\""), "{id}");
    let first_segment = a.archived_segment_names()[0].clone();
    let known = std::fs::read(c.wal_dir().join(&first_segment)).unwrap();
    for f in files_under(a.repo.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains_bytes(&bytes, MARKER.as_bytes()),
            "the marker in {}",
            f.display()
        );
        assert!(
            !contains_bytes(&bytes, PASS.as_bytes()),
            "the passphrase in {}",
            f.display()
        );
        assert!(
            !contains_bytes(&bytes, &known[..64]),
            "a segment's bytes in {}",
            f.display()
        );
    }
    assert_eq!(key_id(&a.archived_object("main", &first_segment)), 1);
    assert_eq!(key_id(&a.manifest_object(&full).0), 1);
    for o in data_objects(&a, &full) {
        assert_eq!(key_id(&o), 1);
    }

    // info, verify: with the passphrase they work; without or with a wrong one, one clear error.
    let (ok, out, _) = strata(&a, &good, &["info"]);
    assert!(
        ok && out.contains(&incr)
            && out.contains("encryption: aes-256-gcm, data keys 1 (current 1)"),
        "{out}"
    );
    let (ok, out, err) = strata(&a, &good, &["verify"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = strata(&a, &wrong, &["info"]);
    assert!(
        !ok && err.contains("cannot decrypt the repository key: wrong cipher passphrase"),
        "{err}"
    );
    // It names the stanza, the repository and where the passphrase comes from.
    assert!(
        err.contains("stanza 'main' of repo1 (") && err.contains("--cipher-pass-file"),
        "{err}"
    );
    assert_eq!(
        err.lines().count(),
        1,
        "one message, not a stack of object errors: {err}"
    );
    let out = a.strata(&["info"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is encrypted") && err.contains("--cipher-pass-file"),
        "{err}"
    );

    // A flipped bit in a data object of the full backup: restore refuses before writing anything.
    let victim = data_objects(&a, &full)[0].clone();
    let original = std::fs::read(&victim).unwrap();
    let mut bad = original.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x10;
    std::fs::write(&victim, &bad).unwrap();
    let root = PgDir::new("strata-restore-flip-");
    let target = root.path().join("data");
    let f = good.to_str().unwrap();
    let out = a.restore_into(&target, &["--cipher-pass-file", f]);
    assert!(!out.status.success(), "a flipped bit was restored");
    assert!(
        !target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(),
        "restore wrote into the target"
    );
    let (ok, out, _) = strata(&a, &good, &["verify"]);
    assert!(
        !ok && out.contains(victim.file_name().unwrap().to_str().unwrap()),
        "{out}"
    );
    std::fs::write(&victim, &original).unwrap();

    // The whole chain restores to the same dump (archive-get of the restored server decrypts too).
    let r = a.restore_new("crypt-latest", &["--cipher-pass-file", f]);
    let auto = std::fs::read_to_string(r.datadir.join("postgresql.auto.conf")).unwrap();
    // The file's path, escaped for the shell and the configuration file (the server's start below
    // proves it reads back as the file's name), and never the passphrase.
    let dir = keys.path().display();
    assert!(
        auto.contains(&format!("repo1_cipher_pass_file={dir}/it")) && !auto.contains(PASS),
        "{auto}"
    );
    r.start();
    r.wait_recovered(true);
    assert_same_dump(&r.dumpall(), &source, "encrypted chain");
    r.stop();

    // Point-in-time recovery through encrypted WAL.
    let r = a.restore_new(
        "crypt-pitr",
        &[
            "--type",
            "name",
            "--target",
            "before_b",
            "--cipher-pass-file",
            f,
        ],
    );
    r.start();
    r.wait_recovered(true);
    assert_eq!(
        r.psql(
            "postgres",
            "SELECT string_agg(what, ',' ORDER BY id) FROM events"
        ),
        "A"
    );
    r.stop();

    // The passphrase is hidden: shown as ******** to superusers, refused to others, never logged.
    assert_eq!(
        c.psql("postgres", "SHOW strata.repo1_cipher_pass"),
        "********"
    );
    c.psql("postgres", "CREATE ROLE plain LOGIN");
    let e = c
        .try_psql("postgres", "SET ROLE plain; SHOW strata.repo1_cipher_pass")
        .unwrap_err();
    assert!(
        e.contains("permission denied") || e.contains("must be superuser"),
        "{e}"
    );
    assert_eq!(
        c.psql(
            "postgres",
            "SET ROLE plain; SELECT count(*) FROM pg_settings WHERE setting LIKE '%horse%'"
        ),
        "0"
    );
    assert!(!c.log().contains(PASS), "the passphrase in the server log");

    // Run as root with a passphrase file only root reads: restored, with a warning that the server
    // (postgres) may not read it.
    let root_only = keys.path().join("root-only");
    std::fs::write(&root_only, format!("{PASS}\n")).unwrap();
    std::os::unix::fs::chown(&root_only, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(
        &root_only,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let target = PgDir::new("strata-restore-rootpass-");
    let dest = target.path().join("data");
    let (ok, _, err) = strata(
        &a,
        &root_only,
        &["restore", "--pgdata", dest.to_str().unwrap()],
    );
    assert!(
        ok && err.contains("may not be able to read") && err.contains("root-only"),
        "{err}"
    );
}

#[test]
fn rotation_changes_the_passphrase_and_adds_data_keys_without_rewriting() {
    let a = encrypted("rekey");
    let c = &a.cluster;
    let keys = PgDir::new("strata-pass-");
    let old = pass_file(&keys, "old", PASS);
    let new = pass_file(&keys, "new", NEW_PASS);
    c.psql(
        "postgres",
        "CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
    );
    let full = a.backup("full");

    // A new passphrase: one new keyring generation; the old passphrase stops opening it.
    let (ok, out, err) = strata(
        &a,
        &old,
        &["rekey", "--new-cipher-pass-file", new.to_str().unwrap()],
    );
    assert!(ok, "{out}{err}");
    let (ok, _, err) = strata(&a, &old, &["info"]);
    assert!(!ok && err.contains("wrong cipher passphrase"), "{err}");
    let (ok, out, _) = strata(&a, &new, &["info"]);
    assert!(ok && out.contains(&full), "{out}");
    let keyring: Vec<String> = std::fs::read_dir(a.repo.path().join("main/keyring"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains('#'))
        .collect();
    assert_eq!(keyring, vec!["00000002.json".to_string()]);

    // Killed (-9) during a rotation, before its write: the old keyring stays in force; after its
    // write (before the old generation is deleted): the new one is in force. Never neither.
    let third = pass_file(&keys, "third", "a third passphrase");
    for (kill_after_ms, works, fails) in [(1000, &new, &third), (4500, &third, &new)] {
        let mut child = std::process::Command::new(pg_test::strata_bin())
            .args(["rekey", "--new-cipher-pass-file", third.to_str().unwrap()])
            .args(["--cipher-pass-file", new.to_str().unwrap()])
            .arg("--repo")
            .arg(a.repo_url())
            .args(["--stanza", "main"])
            .env("STRATA_TEST_REKEY_PAUSE_MS", "3000")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(kill_after_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let (ok, out, err) = strata(&a, works, &["info"]);
        assert!(
            ok && out.contains(&full),
            "killed after {kill_after_ms} ms: {err}"
        );
        let (ok, _, err) = strata(&a, fails, &["info"]);
        assert!(!ok && err.contains("wrong cipher passphrase"), "{err}");
    }
    // Back to the new passphrase; the generation left behind by the kill is deleted.
    let (ok, out, err) = strata(
        &a,
        &third,
        &["rekey", "--new-cipher-pass-file", new.to_str().unwrap()],
    );
    assert!(ok, "{out}{err}");
    let mut gens: Vec<String> = std::fs::read_dir(a.repo.path().join("main/keyring"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains('#'))
        .collect();
    gens.sort();
    assert_eq!(gens, vec!["00000004.json".to_string()]);

    // The server takes the new passphrase with a restart (a reload would make PostgreSQL log the
    // changed value).
    c.stop();
    c.append_conf(&format!("strata.repo1_cipher_pass = '{NEW_PASS}'"));
    c.start();

    // A new data key: the next backup's objects use it, the full's keep key 1.
    let (ok, out, err) = strata(&a, &new, &["rekey", "--new-data-key"]);
    assert!(ok && out.contains("data key 2"), "{out}{err}");
    c.psql("postgres", "UPDATE t SET v = v || 'x' WHERE id % 5 = 0");
    let incr = a.backup("incr");
    for o in data_objects(&a, &incr) {
        assert_eq!(key_id(&o), 2, "{}", o.display());
    }
    assert_eq!(key_id(&a.manifest_object(&incr).0), 2);
    for o in data_objects(&a, &full) {
        assert_eq!(key_id(&o), 1, "{}", o.display());
    }
    let (ok, out, _) = strata(&a, &new, &["info"]);
    assert!(ok && out.contains("data keys 1, 2 (current 2)"), "{out}");
    let last = a.switch_wal();
    a.wait_archived(&last);
    let source = c.dumpall();

    // The chain spans both keys and restores with the new passphrase; the old one fails.
    let root = PgDir::new("strata-restore-old-");
    let out = a.restore_into(
        &root.path().join("data"),
        &["--cipher-pass-file", old.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("wrong cipher passphrase"),
        "{err}"
    );
    let r = a.restore_new(
        "rekey-latest",
        &["--cipher-pass-file", new.to_str().unwrap()],
    );
    r.start();
    r.wait_recovered(true);
    assert_same_dump(&r.dumpall(), &source, "chain over two data keys");
    r.stop();
    assert!(
        !c.log().contains(PASS) && !c.log().contains(NEW_PASS),
        "a passphrase in the server log"
    );
}

/// Rewrites the last 4 bytes of `data` so that its CRC-32C (Castagnoli, reflected) is `want`: what
/// anyone who can write the repository can do to any object. Backwards from the wanted register each
/// step's table entry is the one whose top byte matches; forwards, those entries give the bytes.
fn force_crc32c(data: &mut [u8], want: u32) {
    let table: Vec<u32> = (0..256u32)
        .map(|i| {
            (0..8).fold(i, |c, _| match c & 1 {
                1 => (c >> 1) ^ 0x82F6_3B78,
                _ => c >> 1,
            })
        })
        .collect();
    let n = data.len() - 4;
    let mut idx = [0usize; 4];
    let mut r = !want;
    for k in (0..4).rev() {
        idx[k] = (0..256).find(|&i| table[i] >> 24 == r >> 24).unwrap();
        r = (r ^ table[idx[k]]) << 8;
    }
    let mut reg = !crc32c::crc32c(&data[..n]);
    for k in 0..4 {
        data[n + k] = ((reg ^ idx[k] as u32) & 0xff) as u8;
        reg = (reg >> 8) ^ table[idx[k]];
    }
    assert_eq!(crc32c::crc32c(data), want, "the forgery keeps the CRC-32C");
}

/// Every file under `dir` with its bytes, sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = files_under(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_forged_object_that_keeps_its_crc_is_refused_before_delta_writes_anything() {
    let a = encrypted("forge");
    let c = &a.cluster;
    let keys = PgDir::new("strata-pass-");
    let good = pass_file(&keys, "pass", PASS);
    pg_test::write_rows(c, 0, 2000);
    let full = a.backup("full");
    a.wait_archived(&a.switch_wal());
    // A restored data directory of this cluster, to be refreshed with --delta.
    let root = PgDir::new("strata-restore-forge-");
    let dir = root.path().join("data");
    let (ok, _, err) = strata(&a, &good, &["restore", "--pgdata", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    // Its relation files emptied, so that --delta must rewrite them from the backup's objects.
    let relations: Vec<PathBuf> = files_under(&dir.join("base"));
    for f in &relations {
        std::fs::write(f, b"").unwrap();
    }
    let before = snapshot(&dir);

    // One ciphertext bit flipped and the CRC-32C the manifest recorded kept (through the tag).
    let victim = data_objects(&a, &full)[0].clone();
    let original = std::fs::read(&victim).unwrap();
    let mut forged = original.clone();
    let middle = forged.len() / 2;
    forged[middle] ^= 0x10;
    force_crc32c(&mut forged, crc32c::crc32c(&original));
    std::fs::write(&victim, &forged).unwrap();

    let delta = ["restore", "--pgdata", dir.to_str().unwrap(), "--delta"];
    let (ok, _, err) = strata(&a, &good, &delta);
    assert!(
        !ok && err.contains("authentication failed")
            && err.contains(victim.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    assert!(
        snapshot(&dir) == before,
        "--delta rewrote the directory before refusing the forged object"
    );

    // Repaired, the same --delta restore goes through and rewrites the emptied files.
    std::fs::write(&victim, &original).unwrap();
    let (ok, _, err) = strata(&a, &good, &delta);
    assert!(ok, "{err}");
    assert!(relations
        .iter()
        .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0)));
}
