//! The stored-object format: every object pg_strata stores for file content (archived WAL segments and
//! history files, and each piece of a backup's files: chunks, bundled small files, incremental pieces)
//! is a fixed header followed by the payload, so that an object alone says how to read and check it.
//! (Manifests, claims, summaries and the identity file have formats of their own.)
//!
//! ```text
//! offset size
//!  0      8   magic "STRATAOB"
//!  8      2   format version (1), little-endian
//! 10      1   compression (0 none, 1 zstd, 2 lz4)
//! 11      1   encryption (0 none)
//! 12      8   plaintext size, little-endian
//! 20     32   SHA-256 of the plaintext
//! 52      4   CRC-32C of bytes 0..52, little-endian
//! 56      .   payload: the plaintext, compressed (then encrypted)
//! ```
//! The order is fixed: hash and size of the plaintext, then compress, then encrypt.

use crate::compress::{self, CompressType};
use crate::{Error, Result};
use sha2::{Digest, Sha256};

pub const MAGIC: &[u8; 8] = b"STRATAOB";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 56;

/// What the header of a stored object says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHeader {
    pub compress: CompressType,
    pub plain_size: u64,
    pub sha256: [u8; 32],
}

impl ObjectHeader {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..10].copy_from_slice(&VERSION.to_le_bytes());
        h[10] = self.compress.code();
        h[11] = 0;
        h[12..20].copy_from_slice(&self.plain_size.to_le_bytes());
        h[20..52].copy_from_slice(&self.sha256);
        let crc = crc32c::crc32c(&h[0..52]);
        h[52..56].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parses and checks a header; `key` names the object in errors.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<ObjectHeader> {
        let corrupt = |reason: String| Error::CorruptObject {
            key: key.to_string(),
            reason,
        };
        if bytes.len() < HEADER_LEN {
            return Err(corrupt(format!(
                "{} bytes, shorter than the {HEADER_LEN} byte header",
                bytes.len()
            )));
        }
        if &bytes[0..8] != MAGIC {
            return Err(corrupt("bad magic: not a pg_strata object".into()));
        }
        let crc = u32::from_le_bytes(bytes[52..56].try_into().expect("4 bytes"));
        if crc != crc32c::crc32c(&bytes[0..52]) {
            return Err(corrupt("header CRC mismatch".into()));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(corrupt(format!(
                "format version {version}, this pg_strata reads {VERSION}"
            )));
        }
        let compress = CompressType::from_code(bytes[10])
            .ok_or_else(|| corrupt(format!("unknown compression {}", bytes[10])))?;
        if bytes[11] != 0 {
            return Err(corrupt(format!("unknown encryption {}", bytes[11])));
        }
        let plain_size = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let sha256: [u8; 32] = bytes[20..52].try_into().expect("32 bytes");
        Ok(ObjectHeader {
            compress,
            plain_size,
            sha256,
        })
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The content digest a manifest records for a file stored as pieces whose plaintext SHA-256s are
/// `piece_sha256s`: for a file of zero or one piece, the SHA-256 of its content; for more, the SHA-256
/// of the pieces' SHA-256s concatenated in order (a hash list). Every byte is then hashed once, when
/// its piece is made or checked, yet the digest still covers the whole file.
pub fn content_digest(piece_sha256s: &[[u8; 32]]) -> [u8; 32] {
    match piece_sha256s {
        [] => sha256(b""),
        [one] => *one,
        many => {
            let mut h = Sha256::new();
            for s in many {
                h.update(s);
            }
            h.finalize().into()
        }
    }
}

/// Compresses plaintext into a stored object whose header is still blank (see `write_header`), so
/// that hashing can run in parallel with compression.
pub fn compress_payload(plain: &[u8], compress: CompressType, level: i32) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_LEN + plain.len() / 4);
    out.resize(HEADER_LEN, 0);
    compress::compress_into(compress, level, plain, &mut out)
        .map_err(|e| Error::Internal(format!("{} compression failed: {e}", compress.name())))?;
    Ok(out)
}

/// Fills the header of an object made by `compress_payload`.
pub fn write_header(object: &mut [u8], plain_size: u64, sha256: [u8; 32], compress: CompressType) {
    let header = ObjectHeader {
        compress,
        plain_size,
        sha256,
    };
    object[..HEADER_LEN].copy_from_slice(&header.encode());
}

/// Builds a stored object from plaintext whose SHA-256 is already known.
pub fn encode_with_hash(
    plain: &[u8],
    sha: [u8; 32],
    compress: CompressType,
    level: i32,
) -> Result<Vec<u8>> {
    let mut out = compress_payload(plain, compress, level)?;
    write_header(&mut out, plain.len() as u64, sha, compress);
    Ok(out)
}

/// The largest plaintext any object may claim (a header is untrusted: it must not make a reader
/// allocate whatever it says).
pub const MAX_PLAIN_SIZE: u64 = 1 << 30;

/// Decodes a stored object: checks the header, decompresses, checks size and SHA-256.
pub fn decode(key: &str, stored: &[u8]) -> Result<(ObjectHeader, Vec<u8>)> {
    decode_limited(key, stored, MAX_PLAIN_SIZE)
}

/// `decode`, refusing before decompressing an object whose header claims more than `max_plain` bytes
/// (what the manifest or the WAL segment size says it holds).
pub fn decode_limited(key: &str, stored: &[u8], max_plain: u64) -> Result<(ObjectHeader, Vec<u8>)> {
    let header = ObjectHeader::decode(key, stored)?;
    if header.plain_size > max_plain {
        return Err(Error::CorruptObject {
            key: key.to_string(),
            reason: format!(
                "its header claims {} bytes, at most {max_plain} expected",
                header.plain_size
            ),
        });
    }
    let plain = compress::decompress(header.compress, &stored[HEADER_LEN..], header.plain_size)
        .map_err(|reason| Error::CorruptObject {
            key: key.to_string(),
            reason,
        })?;
    let found = sha256(&plain);
    if found != header.sha256 {
        return Err(Error::ChecksumMismatch {
            key: key.to_string(),
            expected: header.sha256_hex(),
            found: hex::encode(found),
        });
    }
    Ok((header, plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_of_an_uncompressed_object() {
        let obj = encode_with_hash(b"abc", sha256(b"abc"), CompressType::None, 0).unwrap();
        let expected_header = concat!(
            "5354524154414f42",                                                 // STRATAOB
            "0100",                                                             // version 1
            "00",                                                               // no compression
            "00",                                                               // no encryption
            "0300000000000000",                                                 // 3 bytes
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", // sha256("abc")
        );
        assert_eq!(hex::encode(&obj[..52]), expected_header);
        assert_eq!(
            hex::encode(&obj[52..56]),
            "5d83b8cd",
            "header CRC-32C (computed independently)"
        );
        assert_eq!(&obj[56..], b"abc");
    }

    #[test]
    fn content_digest_is_the_sha256_of_small_files_and_a_hash_list_of_large_ones() {
        assert_eq!(content_digest(&[]), sha256(b""));
        assert_eq!(content_digest(&[sha256(b"abc")]), sha256(b"abc"));
        let two = [sha256(b"a"), sha256(b"b")];
        let mut cat = Vec::new();
        cat.extend_from_slice(&two[0]);
        cat.extend_from_slice(&two[1]);
        assert_eq!(content_digest(&two), sha256(&cat));
    }

    #[test]
    fn round_trip_and_corruption_detection() {
        let plain: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 13) as u8).collect();
        for c in CompressType::ALL {
            let mut obj = encode_with_hash(&plain, sha256(&plain), c, 3).unwrap();
            let (h, back) = decode("k", &obj).unwrap();
            assert_eq!(back, plain);
            assert_eq!(h.compress, c);
            // A flipped payload bit is caught (by the decompressor or the SHA-256).
            let last = obj.len() - 10;
            obj[last] ^= 0x40;
            let e = decode("main/archive/x", &obj).unwrap_err().to_string();
            assert!(e.contains("main/archive/x"), "{e}");
            // A flipped header bit is caught by the header CRC.
            let mut obj2 = encode_with_hash(&plain, sha256(&plain), c, 3).unwrap();
            obj2[15] ^= 1;
            assert!(decode("k", &obj2).unwrap_err().to_string().contains("CRC"));
        }
    }
}
