//! Writing restored whole files around the page cache (`O_DIRECT`).
//!
//! A restore writes gigabytes that nothing reads back soon, and with buffered writes the kernel's copy
//! into the page cache was the largest single cost of a restore (`perf`: a quarter of its CPU on the
//! bench machine), paid again when writeback and the final `syncfs` push the pages out. With
//! `O_DIRECT` the disk reads our buffer itself. The rules it needs: the buffer's address, the file
//! offset and the length multiples of the alignment (`ALIGN`, 4096, which covers every logical block
//! size Linux file systems use); so the aligned part of each piece goes direct from a per-thread
//! aligned buffer, and an unaligned tail (only a file's last piece has one) is written buffered after
//! `O_DIRECT` is switched off on the same descriptor (`fcntl(F_SETFL)`: the file is never reopened by
//! name). A file system that refuses `O_DIRECT` (the flag or a write answered `EINVAL`) gets buffered
//! writes, silently: the result is the same file. Durability is unchanged: the restore's final
//! `syncfs` flushes metadata and the disk cache either way.

use crate::fsutil::{aligned_window, werr, DIRECT_IO_ALIGN as ALIGN};
use crate::Result;
use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Writes shorter than this are buffered: a direct write waits for the disk, which for a small write
/// costs more than the copy it saves (and a relation block rebuilt here and there stays cheap).
pub(super) const DIRECT_MIN: usize = 1 << 20;

thread_local! {
    /// One aligned staging buffer per restore thread, reused for every write (a write is at most a
    /// piece, the backup's chunk size, so memory stays bounded by threads x chunk).
    static STAGING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How the descriptor writes now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Buffered,
    Direct,
    /// The file system refused `O_DIRECT`: buffered for good.
    Refused,
}

/// Writes a restored file: large aligned runs direct, the rest buffered.
pub(super) struct RestoreWriter<'a> {
    file: &'a File,
    dest: &'a Path,
    mode: Mode,
}

impl<'a> RestoreWriter<'a> {
    pub fn new(file: &'a File, dest: &'a Path) -> RestoreWriter<'a> {
        RestoreWriter {
            file,
            dest,
            mode: Mode::Buffered,
        }
    }

    /// Writes `bytes` at `offset`.
    pub fn write_at(&mut self, bytes: &[u8], offset: u64) -> Result<()> {
        let (mut rest, mut at) = (bytes, offset);
        if at % ALIGN as u64 == 0 && rest.len() >= DIRECT_MIN {
            let aligned = rest.len() / ALIGN * ALIGN;
            if self.enter_direct() && self.write_direct(&rest[..aligned], at)? {
                rest = &rest[aligned..];
                at += aligned as u64;
            } else {
                self.leave_direct()?;
                self.mode = Mode::Refused;
            }
        }
        if rest.is_empty() {
            return Ok(());
        }
        self.leave_direct()?;
        self.file.write_all_at(rest, at).map_err(werr(self.dest))
    }

    /// Puts the descriptor in direct mode; false when it cannot be (refused now or before).
    fn enter_direct(&mut self) -> bool {
        match self.mode {
            Mode::Direct => true,
            Mode::Refused => false,
            Mode::Buffered => {
                let ok = set_direct(self.file, true);
                if ok {
                    self.mode = Mode::Direct;
                }
                ok
            }
        }
    }

    /// Takes the descriptor out of direct mode (before an unaligned or small write).
    fn leave_direct(&mut self) -> Result<()> {
        if self.mode == Mode::Direct {
            if !set_direct(self.file, false) {
                return Err(werr(self.dest)(std::io::Error::other(
                    "O_DIRECT could not be turned off for an unaligned write",
                )));
            }
            self.mode = Mode::Buffered;
        }
        Ok(())
    }

    /// Writes an aligned run through the staging buffer; false when the file system refused direct
    /// I/O (the run is then written again, buffered).
    fn write_direct(&self, bytes: &[u8], at: u64) -> Result<bool> {
        STAGING.with(|staging| {
            let mut staging = staging.borrow_mut();
            let start = aligned_window(&mut staging, bytes.len());
            let buf = &mut staging[start..start + bytes.len()];
            buf.copy_from_slice(bytes);
            #[cfg(test)]
            if tests::REFUSE.with(|r| r.get()) == Some(Refusal::Write) {
                // What a file system that accepts the flag but not the write answers, after part
                // of the run went through.
                self.file.write_all_at(&buf[..ALIGN], at).ok();
                return Ok(false);
            }
            match self.file.write_all_at(buf, at) {
                Ok(()) => Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
                Err(e) => Err(werr(self.dest)(e)),
            }
        })
    }
}

/// Writes a file from its start, in order.
pub(super) struct SequentialWriter<'a> {
    inner: RestoreWriter<'a>,
    offset: u64,
}

impl<'a> SequentialWriter<'a> {
    pub fn new(file: &'a File, dest: &'a Path) -> SequentialWriter<'a> {
        SequentialWriter {
            inner: RestoreWriter::new(file, dest),
            offset: 0,
        }
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.write_at(bytes, self.offset)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

/// How a test makes the file system refuse direct I/O (no real one at hand does).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// `fcntl(F_SETFL, O_DIRECT)` fails.
    Flag,
    /// The flag is taken, a direct write answers `EINVAL`.
    Write,
}

/// Turns `O_DIRECT` on or off for `file`; false when the file system refuses it.
fn set_direct(file: &File, on: bool) -> bool {
    #[cfg(test)]
    if on && tests::REFUSE.with(|r| r.get()) == Some(Refusal::Flag) {
        return false;
    }
    crate::fsutil::set_o_direct(file, on)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    thread_local! {
        pub(super) static REFUSE: Cell<Option<Refusal>> = const { Cell::new(None) };
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn new_file(path: &Path) -> File {
        let _ = std::fs::remove_file(path);
        File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .unwrap()
    }

    fn is_direct(file: &File) -> bool {
        // SAFETY: F_GETFL on a descriptor we own.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) & libc::O_DIRECT != 0 }
    }

    /// Writes pieces of `sizes` in order: the writer's mode at the end, and the bytes written.
    fn write_pieces(file: &File, path: &Path, sizes: &[usize]) -> (Mode, Vec<u8>) {
        let mut w = SequentialWriter::new(file, path);
        let mut expected = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let piece = pattern(*n, i as u8);
            w.write(&piece).unwrap();
            expected.extend(piece);
        }
        (w.inner.mode, expected)
    }

    /// Whatever the piece sizes (aligned, unaligned, a tail), the file holds exactly the bytes.
    #[test]
    fn pieces_of_any_size_come_out_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        for sizes in [
            vec![8 << 20, 8 << 20, 12345],
            vec![3 << 20],
            vec![4096 * 300 + 1, 4096 * 2, 7],
            vec![1 << 20, 0, 1 << 20],
        ] {
            let file = new_file(&path);
            let (_, expected) = write_pieces(&file, &path, &sizes);
            drop(file);
            let mut found = Vec::new();
            File::open(&path).unwrap().read_to_end(&mut found).unwrap();
            assert_eq!(found.len(), expected.len(), "{sizes:?}");
            assert!(found == expected, "{sizes:?}: bytes differ");
        }
    }

    /// Direct mode is really used where the file system has it (this test's temporary directory
    /// normally does: ext4, xfs, btrfs; tmpfs since Linux 6.6), and only for large aligned writes.
    #[test]
    fn only_large_aligned_writes_go_direct() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = new_file(&path);
        // Whether this file system does direct I/O at all (tmpfs before Linux 6.6 does not).
        let supported = {
            use std::os::unix::fs::OpenOptionsExt;
            File::options()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_DIRECT)
                .open(dir.path().join("probe"))
                .is_ok()
        };
        let mut w = RestoreWriter::new(&file, &path);
        w.write_at(&pattern(8192, 1), 0).unwrap();
        assert_eq!(w.mode, Mode::Buffered, "small");
        w.write_at(&pattern(4 << 20, 2), 8192).unwrap();
        let expected_mode = if supported {
            Mode::Direct
        } else {
            Mode::Refused
        };
        assert_eq!(w.mode, expected_mode);
        assert_eq!(is_direct(&file), w.mode == Mode::Direct);
        w.write_at(&pattern(2 << 20, 3), (4 << 20) + 8192 + 100)
            .unwrap();
        assert_ne!(w.mode, Mode::Direct, "unaligned offset");
        assert!(!is_direct(&file));
        let mut expected = pattern(8192, 1);
        expected.extend(pattern(4 << 20, 2));
        expected.extend(vec![0u8; 100]);
        expected.extend(pattern(2 << 20, 3));
        assert!(std::fs::read(&path).unwrap() == expected);
    }

    /// Where the file system refuses direct I/O (the flag, or a write), the file is written buffered,
    /// byte for byte, and direct I/O is not tried again for it.
    #[test]
    fn a_file_system_refusing_direct_io_gets_buffered_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        for refusal in [Refusal::Flag, Refusal::Write] {
            REFUSE.with(|r| r.set(Some(refusal)));
            let file = new_file(&path);
            let (mode, expected) = write_pieces(&file, &path, &[8 << 20, 3 << 20, 5000]);
            assert_eq!(mode, Mode::Refused, "{refusal:?}");
            assert!(!is_direct(&file), "{refusal:?}");
            assert!(std::fs::read(&path).unwrap() == expected, "{refusal:?}");
            REFUSE.with(|r| r.set(None));
        }
    }
}
