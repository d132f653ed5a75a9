//! Expiry on a fabricated repository: manifests written as backups write them, WAL objects and
//! summaries at their keys; what is removed is compared with what the policy says, and an interrupted
//! expiry is finished by the next one.

use super::*;
use crate::config::RepoUrl;
use crate::manifest::tests::sample;
use crate::manifest::{BackupKind, Manifest};
use pgformat::lsn::segment_file_name;

const SEG: u32 = 16 << 20;

struct Fixture {
    _dir: tempfile::TempDir,
    repo: Repo,
    backups: Vec<Manifest>,
}

fn time(day: u32) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("2026-11-{day:02}T02:00:00Z"))
        .unwrap()
        .to_utc()
}

/// A backup of `kind` on day `day` starting in segment `segno`, built on `chain` (oldest first).
fn backup(day: u32, segno: u64, kind: BackupKind, chain: &[&Manifest]) -> Manifest {
    let mut m = sample();
    m.label = Label::new(kind, chain.first().map(|f| &f.label), time(day));
    m.kind = kind;
    m.references = chain.iter().map(|b| b.label.clone()).collect();
    m.prior = chain.last().map(|b| b.label.clone());
    m.start_time = time(day);
    m.stop_time = time(day) + chrono::Duration::minutes(1);
    m.start_lsn = Lsn(segno * u64::from(SEG) + 0x28);
    m.stop_lsn = Lsn(segno * u64::from(SEG) + 0x100);
    m.start_wal_file = segment_file_name(1, segno, SEG);
    m.stop_wal_file = segment_file_name(1, segno, SEG);
    m
}

/// Fulls on days 1, 5, 9, 13 (segments 2, 10, 18, 26), each with an incr two days later (segment + 4);
/// WAL segments 1..=32 archived, each with its summary.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::open(&RepoUrl::Local(dir.path().into()), "main").unwrap();
    crate::identity::ensure(&repo, 7_300_000_000_000_000_001, 15, SEG).unwrap();
    let mut backups = Vec::new();
    for (i, day) in [1u32, 5, 9, 13].into_iter().enumerate() {
        let segno = 2 + 8 * i as u64;
        let full = backup(day, segno, BackupKind::Full, &[]);
        let incr = backup(day + 2, segno + 4, BackupKind::Incr, &[&full]);
        backups.push(full);
        backups.push(incr);
    }
    let (storage, keys) = (repo.storage(), repo.keys());
    for m in &backups {
        storage
            .put_new(&keys.backup_manifest(&m.label).unwrap(), m.to_bytes())
            .unwrap();
        let object = keys.backup_object(&m.label, "data/00000000").unwrap();
        storage.put_new(&object, vec![7; 59]).unwrap();
    }
    for segno in 1..=32u64 {
        let name = segment_file_name(1, segno, SEG);
        storage
            .put_new(&keys.archive_file(&name, SEG).unwrap(), vec![1; 100])
            .unwrap();
        let start = Lsn(segno * u64::from(SEG));
        let end = Lsn((segno + 1) * u64::from(SEG));
        storage
            .put_new(&keys.summary(1, start, end), vec![2; 10])
            .unwrap();
    }
    Fixture {
        _dir: dir,
        repo,
        backups,
    }
}

fn listed(f: &Fixture) -> Vec<String> {
    catalog::list_backups(&f.repo)
        .unwrap()
        .iter()
        .map(|m| m.label.to_string())
        .collect()
}

fn archived(f: &Fixture) -> Vec<String> {
    let keys = f.repo.keys();
    f.repo
        .storage()
        .list(&keys.archive_root())
        .unwrap()
        .iter()
        .map(|(k, _)| k.file_name().to_string())
        .collect()
}

#[test]
fn count_retention_expires_old_backups_then_the_wal_below_the_oldest_kept_start() {
    let f = fixture();
    let policy = Policy {
        full: Some(2),
        ..Default::default()
    };
    let all_before = f.repo.storage().list(f.repo.keys().stanza_root()).unwrap();

    // A dry run says what the real run then does, and removes nothing.
    let dry = expire(&f.repo, &policy, time(20), true).unwrap();
    assert_eq!(
        f.repo.storage().list(f.repo.keys().stanza_root()).unwrap(),
        all_before
    );
    let real = expire(&f.repo, &policy, time(20), false).unwrap();
    assert_eq!(dry.backups, real.backups);
    assert_eq!(
        (dry.wal_files, dry.summaries, dry.bytes),
        (real.wal_files, real.summaries, real.bytes)
    );
    assert!(!real.dry_run && dry.dry_run);

    // The two older fulls and their incrs are gone, newest first; the rest still lists and loads.
    let b = &f.backups;
    let gone: Vec<String> = real.backups.iter().map(|(l, _)| l.to_string()).collect();
    assert_eq!(
        gone,
        vec![
            b[3].label.to_string(),
            b[1].label.to_string(),
            b[2].label.to_string(),
            b[0].label.to_string()
        ]
    );
    let kept: Vec<String> = b[4..].iter().map(|m| m.label.to_string()).collect();
    assert_eq!(listed(&f), kept);
    for m in &b[4..] {
        catalog::load(&f.repo, &m.label).unwrap();
    }
    let e = catalog::load(&f.repo, &b[0].label).unwrap_err();
    assert!(matches!(e, crate::Error::BackupNotFound { .. }), "{e}");
    assert!(f
        .repo
        .storage()
        .list(&f.repo.keys().backup_dir(&b[0].label).unwrap())
        .unwrap()
        .is_empty());

    // WAL and summaries below the third full's start (segment 18) are gone; from it on, all is kept.
    assert_eq!(real.wal_kept_from, Some(b[4].start_lsn));
    let wal = archived(&f);
    assert_eq!(wal.first().unwrap(), &segment_file_name(1, 18, SEG));
    assert_eq!(wal.len(), 32 - 17);
    assert_eq!(real.wal_files, 17);
    assert_eq!(real.summaries, 17);

    // Again: nothing more to do.
    let again = expire(&f.repo, &policy, time(20), false).unwrap();
    assert!(again.backups.is_empty() && again.wal_files == 0 && again.summaries == 0);
}

#[test]
fn an_interrupted_expiry_is_finished_by_the_next_and_an_unfinished_backup_keeps_the_wal() {
    let f = fixture();
    let (storage, keys) = (f.repo.storage(), f.repo.keys());
    let b = &f.backups;
    // A crash after the mark and the manifest's deletion: the backup is no longer listed ...
    let victim = &b[1].label;
    storage
        .put_replace(&keys.backup_expiring(victim).unwrap(), b"expired".to_vec())
        .unwrap();
    storage
        .delete(&keys.backup_manifest(victim).unwrap())
        .unwrap();
    assert!(!listed(&f).contains(&victim.to_string()));
    // ... and a backup of the stanza is running (a directory with only its claim).
    let running = Label::new(BackupKind::Full, None, time(19));
    storage
        .put_new(&keys.backup_claim(&running).unwrap(), b"{}".to_vec())
        .unwrap();

    let policy = Policy {
        full: Some(3),
        ..Default::default()
    };
    let r = expire(&f.repo, &policy, time(20), false).unwrap();
    assert_eq!(r.leftovers, vec![victim.to_string()]);
    assert!(storage
        .list(&keys.backup_dir(victim).unwrap())
        .unwrap()
        .is_empty());
    assert_eq!(
        r.backups.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(),
        vec![b[0].label.clone()]
    );
    // The running backup is left alone, and so is the archive while it runs.
    assert!(storage
        .exists(&keys.backup_claim(&running).unwrap())
        .unwrap());
    assert_eq!(r.wal_files, 0);
    assert!(r.wal_note.unwrap().contains(running.as_str()));
    assert_eq!(archived(&f).len(), 32);
}

#[test]
fn nothing_is_expired_while_a_backup_cannot_be_read() {
    let f = fixture();
    let (storage, keys) = (f.repo.storage(), f.repo.keys());
    let manifest = keys.backup_manifest(&f.backups[5].label).unwrap();
    storage
        .put_replace(&manifest, b"{ damaged".to_vec())
        .unwrap();
    // A directory holding only an annotation (a pin written as its backup was expired): a leftover.
    let orphan = Label::new(BackupKind::Full, None, time(2));
    storage
        .put_replace(&keys.backup_annotation(&orphan).unwrap(), b"{}".to_vec())
        .unwrap();
    let before = storage.list(keys.stanza_root()).unwrap().len();
    let policy = Policy {
        full: Some(1),
        ..Default::default()
    };
    let r = expire(&f.repo, &policy, time(20), false).unwrap();
    assert!(r.backups.is_empty() && r.wal_files == 0, "{r:?}");
    assert!(r.wal_note.unwrap().contains(f.backups[5].label.as_str()));
    assert_eq!(r.leftovers, vec![orphan.to_string()]);
    assert_eq!(storage.list(keys.stanza_root()).unwrap().len(), before - 1);
}

#[test]
fn a_pinned_backup_keeps_its_chain_and_the_wal_from_its_start() {
    let f = fixture();
    let b = &f.backups;
    pin::set(&f.repo, &b[1].label, true, Some("audit")).unwrap();
    let policy = Policy {
        full: Some(1),
        ..Default::default()
    };
    let r = expire(&f.repo, &policy, time(20), false).unwrap();
    let gone: Vec<String> = r.backups.iter().map(|(l, _)| l.to_string()).collect();
    assert_eq!(gone.len(), 4, "{gone:?}");
    assert!(!gone.contains(&b[1].label.to_string()) && !gone.contains(&b[0].label.to_string()));
    assert_eq!(r.wal_kept_from, Some(b[0].start_lsn));
    assert_eq!(
        pin::read(&f.repo, &b[1].label)
            .unwrap()
            .unwrap()
            .note
            .as_deref(),
        Some("audit")
    );
    // A pin on an expired backup is refused and leaves nothing behind.
    let e = pin::set(&f.repo, &b[2].label, true, None).unwrap_err();
    assert!(matches!(e, crate::Error::BackupNotFound { .. }), "{e}");
    assert!(!f
        .repo
        .storage()
        .exists(&f.repo.keys().backup_annotation(&b[2].label).unwrap())
        .unwrap());
}

#[test]
fn expire_set_removes_a_backup_with_what_is_built_on_it_and_respects_pins() {
    let f = fixture();
    let b = &f.backups;
    pin::set(&f.repo, &b[3].label, true, None).unwrap();
    let e = expire_set(&f.repo, &b[2].label, false, false).unwrap_err();
    assert!(e.to_string().contains("pinned"), "{e}");
    assert_eq!(listed(&f).len(), 8);
    let dry = expire_set(&f.repo, &b[2].label, true, true).unwrap();
    assert_eq!(listed(&f).len(), 8);
    let r = expire_set(&f.repo, &b[2].label, true, false).unwrap();
    assert_eq!(dry.backups, r.backups);
    let gone: Vec<String> = r.backups.iter().map(|(l, _)| l.to_string()).collect();
    assert_eq!(gone, vec![b[3].label.to_string(), b[2].label.to_string()]);
    assert_eq!(listed(&f).len(), 6);
    assert_eq!(archived(&f).len(), 32);
}

#[test]
fn without_a_policy_nothing_is_removed() {
    let f = fixture();
    let before = f.repo.storage().list(f.repo.keys().stanza_root()).unwrap();
    let r = expire(&f.repo, &Policy::default(), time(20), false).unwrap();
    assert!(r.backups.is_empty());
    assert!(r.policy.contains("grows without limit"));
    let after = f.repo.storage().list(f.repo.keys().stanza_root()).unwrap();
    assert_eq!(before, after);
}

#[test]
fn an_unreadable_annotation_counts_as_a_pin_and_hides_nothing() {
    let f = fixture();
    let b = &f.backups;
    let key = f.repo.keys().backup_annotation(&b[0].label).unwrap();
    f.repo
        .storage()
        .put_replace(&key, b"{ not json".to_vec())
        .unwrap();
    let all = pin::annotations(&f.repo, b.iter().map(|m| &m.label));
    assert_eq!(all.len(), 1);
    assert!(all[&b[0].label]
        .note
        .as_deref()
        .unwrap()
        .contains("unreadable"));
    assert_eq!(pin::pinned(&all), vec![b[0].label.clone()]);
    let policy = Policy {
        full: Some(1),
        ..Default::default()
    };
    let r = expire(&f.repo, &policy, time(20), false).unwrap();
    assert!(!r.backups.iter().any(|(l, _)| l == &b[0].label), "{r:?}");
}

#[test]
fn archive_retention_keeps_older_backups_wal_from_start_to_stop_only() {
    let f = fixture();
    let b = &f.backups;
    // Three fulls kept; PITR WAL only after the newest one (segment 26 on).
    let policy = Policy {
        full: Some(3),
        archive: Some(1),
        ..Default::default()
    };
    let r = expire(&f.repo, &policy, time(20), false).unwrap();
    assert_eq!(r.backups.len(), 2, "{r:?}");
    assert_eq!(r.wal_kept_from, Some(b[6].start_lsn));
    let end_only: Vec<&Label> = r.end_only.iter().collect();
    assert_eq!(
        end_only,
        vec![&b[2].label, &b[3].label, &b[4].label, &b[5].label]
    );
    // Each older kept backup keeps its own segment (start to stop); everything between is gone.
    let expected: Vec<String> = [10u64, 14, 18, 22]
        .into_iter()
        .chain(26..=32)
        .map(|n| segment_file_name(1, n, SEG))
        .collect();
    assert_eq!(archived(&f), expected);
    // Summaries are kept from the newest full's start (the next diff reads them).
    let summaries = f
        .repo
        .storage()
        .list(&f.repo.keys().summary_root())
        .unwrap();
    assert_eq!(summaries.len(), 32 - 25);

    // The archive type counts: with 'incr', the newest backup of any kind is the incr of day 15.
    let policy = Policy {
        full: Some(3),
        archive: Some(1),
        archive_type: BackupKind::Incr,
        ..Default::default()
    };
    let r = expire(&f.repo, &policy, time(20), true).unwrap();
    assert_eq!(r.wal_kept_from, Some(b[7].start_lsn));
    assert_eq!(
        r.wal_files, 3,
        "segments 27 to 29 go, the full of day 13 keeps its own (26)"
    );
}

#[test]
fn a_first_hole_is_the_first_segment_missing_before_a_later_one() {
    let set = |v: &[u64]| {
        v.iter()
            .copied()
            .collect::<std::collections::BTreeSet<u64>>()
    };
    assert_eq!(catalog::first_hole(&set(&[1, 2, 3]), 2, None), None);
    assert_eq!(catalog::first_hole(&set(&[1, 2, 5, 6]), 2, None), Some(3));
    assert_eq!(catalog::first_hole(&set(&[1, 2, 5, 6]), 2, Some(2)), None);
    assert_eq!(
        catalog::first_hole(&set(&[1, 2, 5, 6]), 3, Some(4)),
        Some(3)
    );
    // Nothing archived after `from` is no hole (recovery ends there, as it always does).
    assert_eq!(catalog::first_hole(&set(&[1, 2]), 3, None), None);
    assert_eq!(catalog::first_hole(&set(&[]), 3, None), None);
}

#[test]
fn a_restore_lease_keeps_its_chain_and_wal_until_it_lapses() {
    let f = fixture();
    let b = &f.backups;
    let policy = Policy {
        full: Some(1),
        ..Default::default()
    };
    // A restore of the incr of day 3 (built on the full of day 1) holds a lease.
    let guard = lease::take(
        &f.repo,
        vec![b[0].label.clone(), b[1].label.clone()],
        b[1].start_lsn,
    )
    .unwrap();
    let r = expire(&f.repo, &policy, time(20), false).unwrap();
    let gone: Vec<&Label> = r.backups.iter().map(|(l, _)| l).collect();
    assert_eq!(
        gone,
        vec![&b[5].label, &b[3].label, &b[4].label, &b[2].label]
    );
    assert!(r.leased.contains(&b[0].label) && r.leased.contains(&b[1].label));
    // The chain is kept, so the WAL from its full's start is too.
    assert_eq!(r.wal_kept_from, Some(b[0].start_lsn));
    catalog::load(&f.repo, &b[1].label).unwrap();
    // A restore finished: the lease lasts for its recovery; then it lapses and the next expiry removes
    // it with what it held.
    guard.finish().unwrap();
    let later = Utc::now() + lease::AFTER_RESTORE + chrono::Duration::minutes(1);
    let held = lease::read_all(&f.repo, later).unwrap();
    assert_eq!((held.live.len(), held.lapsed.len()), (0, 1));
    let held_now = lease::read_all(&f.repo, Utc::now()).unwrap();
    assert!(held_now.holds_backup(&b[1].label));
    // A failed restore (dropped guard) releases its lease at once.
    let g2 = lease::take(&f.repo, vec![b[6].label.clone()], b[6].start_lsn).unwrap();
    assert_eq!(lease::read_all(&f.repo, Utc::now()).unwrap().live.len(), 2);
    drop(g2);
    assert_eq!(lease::read_all(&f.repo, Utc::now()).unwrap().live.len(), 1);
}

#[test]
fn a_lease_is_refused_on_a_backup_being_expired_and_an_unreadable_lease_stops_expiry() {
    let f = fixture();
    let b = &f.backups;
    let (storage, keys) = (f.repo.storage(), f.repo.keys());
    // An expiry marked the backup first: the restore's lease check sees it and refuses, releasing.
    storage
        .put_replace(&keys.backup_expiring(&b[0].label).unwrap(), b"x".to_vec())
        .unwrap();
    let e = lease::take(&f.repo, vec![b[0].label.clone()], b[0].start_lsn)
        .err()
        .unwrap();
    assert!(e.to_string().contains("being expired"), "{e}");
    assert!(lease::read_all(&f.repo, Utc::now())
        .unwrap()
        .live
        .is_empty());
    // A lease object that cannot be read: nothing is expired.
    storage
        .put_new(&keys.lease("junk").unwrap(), b"{not json".to_vec())
        .unwrap();
    let policy = Policy {
        full: Some(1),
        ..Default::default()
    };
    let r = expire(&f.repo, &policy, time(20), false).unwrap();
    assert!(r.backups.is_empty() && r.wal_files == 0, "{r:?}");
    assert!(r.wal_note.unwrap().contains("lease"));
    assert_eq!(listed(&f).len(), 8);
}
