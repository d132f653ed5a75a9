//! Small local-file helpers shared by backup, restore and archive-get: errors that name the file,
//! reads that fill a buffer despite short reads and signals, and the write-then-fsync steps that make a
//! file or a directory entry durable.

use crate::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Maps an I/O error on writing `path` to `Error::WriteFile` naming it (for `map_err`).
pub fn werr(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::WriteFile {
        path: path.into(),
        source,
    }
}

/// Maps an I/O error on reading `path` to `Error::ReadFile` naming it (for `map_err`).
pub fn rerr(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::ReadFile {
        path: path.into(),
        source,
    }
}

/// Fills `buf` with `read(rest, filled)` (called with the unfilled part and how many bytes are
/// already in) until it is full or `read` returns 0 (the end of the file); a read interrupted by a
/// signal is retried. Returns the bytes read: less than `buf.len()` only at the end of the file.
pub fn fill(
    buf: &mut [u8],
    mut read: impl FnMut(&mut [u8], usize) -> std::io::Result<usize>,
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match read(&mut buf[filled..], filled) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// fsyncs an open file or directory; `path` names it in the error.
pub fn sync(file: &File, path: &Path) -> Result<()> {
    file.sync_all().map_err(werr(path))
}

/// Writes all of `data` into `file` and fsyncs it: for the small files that must be on disk before the
/// next step (recovery settings, a fetched WAL file before its rename).
pub fn write_synced(file: &mut File, data: &[u8], path: &Path) -> Result<()> {
    file.write_all(data).map_err(werr(path))?;
    sync(file, path)
}

/// fsyncs directory `dir` (an empty path is the current directory), so that an entry just created or
/// renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let f = File::open(dir).map_err(werr(dir))?;
    sync(&f, dir)
}

/// Alignment of buffer addresses, file offsets and lengths for `O_DIRECT` I/O: 4096 covers every
/// logical block size Linux file systems use.
pub const DIRECT_IO_ALIGN: usize = 4096;

/// Turns `O_DIRECT` on or off for an open file; false when the file system refuses it.
pub fn set_o_direct(file: &File, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with flag arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return false;
        }
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        libc::fcntl(fd, libc::F_SETFL, flags) == 0
    }
}

/// An aligned window of `len` bytes in `scratch` (grown as needed, reused by the caller): its start.
pub fn aligned_window(scratch: &mut Vec<u8>, len: usize) -> usize {
    if scratch.len() < len + DIRECT_IO_ALIGN {
        *scratch = vec![0u8; len + DIRECT_IO_ALIGN];
    }
    scratch.as_ptr().align_offset(DIRECT_IO_ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_retries_short_and_interrupted_reads_and_stops_at_the_end() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut calls = 0;
        let mut buf = [0u8; 64];
        let n = fill(&mut buf, |rest, at| {
            calls += 1;
            if calls == 2 {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let n = rest.len().min(7).min(data.len() - at);
            rest[..n].copy_from_slice(&data[at..at + n]);
            Ok(n)
        })
        .unwrap();
        assert_eq!(n, 64);
        assert_eq!(&buf[..], &data[..64]);
        let mut big = [0u8; 200];
        let n = fill(&mut big, |rest, at| {
            let n = rest.len().min(data.len() - at);
            rest[..n].copy_from_slice(&data[at..at + n]);
            Ok(n)
        })
        .unwrap();
        assert_eq!(n, 100);
        let e = fill(&mut big, |_, _| {
            Err(std::io::ErrorKind::PermissionDenied.into())
        });
        assert!(e.is_err());
    }

    #[test]
    fn written_files_and_directories_sync_and_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        write_synced(&mut f, b"hello", &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        sync_dir(dir.path()).unwrap();
        let missing = dir.path().join("nope");
        let e = sync_dir(&missing).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
