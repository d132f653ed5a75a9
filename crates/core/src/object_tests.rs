use super::*;

#[test]
fn golden_bytes_of_an_uncompressed_object() {
    let obj = encode_with_hash(b"abc", digest(b"abc"), CompressType::None, 0).unwrap();
    let expected_header = concat!(
        "5354524154414f42",                                                 // STRATAOB
        "0200",                                                             // version 2
        "00",                                                               // no compression
        "00",                                                               // no encryption
        "0300000000000000",                                                 // 3 bytes
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85", // blake3("abc")
    );
    assert_eq!(hex::encode(&obj[..52]), expected_header);
    assert_eq!(
        hex::encode(&obj[52..56]),
        "490f617c",
        "header CRC-32C (computed independently)"
    );
    assert_eq!(&obj[56..], b"abc");
}

/// A version 1 object (written by earlier pg_strata: SHA-256 digest) as stored bytes.
fn version_1_object(plain: &[u8], compress: CompressType) -> Vec<u8> {
    let mut obj = compress_payload(plain, compress, 3).unwrap();
    let header = ObjectHeader {
        compress,
        plain_size: plain.len() as u64,
        alg: DigestAlg::Sha256,
        digest: sha256(plain),
        sealed: None,
    };
    obj[..HEADER_LEN].copy_from_slice(&header.encode());
    obj
}

#[test]
fn version_1_objects_are_read_and_checked_with_sha256() {
    let golden = version_1_object(b"abc", CompressType::None);
    assert_eq!(
        hex::encode(&golden[..56]),
        concat!(
            "5354524154414f42010000000300000000000000",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", // sha256("abc")
            "5d83b8cd" // header CRC-32C of pg_strata's first format (computed independently)
        )
    );
    let plain: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 13) as u8).collect();
    for c in CompressType::ALL {
        let mut obj = version_1_object(&plain, c);
        let (h, back) = decode("k", &obj).unwrap();
        assert_eq!((h.alg, back.as_slice()), (DigestAlg::Sha256, &plain[..]));
        let last = obj.len() - 10;
        obj[last] ^= 0x40;
        assert!(decode("k", &obj).is_err());
    }
    // Neither digest passes for the other: a version byte flipped (and the CRC fixed) is refused.
    let mut obj = encode_with_hash(&plain, digest(&plain), CompressType::None, 0).unwrap();
    obj[8] = 1;
    let crc = crc32c::crc32c(&obj[0..52]);
    obj[52..56].copy_from_slice(&crc.to_le_bytes());
    let e = decode("k", &obj).unwrap_err();
    assert!(matches!(e, Error::ChecksumMismatch { .. }), "{e}");
    obj[8] = 3;
    let crc = crc32c::crc32c(&obj[0..52]);
    obj[52..56].copy_from_slice(&crc.to_le_bytes());
    assert!(decode("k", &obj)
        .unwrap_err()
        .to_string()
        .contains("format version 3"));
}

#[test]
fn content_digest_is_the_digest_of_small_files_and_a_hash_list_of_large_ones() {
    assert_eq!(content_digest(&[]), sha256(b""));
    assert_eq!(content_digest(&[digest(b"abc")]), digest(b"abc"));
    let two = [digest(b"a"), digest(b"b")];
    let mut cat = Vec::new();
    cat.extend_from_slice(&two[0]);
    cat.extend_from_slice(&two[1]);
    assert_eq!(content_digest(&two), sha256(&cat));
}

#[test]
fn round_trip_and_corruption_detection() {
    let plain: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 13) as u8).collect();
    for c in CompressType::ALL {
        let mut obj = encode_with_hash(&plain, digest(&plain), c, 3).unwrap();
        let (h, back) = decode("k", &obj).unwrap();
        assert_eq!(back, plain);
        assert_eq!((h.compress, h.alg), (c, DigestAlg::Blake3));
        // A flipped payload bit is caught (by the decompressor or the digest).
        let last = obj.len() - 10;
        obj[last] ^= 0x40;
        let e = decode("main/archive/x", &obj).unwrap_err().to_string();
        assert!(e.contains("main/archive/x"), "{e}");
        // A flipped header bit is caught by the header CRC.
        let mut obj2 = encode_with_hash(&plain, digest(&plain), c, 3).unwrap();
        obj2[15] ^= 1;
        assert!(decode("k", &obj2).unwrap_err().to_string().contains("CRC"));
    }
}
