//! The incremental form of a relation segment file, as diff and incr backups store it (written by
//! `backup::copy`, rebuilt by `restore::write`): the file's length in blocks at backup time (its
//! truncation length) and only the blocks that changed since the reference backup. It is the plaintext of a stored object, so the
//! object header's digest protects it; its own header makes it self-describing.
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
//! Rebuilding a file from a chain (`RebuildPlan`, which the restore follows) takes each block from the
//! newest backup that has it, back to the newest whole copy, but never from behind a backup whose length
//! did not reach the block; the length is the newest incremental's; a block found nowhere is zeroes (as
//! PostgreSQL extends files).

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
            return Err(Error::Internal(format!(
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

    /// The content of `count` stored blocks from the `i`-th.
    pub fn blocks(&self, i: usize, count: usize) -> &'a [u8] {
        &self.data[i * BLOCK..(i + count) * BLOCK]
    }

    /// The content of block `blkno`, if this file has it.
    pub fn find(&self, blkno: u32) -> Option<&'a [u8]> {
        self.block_numbers
            .binary_search(&blkno)
            .ok()
            .map(|i| self.block(i))
    }
}

/// Where a block of a rebuilt file comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockSource {
    /// Zeroes: found in no layer (the file was extended and the block never written since, or cut and
    /// regrown); the restored file leaves it a hole.
    Zero,
    /// The base, the newest whole copy of the file in the chain, at the block's own offset.
    Base,
    /// Incremental layer `layer` (0 = the newest, the backup restored), its `nth` stored block counting
    /// across the layer's pieces in order.
    Incremental { layer: u16, nth: u32 },
}

/// The per-block plan of a file rebuilt from a chain, as pg_combinebackup makes one: for every block
/// of the final file, where it comes from. The final length is the newest incremental's.
///
/// It is filled newest layer first, each block claimed by the first layer that has it (provided every
/// newer layer's length reached it), then the base fills what is left below every length. A claim is
/// final when made, so the restore writes a block the moment it claims it: each block is written once
/// and each stored piece read once, though the block lists are only known by reading the pieces.
/// Memory: 8 bytes per block of the final file (2 MB for a 1 GB segment).
#[derive(Clone, Debug)]
pub struct RebuildPlan {
    /// cutoffs[k]: blocks of layer k are used only below this (the smallest length of layers 0..k, so
    /// older copies of a block that was cut meanwhile are never used).
    cutoffs: Vec<u32>,
    /// Below this, blocks not claimed by a layer come from the base.
    base_cutoff: u32,
    sources: Vec<BlockSource>,
    /// The layer offered last: layers must come newest first.
    last_layer: usize,
}

impl RebuildPlan {
    /// A plan for incrementals with these truncation lengths (in blocks), newest first; at least one.
    pub fn new(truncations: &[u32]) -> RebuildPlan {
        let length = truncations.first().copied().unwrap_or(0);
        let mut cutoffs = Vec::with_capacity(truncations.len());
        let mut cut = length;
        for &t in truncations {
            cutoffs.push(cut);
            cut = cut.min(t);
        }
        RebuildPlan {
            cutoffs,
            base_cutoff: cut,
            sources: vec![BlockSource::Zero; length as usize],
            last_layer: 0,
        }
    }

    /// The final file's length in blocks.
    pub fn length(&self) -> u32 {
        self.sources.len() as u32
    }

    /// Layer `layer`'s `nth` stored block is block `block`: claims it when no newer layer did and every
    /// newer layer's length reached it. Returns whether the block is taken from there.
    pub fn offer(&mut self, layer: usize, nth: u32, block: u32) -> bool {
        debug_assert!(layer >= self.last_layer, "layers are offered newest first");
        self.last_layer = layer;
        let (Some(&cutoff), Ok(tag)) = (self.cutoffs.get(layer), u16::try_from(layer)) else {
            return false;
        };
        if block >= cutoff || self.sources[block as usize] != BlockSource::Zero {
            return false;
        }
        self.sources[block as usize] = BlockSource::Incremental { layer: tag, nth };
        true
    }

    /// After every layer: the base, `base_blocks` long, gives every block still unclaimed below every
    /// incremental's length. Returns how many blocks it gives.
    pub fn take_base(&mut self, base_blocks: u32) -> u32 {
        self.last_layer = usize::MAX;
        let mut taken = 0;
        for s in &mut self.sources[..self.base_cutoff.min(base_blocks) as usize] {
            if *s == BlockSource::Zero {
                *s = BlockSource::Base;
                taken += 1;
            }
        }
        taken
    }

    /// Blocks below `base_cutoff`: the only ones the base may give (for skipping the rest of it).
    pub fn base_limit(&self) -> u32 {
        self.base_cutoff
    }

    pub fn sources(&self) -> &[BlockSource] {
        &self.sources
    }

    /// The runs of consecutive blocks taken from the base within blocks `range`, as (first, count).
    pub fn base_runs(&self, range: std::ops::Range<u32>) -> Vec<(u32, u32)> {
        let end = range.end.min(self.length());
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for b in range.start.min(end)..end {
            if self.sources[b as usize] != BlockSource::Base {
                continue;
            }
            match runs.last_mut() {
                Some((first, count)) if *first + *count == b => *count += 1,
                _ => runs.push((b, 1)),
            }
        }
        runs
    }
}

/// The whole plan when every layer's block list is known: `incrementals` are (truncation length,
/// stored block numbers), newest first, over a base of `base_blocks` blocks.
pub fn rebuild_plan(base_blocks: u32, incrementals: &[(u32, &[u32])]) -> RebuildPlan {
    let truncations: Vec<u32> = incrementals.iter().map(|(t, _)| *t).collect();
    let mut plan = RebuildPlan::new(&truncations);
    for (layer, (_, blocks)) in incrementals.iter().enumerate() {
        for (nth, &b) in blocks.iter().enumerate() {
            plan.offer(layer, nth as u32, b);
        }
    }
    plan.take_base(base_blocks);
    plan
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
        let inc = |layer, nth| Incremental { layer, nth };
        // Base: 4 blocks. Older incr: grew to 5 (block 4 stored). Newer incr: length 6, blocks 1 and 5
        // changed.
        let older: &[u32] = &[4];
        let newer: &[u32] = &[1, 5];
        let plan = rebuild_plan(4, &[(6, newer), (5, older)]);
        assert_eq!(plan.length(), 6);
        assert_eq!(
            plan.sources(),
            &[Base, inc(0, 0), Base, Base, inc(1, 0), inc(0, 1)]
        );
        // The older incr saw the file cut to 2 blocks: the base's blocks 2 and 3 are stale, never used.
        let plan = rebuild_plan(4, &[(4, &[3]), (2, &[])]);
        assert_eq!(plan.sources(), &[Base, Base, Zero, inc(0, 0)]);
        assert_eq!(plan.base_runs(0..4), vec![(0, 2)]);
        // A block changed in every layer comes from the newest; the others' copies are not used.
        let plan = rebuild_plan(3, &[(3, &[0, 2]), (3, &[2]), (3, &[1, 2])]);
        assert_eq!(plan.sources(), &[inc(0, 0), inc(2, 0), inc(0, 1)]);
        // The file shrank in the newest layer: the length is its, nothing beyond it is planned.
        let plan = rebuild_plan(8, &[(2, &[]), (8, &[6, 7])]);
        assert_eq!(plan.sources(), &[Base, Base]);
        assert_eq!(plan.base_limit(), 2);
    }

    #[test]
    fn offers_beyond_a_cut_or_already_claimed_are_refused() {
        let mut plan = RebuildPlan::new(&[10, 4, 8]);
        assert!(plan.offer(0, 0, 6));
        assert!(!plan.offer(1, 0, 6)); // claimed by the newer layer (and beyond layer 1's length)
        assert!(plan.offer(1, 1, 3));
        assert!(!plan.offer(2, 0, 5)); // layer 1 was cut to 4 blocks: layer 2's block 5 is stale
        assert!(plan.offer(2, 1, 1));
        assert!(!plan.offer(3, 0, 0)); // no such layer
        assert_eq!(plan.take_base(100), 2); // blocks 0 and 2 (below 4; 1 and 3 are claimed)
        assert_eq!(plan.base_runs(0..10), vec![(0, 1), (2, 1)]);
        let zeroes = plan.sources().iter().filter(|s| **s == BlockSource::Zero);
        assert_eq!(zeroes.count(), 5); // 4, 5, 7, 8, 9
    }
}
