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
//! Each file is copied as its `FileMode` says: whole, whole but referencing the pieces equal to the
//! reference backup's, or (relation files of diff and incr backups) in incremental form, see
//! `incremental`.
//!
//! A file that vanished since the walk is skipped (dropped during the backup; WAL replay removes it
//! anyway). A file is read up to its end at the time it is read: replay of the WAL from the backup's
//! start fixes any block written meanwhile, as for pg_basebackup.

mod incremental;

use super::incr::FileMode;
use super::pages::{ChunkChecker, PageFailure};
use super::walk::SourceFile;
use crate::compress::CompressType;
use crate::fsutil;
use crate::manifest::{Checksum, Directory, FileEntry, PageChecksumError, Piece, StoredObject};
use crate::object;
use crate::paths::RepoKeys;
use crate::repo::Repo;
use crate::storage::PutOutcome;
use crate::{Error, Result};
use pgformat::lsn::Lsn;
use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Large files are stored in objects of this much plaintext (a multiple of the page size).
pub const CHUNK_SIZE: usize = 8 << 20;
/// Files up to this size are packed into bundles.
pub const BUNDLE_LIMIT: u64 = 256 << 10;
/// A bundle is stored once it holds this many bytes.
pub const BUNDLE_SIZE: usize = 8 << 20;

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
    /// The repository, shared by all copy threads.
    pub repo: &'a Repo,
    /// Called before each object is stored: fails when the stanza's identity is gone (see `identity`).
    pub before_write: &'a (dyn Fn() -> Result<()> + Sync),
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
    let done = crate::parallel::run(
        settings.process_max,
        cancel,
        files,
        || CopyThread::new(settings, &next_object, progress, cancel),
        |t, (file, mode)| {
            t.copy_file(&file, &mode)?;
            progress.files_done.fetch_add(1, Ordering::Relaxed);
            Ok(())
        },
        |mut t| {
            t.flush_bundle()?;
            Ok(t.done)
        },
    )?;
    if cancel.load(Ordering::Relaxed) {
        return Err(cancelled());
    }
    let mut copied = Copied::default();
    for d in done {
        copied.files.extend(d.files);
        copied.objects.extend(d.objects);
        copied.page_checksum_errors.extend(d.page_checksum_errors);
    }
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

/// One copy thread's state: its read buffer and open bundle.
struct CopyThread<'a> {
    settings: &'a CopySettings<'a>,
    next_object: &'a AtomicU64,
    progress: &'a CopyProgress,
    /// Checked between chunks: a cancelled backup (or another thread's failure) stops mid-file.
    cancel: &'a AtomicBool,
    buf: Vec<u8>,
    bundle: Vec<u8>,
    bundle_name: String,
    /// Files whose only piece sits in the open bundle (their entries are complete).
    done: Copied,
}

impl<'a> CopyThread<'a> {
    fn new(
        settings: &'a CopySettings<'a>,
        next_object: &'a AtomicU64,
        progress: &'a CopyProgress,
        cancel: &'a AtomicBool,
    ) -> Result<CopyThread<'a>> {
        Ok(CopyThread {
            settings,
            next_object,
            progress,
            cancel,
            buf: vec![0u8; CHUNK_SIZE],
            bundle: Vec::new(),
            bundle_name: String::new(),
            done: Copied::default(),
        })
    }

    fn new_object_name(&self) -> String {
        RepoKeys::backup_object_name(self.next_object.fetch_add(1, Ordering::Relaxed))
    }

    fn copy_file(&mut self, file: &SourceFile, mode: &FileMode) -> Result<()> {
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
            FileMode::Whole => self.copy_whole(file, f, &[], &mut buf),
            FileMode::CompareWithReference(reference) => {
                self.copy_whole(file, f, reference, &mut buf)
            }
            FileMode::Blocks { changed, all_from } => {
                self.copy_blocks(file, f, changed, *all_from, &mut buf)
            }
            FileMode::PageLsn { since } => self.copy_page_lsn(file, f, *since, &mut buf),
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
    fn copy_whole(
        &mut self,
        file: &SourceFile,
        mut f: File,
        reference: &[Piece],
        buf: &mut [u8],
    ) -> Result<()> {
        let checker = self.checker(file);
        let mut piece_shas = Vec::new();
        let mut pieces = Vec::new();
        let mut failures: Vec<PageFailure> = Vec::new();
        let mut offset = 0u64;
        let mut size = 0u64;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            let n =
                fsutil::fill(buf, |rest, _| f.read(rest)).map_err(fsutil::rerr(&file.source))?;
            if n == 0 {
                break;
            }
            if let Some(c) = &checker {
                failures.extend(c.check(&f, offset, &mut buf[..n]));
            }
            let chunk = &buf[..n];
            let chunk_sha = object::digest(chunk);
            piece_shas.push(chunk_sha);
            let unchanged = reference
                .get(pieces.len())
                .filter(|r| r.size == n as u64 && r.digest == Some(Checksum(chunk_sha)));
            let whole_file_in_one = n < CHUNK_SIZE && pieces.is_empty();
            let piece = if let Some(r) = unchanged {
                r.clone()
            } else if whole_file_in_one && (n as u64) <= BUNDLE_LIMIT {
                self.add_to_bundle(chunk, chunk_sha)?
            } else {
                self.store_alone(chunk, chunk_sha)?
            };
            pieces.push(piece);
            let progress = self.progress;
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
            digest: Some(Checksum(object::content_digest(&piece_shas))),
            incremental: None,
            pieces,
        });
        Ok(())
    }

    /// Encodes a piece stored at `offset` of data object `name` (both are authenticated with it in an
    /// encrypted stanza).
    fn encode(&self, name: &str, offset: u64, chunk: &[u8], sha: [u8; 32]) -> Result<Vec<u8>> {
        let key = self
            .settings
            .repo
            .keys()
            .backup_object(self.settings.label, name)?;
        let place = object::Place {
            key: key.as_str(),
            offset,
        };
        let s = &self.settings;
        s.repo.encode_object(place, chunk, sha, s.compress, s.level)
    }

    fn store_alone(&mut self, chunk: &[u8], sha: [u8; 32]) -> Result<Piece> {
        let name = self.new_object_name();
        let stored = self.encode(&name, 0, chunk, sha)?;
        let piece = Piece::whole_object(name.clone(), stored.len() as u64, chunk.len() as u64, sha);
        self.put(name, stored)?;
        Ok(piece)
    }

    fn add_to_bundle(&mut self, chunk: &[u8], sha: [u8; 32]) -> Result<Piece> {
        if self.bundle.is_empty() {
            self.bundle_name = self.new_object_name();
        }
        let stored = self.encode(&self.bundle_name, self.bundle.len() as u64, chunk, sha)?;
        let piece = Piece {
            backup: None,
            object: self.bundle_name.clone(),
            offset: self.bundle.len() as u64,
            length: stored.len() as u64,
            size: chunk.len() as u64,
            digest: Some(Checksum(sha)),
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
            .repo
            .keys()
            .backup_object(self.settings.label, &name)?;
        let record = StoredObject {
            name,
            size: data.len() as u64,
            crc32c: crc32c::crc32c(&data),
        };
        (self.settings.before_write)()?;
        match self.settings.repo.storage().put_new(&key, data)? {
            PutOutcome::Written => {
                self.done.objects.push(record);
                Ok(())
            }
            PutOutcome::AlreadyExists => Err(Error::Busy(format!(
                "backup object {key} already exists: another backup with the same label is running?"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::walk;
    use crate::config::RepoUrl;

    fn settings(repo: &Repo, compress: CompressType, process_max: usize) -> CopySettings<'_> {
        CopySettings {
            repo,
            before_write: &|| Ok(()),
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

    fn read_back(repo: &Repo, label: &str, entry: &FileEntry) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &entry.pieces {
            let key = repo
                .keys()
                .backup_object(FileEntry::piece_backup(p, label), &p.object)
                .unwrap();
            let stored = repo
                .storage()
                .get_range(&key, p.offset, p.length)
                .unwrap()
                .unwrap();
            let (_, plain) = object::decode(key.as_str(), &stored).unwrap();
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
        let repo = Repo::open(&RepoUrl::Local(repo.path().to_path_buf()), "st").unwrap();
        let settings = settings(&repo, CompressType::Zstd, 2);
        let found = walk::walk(
            pgdata.path(),
            &[],
            pgformat::relfile::TABLESPACE_VERSION_DIRECTORY,
        )
        .unwrap();
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
        for entry in &copied.files {
            let original = std::fs::read(pgdata.path().join(&entry.path)).unwrap();
            assert_eq!(
                read_back(&repo, settings.label, entry),
                original,
                "{}",
                entry.path
            );
            if entry.pieces.len() == 1 {
                assert_eq!(entry.digest, Some(Checksum(object::digest(&original))));
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
            let key = repo.keys().backup_object(settings.label, &o.name).unwrap();
            let stored = repo.storage().get(&key).unwrap().unwrap();
            assert_eq!(crc32c::crc32c(&stored), o.crc32c);
            assert_eq!(stored.len() as u64, o.size);
        }
    }

    /// A page of block `blkno` whose every byte (but the header's LSN and checksum) is `tag`, with a
    /// valid checksum, or a wrong one.
    fn page(tag: u8, blkno: u32, valid: bool) -> Vec<u8> {
        let mut p = vec![tag; pgformat::relfile::BLCKSZ as usize];
        p[..10].fill(0);
        let sum = pgformat::page::page_checksum(&p, blkno) ^ u16::from(!valid);
        p[8..10].copy_from_slice(&sum.to_le_bytes());
        p
    }

    #[test]
    fn an_incremental_copy_keeps_the_wanted_blocks_only() {
        let pgdata = tempfile::tempdir().unwrap();
        let repo = tempfile::tempdir().unwrap();
        let base = pgdata.path().join("base/5");
        std::fs::create_dir_all(&base).unwrap();
        // 64 blocks; block 3 (between wanted blocks 1 and 5, read through) fails its checksum but is
        // not part of the incremental, so it is neither stored nor reported; block 40 fails and is.
        let mut file = Vec::new();
        for b in 0..64u32 {
            file.extend(page(b as u8 + 1, b, b != 3 && b != 40));
        }
        std::fs::write(base.join("16400"), &file).unwrap();
        let repo = Repo::open(&RepoUrl::Local(repo.path().to_path_buf()), "st").unwrap();
        let mut settings = settings(&repo, CompressType::Zstd, 1);
        settings.verify_checksums = true;
        settings.start_lsn = Lsn(0x100_0000);
        let found = walk::walk(
            pgdata.path(),
            &[],
            pgformat::relfile::TABLESPACE_VERSION_DIRECTORY,
        )
        .unwrap();
        let mode = FileMode::Blocks {
            changed: vec![1, 5, 40],
            all_from: 60,
        };
        let files = found.files.into_iter().map(|f| (f, mode.clone())).collect();
        let progress = CopyProgress::default();
        let copied = copy_files(&settings, files, &progress, &AtomicBool::new(false)).unwrap();
        let entry = &copied.files[0];
        assert_eq!(entry.incremental, Some(64));
        let plain = read_back(&repo, settings.label, entry);
        let inc = crate::incremental::Incremental::parse("test", &plain).unwrap();
        assert_eq!(inc.block_numbers, vec![1, 5, 40, 60, 61, 62, 63]);
        for (i, &b) in inc.block_numbers.iter().enumerate() {
            assert!(inc.blocks(i, 1) == &file[b as usize * 8192..(b as usize + 1) * 8192]);
        }
        let reported: Vec<u32> = copied
            .page_checksum_errors
            .iter()
            .flat_map(|e| e.blocks.clone())
            .collect();
        assert_eq!(reported, vec![40]);
    }

    #[test]
    fn a_cancelled_copy_fails_with_cancelled() {
        let pgdata = tempfile::tempdir().unwrap();
        let repo = tempfile::tempdir().unwrap();
        std::fs::write(pgdata.path().join("f"), vec![1u8; 100]).unwrap();
        let repo = Repo::open(&RepoUrl::Local(repo.path().to_path_buf()), "st").unwrap();
        let settings = settings(&repo, CompressType::None, 1);
        let found = walk::walk(
            pgdata.path(),
            &[],
            pgformat::relfile::TABLESPACE_VERSION_DIRECTORY,
        )
        .unwrap();
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
