//! Data pages: the few page header fields a backup needs (LSN, checksum, `pd_upper`) and PostgreSQL's
//! page checksum (storage/checksum_impl.h), so that backups can verify pages while they read them.
//!
//! The checksum is FNV-1a–like over the page seen as 64 rows of 32 little-endian u32 words, with 32
//! independent lanes started from fixed offsets, two extra rounds of zeros, the lanes xor-folded, the
//! block number mixed in, and the result reduced to `1..=65535`. `pd_checksum` counts as zero while
//! computing. A page whose `pd_upper` is zero is "new": valid only when it is entirely zeros (PostgreSQL's
//! `PageIsVerifiedExtended`).

use crate::lsn::Lsn;
use crate::relfile::BLCKSZ;

const PAGE: usize = BLCKSZ as usize;
const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16_777_619;
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];
/// Byte offset of `pd_checksum` (after the 8-byte `pd_lsn`).
const CHECKSUM_OFFSET: usize = 8;
/// Byte offset of `pd_upper`.
const UPPER_OFFSET: usize = 14;

/// `pd_lsn`: the LSN of the last WAL record that changed the page (xlogid then xrecoff).
pub fn page_lsn(page: &[u8]) -> Lsn {
    if page.len() < 8 {
        return Lsn(0);
    }
    let hi = u32::from_le_bytes([page[0], page[1], page[2], page[3]]);
    let lo = u32::from_le_bytes([page[4], page[5], page[6], page[7]]);
    Lsn((u64::from(hi) << 32) | u64::from(lo))
}

/// `pd_checksum` as stored.
pub fn page_checksum_field(page: &[u8]) -> u16 {
    u16::from_le_bytes([page[CHECKSUM_OFFSET], page[CHECKSUM_OFFSET + 1]])
}

/// PostgreSQL's `PageIsNew`: `pd_upper == 0`.
pub fn page_is_new(page: &[u8]) -> bool {
    page[UPPER_OFFSET] == 0 && page[UPPER_OFFSET + 1] == 0
}

#[inline(always)]
fn mix(sum: u32, value: u32) -> u32 {
    let t = sum ^ value;
    t.wrapping_mul(FNV_PRIME) ^ (t >> 17)
}

/// `pg_checksum_page`: the checksum PostgreSQL stores in `pd_checksum` for block `blkno` (the block's
/// number in the whole relation fork, across segment files). `page` must be `BLCKSZ` bytes.
pub fn page_checksum(page: &[u8], blkno: u32) -> u16 {
    assert_eq!(page.len(), PAGE, "a data page is {PAGE} bytes");
    let mut sums = BASE_OFFSETS;
    for (row_no, row) in page.chunks_exact(N_SUMS * 4).enumerate() {
        let mut words = [0u32; N_SUMS];
        for (w, b) in words.iter_mut().zip(row.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        if row_no == 0 {
            // pd_checksum is the low half of word 2 (bytes 8..10), taken as zero.
            words[CHECKSUM_OFFSET / 4] &= 0xFFFF_0000;
        }
        for (s, w) in sums.iter_mut().zip(words) {
            *s = mix(*s, w);
        }
    }
    for _ in 0..2 {
        for s in sums.iter_mut() {
            *s = mix(*s, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ blkno;
    ((folded % 65535) + 1) as u16
}

/// What checking one page found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageVerdict {
    /// The stored checksum matches.
    Valid,
    /// An all-zero page (allocated, never written): valid.
    New,
    /// The stored checksum does not match (or a "new" page holds non-zero bytes).
    Bad { expected: u16, found: u16 },
}

/// Checks a page as PostgreSQL does when it reads one with checksums enabled.
pub fn verify_page(page: &[u8], blkno: u32) -> PageVerdict {
    if page_is_new(page) {
        if page.iter().all(|&b| b == 0) {
            return PageVerdict::New;
        }
        return PageVerdict::Bad {
            expected: 0,
            found: page_checksum_field(page),
        };
    }
    let expected = page_checksum(page, blkno);
    let found = page_checksum_field(page);
    if expected == found {
        PageVerdict::Valid
    } else {
        PageVerdict::Bad { expected, found }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pages written by a real PostgreSQL 15.20 with data checksums (initdb -k), after a CHECKPOINT:
    // block 7 of a heap table, and block 0 of pg_class.
    const HEAP_BLOCK_7: &[u8; PAGE] = include_bytes!("testdata/heap_block_7.page");
    const PG_CLASS_BLOCK_0: &[u8; PAGE] = include_bytes!("testdata/pg_class_block_0.page");

    #[test]
    fn checksums_of_real_pages_match_what_postgresql_stored() {
        assert_eq!(page_checksum_field(HEAP_BLOCK_7), 0xd1e3);
        assert_eq!(page_checksum(HEAP_BLOCK_7, 7), 0xd1e3);
        assert_eq!(verify_page(HEAP_BLOCK_7, 7), PageVerdict::Valid);
        assert_eq!(verify_page(PG_CLASS_BLOCK_0, 0), PageVerdict::Valid);
        assert!(page_lsn(HEAP_BLOCK_7) > Lsn(0));
    }

    #[test]
    fn a_flipped_bit_or_a_moved_page_fails() {
        let mut page = *HEAP_BLOCK_7;
        page[5000] ^= 0x04;
        assert!(matches!(
            verify_page(&page, 7),
            PageVerdict::Bad { found: 0xd1e3, .. }
        ));
        // The block number is part of the checksum: the same page at block 8 is wrong.
        assert!(matches!(
            verify_page(HEAP_BLOCK_7, 8),
            PageVerdict::Bad { .. }
        ));
        // The stored checksum itself does not take part in the computation.
        let mut page = *HEAP_BLOCK_7;
        page[8] = 0;
        page[9] = 0;
        assert_eq!(page_checksum(&page, 7), 0xd1e3);
    }

    #[test]
    fn new_pages_are_valid_only_when_all_zero() {
        let zero = [0u8; PAGE];
        assert_eq!(verify_page(&zero, 3), PageVerdict::New);
        let mut junk = [0u8; PAGE];
        junk[100] = 1;
        assert!(matches!(verify_page(&junk, 3), PageVerdict::Bad { .. }));
    }
}
