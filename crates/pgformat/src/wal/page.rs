//! WAL page headers. WAL is written in 8 kB pages (XLOG_BLCKSZ); every page starts with a header:
//! the short form `{xlp_magic u16, xlp_info u16, xlp_tli u32, xlp_pageaddr u64, xlp_rem_len u32}`
//! (20 bytes, 24 after MAXALIGN), or, on the first page of each segment, the long form (40 bytes) that
//! adds `{xlp_sysid u64, xlp_seg_size u32, xlp_xlog_blcksz u32}`. `xlp_pageaddr` is the LSN of the page
//! itself (a recycled segment still holds its old addresses); `xlp_rem_len` is how many bytes of a
//! record begun on an earlier page continue on this one (with `XLP_FIRST_IS_CONTRECORD`).
//!
//! Facts from PostgreSQL 15's `src/include/access/xlog_internal.h`.

use super::WalError;
use crate::bytes::{le_u16, Reader};
use crate::lsn::{Lsn, WAL_PAGE_SIZE};

/// XLOG_PAGE_MAGIC of PostgreSQL 15 (the WAL format version).
pub const XLOG_PAGE_MAGIC: u16 = 0xD110;
/// SizeOfXLogShortPHD: MAXALIGN(20).
pub const SHORT_HEADER_LEN: usize = 24;
/// SizeOfXLogLongPHD: MAXALIGN(36).
pub const LONG_HEADER_LEN: usize = 40;

/// The page begins with the rest of a record started on an earlier page.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// The header is the long form (first page of a segment).
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// Backup blocks on the page are not needed for crash recovery (set by old archivers; unused).
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// The record that was being continued here was never completed (a crash or promotion cut it) and was
/// overwritten: the page begins with a fresh record (XLOG_OVERWRITE_CONTRECORD).
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const XLP_ALL_FLAGS: u16 = 0x000F;

/// A parsed, checked page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    pub info: u16,
    pub tli: u32,
    pub pageaddr: Lsn,
    pub rem_len: u32,
    /// Long header only: system identifier and segment size.
    pub sysid: Option<u64>,
    pub seg_size: Option<u32>,
}

impl PageHeader {
    /// Bytes the header occupies.
    pub fn size(&self) -> usize {
        header_len(self.info)
    }

    pub fn is_contrecord(&self) -> bool {
        self.info & XLP_FIRST_IS_CONTRECORD != 0
    }

    pub fn is_overwrite_contrecord(&self) -> bool {
        self.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0
    }

    /// Bytes needed before the header that starts `data` can be parsed (24, or 40 once the info field
    /// says the header is long).
    pub fn needed(data: &[u8]) -> usize {
        header_len(le_u16(data, 2).unwrap_or(0))
    }

    /// Parses and checks the header of the page at `lsn`: magic, flags, page address, and for a long
    /// header the WAL block size. `data` must hold at least `PageHeader::needed(data)` bytes.
    pub fn parse(lsn: Lsn, data: &[u8]) -> Result<PageHeader, WalError> {
        let bad = |reason: String| WalError::BadPageHeader { lsn, reason };
        let mut r = Reader::new(data);
        let (Some(magic), Some(info), Some(tli), Some(pageaddr), Some(rem_len)) =
            (r.u16(), r.u16(), r.u32(), r.u64(), r.u32())
        else {
            return Err(bad(format!("truncated: {} bytes", data.len())));
        };
        if magic != XLOG_PAGE_MAGIC {
            return Err(bad(format!(
                "magic 0x{magic:04X}, expected 0x{XLOG_PAGE_MAGIC:04X} (PostgreSQL 15)"
            )));
        }
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(bad(format!("unknown info flags 0x{info:04X}")));
        }
        let pageaddr = Lsn(pageaddr);
        if pageaddr != lsn {
            return Err(bad(format!(
                "page address is {pageaddr} (a recycled or misplaced segment)"
            )));
        }
        let (sysid, seg_size) = if info & XLP_LONG_HEADER != 0 {
            // The short header is MAXALIGNed: the long fields start at 24.
            let mut r = Reader::new(data.get(SHORT_HEADER_LEN..).unwrap_or(&[]));
            let (Some(sysid), Some(seg_size), Some(blcksz)) = (r.u64(), r.u32(), r.u32()) else {
                return Err(bad(format!("truncated long header: {} bytes", data.len())));
            };
            if blcksz != WAL_PAGE_SIZE {
                return Err(bad(format!(
                    "WAL block size {blcksz}, expected {WAL_PAGE_SIZE}"
                )));
            }
            (Some(sysid), Some(seg_size))
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

fn header_len(info: u16) -> usize {
    if info & XLP_LONG_HEADER != 0 {
        LONG_HEADER_LEN
    } else {
        SHORT_HEADER_LEN
    }
}

/// The system identifier in a segment's first (long) page header, if the bytes start with one.
pub fn segment_system_identifier(segment: &[u8]) -> Option<u64> {
    let mut r = Reader::new(segment);
    let (magic, info) = (r.u16()?, r.u16()?);
    if magic != XLOG_PAGE_MAGIC || info & XLP_LONG_HEADER == 0 {
        return None;
    }
    Reader::new(segment.get(SHORT_HEADER_LEN..)?).u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(info: u16, pageaddr: u64, rem_len: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(XLOG_PAGE_MAGIC.to_le_bytes());
        b.extend(info.to_le_bytes());
        b.extend(1u32.to_le_bytes());
        b.extend(pageaddr.to_le_bytes());
        b.extend(rem_len.to_le_bytes());
        b.extend([0; 4]);
        if info & XLP_LONG_HEADER != 0 {
            b.extend(7_300_000_000_000_000_001u64.to_le_bytes());
            b.extend((16u32 << 20).to_le_bytes());
            b.extend(8192u32.to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_short_and_long_headers() {
        let h = PageHeader::parse(
            Lsn(0x1002000),
            &header(XLP_FIRST_IS_CONTRECORD, 0x1002000, 77),
        )
        .unwrap();
        assert_eq!(h.size(), 24);
        assert!(h.is_contrecord() && !h.is_overwrite_contrecord());
        assert_eq!((h.tli, h.rem_len, h.sysid), (1, 77, None));

        let long = header(XLP_LONG_HEADER, 0x1000000, 0);
        assert_eq!(PageHeader::needed(&long), 40);
        assert_eq!(PageHeader::needed(&long[..3]), 24);
        let h = PageHeader::parse(Lsn(0x1000000), &long).unwrap();
        assert_eq!(h.size(), 40);
        assert_eq!(h.sysid, Some(7_300_000_000_000_000_001));
        assert_eq!(h.seg_size, Some(16 << 20));
        assert_eq!(
            segment_system_identifier(&long),
            Some(7_300_000_000_000_000_001)
        );
        assert_eq!(segment_system_identifier(&header(0, 0x1000000, 0)), None);
    }

    #[test]
    fn rejects_bad_headers_with_their_lsn() {
        let lsn = Lsn(0x1002000);
        let err = |b: &[u8]| match PageHeader::parse(lsn, b) {
            Err(WalError::BadPageHeader { lsn: l, reason }) => {
                assert_eq!(l, lsn);
                reason
            }
            other => panic!("{other:?}"),
        };
        assert!(err(&header(0, 0x0002000, 0)).contains("page address is 0/2000"));
        let mut b = header(0, 0x1002000, 0);
        b[0] = 0x0D; // PostgreSQL 14's 0xD10D
        assert!(err(&b).contains("magic 0xD10D"));
        assert!(err(&header(0x10, 0x1002000, 0)).contains("unknown info flags"));
        assert!(err(&header(0, 0x1002000, 0)[..10]).contains("truncated"));
        let long = header(XLP_LONG_HEADER, 0x1002000, 0);
        assert!(err(&long[..30]).contains("truncated long header"));
        let mut b = long.clone();
        b[36..40].copy_from_slice(&4096u32.to_le_bytes());
        assert!(err(&b).contains("block size 4096"));
    }
}
