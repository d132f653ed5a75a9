//! The incremental form of a relation segment file, as diff and incr backups store it (written by
//! `backup::copy`, rebuilt by `restore::write`): the file's length in blocks at backup time (its
//! truncation length) and only the blocks that changed since the reference backup. It is the plaintext of a stored object, so the
//! object header's SHA-256 protects it; its own header makes it self-describing.
//!
//! ```text
//! offset  size
//!  0      8    magic "STRATAIN"
//!  8      2    format version (1), little-endian
//! 10      2    reserved, 0
//! 12      4    truncation length: the file's length in blocks
//! 16      4    N, the number of blocks stored
//! 20      4N   block numbers within the file, strictly ascending, each < truncation length
//! 20+4N   8192 N  the blocks, in the same order
//! ```
//!
//! The rule that makes rebuilding simple: an incremental stores every block that changed since the
//! reference backup *and every block at or beyond the smallest length the file had since then* (the
//! summaries' limit block), so older copies of a block are only used below every later length.
//! Rebuilding a file from a chain (`rebuild_plan`) takes each block from the newest backup that has it,
//! back to the full, but never from behind a backup whose length did not reach the block; the length is
//! the newest incremental's; a block found nowhere is zeroes (as PostgreSQL extends files).

use crate::{Error, Result};
use pgformat::relfile::BLCKSZ;

pub const MAGIC: &[u8; 8] = b"STRATAIN";
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 20;
const BLOCK: usize = BLCKSZ as usize;

/// Encodes an incremental file. `blocks` are (block number, content) sorted ascending.
pub fn encode(truncation_blocks: u32, blocks: &[(u32, &[u8])]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_LEN + blocks.len() * (4 + BLOCK));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&truncation_blocks.to_le_bytes());
    out.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    let mut previous: Option<u32> = None;
    for (n, data) in blocks {
        if previous.is_some_and(|p| p >= *n) || *n >= truncation_blocks || data.len() != BLOCK {
            return Err(Error::Other(format!(
                "incremental file: block {n} out of order, beyond the length {truncation_blocks} or \
                 not {BLOCK} bytes"
            )));
        }
        previous = Some(*n);
        out.extend_from_slice(&n.to_le_bytes());
    }
    for (_, data) in blocks {
        out.extend_from_slice(data);
    }
    Ok(out)
}

/// A parsed incremental file, borrowing its bytes.
#[derive(Debug)]
pub struct Incremental<'a> {
    pub truncation_blocks: u32,
    pub block_numbers: Vec<u32>,
    data: &'a [u8],
}

impl<'a> Incremental<'a> {
    /// Parses and checks an incremental file; `what` names it in errors.
    pub fn parse(what: &str, bytes: &'a [u8]) -> Result<Incremental<'a>> {
        let corrupt = |reason: String| Error::CorruptObject {
            key: what.to_string(),
            reason: format!("incremental file: {reason}"),
        };
        if bytes.len() < HEADER_LEN || &bytes[0..8] != MAGIC {
            return Err(corrupt("bad magic or too short".into()));
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let version = u16_at(8);
        if version != VERSION {
            return Err(corrupt(format!(
                "format version {version}, this pg_strata reads {VERSION}"
            )));
        }
        let truncation_blocks = u32_at(12);
        let count = u32_at(16) as usize;
        let expected = HEADER_LEN
            .checked_add(
                count
                    .checked_mul(4 + BLOCK)
                    .ok_or_else(|| corrupt("block count overflows".into()))?,
            )
            .ok_or_else(|| corrupt("block count overflows".into()))?;
        if bytes.len() != expected {
            return Err(corrupt(format!(
                "{} bytes, {count} blocks need {expected}",
                bytes.len()
            )));
        }
        let block_numbers: Vec<u32> = (0..count).map(|i| u32_at(HEADER_LEN + 4 * i)).collect();
        if block_numbers.windows(2).any(|w| w[0] >= w[1])
            || block_numbers
                .last()
                .is_some_and(|&b| b >= truncation_blocks)
        {
            return Err(corrupt(
                "block numbers not ascending or beyond the length".into(),
            ));
        }
        Ok(Incremental {
            truncation_blocks,
            block_numbers,
            data: &bytes[HEADER_LEN + 4 * count..],
        })
    }

    /// The content of the `i`-th stored block.
    pub fn block(&self, i: usize) -> &'a [u8] {
        &self.data[i * BLOCK..(i + 1) * BLOCK]
    }

    /// The content of block `blkno`, if this file has it.
    pub fn find(&self, blkno: u32) -> Option<&'a [u8]> {
        self.block_numbers
            .binary_search(&blkno)
            .ok()
            .map(|i| self.block(i))
    }
}

/// Where each block of a rebuilt file comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockSource {
    /// The `usize`-th incremental of the chain (0 = newest).
    Incremental(usize),
    /// The full backup's copy of the file.
    Full,
    /// Zeroes: beyond the full copy and in no incremental.
    Zero,
}

/// For a file whose full copy has `full_blocks` blocks and whose incrementals (newest first) have the
/// given truncation lengths and block lists, where every block of the rebuilt file comes from.
pub fn rebuild_plan(full_blocks: u32, incrementals: &[(u32, &[u32])]) -> Vec<BlockSource> {
    let Some(&(length, _)) = incrementals.first() else {
        return vec![BlockSource::Full; full_blocks as usize];
    };
    (0..length)
        .map(|b| {
            // A block beyond an older backup's truncation length was cut then: older copies of it are
            // stale, so the search stops at the first incremental that was shorter than b.
            for (i, (trunc, blocks)) in incrementals.iter().enumerate() {
                if blocks.binary_search(&b).is_ok() {
                    return BlockSource::Incremental(i);
                }
                if b >= *trunc {
                    return BlockSource::Zero;
                }
            }
            if b < full_blocks {
                BlockSource::Full
            } else {
                BlockSource::Zero
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(fill: u8) -> Vec<u8> {
        vec![fill; BLOCK]
    }

    #[test]
    fn golden_header_and_round_trip() {
        let (a, b) = (page(0xAA), page(0xBB));
        let bytes = encode(10, &[(2, &a), (7, &b)]).unwrap();
        assert_eq!(
            hex::encode(&bytes[..28]),
            concat!(
                "535452415441494e", // STRATAIN
                "0100",             // version 1
                "0000",             // reserved
                "0a000000",         // truncation length 10 blocks
                "02000000",         // 2 blocks
                "02000000",         // block 2
                "07000000",         // block 7
            )
        );
        assert_eq!(bytes.len(), 28 + 2 * BLOCK);
        let inc = Incremental::parse("x", &bytes).unwrap();
        assert_eq!(inc.truncation_blocks, 10);
        assert_eq!(inc.block_numbers, vec![2, 7]);
        assert_eq!(inc.find(7).unwrap(), &b[..]);
        assert!(inc.find(3).is_none());
    }

    #[test]
    fn malformed_files_are_refused() {
        let a = page(1);
        assert!(encode(10, &[(3, &a), (3, &a)]).is_err());
        assert!(encode(3, &[(3, &a)]).is_err());
        let bytes = encode(10, &[(2, &a)]).unwrap();
        let e = Incremental::parse("k", &bytes[..bytes.len() - 1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("k") && e.contains("blocks need"), "{e}");
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(Incremental::parse("k", &v2)
            .unwrap_err()
            .to_string()
            .contains("version 2"));
        let mut beyond = bytes.clone();
        beyond[12] = 1; // length 1 block, block 2 stored
        assert!(Incremental::parse("k", &beyond).is_err());
    }

    #[test]
    fn rebuild_takes_the_newest_copy_and_respects_truncation() {
        use BlockSource::*;
        // Full copy: 4 blocks. Older incr: grew to 5 (block 4 stored). Newer incr: length 6, blocks 1
        // and 5 changed.
        let older: &[u32] = &[4];
        let newer: &[u32] = &[1, 5];
        let plan = rebuild_plan(4, &[(6, newer), (5, older)]);
        assert_eq!(
            plan,
            vec![
                Full,
                Incremental(0),
                Full,
                Full,
                Incremental(1),
                Incremental(0)
            ]
        );
        // The older incr saw the file cut to 2 blocks: the full's blocks 2 and 3 are stale, never used.
        let plan = rebuild_plan(4, &[(4, &[3]), (2, &[])]);
        assert_eq!(plan, vec![Full, Full, Zero, Incremental(0)]);
        assert_eq!(rebuild_plan(3, &[]), vec![Full, Full, Full]);
    }
}
