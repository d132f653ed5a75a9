//! Copying files into the repository in parallel, with bounded memory.
//!
//! A feeder sends the files (largest first, so that the big ones do not all end up at the tail) over a
//! bounded crossbeam channel to `process_max` copy threads. A copy thread reads a file in chunks of
//! `CHUNK_SIZE` bytes; for each chunk it verifies the data page checksums (relation files, when the
//! cluster has them), hashes, compresses and stores it as one stored object. Files up to `BUNDLE_LIMIT`
//! are not stored alone: each thread packs them one after another into a bundle object of about
//! `BUNDLE_SIZE` bytes, so a cluster with thousands of small catalog files does not become thousands
//! of objects. Memory is a few chunks per thread, whatever the database size.
//!
//! A file that vanished since the walk is skipped (dropped during the backup; WAL replay removes it
//! anyway). A file is read up to its end at the time it is read: replay of the WAL from the backup's
//! start fixes any block written meanwhile, as for pg_basebackup.

use super::incr::FileMode;
use super::pages::{ChunkChecker, PageFailure};
use super::walk::SourceFile;
use crate::compress::CompressType;
use crate::manifest::{Directory, FileEntry, PageChecksumError, Piece, StoredObject};
use crate::object;
use crate::paths::RepoPaths;
use crate::storage::{PutOutcome, Storage};
use crate::{Error, Result};
use pgformat::lsn::Lsn;
use pgformat::relfile::BLCKSZ;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Large files are stored in objects of this much plaintext (a multiple of the page size).
pub const CHUNK_SIZE: usize = 8 << 20;
/// Files up to this size are packed into bundles.
pub const BUNDLE_LIMIT: u64 = 256 << 10;
/// A bundle is stored once it holds this many bytes.
pub const BUNDLE_SIZE: usize = 8 << 20;
/// Blocks per incremental piece (so that a piece is about one chunk).
pub const INCREMENTAL_PIECE_BLOCKS: usize = CHUNK_SIZE / BLCKSZ as usize;
const PAGE: usize = BLCKSZ as usize;

/// Counters the caller can read while the copy runs (the extension shows them in its progress view).
#[derive(Debug, Default)]
pub struct CopyProgress {
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    /// Bytes actually read from the data directory (less than `bytes_done` for incremental files).
    pub bytes_read: AtomicU64,
}

/// Settings of one copy.
pub struct CopySettings<'a> {
    pub storage_url: &'a crate::config::RepoUrl,
    pub paths: &'a RepoPaths,
    pub label: &'a str,
    pub compress: CompressType,
    pub level: i32,
    pub process_max: usize,
    /// Verify page checksums (the cluster has them).
    pub verify_checksums: bool,
    /// The backup's start LSN: pages newer than it may be torn and are not checked (WAL replay rewrites
    /// them).
    pub start_lsn: Lsn,
}

/// What a copy produced.
#[derive(Debug, Default)]
pub struct Copied {
    /// How relation files were copied, and why when it is the fallback.
    pub method: crate::manifest::BackupMethod,
    pub method_reason: Option<String>,
    /// Bytes read from the data directory.
    pub bytes_read: u64,
    pub directories: Vec<Directory>,
    pub files: Vec<FileEntry>,
    pub objects: Vec<StoredObject>,
    pub page_checksum_errors: Vec<PageChecksumError>,
}

/// Copies `files` into backup `label`. Returns an error when cancelled (`cancel` set) or when any
/// file cannot be read or stored; the objects already stored are garbage without a manifest.
pub fn copy_files(
    settings: &CopySettings,
    mut files: Vec<(SourceFile, FileMode)>,
    progress: &CopyProgress,
    cancel: &AtomicBool,
) -> Result<Copied> {
    files.sort_by(|(a, _), (b, _)| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    progress
        .files_total
        .store(files.len() as u64, Ordering::Relaxed);
    progress
        .bytes_total
        .store(files.iter().map(|(f, _)| f.size).sum(), Ordering::Relaxed);
    let next_object = AtomicU64::new(0);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let results: Mutex<Copied> = Mutex::new(Copied::default());
    let threads = settings.process_max.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<(SourceFile, FileMode)>(threads * 2);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let rx = rx.clone();
            let (next_object, first_error, results) = (&next_object, &first_error, &results);
            scope.spawn(move || {
                let outcome = CopyThread::new(settings, next_object).and_then(|mut t| {
                    for (file, mode) in rx.iter() {
                        if cancel.load(Ordering::Relaxed) {
                            return Err(cancelled());
                        }
                        t.copy_file(&file, &mode, progress, cancel)?;
                        progress.files_done.fetch_add(1, Ordering::Relaxed);
                    }
                    t.flush_bundle()?;
                    Ok(t.done)
                });
                match outcome {
                    Ok(done) => {
                        let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
                        r.files.extend(done.files);
                        r.objects.extend(done.objects);
                        r.page_checksum_errors.extend(done.page_checksum_errors);
                    }
                    Err(e) => {
                        cancel.store(true, Ordering::Relaxed);
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        if slot.is_none() || matches!(slot.as_ref(), Some(Error::Cancelled)) {
                            *slot = Some(e);
                        }
                    }
                }
            });
        }
        drop(rx);
        for file in files {
            if cancel.load(Ordering::Relaxed) || tx.send(file).is_err() {
                break;
            }
        }
        drop(tx);
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(cancelled());
    }
    let mut copied = results.into_inner().unwrap_or_else(|p| p.into_inner());
    copied.files.sort_by(|a, b| a.path.cmp(&b.path));
    copied.objects.sort_by(|a, b| a.name.cmp(&b.name));
    copied
        .page_checksum_errors
        .sort_by(|a, b| a.path.cmp(&b.path));
    Ok(copied)
}

fn cancelled() -> Error {
    Error::Cancelled
}

/// One copy thread's state: its own storage handle, read buffer and open bundle.
struct CopyThread<'a> {
    settings: &'a CopySettings<'a>,
    storage: Storage,
    next_object: &'a AtomicU64,
    buf: Vec<u8>,
    bundle: Vec<u8>,
    bundle_name: String,
    /// Files whose only piece sits in the open bundle (their entries are complete).
    done: Copied,
}

impl<'a> CopyThread<'a> {
    fn new(settings: &'a CopySettings<'a>, next_object: &'a AtomicU64) -> Result<CopyThread<'a>> {
        Ok(CopyThread {
            settings,
            storage: Storage::open(settings.storage_url)?,
            next_object,
            buf: vec![0u8; CHUNK_SIZE],
            bundle: Vec::new(),
            bundle_name: String::new(),
            done: Copied::default(),
        })
    }

    fn new_object_name(&self) -> String {
        RepoPaths::backup_object_name(self.next_object.fetch_add(1, Ordering::Relaxed))
    }

    fn copy_file(
        &mut self,
        file: &SourceFile,
        mode: &FileMode,
        progress: &CopyProgress,
        cancel: &AtomicBool,
    ) -> Result<()> {
        let f = match File::open(&file.source) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(Error::ReadFile {
                    path: file.source.clone(),
                    source,
                })
            }
        };
        // The read buffer is lent out so that storing pieces can borrow the thread mutably.
        let mut buf = std::mem::take(&mut self.buf);
        let result = match mode {
            FileMode::Whole => self.copy_whole(file, f, &[], &mut buf, progress, cancel),
            FileMode::CompareWithReference(reference) => {
                self.copy_whole(file, f, reference, &mut buf, progress, cancel)
            }
            FileMode::Blocks { changed, all_from } => {
                self.copy_blocks(file, f, changed, *all_from, &mut buf, progress, cancel)
            }
            FileMode::PageLsn { since } => {
                self.copy_page_lsn(file, f, *since, &mut buf, progress, cancel)
            }
        };
        self.buf = buf;
        result
    }

    fn checker(&self, file: &SourceFile) -> Option<ChunkChecker> {
        match (self.settings.verify_checksums, file.first_block) {
            (true, Some(first)) => Some(ChunkChecker::new(first, self.settings.start_lsn)),
            _ => None,
        }
    }

    fn record_failures(&mut self, file: &SourceFile, failures: Vec<PageFailure>) {
        if !failures.is_empty() {
            self.done.page_checksum_errors.push(PageChecksumError {
                path: file.path.clone(),
                blocks: failures.iter().map(|f| f.block).collect(),
            });
        }
    }

    /// Copies a whole file; pieces equal to the `reference`'s piece at the same index are referenced.
    #[allow(clippy::too_many_arguments)]
    fn copy_whole(
        &mut self,
        file: &SourceFile,
        mut f: File,
        reference: &[Piece],
        buf: &mut [u8],
        progress: &CopyProgress,
        cancel: &AtomicBool,
    ) -> Result<()> {
        let checker = self.checker(file);
        let mut piece_shas = Vec::new();
        let mut pieces = Vec::new();
        let mut failures: Vec<PageFailure> = Vec::new();
        let mut offset = 0u64;
        let mut size = 0u64;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            let n = read_full(&mut f, buf).map_err(|source| Error::ReadFile {
                path: file.source.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            if let Some(c) = &checker {
                failures.extend(c.check(&f, offset, &mut buf[..n]));
            }
            let chunk = &buf[..n];
            let chunk_sha = object::sha256(chunk);
            piece_shas.push(chunk_sha);
            let sha_hex = hex::encode(chunk_sha);
            let unchanged = reference
                .get(pieces.len())
                .filter(|r| r.size == n as u64 && r.sha256.as_deref() == Some(sha_hex.as_str()));
            let whole_file_in_one = n < CHUNK_SIZE && pieces.is_empty();
            let piece = if let Some(r) = unchanged {
                r.clone()
            } else if whole_file_in_one && (n as u64) <= BUNDLE_LIMIT {
                self.add_to_bundle(chunk, chunk_sha)?
            } else {
                self.store_alone(chunk, chunk_sha)?
            };
            pieces.push(piece);
            progress.bytes_done.fetch_add(n as u64, Ordering::Relaxed);
            progress.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
            offset += n as u64;
            size += n as u64;
            if n < CHUNK_SIZE {
                break;
            }
        }
        self.record_failures(file, failures);
        self.done.files.push(FileEntry {
            path: file.path.clone(),
            size,
            mode: file.mode,
            mtime: file.mtime,
            sha256: Some(hex::encode(object::content_digest(&piece_shas))),
            incremental: None,
            pieces,
        });
        Ok(())
    }

    /// Copies a relation file in incremental form: the `changed` blocks and every block from
    /// `all_from` up, read where they are (the rest of the file is not read at all).
    #[allow(clippy::too_many_arguments)]
    fn copy_blocks(
        &mut self,
        file: &SourceFile,
        f: File,
        changed: &[u32],
        all_from: u32,
        buf: &mut [u8],
        progress: &CopyProgress,
        cancel: &AtomicBool,
    ) -> Result<()> {
        let nblocks = blocks_in(&f, file)?;
        let wanted = changed
            .iter()
            .copied()
            .filter(|&b| b < nblocks.min(all_from))
            .chain(all_from..nblocks);
        let runs = consecutive_runs(wanted, (buf.len() / PAGE) as u32);
        let copy = IncrementalCopy {
            file,
            f: &f,
            nblocks,
        };
        self.copy_incremental(&copy, runs, |_| true, buf, progress, cancel)
    }

    /// Copies a relation file in incremental form by page LSN: every page is read, those with an LSN at
    /// or after `since` (or new, all zero) are kept.
    #[allow(clippy::too_many_arguments)]
    fn copy_page_lsn(
        &mut self,
        file: &SourceFile,
        f: File,
        since: Lsn,
        buf: &mut [u8],
        progress: &CopyProgress,
        cancel: &AtomicBool,
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
        self.copy_incremental(&copy, runs, keep, buf, progress, cancel)
    }

    /// Reads the `runs` (first block, count) of a relation file, verifies their page checksums, and
    /// stores the pages `keep` accepts in incremental pieces.
    fn copy_incremental(
        &mut self,
        copy: &IncrementalCopy,
        runs: impl Iterator<Item = (u32, u32)>,
        keep: impl Fn(&[u8]) -> bool,
        buf: &mut [u8],
        progress: &CopyProgress,
        cancel: &AtomicBool,
    ) -> Result<()> {
        let checker = self.checker(copy.file);
        let mut out = IncrementalPieces::new(copy.nblocks);
        let mut failures = Vec::new();
        for (start, len) in runs {
            if cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            let bytes = &mut buf[..len as usize * PAGE];
            let offset = start as u64 * PAGE as u64;
            read_at_zero_padded(copy.f, bytes, offset, copy.file)?;
            progress
                .bytes_read
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if let Some(c) = &checker {
                failures.extend(c.check(copy.f, offset, bytes));
            }
            for (i, page) in bytes.chunks_exact(PAGE).enumerate() {
                if !keep(page) {
                    continue;
                }
                out.push(start + i as u32, page);
                if out.full() {
                    let piece = out.take_piece()?;
                    let stored = self.store_piece(&piece)?;
                    out.pieces.push(stored);
                }
            }
        }
        self.finish_incremental(copy.file, out, failures, progress)
    }

    fn finish_incremental(
        &mut self,
        file: &SourceFile,
        mut out: IncrementalPieces,
        failures: Vec<PageFailure>,
        progress: &CopyProgress,
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
            sha256: None,
            incremental: Some(out.nblocks),
            pieces: out.pieces,
        });
        progress.bytes_done.fetch_add(file.size, Ordering::Relaxed);
        Ok(())
    }

    /// Stores one encoded incremental piece (bundled when small).
    fn store_piece(&mut self, plain: &[u8]) -> Result<Piece> {
        let sha = object::sha256(plain);
        if plain.len() as u64 <= BUNDLE_LIMIT {
            self.add_to_bundle(plain, sha)
        } else {
            self.store_alone(plain, sha)
        }
    }

    fn encode(&self, chunk: &[u8], sha: [u8; 32]) -> Result<Vec<u8>> {
        object::encode_with_hash(chunk, sha, self.settings.compress, self.settings.level)
    }

    fn store_alone(&mut self, chunk: &[u8], sha: [u8; 32]) -> Result<Piece> {
        let stored = self.encode(chunk, sha)?;
        let name = self.new_object_name();
        let piece = Piece {
            backup: None,
            object: name.clone(),
            offset: 0,
            length: stored.len() as u64,
            size: chunk.len() as u64,
            sha256: Some(hex::encode(sha)),
        };
        self.put(name, stored)?;
        Ok(piece)
    }

    fn add_to_bundle(&mut self, chunk: &[u8], sha: [u8; 32]) -> Result<Piece> {
        let stored = self.encode(chunk, sha)?;
        if self.bundle.is_empty() {
            self.bundle_name = self.new_object_name();
        }
        let piece = Piece {
            backup: None,
            object: self.bundle_name.clone(),
            offset: self.bundle.len() as u64,
            length: stored.len() as u64,
            size: chunk.len() as u64,
            sha256: Some(hex::encode(sha)),
        };
        self.bundle.extend_from_slice(&stored);
        if self.bundle.len() >= BUNDLE_SIZE {
            self.flush_bundle()?;
        }
        Ok(piece)
    }

    fn flush_bundle(&mut self) -> Result<()> {
        if self.bundle.is_empty() {
            return Ok(());
        }
        let bundle = std::mem::take(&mut self.bundle);
        let name = std::mem::take(&mut self.bundle_name);
        self.put(name, bundle)
    }

    fn put(&mut self, name: String, data: Vec<u8>) -> Result<()> {
        let key = self
            .settings
            .paths
            .backup_object(self.settings.label, &name);
        let record = StoredObject {
            name,
            size: data.len() as u64,
            crc32c: crc32c::crc32c(&data),
        };
        match self.storage.put_new(&key, data)? {
            PutOutcome::Written => {
                self.done.objects.push(record);
                Ok(())
            }
            PutOutcome::AlreadyExists => Err(Error::Other(format!(
                "backup object {key} already exists: another backup with the same label is running?"
            ))),
        }
    }
}

/// A relation file's length in blocks now (a partial last block counts: it is read zero-padded and WAL
/// replay rewrites it).
fn blocks_in(f: &File, file: &SourceFile) -> Result<u32> {
    let len = f
        .metadata()
        .map_err(|source| Error::ReadFile {
            path: file.source.clone(),
            source,
        })?
        .len();
    Ok(len.div_ceil(PAGE as u64).min(u32::MAX as u64) as u32)
}

/// Reads `buf` at `offset`; what lies past the end of the file (truncated meanwhile) reads as zeroes.
fn read_at_zero_padded(f: &File, buf: &mut [u8], offset: u64, file: &SourceFile) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::ReadFile {
                    path: file.source.clone(),
                    source,
                })
            }
        }
    }
    buf[filled..].fill(0);
    Ok(())
}

/// The relation file an incremental copy reads.
struct IncrementalCopy<'a> {
    file: &'a SourceFile,
    f: &'a File,
    nblocks: u32,
}

/// Groups ascending block numbers into runs of consecutive blocks (first, count), each at most `max`.
fn consecutive_runs(
    blocks: impl Iterator<Item = u32>,
    max: u32,
) -> impl Iterator<Item = (u32, u32)> {
    let mut blocks = blocks.peekable();
    std::iter::from_fn(move || {
        let start = blocks.next()?;
        let mut len = 1;
        while len < max && blocks.peek() == Some(&(start + len)) {
            blocks.next();
            len += 1;
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

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::walk;
    use crate::config::RepoUrl;

    fn settings<'a>(
        url: &'a RepoUrl,
        paths: &'a RepoPaths,
        compress: CompressType,
        process_max: usize,
    ) -> CopySettings<'a> {
        CopySettings {
            storage_url: url,
            paths,
            label: "20260101-000000F",
            compress,
            level: 1,
            process_max,
            verify_checksums: false,
            start_lsn: Lsn(0),
        }
    }

    fn whole(files: Vec<SourceFile>) -> Vec<(SourceFile, FileMode)> {
        files.into_iter().map(|f| (f, FileMode::Whole)).collect()
    }

    fn read_back(storage: &Storage, paths: &RepoPaths, label: &str, entry: &FileEntry) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &entry.pieces {
            let key = paths.backup_object(FileEntry::piece_backup(p, label), &p.object);
            let stored = storage
                .get_range(&key, p.offset, p.length)
                .unwrap()
                .unwrap();
            let (_, plain) = object::decode(&key, &stored).unwrap();
            assert_eq!(plain.len() as u64, p.size);
            out.extend(plain);
        }
        out
    }

    #[test]
    fn files_come_back_from_chunks_and_bundles() {
        let pgdata = tempfile::tempdir().unwrap();
        let repo = tempfile::tempdir().unwrap();
        let base = pgdata.path().join("base/5");
        std::fs::create_dir_all(&base).unwrap();
        // 20 MB: three chunks; 300 small files: a bundle or two; one empty file.
        let big: Vec<u8> = (0..20_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(base.join("16384"), &big).unwrap();
        for i in 0..300 {
            std::fs::write(base.join(format!("{}", 20000 + i)), vec![i as u8; 5000 + i]).unwrap();
        }
        std::fs::write(pgdata.path().join("empty"), b"").unwrap();
        let url = RepoUrl::Local(repo.path().to_path_buf());
        let paths = RepoPaths::new("st");
        let settings = settings(&url, &paths, CompressType::Zstd, 2);
        let found = walk::walk(pgdata.path(), &[]).unwrap();
        let progress = CopyProgress::default();
        let copied = copy_files(
            &settings,
            whole(found.files),
            &progress,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(copied.files.len(), 302);
        assert_eq!(progress.files_done.load(Ordering::Relaxed), 302);
        assert_eq!(
            progress.bytes_done.load(Ordering::Relaxed),
            progress.bytes_total.load(Ordering::Relaxed)
        );
        // 3 chunk objects plus at most one open bundle per thread.
        assert!(
            copied.objects.len() <= 5,
            "{} objects",
            copied.objects.len()
        );
        let storage = Storage::open(&url).unwrap();
        for entry in &copied.files {
            let original = std::fs::read(pgdata.path().join(&entry.path)).unwrap();
            assert_eq!(
                read_back(&storage, &paths, settings.label, entry),
                original,
                "{}",
                entry.path
            );
            if entry.pieces.len() <= 1 {
                assert_eq!(entry.sha256, Some(hex::encode(object::sha256(&original))));
            }
        }
        let big_entry = copied
            .files
            .iter()
            .find(|f| f.path == "base/5/16384")
            .unwrap();
        assert_eq!(big_entry.pieces.len(), 3);
        let empty = copied.files.iter().find(|f| f.path == "empty").unwrap();
        assert!(empty.pieces.is_empty() && empty.size == 0);
        for o in &copied.objects {
            let stored = storage
                .get(&paths.backup_object(settings.label, &o.name))
                .unwrap()
                .unwrap();
            assert_eq!(crc32c::crc32c(&stored), o.crc32c);
            assert_eq!(stored.len() as u64, o.size);
        }
    }

    #[test]
    fn consecutive_blocks_are_read_in_runs() {
        let runs: Vec<(u32, u32)> =
            consecutive_runs([1, 2, 3, 7, 8, 20, 21, 22, 23, 24].into_iter(), 3).collect();
        assert_eq!(runs, vec![(1, 3), (7, 2), (20, 3), (23, 2)]);
        assert_eq!(consecutive_runs(std::iter::empty(), 3).count(), 0);
    }

    #[test]
    fn a_cancelled_copy_fails_with_cancelled() {
        let pgdata = tempfile::tempdir().unwrap();
        let repo = tempfile::tempdir().unwrap();
        std::fs::write(pgdata.path().join("f"), vec![1u8; 100]).unwrap();
        let url = RepoUrl::Local(repo.path().to_path_buf());
        let paths = RepoPaths::new("st");
        let settings = settings(&url, &paths, CompressType::None, 1);
        let found = walk::walk(pgdata.path(), &[]).unwrap();
        let e = copy_files(
            &settings,
            whole(found.files),
            &CopyProgress::default(),
            &AtomicBool::new(true),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e}");
    }
}
