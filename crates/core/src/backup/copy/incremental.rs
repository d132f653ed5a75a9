//! Copying a relation file in incremental form (diff and incr backups): only some of its blocks are
//! kept — those the block-change summaries list (read where they are, in spans that read through short
//! gaps of unchanged blocks), or, when the summaries have a gap, those whose page LSN is recent (every
//! page read). The kept blocks are stored as `incremental` pieces of at most `INCREMENTAL_PIECE_BLOCKS`
//! blocks, bundled when small, with the file's length in blocks; page checksums are verified as for
//! whole files.

use super::{cancelled, CopyThread, BUNDLE_LIMIT, CHUNK_SIZE};
use crate::backup::pages::PageFailure;
use crate::backup::walk::SourceFile;
use crate::fsutil;
use crate::manifest::{FileEntry, Piece};
use crate::object;
use crate::Result;
use pgformat::lsn::Lsn;
use pgformat::relfile::BLCKSZ;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

/// Blocks per incremental piece (so that a piece is about one chunk).
pub const INCREMENTAL_PIECE_BLOCKS: usize = CHUNK_SIZE / BLCKSZ as usize;
const PAGE: usize = BLCKSZ as usize;

impl CopyThread<'_> {
    /// Copies a relation file in incremental form: the `changed` blocks and every block from
    /// `all_from` up, read where they are (spans bridge gaps of at most `MAX_GAP` blocks; the rest of
    /// the file is not read).
    pub(super) fn copy_blocks(
        &mut self,
        file: &SourceFile,
        f: File,
        changed: &[u32],
        all_from: u32,
        buf: &mut [u8],
    ) -> Result<()> {
        let nblocks = blocks_in(&f, file)?;
        let wanted: Vec<u32> = changed
            .iter()
            .copied()
            .filter(|&b| b < nblocks.min(all_from))
            .chain(all_from..nblocks)
            .collect();
        let spans = read_spans(wanted.iter().copied(), (buf.len() / PAGE) as u32, MAX_GAP);
        let copy = IncrementalCopy {
            file,
            f: &f,
            nblocks,
        };
        // Blocks are visited in ascending order: one cursor walks the wanted list.
        let mut cursor = 0;
        let is_wanted = |b: u32| {
            while cursor < wanted.len() && wanted[cursor] < b {
                cursor += 1;
            }
            wanted.get(cursor) == Some(&b)
        };
        self.copy_incremental(&copy, spans, is_wanted, |_| true, buf)
    }

    /// Copies a relation file in incremental form by page LSN: every page is read, those with an LSN at
    /// or after `since` (or new, all zero) are kept.
    pub(super) fn copy_page_lsn(
        &mut self,
        file: &SourceFile,
        f: File,
        since: Lsn,
        buf: &mut [u8],
    ) -> Result<()> {
        let nblocks = blocks_in(&f, file)?;
        let max_run = (buf.len() / PAGE) as u32;
        let runs = (0..nblocks)
            .step_by(max_run as usize)
            .map(|start| (start, max_run.min(nblocks - start)));
        let keep = |page: &[u8]| {
            pgformat::page::page_lsn(page) >= since || pgformat::page::page_is_new(page)
        };
        let copy = IncrementalCopy {
            file,
            f: &f,
            nblocks,
        };
        self.copy_incremental(&copy, runs, |_| true, keep, buf)
    }

    /// Reads the `runs` (first block, count) of a relation file; of the blocks read, those `wanted`
    /// (a run may cover unwanted blocks between wanted ones) get their page checksum verified, and
    /// the ones `keep` accepts are stored in incremental pieces.
    fn copy_incremental(
        &mut self,
        copy: &IncrementalCopy,
        runs: impl Iterator<Item = (u32, u32)>,
        mut wanted: impl FnMut(u32) -> bool,
        keep: impl Fn(&[u8]) -> bool,
        buf: &mut [u8],
    ) -> Result<()> {
        let checker = self.checker(copy.file);
        let mut out = IncrementalPieces::new(copy.nblocks);
        let mut failures = Vec::new();
        for (start, len) in runs {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            let bytes = &mut buf[..len as usize * PAGE];
            let offset = start as u64 * PAGE as u64;
            read_at_zero_padded(copy.f, bytes, offset, copy.file)?;
            self.progress
                .bytes_read
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            for (i, page) in bytes.chunks_exact_mut(PAGE).enumerate() {
                let block = start + i as u32;
                if !wanted(block) {
                    continue;
                }
                if let Some(c) = &checker {
                    failures.extend(c.check(copy.f, block as u64 * PAGE as u64, page));
                }
                if !keep(page) {
                    continue;
                }
                out.push(block, page);
                if out.full() {
                    let piece = out.take_piece()?;
                    let stored = self.store_piece(&piece)?;
                    out.pieces.push(stored);
                }
            }
        }
        self.finish_incremental(copy.file, out, failures)
    }

    fn finish_incremental(
        &mut self,
        file: &SourceFile,
        mut out: IncrementalPieces,
        failures: Vec<PageFailure>,
    ) -> Result<()> {
        if !out.numbers.is_empty() {
            let piece = out.take_piece()?;
            let stored = self.store_piece(&piece)?;
            out.pieces.push(stored);
        }
        self.record_failures(file, failures);
        self.done.files.push(FileEntry {
            path: file.path.clone(),
            size: out.nblocks as u64 * PAGE as u64,
            mode: file.mode,
            mtime: file.mtime,
            digest: None,
            incremental: Some(out.nblocks),
            pieces: out.pieces,
        });
        self.progress
            .bytes_done
            .fetch_add(file.size, Ordering::Relaxed);
        Ok(())
    }

    /// Stores one encoded incremental piece (bundled when small).
    fn store_piece(&mut self, plain: &[u8]) -> Result<Piece> {
        let sha = object::digest(plain);
        if plain.len() as u64 <= BUNDLE_LIMIT {
            self.add_to_bundle(plain, sha)
        } else {
            self.store_alone(plain, sha)
        }
    }
}

/// A relation file's length in blocks now (a partial last block counts: it is read zero-padded and WAL
/// replay rewrites it).
fn blocks_in(f: &File, file: &SourceFile) -> Result<u32> {
    let len = f.metadata().map_err(fsutil::rerr(&file.source))?.len();
    Ok(len.div_ceil(PAGE as u64).min(u32::MAX as u64) as u32)
}

/// Reads `buf` at `offset`; what lies past the end of the file (truncated meanwhile) reads as zeroes.
fn read_at_zero_padded(f: &File, buf: &mut [u8], offset: u64, file: &SourceFile) -> Result<()> {
    let filled = fsutil::fill(buf, |rest, at| f.read_at(rest, offset + at as u64))
        .map_err(fsutil::rerr(&file.source))?;
    buf[filled..].fill(0);
    Ok(())
}

/// The relation file an incremental copy reads.
struct IncrementalCopy<'a> {
    file: &'a SourceFile,
    f: &'a File,
    nblocks: u32,
}

/// Unwanted blocks read rather than skipped between two wanted ones: after many small updates spread
/// over a table (half its pages changed), one read per changed page made a backup issue a random read
/// per page; a short gap costs less read than the extra request (128 kB at this disk's 2 GB/s is about
/// one request's latency), and the kernel's read-ahead keeps working on the longer sequential reads.
const MAX_GAP: u32 = 16;

/// Groups ascending block numbers into spans to read (first, count), each at most `max` blocks long
/// and bridging gaps of at most `max_gap` unwanted blocks.
fn read_spans(
    blocks: impl Iterator<Item = u32>,
    max: u32,
    max_gap: u32,
) -> impl Iterator<Item = (u32, u32)> {
    let mut blocks = blocks.peekable();
    std::iter::from_fn(move || {
        let start = blocks.next()?;
        let mut len = 1u32;
        while let Some(&b) = blocks.peek() {
            let end = start + len;
            if b < end || b - end > max_gap || b - start >= max {
                break;
            }
            blocks.next();
            len = b - start + 1;
        }
        Some((start, len))
    })
}

/// Blocks collected for a file's incremental pieces.
struct IncrementalPieces {
    nblocks: u32,
    numbers: Vec<u32>,
    data: Vec<u8>,
    pieces: Vec<Piece>,
}

impl IncrementalPieces {
    fn new(nblocks: u32) -> IncrementalPieces {
        IncrementalPieces {
            nblocks,
            numbers: Vec::new(),
            data: Vec::new(),
            pieces: Vec::new(),
        }
    }

    fn push(&mut self, block: u32, page: &[u8]) {
        self.numbers.push(block);
        self.data.extend_from_slice(page);
    }

    fn full(&self) -> bool {
        self.numbers.len() >= INCREMENTAL_PIECE_BLOCKS
    }

    /// The encoded piece of the blocks collected so far.
    fn take_piece(&mut self) -> Result<Vec<u8>> {
        let blocks: Vec<(u32, &[u8])> = self
            .numbers
            .iter()
            .zip(self.data.chunks_exact(PAGE))
            .map(|(n, d)| (*n, d))
            .collect();
        let encoded = crate::incremental::encode(self.nblocks, &blocks)?;
        self.numbers.clear();
        self.data.clear();
        Ok(encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_read_in_spans_bridging_short_gaps() {
        let spans = |blocks: &[u32], max, gap| -> Vec<(u32, u32)> {
            read_spans(blocks.iter().copied(), max, gap).collect()
        };
        let blocks = [1, 2, 3, 7, 8, 20, 21, 22, 23, 24];
        // No gap allowed: runs of consecutive blocks, at most `max` long.
        assert_eq!(spans(&blocks, 3, 0), vec![(1, 3), (7, 2), (20, 3), (23, 2)]);
        // Gaps of up to 3 blocks are read through; the span never exceeds `max`.
        assert_eq!(spans(&blocks, 100, 3), vec![(1, 8), (20, 5)]);
        assert_eq!(spans(&blocks, 5, 3), vec![(1, 3), (7, 2), (20, 5)]);
        assert_eq!(spans(&blocks, 100, 11), vec![(1, 24)]);
        assert_eq!(spans(&[], 3, 3), vec![]);
        assert_eq!(spans(&[5], 3, 3), vec![(5, 1)]);
    }
}
