//! One WAL record, assembled from its pages, checked and decoded (PostgreSQL 15 layout).
//!
//! ```text
//! XLogRecord (24 bytes): xl_tot_len u32, xl_xid u32, xl_prev u64, xl_info u8, xl_rmid u8, 2 pad, xl_crc u32
//! then headers, in order: block headers (ids 0..=32, increasing), origin (253), top-level xid (252),
//! main data length (255: u8, 254: u32) last;
//! then each block's image and data, in block order, then the main data.
//! ```
//! Block header: `{id u8, fork_flags u8, data_length u16}`; fork_flags low nibble = fork, 0x10 image,
//! 0x20 data, 0x40 will-init, 0x80 same-rel. An image adds `{length u16, hole_offset u16, bimg_info u8}`
//! and, only when it has a hole *and* is compressed, `{hole_length u16}`. Then the RelFileNode (12
//! bytes, absent with same-rel) and the block number u32.
//! The CRC-32C covers the record after the header, then the header's first 20 bytes.

use super::WalError;
use crate::lsn::Lsn;
use crate::relfile::{ForkNumber, RelFileNode, BLCKSZ};

pub const SIZE_OF_XLOG_RECORD: usize = 24;
pub const XLR_MAX_BLOCK_ID: u8 = 32;
pub const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
pub const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
pub const XLR_BLOCK_ID_ORIGIN: u8 = 253;
pub const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
/// xl_info flag: the record changes relations in ways not expressed by block references.
pub const XLR_SPECIAL_REL_UPDATE: u8 = 0x01;

const BKPBLOCK_FORK_MASK: u8 = 0x0F;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPBLOCK_WILL_INIT: u8 = 0x40;
const BKPBLOCK_SAME_REL: u8 = 0x80;

const BKPIMAGE_HAS_HOLE: u8 = 0x01;
const BKPIMAGE_APPLY: u8 = 0x02;
const BKPIMAGE_COMPRESSED: u8 = 0x04 | 0x08 | 0x10; // pglz | lz4 | zstd

/// A block the record references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRef {
    pub id: u8,
    pub rel: RelFileNode,
    pub fork: ForkNumber,
    pub block: u32,
    pub has_image: bool,
    pub apply_image: bool,
    pub will_init: bool,
    pub has_data: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRecord {
    pub lsn: Lsn,
    /// Where the next record starts (the end, MAXALIGNed), as PostgreSQL's EndRecPtr.
    pub end_lsn: Lsn,
    pub rmid: u8,
    pub info: u8,
    pub xid: u32,
    pub prev: Lsn,
    pub blocks: Vec<BlockRef>,
    pub main_data: Vec<u8>,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    lsn: Lsn,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WalError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| WalError::BadRecord {
                lsn: self.lsn,
                reason: format!("headers run past the record's {} bytes", self.b.len()),
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WalError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WalError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, WalError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
}

/// Checks the CRC of a complete record.
pub fn check_crc(lsn: Lsn, rec: &[u8]) -> Result<(), WalError> {
    let expected = u32::from_le_bytes(rec[20..24].try_into().expect("4"));
    let found = crc32c::crc32c_append(crc32c::crc32c(&rec[SIZE_OF_XLOG_RECORD..]), &rec[..20]);
    if found != expected {
        return Err(WalError::BadCrc {
            lsn,
            expected,
            found,
        });
    }
    Ok(())
}

/// Decodes a complete, CRC-checked record.
pub fn decode(lsn: Lsn, end_lsn: Lsn, rec: &[u8]) -> Result<DecodedRecord, WalError> {
    let bad = |reason: String| WalError::BadRecord { lsn, reason };
    let tot_len = u32::from_le_bytes(rec[0..4].try_into().expect("4")) as usize;
    debug_assert_eq!(tot_len, rec.len());
    let xid = u32::from_le_bytes(rec[4..8].try_into().expect("4"));
    let prev = Lsn(u64::from_le_bytes(rec[8..16].try_into().expect("8")));
    let info = rec[16];
    let rmid = rec[17];

    let mut c = Cursor {
        b: rec,
        pos: SIZE_OF_XLOG_RECORD,
        lsn,
    };
    let mut blocks: Vec<BlockRef> = Vec::new();
    let mut payload_total: usize = 0; // images + block data + main data, after the headers
    let mut main_len: usize = 0;
    let mut last_rel: Option<RelFileNode> = None;
    let mut max_id: i32 = -1;
    while rec.len() - c.pos > payload_total {
        let id = c.u8()?;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = c.u8()? as usize;
                payload_total += main_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = c.u32()? as usize;
                payload_total += main_len;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => {
                c.u16()?;
            }
            XLR_BLOCK_ID_TOPLEVEL_XID => {
                c.u32()?;
            }
            id if id <= XLR_MAX_BLOCK_ID => {
                if (id as i32) <= max_id {
                    return Err(bad(format!("block id {id} out of order")));
                }
                max_id = id as i32;
                let fork_flags = c.u8()?;
                let data_len = c.u16()? as usize;
                let has_data = fork_flags & BKPBLOCK_HAS_DATA != 0;
                if has_data != (data_len > 0) {
                    return Err(bad(format!(
                        "block {id}: data flag {has_data} with data length {data_len}"
                    )));
                }
                payload_total += data_len;
                let has_image = fork_flags & BKPBLOCK_HAS_IMAGE != 0;
                let mut apply_image = false;
                if has_image {
                    let bimg_len = c.u16()? as u32;
                    let hole_offset = c.u16()? as u32;
                    let bimg_info = c.u8()?;
                    apply_image = bimg_info & BKPIMAGE_APPLY != 0;
                    let compressed = bimg_info & BKPIMAGE_COMPRESSED != 0;
                    let hole_len = if compressed {
                        if bimg_info & BKPIMAGE_HAS_HOLE != 0 {
                            c.u16()? as u32
                        } else {
                            0
                        }
                    } else {
                        BLCKSZ
                            .checked_sub(bimg_len)
                            .ok_or_else(|| bad(format!("block {id}: image length {bimg_len}")))?
                    };
                    let has_hole = bimg_info & BKPIMAGE_HAS_HOLE != 0;
                    if (has_hole && (hole_offset == 0 || hole_len == 0 || bimg_len == BLCKSZ))
                        || (!has_hole && (hole_offset != 0 || hole_len != 0))
                        || (!compressed && bimg_len == BLCKSZ && has_hole)
                    {
                        return Err(bad(format!(
                            "block {id}: inconsistent image (length {bimg_len}, hole at {hole_offset} of {hole_len})"
                        )));
                    }
                    payload_total += bimg_len as usize;
                }
                let rel = if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    let r = RelFileNode::from_le_bytes(c.take(12)?.try_into().expect("12"));
                    last_rel = Some(r);
                    r
                } else {
                    last_rel.ok_or_else(|| {
                        bad(format!(
                            "block {id}: same-rel flag without a previous relation"
                        ))
                    })?
                };
                let block = c.u32()?;
                let fork_no = fork_flags & BKPBLOCK_FORK_MASK;
                let fork = ForkNumber::from_u8(fork_no)
                    .ok_or_else(|| bad(format!("block {id}: fork {fork_no}")))?;
                blocks.push(BlockRef {
                    id,
                    rel,
                    fork,
                    block,
                    has_image,
                    apply_image,
                    will_init: fork_flags & BKPBLOCK_WILL_INIT != 0,
                    has_data,
                });
            }
            other => return Err(bad(format!("invalid block id {other}"))),
        }
    }
    if rec.len() - c.pos != payload_total {
        return Err(bad(format!(
            "{} bytes after the headers, the headers announce {payload_total}",
            rec.len() - c.pos
        )));
    }
    let main_data = rec[rec.len() - main_len..].to_vec();
    Ok(DecodedRecord {
        lsn,
        end_lsn,
        rmid,
        info,
        xid,
        prev,
        blocks,
        main_data,
    })
}
