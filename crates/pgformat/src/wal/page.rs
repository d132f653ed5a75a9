//! WAL page headers. Every 8 kB WAL page starts with a header: the short form (24 bytes after MAXALIGN)
//! `{xlp_magic u16, xlp_info u16, xlp_tli u32, xlp_pageaddr u64, xlp_rem_len u32}`, or on the first page
//! of a segment the long form (40 bytes), which adds `{xlp_sysid u64, xlp_seg_size u32, xlp_xlog_blcksz
//! u32}`. `xlp_rem_len` is how many bytes of a record started on an earlier page continue here.

use super::WalError;
use crate::lsn::Lsn;

/// XLOG_PAGE_MAGIC of PostgreSQL 15.
pub const XLOG_PAGE_MAGIC: u16 = 0xD110;
pub const SHORT_HEADER_LEN: usize = 24;
pub const LONG_HEADER_LEN: usize = 40;

pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
pub const XLP_LONG_HEADER: u16 = 0x0002;
#[allow(dead_code)]
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const XLP_ALL_FLAGS: u16 = 0x000F;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    pub info: u16,
    pub tli: u32,
    pub pageaddr: Lsn,
    pub rem_len: u32,
    pub sysid: Option<u64>,
    pub seg_size: Option<u32>,
}

impl PageHeader {
    pub fn len(&self) -> usize {
        if self.info & XLP_LONG_HEADER != 0 {
            LONG_HEADER_LEN
        } else {
            SHORT_HEADER_LEN
        }
    }

    /// Bytes needed to parse the header that starts with `first_two_info_bytes`-bearing data.
    pub fn needed(data: &[u8]) -> usize {
        if data.len() >= 4 && u16::from_le_bytes([data[2], data[3]]) & XLP_LONG_HEADER != 0 {
            LONG_HEADER_LEN
        } else {
            SHORT_HEADER_LEN
        }
    }

    /// Parses and checks the header of the page at `lsn`.
    pub fn parse(lsn: Lsn, data: &[u8]) -> Result<PageHeader, WalError> {
        let bad = |reason: String| WalError::BadPageHeader { lsn, reason };
        if data.len() < SHORT_HEADER_LEN {
            return Err(bad("truncated".into()));
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        if magic != XLOG_PAGE_MAGIC {
            return Err(bad(format!(
                "magic 0x{magic:04X}, expected 0x{XLOG_PAGE_MAGIC:04X} (PostgreSQL 15)"
            )));
        }
        let info = u16::from_le_bytes([data[2], data[3]]);
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(bad(format!("unknown flags 0x{info:04X}")));
        }
        let tli = u32::from_le_bytes(data[4..8].try_into().expect("4"));
        let pageaddr = Lsn(u64::from_le_bytes(data[8..16].try_into().expect("8")));
        if pageaddr != lsn {
            return Err(bad(format!(
                "page address {pageaddr}, expected {lsn} (a recycled or misplaced segment)"
            )));
        }
        let rem_len = u32::from_le_bytes(data[16..20].try_into().expect("4"));
        let (sysid, seg_size) = if info & XLP_LONG_HEADER != 0 {
            if data.len() < LONG_HEADER_LEN {
                return Err(bad("truncated long header".into()));
            }
            let blcksz = u32::from_le_bytes(data[36..40].try_into().expect("4"));
            if blcksz != crate::lsn::WAL_PAGE_SIZE {
                return Err(bad(format!("WAL block size {blcksz}, expected 8192")));
            }
            (
                Some(u64::from_le_bytes(data[24..32].try_into().expect("8"))),
                Some(u32::from_le_bytes(data[32..36].try_into().expect("4"))),
            )
        } else {
            (None, None)
        };
        Ok(PageHeader {
            info,
            tli,
            pageaddr,
            rem_len,
            sysid,
            seg_size,
        })
    }
}

/// The system identifier in a segment's first (long) page header, if the bytes start with one.
pub fn segment_system_identifier(segment: &[u8]) -> Option<u64> {
    if segment.len() < LONG_HEADER_LEN
        || u16::from_le_bytes([segment[0], segment[1]]) != XLOG_PAGE_MAGIC
    {
        return None;
    }
    let info = u16::from_le_bytes([segment[2], segment[3]]);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    Some(u64::from_le_bytes(segment[24..32].try_into().ok()?))
}
