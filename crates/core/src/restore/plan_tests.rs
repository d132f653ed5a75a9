//! Tests of `restore::plan`: chain checks and the choice of backup on fabricated manifests.

use super::*;
use crate::config::RepoUrl;
use crate::manifest::{BackupKind, Piece};
use pgformat::lsn::Lsn;

const FULL: &str = "20261123-020000F";
const INCR: &str = "20261123-020000F_20261124-020000I";
const FULL2: &str = "20261125-020000F";

fn backup(label: &str, prior: Option<&str>, stop_time: &str, stop_lsn: u64) -> Manifest {
    let mut m = crate::manifest::tests::sample();
    m.label = crate::manifest::tests::label(label);
    if let Some(p) = prior {
        m.kind = BackupKind::Incr;
        m.prior = Some(crate::manifest::tests::label(p));
        m.references = vec![crate::manifest::tests::label(p)];
    }
    // All in the sample's WAL segment (validation checks the LSNs against the file names).
    m.stop_time = chrono::DateTime::parse_from_rfc3339(stop_time)
        .unwrap()
        .to_utc();
    m.stop_lsn = Lsn(stop_lsn);
    m
}

/// A full and an incr on it; the incr's PG_VERSION is referenced from the full, and it has a
/// relation file in incremental form over the full's copy.
fn chain() -> (Manifest, Vec<Manifest>) {
    let mut full = backup(FULL, None, "2026-11-23T02:00:05Z", 0x200_0100);
    let mut incr = backup(INCR, Some(FULL), "2026-11-24T02:00:05Z", 0x200_0200);
    incr.files[0].pieces[0].backup = Some(crate::manifest::tests::label(FULL));
    incr.objects.clear();
    let mut rel = full.files[0].clone();
    rel.path = "base/5/16384".into();
    full.files.push(rel.clone());
    rel.incremental = Some(1);
    rel.size = 8192;
    rel.digest = None;
    incr.files.push(rel);
    incr.objects = full.objects.clone();
    (incr, vec![full])
}

#[test]
fn a_sound_chain_is_indexed() {
    let (incr, older) = chain();
    let index = check_references(&incr, &older).unwrap();
    assert_eq!(index.len(), 1);
    assert_eq!(index[0]["base/5/16384"], 1);
    let plan = Plan::for_chain(incr, older).unwrap();
    let (label, entry) = plan.older_entry(0, "base/5/16384").unwrap();
    assert_eq!((label, entry.incremental), (FULL, None));
    assert!(plan.older_entry(1, "base/5/16384").is_none());
    assert_eq!(plan.all_objects().len(), 2);
}

#[test]
fn broken_references_are_refused_before_writing() {
    let refused = |change: &dyn Fn(&mut Manifest, &mut Vec<Manifest>), why: &str| {
        let (mut incr, mut older) = chain();
        change(&mut incr, &mut older);
        let e = check_references(&incr, &older).unwrap_err().to_string();
        assert!(e.contains(why) && e.contains("--set"), "{why}: {e}");
    };
    refused(
        &|i, _| i.files[0].pieces[0].backup = Some(crate::manifest::tests::label(FULL2)),
        "which is not in its chain",
    );
    // An older backup can never refer to a newer one.
    refused(
        &|_, o| o[0].files[0].pieces[0].backup = Some(crate::manifest::tests::label(INCR)),
        "which is not in its chain",
    );
    refused(
        &|i, _| i.files[0].pieces[0].object = "data/00000009".into(),
        "which that backup does not hold",
    );
    refused(
        &|i, _| i.files[0].pieces[0].offset = 1,
        "which that backup does not hold",
    );
    refused(
        &|_, o| o[0].files.retain(|f| f.path != "base/5/16384"),
        "has no copy of it",
    );
    let (mut incr, older) = chain();
    incr.files[1].pieces = vec![Piece {
        backup: Some(crate::manifest::tests::label(FULL)),
        ..incr.files[1].pieces[0].clone()
    }];
    assert!(check_references(&incr, &older).is_ok());
}

fn options(set: Option<&str>, target: RecoveryTarget) -> RestoreOptions {
    RestoreOptions {
        pgdata: "/nonexistent".into(),
        set: set.map(String::from),
        target,
        target_action: None,
        target_timeline: None,
        delta: false,
        process_max: 1,
        tablespace_map: vec![],
        restore_command: String::new(),
        force: false,
        archive_mode: Default::default(),
        lease: true,
        db_include: vec![],
        db_exclude: vec![],
    }
}

#[test]
fn the_backup_is_the_one_named_or_the_newest_before_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::open(&RepoUrl::Local(dir.path().into()), "st").unwrap();
    let chosen = |set: Option<&str>, target: RecoveryTarget| {
        choose_backup(&repo, &options(set, target)).map(|m| m.label.to_string())
    };
    let e = chosen(None, RecoveryTarget::Default)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no backup in") && e.contains("backup_start"),
        "{e}"
    );
    let (incr, older) = chain();
    let full2 = backup(FULL2, None, "2026-11-25T02:00:05Z", 0x200_0300);
    for m in [&older[0], &incr, &full2] {
        repo.storage()
            .put_new(
                &repo.keys().backup_manifest(&m.label).unwrap(),
                m.to_bytes(),
            )
            .unwrap();
    }
    assert_eq!(chosen(Some(INCR), RecoveryTarget::Default).unwrap(), INCR);
    assert_eq!(
        chosen(Some("latest"), RecoveryTarget::Default).unwrap(),
        FULL2
    );
    assert_eq!(chosen(None, RecoveryTarget::Immediate).unwrap(), FULL2);
    let time = |t: &str| RecoveryTarget::Time(chrono::DateTime::parse_from_rfc3339(t).unwrap());
    // The newest that ended strictly before the target time, or at or before the target LSN.
    assert_eq!(chosen(None, time("2026-11-24T12:00:00Z")).unwrap(), INCR);
    assert_eq!(chosen(None, time("2026-11-24T02:00:05Z")).unwrap(), FULL);
    assert_eq!(
        chosen(None, RecoveryTarget::Lsn(Lsn(0x200_0200))).unwrap(),
        INCR
    );
    assert_eq!(
        chosen(None, RecoveryTarget::Lsn(Lsn(0x200_01ff))).unwrap(),
        FULL
    );
    // --set wins over the target (the target is checked against it later).
    assert_eq!(
        chosen(Some(FULL2), time("2026-11-24T12:00:00Z")).unwrap(),
        FULL2
    );
    let e = chosen(None, time("2026-11-01T00:00:00Z"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no backup ended before") && e.contains(FULL),
        "{e}"
    );
    let e = chosen(Some("20261130-020000F"), RecoveryTarget::Default)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not found"), "{e}");
}
