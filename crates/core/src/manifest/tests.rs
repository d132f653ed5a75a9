use super::*;

/// A label from a literal.
pub fn label(s: &str) -> Label {
    s.parse().unwrap()
}

/// An RFC 3339 time from a literal.
pub fn time(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

pub fn sample() -> Manifest {
    let sha = Checksum([0xab; 32]);
    Manifest {
        head: ManifestHead {
            label: label("20261123-020000F"),
            kind: BackupKind::Full,
            requested_kind: BackupKind::Incr,
            prior: None,
            references: vec![],
            method: BackupMethod::Full,
            method_reason: None,
            system_identifier: 7_300_000_000_000_000_001,
            pg_version: 15,
            pg_version_num: 150020,
            wal_segment_size: 16 << 20,
            timeline: 1,
            start_lsn: Lsn(0x0200_0028),
            stop_lsn: Lsn(0x0200_0100),
            start_wal_file: "000000010000000000000002".into(),
            stop_wal_file: "000000010000000000000002".into(),
            start_time: time("2026-11-23T02:00:00Z"),
            stop_time: time("2026-11-23T02:00:05Z"),
            data_checksums: true,
            compress_type: CompressType::Zstd,
            compress_level: 3,
            digest: crate::object::DigestAlg::CURRENT,
            database_size: 3,
            stored_size: 59,
            read_size: 3,
            file_count: 1,
            page_checksum_error_count: 0,
        },
        backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n".into(),
        tablespace_map: None,
        tablespaces: vec![],
        directories: vec![Directory {
            path: "base".into(),
            mode: 0o700,
        }],
        files: vec![FileEntry {
            path: "PG_VERSION".into(),
            size: 3,
            mode: 0o600,
            mtime: 1_795_000_000,
            digest: Some(sha),
            incremental: None,
            pieces: vec![Piece {
                backup: None,
                object: "data/00000000".into(),
                offset: 0,
                length: 59,
                size: 3,
                digest: Some(sha),
            }],
        }],
        objects: vec![StoredObject {
            name: "data/00000000".into(),
            size: 59,
            crc32c: 7,
        }],
        page_checksum_errors: vec![],
        owner: Some(Owner {
            user: "postgres".into(),
            group: "postgres".into(),
        }),
        databases: vec![
            Database {
                oid: 5,
                name: "postgres".into(),
            },
            Database {
                oid: 16384,
                name: "app".into(),
            },
        ],
    }
}

/// An incr of `sample()`'s chain with `label`, built on `prior` (whose references it extends).
pub fn sample_incr(prior: &Manifest, own: &str) -> Manifest {
    let mut m = prior.clone();
    m.label = label(own);
    m.kind = BackupKind::Incr;
    m.prior = Some(prior.label.clone());
    m.references = prior.references.clone();
    m.references.push(prior.label.clone());
    m
}

/// Recomputes the checksums of stored manifest text after an edit, as someone who knows the
/// format would: what the checksums do not catch, validation must.
pub fn reseal(bytes: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    let (line, body) = text.split_once('\n').unwrap();
    let mut line: serde_json::Value = serde_json::from_str(line).unwrap();
    let head = &mut line["head"];
    head["body_size"] = body.len().into();
    head["body_sha256"] = Checksum::of(body.as_bytes()).to_hex().into();
    let head_json = serde_json::to_string(head).unwrap();
    let out = format!(
        "{{\"head\":{head_json},\"head_sha256\":\"{}\"}}\n{body}",
        Checksum::of(head_json.as_bytes())
    );
    out.into_bytes()
}

fn read(bytes: &[u8]) -> Result<Manifest> {
    Manifest::from_bytes("m/k", "20261123-020000F", bytes)
}

#[test]
fn round_trips_and_writes_lsns_times_and_digests_as_text() {
    let m = sample();
    let bytes = m.to_bytes();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let (line, body) = text.split_once('\n').unwrap();
    assert!(line.contains("\"start_lsn\":\"0/2000028\""), "{line}");
    assert!(line.contains("\"kind\":\"full\""), "{line}");
    assert!(
        line.contains("\"start_time\":\"2026-11-23T02:00:00Z\""),
        "{line}"
    );
    assert!(line.contains("\"compress_type\":\"zstd\""), "{line}");
    assert!(line.contains("\"format_version\":4"), "{line}");
    assert!(line.contains("\"digest\":\"blake3\""), "{line}");
    assert!(
        body.contains(&format!("\"digest\": \"{}\"", "ab".repeat(32))),
        "{body}"
    );
    assert!(
        !body.contains("start_lsn"),
        "the head is not repeated in the body"
    );
    assert_eq!(read(&bytes).unwrap(), m);
    // The head alone, from the first bytes (or all of them).
    for (prefix, whole) in [(line.len() + 1, false), (bytes.len(), true)] {
        let head = ManifestHead::from_prefix("m/k", &m.label, &bytes[..prefix], whole);
        assert_eq!(head.unwrap(), Some(m.head.clone()));
    }
    assert_eq!(
        ManifestHead::from_prefix("m/k", &m.label, &bytes[..line.len() - 1], false).unwrap(),
        None,
        "a cut head line asks for more"
    );
    // The head's counts come from the body.
    let mut m2 = m.clone();
    m2.page_checksum_errors.push(PageChecksumError {
        path: "PG_VERSION".into(),
        blocks: vec![1, 2],
    });
    let back = read(&m2.to_bytes()).unwrap();
    assert_eq!((back.file_count, back.page_checksum_error_count), (1, 2));
}

#[test]
fn a_manifest_edited_or_damaged_is_refused_naming_its_backup() {
    let bytes = sample().to_bytes();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let (line, _) = text.split_once('\n').unwrap();
    // An edit of the head, of the body, a flipped byte anywhere, a cut: all refused.
    let mut edits = vec![
        text.replacen("\"timeline\":1", "\"timeline\":2", 1),
        text.replacen("\"mode\": 384", "\"mode\": 2541", 1),
        text.replacen("postgres", "root", 1),
        text[..text.len() - 2].to_string(),
        format!("{text} "),
    ];
    for at in [10, line.len() / 2, line.len() + 20, text.len() - 10] {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        edits.push(String::from_utf8_lossy(&b).into_owned());
    }
    for (i, edited) in edits.iter().enumerate() {
        assert_ne!(edited.as_bytes(), &bytes[..], "edit {i} changed nothing");
        let e = read(edited.as_bytes()).unwrap_err().to_string();
        assert!(
            e.contains("m/k")
                && e.contains("20261123-020000F")
                && e.contains("modified or damaged"),
            "edit {i}: {e}"
        );
    }
    // The same edits with the checksums recomputed: the head and body still read (validation,
    // not the checksums, refuses what is wrong with them).
    let resealed = reseal(text.replacen("postgres", "root", 1).as_bytes());
    assert_eq!(read(&resealed).unwrap().owner.unwrap().user, "root");
    // Another backup's manifest copied into this one's place.
    let mut other = sample();
    other.label = label("20261124-020000F");
    let e = read(&other.to_bytes()).unwrap_err().to_string();
    assert!(e.contains("belongs to backup 20261124-020000F"), "{e}");
}

#[test]
fn plain_json_is_for_editing_by_hand() {
    let m = sample();
    let plain = to_plain_json(&m.to_bytes()).unwrap();
    assert_eq!(plain["label"], "20261123-020000F");
    assert_eq!(plain["files"][0]["path"], "PG_VERSION");
    assert_eq!(read(&from_plain_json(&plain)).unwrap(), m);
    let mut edited = plain.clone();
    edited["files"][0]["path"] = "../x".into();
    let e = read(&from_plain_json(&edited)).unwrap_err().to_string();
    assert!(e.contains("\"../x\" has a '.' or '..' component"), "{e}");
}

#[test]
fn reads_format_3_with_its_sha256_digests() {
    // What an earlier pg_strata wrote: format 3, no `digest` in the head, the digests' key
    // `sha256`.
    let text = String::from_utf8(sample().to_bytes()).unwrap();
    let v3 = text
        .replace("\"format_version\":4", "\"format_version\":3")
        .replace(",\"digest\":\"blake3\"", "")
        .replace("\"digest\": ", "\"sha256\": ");
    assert!(
        !v3.contains("digest") && v3.contains("\"sha256\": "),
        "{v3}"
    );
    let m = read(&reseal(v3.as_bytes())).unwrap();
    assert_eq!(m.digest, crate::object::DigestAlg::Sha256);
    assert_eq!(m.files, sample().files);
}

#[test]
fn refuses_unknown_fields_and_versions() {
    let text = String::from_utf8(sample().to_bytes()).unwrap();
    let extra = reseal(
        text.replacen("{\n", "{\n  \"surprise\": 1,\n", 1)
            .as_bytes(),
    );
    let e = read(&extra).unwrap_err().to_string();
    assert!(e.contains("m/k") && e.contains("surprise"), "{e}");
    let extra = reseal(
        text.replacen("\"backup\":{", "\"backup\":{\"surprise\":1,", 1)
            .as_bytes(),
    );
    let e = read(&extra).unwrap_err().to_string();
    assert!(e.contains("surprise"), "{e}");
    let v9 = text.replace("\"format_version\":4", "\"format_version\":9");
    let e = read(v9.as_bytes()).unwrap_err().to_string();
    assert!(
        e.contains("version 9") && e.contains("reads versions 3 to 4"),
        "{e}"
    );
    // A manifest of version 2 (one pretty-printed JSON document), whole or its first bytes only.
    let v2 = b"{\n  \"format_version\": 2,\n  \"label\": \"20261123-020000F\"\n}";
    let e = read(v2).unwrap_err().to_string();
    assert!(
        e.contains("version 2") && e.contains("reads versions 3 to 4"),
        "{e}"
    );
    let e = ManifestHead::from_prefix("m/k", "20261123-020000F", &v2[..], true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("version 2"), "{e}");
    let e = read(b"").unwrap_err().to_string();
    assert!(e.contains("modified or damaged"), "{e}");
}
