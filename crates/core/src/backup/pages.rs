//! Verifying data page checksums while a backup reads relation files.
//!
//! A page can fail its checksum during an online backup only because PostgreSQL was writing it while
//! we read it (a torn read); such a page is read again once. Pages whose LSN is at or after the backup's
//! start are not checked at all: they were written after the backup began and WAL replay rewrites them
//! (pg_basebackup does the same). A page that fails twice is reported: it is corrupt on disk.

use pgformat::lsn::Lsn;
use pgformat::page::{page_lsn, verify_page, PageVerdict};
use pgformat::relfile::BLCKSZ;
use std::fs::File;
use std::os::unix::fs::FileExt;

const PAGE: usize = BLCKSZ as usize;

/// A page that failed its checksum twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageFailure {
    /// Block number within the file.
    pub block: u32,
    pub expected: u16,
    pub found: u16,
}

/// Checks the pages of chunks of one relation file.
pub struct ChunkChecker {
    /// Block number (for the checksum) of the file's first block.
    first_block: u32,
    start_lsn: Lsn,
}

impl ChunkChecker {
    pub fn new(first_block: u32, start_lsn: Lsn) -> ChunkChecker {
        ChunkChecker {
            first_block,
            start_lsn,
        }
    }

    /// Checks the whole pages of `chunk`, read from `file` at `offset`. A page that fails is read again
    /// from the file; when the new read passes, it replaces the torn copy in `chunk`.
    pub fn check(&self, file: &File, offset: u64, chunk: &mut [u8]) -> Vec<PageFailure> {
        let mut failures = Vec::new();
        let first_in_file = (offset / PAGE as u64) as u32;
        for (i, page) in chunk.chunks_exact_mut(PAGE).enumerate() {
            let block_in_file = first_in_file + i as u32;
            let blkno = self.first_block.wrapping_add(block_in_file);
            if self.passes(page, blkno) {
                continue;
            }
            let mut again = [0u8; PAGE];
            let reread = file
                .read_exact_at(&mut again, offset + (i * PAGE) as u64)
                .is_ok();
            if reread && self.passes(&again, blkno) {
                page.copy_from_slice(&again);
                continue;
            }
            if let PageVerdict::Bad { expected, found } = verify_page(page, blkno) {
                failures.push(PageFailure {
                    block: block_in_file,
                    expected,
                    found,
                });
            }
        }
        failures
    }

    fn passes(&self, page: &[u8], blkno: u32) -> bool {
        match verify_page(page, blkno) {
            PageVerdict::Valid | PageVerdict::New => true,
            PageVerdict::Bad { .. } => page_lsn(page) >= self.start_lsn,
        }
    }
}
