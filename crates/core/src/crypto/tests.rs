//! Tests of the encryption: the object format's sealing, the keyring, and a stanza's life with keys.

use super::keyring::{self, KdfParams, OpenKeyring, WRONG_PASS};
use super::{CipherSettings, CipherType, Passphrase};
use crate::compress::CompressType;
use crate::config::RepoUrl;
use crate::object::{self, Place, SEALED_HEADER_LEN};
use crate::repo::Repo;
use crate::{identity, Error};

fn pass(s: &str) -> Passphrase {
    Passphrase::new(s.into(), "test").unwrap()
}

fn one_key() -> super::DataKeys {
    OpenKeyring::new().unwrap().data_keys()
}

fn encrypted_repo(dir: &std::path::Path, p: &str) -> Repo {
    Repo::open(&RepoUrl::Local(dir.into()), "main")
        .unwrap()
        .with_cipher(CipherSettings {
            kind: Some(CipherType::Aes256Gcm),
            pass: Some(pass(p)),
            ..Default::default()
        })
}

#[test]
fn a_sealed_object_round_trips_and_hides_its_plaintext_and_digest() {
    let keys = one_key();
    let plain = b"MARKER-7f3a the plaintext of a WAL segment, ".repeat(50);
    let sha = object::digest(&plain);
    for c in CompressType::ALL {
        let place = Place::whole("main/archive/0000000100000000/000000010000000000000001");
        let stored = object::encode_at(&plain, sha, c, 3, Some(&keys), place).unwrap();
        assert_eq!(&stored[..8], b"STRATAOB");
        assert_eq!(stored[11], 1, "encryption byte");
        assert!(!stored.windows(10).any(|w| w == b"MARKER-7f3"));
        assert!(
            !stored.windows(32).any(|w| w == sha),
            "no plaintext digest in clear"
        );
        let (h, back) = object::decode_at(&stored, Some(&keys), place, 1 << 20).unwrap();
        assert_eq!(back, plain);
        assert_eq!(h.digest, sha);
        assert_eq!(h.sealed.map(|(id, _)| id), Some(1));
        // Opened where it lies, the same.
        let mut owned = stored.clone();
        let in_place = object::decode_at_mut(&mut owned, Some(&keys), place, 1 << 20).unwrap();
        assert_eq!(in_place, (h, back));
        assert!(object::decode_at_mut(&mut stored.clone(), None, place, 1 << 20).is_err());
        // Without keys (an unencrypted stanza's reader) it is refused, and a clear object is refused
        // by an encrypted stanza's reader.
        assert!(object::decode_at(&stored, None, place, 1 << 20).is_err());
        let clear = object::encode_with_hash(&plain, sha, c, 3).unwrap();
        let e = object::decode_at(&clear, Some(&keys), place, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("not encrypted"), "{e}");
        let e = object::decode_at_mut(&mut clear.clone(), Some(&keys), place, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("not encrypted"), "{e}");
        let unsealed = object::decode_at_mut(&mut clear.clone(), None, place, 1 << 20).unwrap();
        assert_eq!(unsealed.1, plain);
    }
    // Two sealings of the same plaintext differ (fresh nonce).
    let place = Place::whole("k");
    let a = object::encode_at(&plain, sha, CompressType::None, 0, Some(&keys), place).unwrap();
    let b = object::encode_at(&plain, sha, CompressType::None, 0, Some(&keys), place).unwrap();
    assert_ne!(a, b);
}

#[test]
fn every_single_bit_flip_is_refused() {
    let keys = one_key();
    let plain = b"a small piece of a relation file".to_vec();
    let place = Place {
        key: "main/backup/20260101-000000F/data/00000001",
        offset: 4096,
    };
    for c in [CompressType::None, CompressType::Zstd] {
        let stored =
            object::encode_at(&plain, object::digest(&plain), c, 3, Some(&keys), place).unwrap();
        for bit in 0..stored.len() * 8 {
            let mut bad = stored.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let e = object::decode_at(&bad, Some(&keys), place, 1 << 20);
            assert!(
                e.is_err(),
                "bit {bit} of {} ({c:?}) went unnoticed",
                stored.len()
            );
            let e = object::decode_at_mut(&mut bad, Some(&keys), place, 1 << 20);
            assert!(
                e.is_err(),
                "bit {bit} of {} ({c:?}) went unnoticed in place",
                stored.len()
            );
        }
    }
}

#[test]
fn an_object_moved_to_another_key_or_offset_or_sealed_with_another_key_is_refused() {
    let keys = one_key();
    let plain = b"content".to_vec();
    let here = Place {
        key: "main/backup/20260101-000000F/data/00000001",
        offset: 0,
    };
    let stored = object::encode_at(
        &plain,
        object::digest(&plain),
        CompressType::Zstd,
        3,
        Some(&keys),
        here,
    )
    .unwrap();
    for elsewhere in [
        Place {
            key: "main/backup/20260101-000000F/data/00000002",
            offset: 0,
        },
        Place {
            key: here.key,
            offset: 56,
        },
        Place::whole("other/backup/20260101-000000F/data/00000001"),
    ] {
        let e = object::decode_at(&stored, Some(&keys), elsewhere, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("authentication failed"), "{e}");
        let e = object::decode_at_mut(&mut stored.clone(), Some(&keys), elsewhere, 1 << 20)
            .unwrap_err();
        assert!(e.to_string().contains("authentication failed"), "{e}");
    }
    // Another keyring's key with the same id does not open it.
    let e = object::decode_at(&stored, Some(&one_key()), here, 1 << 20).unwrap_err();
    assert!(e.to_string().contains("authentication failed"), "{e}");
    // An unknown key id (the header's id edited, CRC fixed or not) is refused too.
    let mut bad = stored.clone();
    bad[56] = 9;
    assert!(object::decode_at(&bad, Some(&keys), here, 1 << 20).is_err());
    assert!(stored.len() > SEALED_HEADER_LEN);
}

#[test]
fn a_keyring_opens_only_with_its_passphrase_and_stanza() {
    let k = OpenKeyring::new().unwrap();
    let kdf = KdfParams::with_cost(1024, 1).unwrap();
    let sealed = k.seal("main", &pass("right"), kdf).unwrap();
    let json = String::from_utf8(sealed.to_json()).unwrap();
    assert!(!json.contains("right"));
    let back = sealed.open("k", "main", &pass("right")).unwrap();
    assert_eq!((back.current(), back.ids()), (1, vec![1]));
    let e = sealed.open("k", "main", &pass("wrong")).unwrap_err();
    assert!(matches!(e, Error::WrongCipherPass { .. }));
    assert_eq!(e.to_string(), WRONG_PASS);
    // Copied to another stanza, or its KDF parameters edited: does not open.
    assert!(sealed.open("k", "other", &pass("right")).is_err());
    let mut edited = sealed.clone();
    edited.kdf.iterations = 2;
    assert!(edited.open("k", "main", &pass("right")).is_err());
    // Passphrases are never printed.
    assert_eq!(format!("{:?}", pass("right")), "<hidden>");
}

#[test]
fn an_encrypted_stanza_is_created_with_its_keyring_and_settings_must_fit_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = encrypted_repo(dir.path(), "secret one");
    let id = identity::ensure(&repo, 7001, 15, 16 << 20).unwrap();
    assert_eq!(id.cipher.as_deref(), Some("aes-256-gcm"));
    assert_eq!(keyring::newest_generation(&repo).unwrap(), Some(1));
    let text = std::fs::read_to_string(dir.path().join("main/keyring/00000001.json")).unwrap();
    assert!(!text.contains("secret one"));

    let url = RepoUrl::Local(dir.path().into());
    let with = |kind, p: Option<&str>| {
        Repo::open(&url, "main")
            .unwrap()
            .with_cipher(CipherSettings {
                kind,
                pass: p.map(pass),
                ..Default::default()
            })
    };
    // Wrong passphrase: one clear message, for readers and writers.
    let e = with(None, Some("nope")).data_keys().unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(WRONG_PASS)
            && text.contains("stanza 'main' of repo1 (file://")
            && text.contains("strata.repo1_cipher_pass_file"),
        "{text}"
    );
    let e = identity::ensure(
        &with(Some(CipherType::Aes256Gcm), Some("nope")),
        7001,
        15,
        16 << 20,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with(WRONG_PASS), "{e}");
    // No passphrase, or 'none' for an encrypted stanza.
    let e = with(None, None).data_keys().unwrap_err().to_string();
    assert!(
        e.contains("is encrypted") && e.contains("--cipher-pass-file"),
        "{e}"
    );
    let e = with(Some(CipherType::None), Some("secret one"))
        .data_keys()
        .unwrap_err();
    assert!(e.to_string().contains("'none'"), "{e}");
    assert!(with(None, Some("secret one"))
        .data_keys()
        .unwrap()
        .is_some());

    // An unencrypted stanza: a passphrase for it, or turning encryption on, are refused.
    let plain = Repo::open(&url, "plain").unwrap();
    identity::ensure(&plain, 7002, 15, 16 << 20).unwrap();
    let e = identity::ensure(
        &Repo::open(&url, "plain")
            .unwrap()
            .with_cipher(CipherSettings {
                kind: Some(CipherType::Aes256Gcm),
                pass: Some(pass("x")),
                ..Default::default()
            }),
        7002,
        15,
        16 << 20,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("cannot be turned on") && e.contains("new stanza"),
        "{e}"
    );
    let e = Repo::open(&url, "plain")
        .unwrap()
        .with_cipher(CipherSettings {
            kind: None,
            pass: Some(pass("x")),
            ..Default::default()
        })
        .data_keys()
        .unwrap_err()
        .to_string();
    assert!(e.contains("not encrypted"), "{e}");
    assert!(!dir.path().join("plain/keyring").exists());

    // The encrypted stanza's identity edited to say "not encrypted", its keyring still there: told
    // as tampering, not as a passphrase to remove.
    let id_path = dir.path().join("main/strata.repo");
    let mut id: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&id_path).unwrap()).unwrap();
    assert!(id.as_object_mut().unwrap().remove("cipher").is_some());
    std::fs::write(&id_path, serde_json::to_vec_pretty(&id).unwrap()).unwrap();
    let e = with(None, Some("secret one"))
        .data_keys()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("holds a keyring") && e.contains("identity was modified"),
        "{e}"
    );
    // Encryption asked for without a passphrase: nothing is created.
    let e = identity::ensure(
        &with(Some(CipherType::Aes256Gcm), None).clone(),
        7001,
        15,
        16 << 20,
    );
    assert!(e.is_err());
    let fresh = Repo::open(&url, "fresh")
        .unwrap()
        .with_cipher(CipherSettings {
            kind: Some(CipherType::Aes256Gcm),
            pass: None,
            ..Default::default()
        });
    assert!(identity::ensure(&fresh, 7003, 15, 16 << 20).is_err());
    assert!(!dir.path().join("fresh").exists());
}

#[test]
fn rotation_rewraps_the_keys_and_adds_data_keys_that_new_objects_use() {
    let dir = tempfile::tempdir().unwrap();
    let repo = encrypted_repo(dir.path(), "old pass");
    identity::ensure(&repo, 7001, 15, 16 << 20).unwrap();
    let key = repo.keys().last_verify();
    let first = repo.seal(&key, b"sealed with key 1".to_vec()).unwrap();

    // New passphrase: the old one stops working, the new one opens the same keys.
    let kdf = KdfParams::with_cost(1024, 1).unwrap();
    let g = keyring::rekey_passphrase(&repo, &pass("old pass"), &pass("new pass"), kdf).unwrap();
    assert_eq!(g, 2);
    assert!(!dir.path().join("main/keyring/00000001.json").exists());
    let old = encrypted_repo(dir.path(), "old pass");
    assert!(old
        .data_keys()
        .unwrap_err()
        .to_string()
        .starts_with(WRONG_PASS));
    let new = encrypted_repo(dir.path(), "new pass");
    assert_eq!(
        &new.unseal(&key, first.clone().into()).unwrap()[..],
        b"sealed with key 1"
    );
    let e = keyring::rekey_passphrase(
        &repo,
        &pass("old pass"),
        &pass("x"),
        KdfParams::with_cost(1024, 1).unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), WRONG_PASS);

    // A new data key: current from then on; objects of the old one still open.
    assert_eq!(keyring::add_data_key(&new, &pass("new pass")).unwrap(), 2);
    let fresh = encrypted_repo(dir.path(), "new pass");
    let keys = fresh.data_keys().unwrap().unwrap();
    assert_eq!((keys.current(), keys.ids()), (2, vec![1, 2]));
    let second = fresh.seal(&key, b"sealed with key 2".to_vec()).unwrap();
    assert_eq!(u32::from_le_bytes(second[56..60].try_into().unwrap()), 2);
    assert_eq!(u32::from_le_bytes(first[56..60].try_into().unwrap()), 1);
    assert_eq!(
        &fresh.unseal(&key, first.into()).unwrap()[..],
        b"sealed with key 1"
    );
    assert_eq!(
        &fresh.unseal(&key, second.into()).unwrap()[..],
        b"sealed with key 2"
    );
}

#[test]
fn a_crash_between_identity_and_keyring_is_repaired_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let repo = encrypted_repo(dir.path(), "p");
    identity::ensure(&repo, 7001, 15, 16 << 20).unwrap();
    std::fs::remove_dir_all(dir.path().join("main/keyring")).unwrap();
    let reader = encrypted_repo(dir.path(), "p");
    let e = reader.data_keys().unwrap_err().to_string();
    assert!(e.contains("no keyring"), "{e}");
    identity::ensure(&encrypted_repo(dir.path(), "p"), 7001, 15, 16 << 20).unwrap();
    assert!(encrypted_repo(dir.path(), "p")
        .data_keys()
        .unwrap()
        .is_some());
}

#[test]
fn a_sealed_manifest_keeps_its_head_readable_alone() {
    let dir = tempfile::tempdir().unwrap();
    let repo = encrypted_repo(dir.path(), "p");
    identity::ensure(&repo, 7001, 15, 16 << 20).unwrap();
    let key = repo.keys().backup_manifest("20260101-000000F").unwrap();
    let bytes = b"{\"head\":1}\n{\"body\": \"MARKER\"}".to_vec();
    let stored = super::manifest::seal(&repo, &key, bytes.clone()).unwrap();
    assert!(!stored.windows(6).any(|w| w == b"MARKER"));
    let back = super::manifest::open(&repo, &key, stored.clone().into()).unwrap();
    assert_eq!(&back[..], &bytes[..]);
    // The head from a prefix: more is asked for until the first sealed object is there.
    let mut len = 10;
    let head = loop {
        let prefix = stored[..len].to_vec().into();
        match super::manifest::open_prefix(&repo, &key, prefix, false).unwrap() {
            Ok(head) => break head,
            Err(need) => {
                assert!(need as usize > len);
                len = need as usize;
            }
        }
    };
    assert_eq!(&head.0[..], b"{\"head\":1}\n");
    // The body moved before the head (or any bit flipped) does not open.
    let mut bad = stored.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(super::manifest::open(&repo, &key, bad.into()).is_err());
}

#[test]
fn key_usage_tells_which_keys_backups_and_the_archive_still_use() {
    let dir = tempfile::tempdir().unwrap();
    let repo = encrypted_repo(dir.path(), "p");
    identity::ensure(&repo, 7001, 15, 16 << 20).unwrap();
    let store = |r: &Repo, key: crate::paths::RepoKey| {
        let sealed = r.seal(&key, b"content".to_vec()).unwrap();
        r.storage().put_new(&key, sealed).unwrap();
    };
    let wal = |n: u32| {
        repo.keys()
            .archive_file(&format!("0000000100000000000000{n:02X}"), 16 << 20)
            .unwrap()
    };
    let (a, b) = ("20260101-000000F", "20260102-000000F");
    store(&repo, repo.keys().backup_manifest(a).unwrap());
    store(&repo, wal(1));
    store(&repo, wal(2));
    keyring::add_data_key(&repo, &pass("p")).unwrap();
    let now = encrypted_repo(dir.path(), "p");
    store(&now, now.keys().backup_manifest(b).unwrap());
    store(&now, wal(3));

    let labels = vec![a.to_string(), b.to_string()];
    let u = super::usage::key_usage(&now, &labels).unwrap();
    assert_eq!(u.archive, Some((1, 2)));
    assert_eq!(
        u.describe(1),
        format!("backups {a}; archived WAL and summaries")
    );
    assert_eq!(
        u.describe(2),
        format!("backups {b}; archived WAL and summaries")
    );
    // Backup a and the WAL before b expired: key 1 is no longer used, though still in the keyring.
    for key in [repo.keys().backup_manifest(a).unwrap(), wal(1), wal(2)] {
        now.storage().delete(&key).unwrap();
    }
    let u = super::usage::key_usage(&now, &labels[1..]).unwrap();
    assert_eq!(u.describe(1), "nothing stored uses it any more");
    assert_eq!(u.archive, Some((2, 2)));
    assert_eq!(now.data_keys().unwrap().unwrap().ids(), vec![1, 2]);
}

/// AES-256-GCM as published: test case 16 of McGrew and Viega's GCM specification (the NIST
/// submission), through both ways this crate seals — detached (objects) and tag appended (the
/// keyring) — so that a change of the cipher library cannot change what is stored unnoticed.
#[test]
fn aes_256_gcm_matches_the_published_test_vector() {
    let hex = |s: &str| hex::decode(s).unwrap();
    let key: [u8; 32] = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
        .try_into()
        .unwrap();
    let nonce: [u8; 12] = hex("cafebabefacedbaddecaf888").try_into().unwrap();
    let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let plain = hex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    let cipher = hex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
    );
    let tag = hex("76fc6ece0f4e1768cddf8853bb2d551b");

    let keys = super::DataKeys::new(&[(7, key)], 7);
    let mut buf = plain.clone();
    let found = keys.seal_with(7, &nonce, &aad, &mut buf).unwrap();
    assert_eq!(buf, cipher);
    assert_eq!(found.to_vec(), tag);
    let mut out = vec![0u8; buf.len()];
    keys.open_into(7, &nonce, &aad, &buf, &mut out, &found)
        .unwrap();
    assert_eq!(out, plain);
    keys.open_in_place(7, &nonce, &aad, &mut buf, &found)
        .unwrap();
    assert_eq!(buf, plain);

    let mut buf = plain.clone();
    super::seal_once(&key, &nonce, &aad, &mut buf).unwrap();
    assert_eq!(buf, [cipher.clone(), tag.clone()].concat());
    assert!(super::open_once(&key, &nonce, &aad, &mut buf));
    assert_eq!(buf, plain);
}

#[test]
fn a_passphrase_file_is_read_bounded_and_its_errors_are_settings_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pass");
    std::fs::write(&file, "first line\nsecond line\n").unwrap();
    assert_eq!(
        super::Passphrase::from_file(&file).unwrap().bytes(),
        b"first line"
    );
    // Not a file of a line: refused without reading it all.
    let e = super::Passphrase::from_file(std::path::Path::new("/dev/zero")).unwrap_err();
    assert!(
        matches!(&e, Error::Cipher(m) if m.contains("/dev/zero is larger than")),
        "{e}"
    );
    // Missing: a setting to fix (not a storage failure to retry), and the path not shown (a
    // passphrase given where its file's path belongs must not be printed).
    let e = super::Passphrase::from_file(&dir.path().join("Tr0ub4dor&3")).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e.class(), crate::ErrorClass::InvalidArgument),
        "{text}"
    );
    assert!(
        text.contains("no file at") && !text.contains("Tr0ub4dor"),
        "{text}"
    );
    // Unreadable otherwise (here a directory): the path and the OS error, once.
    let e = super::Passphrase::from_file(dir.path()).unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("cannot read the cipher passphrase file ")
            && text.contains(&dir.path().display().to_string()),
        "{text}"
    );
}
