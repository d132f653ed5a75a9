//! Compression of stored objects: zstd (with a level), lz4 (frame format, no level) or none.
//! Decompression is bounded by the plaintext size recorded in the object header, so a corrupt or
//! hostile object cannot make us allocate without limit.

use std::io::{Read, Write};
use std::str::FromStr;

#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressType {
    None,
    Zstd,
    Lz4,
}

impl CompressType {
    /// The byte recorded in object headers.
    pub fn code(self) -> u8 {
        match self {
            CompressType::None => 0,
            CompressType::Zstd => 1,
            CompressType::Lz4 => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<CompressType> {
        match code {
            0 => Some(CompressType::None),
            1 => Some(CompressType::Zstd),
            2 => Some(CompressType::Lz4),
            _ => None,
        }
    }

    /// File extension of WAL objects stored with this compression.
    pub fn extension(self) -> &'static str {
        match self {
            CompressType::None => "raw",
            CompressType::Zstd => "zst",
            CompressType::Lz4 => "lz4",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CompressType::None => "none",
            CompressType::Zstd => "zstd",
            CompressType::Lz4 => "lz4",
        }
    }

    pub const ALL: [CompressType; 3] = [CompressType::Zstd, CompressType::Lz4, CompressType::None];
}

impl FromStr for CompressType {
    type Err = String;
    /// In any case, as PostgreSQL reads its enum settings (`strata.compress_type` is one).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(CompressType::None),
            "zstd" => Ok(CompressType::Zstd),
            "lz4" => Ok(CompressType::Lz4),
            _ => Err(format!(
                "unknown compression type \"{s}\": use zstd, lz4 or none"
            )),
        }
    }
}

/// Valid zstd levels for `strata.compress_level` (negative levels are zstd's fast modes).
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = -7..=19;

thread_local! {
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses `plain` and appends the result to `out`.
pub fn compress_into(
    kind: CompressType,
    level: i32,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    match kind {
        CompressType::None => out.extend_from_slice(plain),
        CompressType::Zstd => ZSTD.with(|cell| -> std::io::Result<()> {
            // One-shot compression of the whole input with a context reused per thread: the streaming
            // encoder compresses WAL about a third slower (external-dictionary match finder, copies).
            let mut cached = cell.borrow_mut();
            if !matches!(&*cached, Some((l, _)) if *l == level) {
                *cached = Some((level, zstd::bulk::Compressor::new(level)?));
            }
            let (_, compressor) = cached.as_mut().expect("set above");
            // Into the vector's spare capacity, after what it holds: zero-filling a worst-case
            // sized output first (16 MB for a WAL segment) cost a memset and a page fault per page.
            let start = out.len();
            out.reserve(max_output(kind, plain.len()));
            let mut after = std::io::Cursor::new(&mut *out);
            after.set_position(start as u64);
            compressor.compress_to_buffer(plain, &mut after)?;
            Ok(())
        })?,
        CompressType::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(out);
            enc.write_all(plain)?;
            enc.finish().map_err(std::io::Error::other)?;
        }
    }
    Ok(())
}

/// The most bytes compressing `plain_len` bytes can produce (for sizing an output buffer once).
pub fn max_output(kind: CompressType, plain_len: usize) -> usize {
    match kind {
        CompressType::None => plain_len,
        CompressType::Zstd => zstd::zstd_safe::compress_bound(plain_len),
        // Incompressible LZ4 blocks are stored as they are, with a few bytes per 64 kB block and
        // a frame header and end mark.
        CompressType::Lz4 => plain_len + (plain_len / 65536 + 1) * 8 + 64,
    }
}

/// Decompresses `stored`, expecting exactly `plain_size` bytes.
pub fn decompress(kind: CompressType, stored: &[u8], plain_size: u64) -> Result<Vec<u8>, String> {
    let cap = usize::try_from(plain_size)
        .map_err(|_| format!("plaintext size {plain_size} too large"))?;
    let mut out = Vec::with_capacity(cap);
    // Read at most one byte more than expected, to detect a too long stream without unbounded growth.
    let limit = plain_size + 1;
    let res = match kind {
        CompressType::None => {
            out.extend_from_slice(stored);
            Ok(())
        }
        // Straight into the vector's spare capacity (no zero-filling); a stream longer than the
        // header says does not fit and fails.
        CompressType::Zstd => zstd::bulk::Decompressor::new()
            .and_then(|mut d| d.decompress_to_buffer(stored, &mut out))
            .map(|_| ()),
        CompressType::Lz4 => lz4_flex::frame::FrameDecoder::new(stored)
            .take(limit)
            .read_to_end(&mut out)
            .map(|_| ()),
    };
    res.map_err(|e| format!("{} decompression failed: {e}", kind.name()))?;
    if out.len() as u64 != plain_size {
        return Err(format!(
            "decompressed to {} bytes, header says {plain_size}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for kind in CompressType::ALL {
            let mut out = Vec::new();
            compress_into(kind, 3, &plain, &mut out).unwrap();
            assert_eq!(
                decompress(kind, &out, plain.len() as u64).unwrap(),
                plain,
                "{kind:?}"
            );
            assert!(
                decompress(kind, &out, plain.len() as u64 - 1).is_err(),
                "{kind:?} size check"
            );
            // Appended after what the output holds, within the size said beforehand.
            let mut after = b"head".to_vec();
            compress_into(kind, 3, &plain, &mut after).unwrap();
            assert_eq!(&after[..4], b"head", "{kind:?}");
            assert_eq!(&after[4..], &out[..], "{kind:?}");
            assert!(out.len() <= max_output(kind, plain.len()), "{kind:?}");
            let random: Vec<u8> = (0..200_000u64)
                .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
                .collect();
            let mut packed = Vec::new();
            compress_into(kind, 3, &random, &mut packed).unwrap();
            assert!(packed.len() <= max_output(kind, random.len()), "{kind:?}");
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!("zstd".parse::<CompressType>(), Ok(CompressType::Zstd));
        assert_eq!("Zstd".parse::<CompressType>(), Ok(CompressType::Zstd));
        assert!("gzip"
            .parse::<CompressType>()
            .unwrap_err()
            .contains("zstd, lz4 or none"));
    }
}
