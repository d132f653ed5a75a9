//! `strata verify` and `backup_verify()` on a real repository: all good first (exit 0, JSON ok), then
//! one damage at a time — a flipped bit in a data object, an archived segment, a summary, a manifest; a
//! deleted middle segment; the backup an incremental's pieces live in deleted; a stored page whose
//! checksum fails (an object rewritten consistently, so that only the page check can see it) — each
//! found and named, exit 2, and the JSON listing exactly that problem; undone, all good again.

use pg_test::stderr;
use pg_test::Archiving;
use serde_json::Value;
use std::path::{Path, PathBuf};
use strata_core::manifest::Manifest;

/// Runs `strata verify --output json`: exit code and the document.
fn verify(a: &Archiving) -> (i32, Value) {
    let o = a.strata(&["verify", "--output", "json"]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        )
    });
    (o.status.code().unwrap(), doc)
}

/// Every finding of a report, as (object, reason).
fn findings(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let lists = doc["backups"]
        .as_array()
        .unwrap()
        .iter()
        .chain(doc["timelines"].as_array().unwrap())
        .flat_map(|x| x["findings"].as_array().unwrap().clone());
    for f in lists {
        out.push((
            f["object"].as_str().unwrap().to_string(),
            f["reason"].as_str().unwrap().to_string(),
        ));
    }
    out
}

/// Damages something, checks that verify finds exactly it, undoes it.
fn finds_only(a: &Archiving, what: &str, damage: impl FnOnce(), undo: impl FnOnce(), named: &str) {
    damage();
    let (code, doc) = verify(a);
    let found = findings(&doc);
    assert_eq!(code, 2, "{what}: {doc:#}");
    assert_eq!(doc["status"], "error", "{what}");
    assert!(!found.is_empty(), "{what}: nothing found");
    for (object, reason) in &found {
        assert!(
            object.contains(named) || reason.contains(named),
            "{what}: a finding that does not name {named}: {object}: {reason}\n{doc:#}"
        );
    }
    undo();
    let (code, doc) = verify(a);
    assert_eq!(code, 0, "{what} undone: {doc:#}");
}

fn flip(path: &Path, at_fraction: f64) -> Vec<u8> {
    let good = std::fs::read(path).unwrap();
    let mut bad = good.clone();
    let i = (((bad.len() as f64) * at_fraction) as usize).min(bad.len() - 1);
    bad[i] ^= 0x04;
    std::fs::write(path, &bad).unwrap();
    good
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn verify_finds_each_damage_and_names_it() {
    let a = Archiving::new("verify", "");
    let c = &a.cluster;
    // A table large enough to be stored in objects of its own (not bundled), with an index.
    c.psql(
        "postgres",
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 60000) g; \
         CREATE INDEX ON big (id); CHECKPOINT",
    );
    let full = a.backup("full");
    c.psql(
        "postgres",
        "UPDATE big SET v = 'changed' WHERE id % 100 = 0",
    );
    let between = a.switch_wal();
    a.wait_archived(&between);
    c.psql("postgres", "UPDATE big SET v = 'again' WHERE id % 77 = 0");
    let incr = a.backup("incr");
    let after = a.switch_wal();
    a.wait_archived(&after);

    // All good: exit 0, JSON ok, each backup ok; SQL agrees and the result is kept for monitoring.
    let (code, doc) = verify(&a);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["backups"].as_array().unwrap().len(), 2);
    assert!(doc["bytes_read"].as_u64().unwrap() > 1_000_000, "{doc:#}");
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT status FROM backup_verify() WHERE scope = 'verify'"
        ),
        "ok"
    );
    assert!(a.repo.path().join("main/verify.json").exists());
    // One backup and its chain.
    let o = a.strata(&["verify", "--set", &incr, "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let backup_dir = |label: &str| a.repo.path().join("main/backup").join(label);
    let full_objects: Vec<PathBuf> = files_under(&backup_dir(&full).join("data"));
    let m_full = {
        let (path, key) = a.manifest_object(&full);
        Manifest::from_bytes(&key, &full, &std::fs::read(path).unwrap()).unwrap()
    };

    // A flipped bit in a data object of the full.
    let target = full_objects[0].clone();
    let name = format!(
        "{full}/data/{}",
        target.file_name().unwrap().to_string_lossy()
    );
    let saved = std::cell::RefCell::new(Vec::new());
    finds_only(
        &a,
        "a data object",
        || *saved.borrow_mut() = flip(&target, 0.5),
        || std::fs::write(&target, &*saved.borrow()).unwrap(),
        &name,
    );

    // A flipped bit in an archived segment that no backup's range holds.
    let seg_path = a.archived_object("main", &between);
    finds_only(
        &a,
        "an archived segment",
        || *saved.borrow_mut() = flip(&seg_path, 0.5),
        || std::fs::write(&seg_path, &*saved.borrow()).unwrap(),
        &between,
    );

    // A flipped bit in a summary.
    let summary = files_under(&a.repo.path().join("main/summary"))[1].clone();
    let summary_name = summary.file_name().unwrap().to_string_lossy().into_owned();
    finds_only(
        &a,
        "a summary",
        || *saved.borrow_mut() = flip(&summary, 0.3),
        || std::fs::write(&summary, &*saved.borrow()).unwrap(),
        &summary_name,
    );

    // A flipped bit in the incr's manifest.
    let (incr_manifest, _) = a.manifest_object(&incr);
    finds_only(
        &a,
        "a manifest",
        || *saved.borrow_mut() = flip(&incr_manifest, 0.7),
        || std::fs::write(&incr_manifest, &*saved.borrow()).unwrap(),
        &incr,
    );

    // A deleted middle segment: the gap is named, with the backup whose recovery it breaks.
    let aside = seg_path.with_extension("aside");
    finds_only(
        &a,
        "a deleted segment",
        || std::fs::rename(&seg_path, &aside).unwrap(),
        || std::fs::rename(&aside, &seg_path).unwrap(),
        &between,
    );
    std::fs::rename(&seg_path, &aside).unwrap();
    let (_, doc) = verify(&a);
    let gap = &doc["timelines"][0]["gaps"][0];
    assert_eq!(gap["first_missing"], between.as_str(), "{doc:#}");
    assert_eq!(gap["breaks_pitr_of"][0], full.as_str(), "{doc:#}");
    std::fs::rename(&aside, &seg_path).unwrap();

    // The backup holding the incr's unchanged pieces deleted: the incr's chain is broken.
    let full_aside = a.repo.path().join("full-aside");
    finds_only(
        &a,
        "the incr's base",
        || std::fs::rename(backup_dir(&full), &full_aside).unwrap(),
        || std::fs::rename(&full_aside, backup_dir(&full)).unwrap(),
        &full,
    );

    // A stored page whose checksum fails, in an object rewritten consistently (size, CRC, digest and
    // the manifest all agree): only the page check sees it.
    let keys = strata_core::paths::RepoKeys::new("main").unwrap();
    let (file, piece) = m_full
        .files
        .iter()
        .filter(|f| pgformat::relfile::parse_relation_path(&f.path).is_some())
        .filter_map(|f| {
            let p = f.pieces.first()?;
            let whole = f.pieces.len() == 1
                && p.offset == 0
                && m_full
                    .objects
                    .iter()
                    .any(|o| o.name == p.object && o.size == p.length);
            (whole && f.size > 1 << 20).then(|| (f.clone(), p.clone()))
        })
        .next()
        .expect("a relation file stored as an object of its own");
    let obj_path = a
        .repo
        .path()
        .join(keys.backup_object(&full, &piece.object).unwrap().as_str());
    let good_object = std::fs::read(&obj_path).unwrap();
    let (manifest_path, _) = a.manifest_object(&full);
    let good_manifest = std::fs::read(&manifest_path).unwrap();
    let damage_page = || {
        let (header, mut plain) = strata_core::object::decode("x", &good_object).unwrap();
        // Inside the tuples of the file's third page, away from its header.
        plain[2 * 8192 + 6000] ^= 0x01;
        let sha = strata_core::object::digest(&plain);
        let stored =
            strata_core::object::encode_with_hash(&plain, sha, header.compress, 3).unwrap();
        std::fs::write(&obj_path, &stored).unwrap();
        let mut m = m_full.clone();
        let o = m
            .objects
            .iter_mut()
            .find(|o| o.name == piece.object)
            .unwrap();
        o.size = stored.len() as u64;
        o.crc32c = crc32c(&stored);
        let f = m.files.iter_mut().find(|f| f.path == file.path).unwrap();
        f.pieces[0].length = stored.len() as u64;
        f.pieces[0].digest = Some(strata_core::manifest::Checksum(sha));
        f.digest = Some(strata_core::manifest::Checksum(sha));
        std::fs::write(&manifest_path, m.to_bytes()).unwrap();
    };
    finds_only(
        &a,
        "a stored page",
        damage_page,
        || {
            std::fs::write(&obj_path, &good_object).unwrap();
            std::fs::write(&manifest_path, &good_manifest).unwrap();
        },
        "fails its checksum",
    );

    // Could not run: exit 3.
    let o = pg_test_strata_missing_stanza(&a);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

fn crc32c(bytes: &[u8]) -> u32 {
    // CRC-32C (Castagnoli), bitwise: the tests keep their own copy of the definition.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn pg_test_strata_missing_stanza(a: &Archiving) -> std::process::Output {
    std::process::Command::new(pg_test::strata_bin())
        .args(["verify", "--repo"])
        .arg(a.repo_url())
        .args(["--stanza", "nosuchstanza"])
        .output()
        .unwrap()
}
