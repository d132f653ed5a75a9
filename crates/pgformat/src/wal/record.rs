//! One WAL record, once assembled from its pages: header checks, CRC, block references (PostgreSQL 15's
//! `src/include/access/xlogrecord.h`, decoded as `DecodeXLogRecord` in `xlogreader.c` does).
//!
//! ```text
//! XLogRecord (24 bytes): xl_tot_len u32, xl_xid u32, xl_prev u64, xl_info u8, xl_rmid u8, 2 pad, xl_crc u32
//! then headers, no padding: block headers (ids 0..=32, increasing), origin (253: u16), top-level xid
//! (252: u32), and last the main data length (255: u8, or 254: u32);
//! then each block's image and data, in block order, then the main data.
//! ```
//! A block header is `{id u8, fork_flags u8, data_length u16}`; fork_flags low nibble = fork, 0x10 image,
//! 0x20 data, 0x40 will-init, 0x80 same-rel. An image adds `{length u16, hole_offset u16, bimg_info u8}`
//! and, only when it has a hole *and* is compressed, `{hole_length u16}`. Then the RelFileNode (12
//! bytes, absent with same-rel) and the block number u32.
//! The CRC-32C covers the record after the header, then the header's first 20 bytes.

use super::WalError;
use crate::bytes::Reader;
use crate::lsn::Lsn;
use crate::relfile::{ForkNumber, RelFileNode, BLCKSZ};

/// SizeOfXLogRecord.
pub const SIZE_OF_XLOG_RECORD: usize = 24;
/// Offset of xl_crc in the header: the CRC covers the header up to here.
const CRC_OFFSET: usize = 20;
/// Largest record PostgreSQL can allocate when reading (MaxAllocSize).
pub const MAX_RECORD_LEN: u32 = 0x3FFF_FFFF;

pub const XLR_MAX_BLOCK_ID: u8 = 32;
pub const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
pub const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
pub const XLR_BLOCK_ID_ORIGIN: u8 = 253;
pub const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
/// xl_info bits owned by the WAL machinery (the rest belong to the resource manager).
pub const XLR_INFO_MASK: u8 = 0x0F;
/// xl_info flag: the record changes relations in ways not expressed by its block references.
pub const XLR_SPECIAL_REL_UPDATE: u8 = 0x01;

const BKPBLOCK_FORK_MASK: u8 = 0x0F;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPBLOCK_WILL_INIT: u8 = 0x40;
const BKPBLOCK_SAME_REL: u8 = 0x80;

const BKPIMAGE_HAS_HOLE: u8 = 0x01;
const BKPIMAGE_APPLY: u8 = 0x02;
/// BKPIMAGE_COMPRESS_PGLZ | _LZ4 | _ZSTD.
const BKPIMAGE_COMPRESSED: u8 = 0x04 | 0x08 | 0x10;

/// A block the record references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRef {
    pub id: u8,
    pub rel: RelFileNode,
    pub fork: ForkNumber,
    pub block: u32,
    /// The record carries a full-page image of the block.
    pub has_image: bool,
    /// Redo restores the image (otherwise it is only for wal_consistency_checking).
    pub apply_image: bool,
    /// Redo initializes the page from scratch.
    pub will_init: bool,
    pub has_data: bool,
}

/// A decoded record: its place in the stream, resource manager, block references and main data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRecord {
    pub lsn: Lsn,
    /// Where the next record starts (the end, MAXALIGNed), as PostgreSQL's EndRecPtr: for XLOG_SWITCH,
    /// the end of the segment.
    pub end_lsn: Lsn,
    pub rmid: u8,
    pub info: u8,
    pub xid: u32,
    /// xl_prev: the start of the previous record.
    pub prev: Lsn,
    pub blocks: Vec<BlockRef>,
    pub main_data: Vec<u8>,
}

/// The fixed header of a record, readable once its first 24 bytes are assembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub tot_len: u32,
    pub xid: u32,
    pub prev: Lsn,
    pub info: u8,
    pub rmid: u8,
    pub crc: u32,
}

impl RecordHeader {
    /// Reads the header from the first 24 bytes of `b`.
    pub fn read(b: &[u8]) -> Option<RecordHeader> {
        let mut r = Reader::new(b);
        let (tot_len, xid, prev, info, rmid) = (r.u32()?, r.u32()?, r.u64()?, r.u8()?, r.u8()?);
        r.take(2)?;
        Some(RecordHeader {
            tot_len,
            xid,
            prev: Lsn(prev),
            info,
            rmid,
            crc: r.u32()?,
        })
    }
}

/// Checks the CRC-32C of a complete record (`rec` is exactly xl_tot_len bytes).
pub fn check_crc(lsn: Lsn, rec: &[u8]) -> Result<(), WalError> {
    let bad = || WalError::BadRecord {
        lsn,
        reason: format!("record of {} bytes", rec.len()),
    };
    let header = RecordHeader::read(rec).ok_or_else(bad)?;
    let body = rec.get(SIZE_OF_XLOG_RECORD..).ok_or_else(bad)?;
    let found = crc32c::crc32c_append(crc32c::crc32c(body), &rec[..CRC_OFFSET]);
    if found != header.crc {
        return Err(WalError::BadCrc {
            lsn,
            expected: header.crc,
            found,
        });
    }
    Ok(())
}

/// Decodes a complete, CRC-checked record of exactly xl_tot_len bytes.
pub fn decode(lsn: Lsn, end_lsn: Lsn, rec: &[u8]) -> Result<DecodedRecord, WalError> {
    let bad = |reason: String| WalError::BadRecord { lsn, reason };
    let h = RecordHeader::read(rec).ok_or_else(|| bad(format!("{} bytes", rec.len())))?;
    if h.tot_len as usize != rec.len() {
        return Err(bad(format!(
            "xl_tot_len {} for {} bytes",
            h.tot_len,
            rec.len()
        )));
    }
    let mut r = Reader::new(&rec[SIZE_OF_XLOG_RECORD..]);
    let short = || bad("headers run past the end of the record".to_string());
    let mut blocks: Vec<BlockRef> = Vec::new();
    // Bytes announced by the headers, after them: images, block data, main data.
    let mut datatotal: usize = 0;
    let mut main_len: usize = 0;
    let mut last_rel: Option<RelFileNode> = None;
    while r.remaining() > datatotal {
        let id = r.u8().ok_or_else(short)?;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = r.u8().ok_or_else(short)? as usize;
                datatotal += main_len;
                break; // the main data header is always last
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = r.u32().ok_or_else(short)? as usize;
                datatotal += main_len;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => {
                r.u16().ok_or_else(short)?;
            }
            XLR_BLOCK_ID_TOPLEVEL_XID => {
                r.u32().ok_or_else(short)?;
            }
            id if id <= XLR_MAX_BLOCK_ID => {
                if blocks.last().is_some_and(|b| id <= b.id) {
                    return Err(bad(format!("out-of-order block id {id}")));
                }
                let fork_flags = r.u8().ok_or_else(short)?;
                let data_len = r.u16().ok_or_else(short)? as usize;
                let has_data = fork_flags & BKPBLOCK_HAS_DATA != 0;
                if has_data != (data_len > 0) {
                    return Err(bad(format!(
                        "block {id}: has-data flag is {has_data} but data length is {data_len}"
                    )));
                }
                datatotal += data_len;
                let has_image = fork_flags & BKPBLOCK_HAS_IMAGE != 0;
                let mut apply_image = false;
                if has_image {
                    let image_len = r.u16().ok_or_else(short)?;
                    let hole_offset = r.u16().ok_or_else(short)?;
                    let bimg_info = r.u8().ok_or_else(short)?;
                    apply_image = bimg_info & BKPIMAGE_APPLY != 0;
                    check_image(id, image_len, hole_offset, bimg_info, &mut r).map_err(bad)?;
                    datatotal += image_len as usize;
                }
                let rel = if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    let rel = r.rel_file_node().ok_or_else(short)?;
                    last_rel = Some(rel);
                    rel
                } else {
                    last_rel.ok_or_else(|| {
                        bad(format!(
                            "block {id}: same-rel flag without a previous relation"
                        ))
                    })?
                };
                let block = r.u32().ok_or_else(short)?;
                let fork_no = fork_flags & BKPBLOCK_FORK_MASK;
                let fork = ForkNumber::from_u8(fork_no)
                    .ok_or_else(|| bad(format!("block {id}: invalid fork number {fork_no}")))?;
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
    if r.remaining() != datatotal {
        return Err(bad(format!(
            "{} bytes follow the headers, which announce {datatotal}",
            r.remaining()
        )));
    }
    let main_data = rec[rec.len() - main_len..].to_vec();
    Ok(DecodedRecord {
        lsn,
        end_lsn,
        rmid: h.rmid,
        info: h.info,
        xid: h.xid,
        prev: h.prev,
        blocks,
        main_data,
    })
}

/// Reads the rest of an image header (the hole length, when present) and applies PostgreSQL's
/// consistency checks between length, hole and flags.
fn check_image(
    id: u8,
    image_len: u16,
    hole_offset: u16,
    bimg_info: u8,
    r: &mut Reader<'_>,
) -> Result<(), String> {
    let (image_len, hole_offset) = (image_len as u32, hole_offset as u32);
    let has_hole = bimg_info & BKPIMAGE_HAS_HOLE != 0;
    let compressed = bimg_info & BKPIMAGE_COMPRESSED != 0;
    let hole_len = match (compressed, has_hole) {
        (true, true) => r
            .u16()
            .ok_or(format!("block {id}: truncated image header"))? as u32,
        (true, false) => 0,
        // Uncompressed: the image is the page minus its hole.
        (false, _) => BLCKSZ.checked_sub(image_len).ok_or(format!(
            "block {id}: image length {image_len} is larger than a page"
        ))?,
    };
    let ok = if has_hole {
        hole_offset != 0 && hole_len != 0 && image_len != BLCKSZ
    } else {
        hole_offset == 0 && hole_len == 0
    };
    if !ok || (compressed && image_len == BLCKSZ) {
        return Err(format!(
            "block {id}: inconsistent image (info 0x{bimg_info:02X}, length {image_len}, \
             hole at {hole_offset} of {hole_len} bytes)"
        ));
    }
    Ok(())
}
