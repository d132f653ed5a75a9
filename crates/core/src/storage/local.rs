//! The local-directory backend (`file:///path`): object_store's `LocalFileSystem` with fsync, plus what
//! only a directory tree has — a root that can vanish (an unmounted disk), cheap fingerprints (device,
//! inode, size, time), staging files to hide from listings, and empty directories to remove.

use super::{Backend, Io, ObjectStamp, Stamp};
use crate::paths::RepoKey;
use crate::{Error, Result};
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct LocalBackend {
    root: PathBuf,
    store: Arc<dyn ObjectStore>,
}

impl LocalBackend {
    /// Opens a repository directory, which must exist (we do not create the root: a typo would otherwise
    /// silently archive into a new directory).
    pub fn open(root: &Path) -> Result<LocalBackend> {
        if !root.is_dir() {
            return Err(Error::RepoRootMissing { path: root.into() });
        }
        let fs = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| {
                let root = root.display().to_string();
                Error::storage(&format!("file://{root}"), &root, &e)
            })?
            .with_fsync(true);
        Ok(LocalBackend {
            root: root.into(),
            store: Arc::new(fs),
        })
    }
}

impl Backend for LocalBackend {
    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn check_root(&self, _io: &Io) -> Result<()> {
        if self.root.is_dir() {
            Ok(())
        } else {
            Err(Error::RepoRootMissing {
                path: self.root.clone(),
            })
        }
    }

    fn stamp(&self, key: &RepoKey, _io: &Io) -> Option<ObjectStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(self.root.join(key.as_str())).ok()?;
        Some(ObjectStamp(Stamp::File {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }))
    }

    fn is_staging_name(&self, key: &str) -> bool {
        // object_store's local staging files carry a '#': never real objects.
        key.contains('#')
    }

    fn remove_empty_prefix(&self, prefix: &RepoKey) -> Result<()> {
        let dir = self.root.join(prefix.as_str());
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::WriteFile {
                path: dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// What `read_direct` found.
pub(super) enum DirectRead {
    /// The object's bytes: `scratch[range]`.
    Read(std::ops::Range<usize>),
    Missing,
    /// Larger than the limit.
    TooLarge,
    /// Something planted where an object should be (what it is): never followed or read.
    NotAnObject(&'static str),
}

/// Reads the whole object file at `path` into `scratch`, a buffer the caller reuses, around the page
/// cache (`O_DIRECT`) where the file system allows it: for reads that nobody repeats soon (a
/// verification of the repository, a WAL file for replay), which through the page cache cost a copy
/// out of it and evict what the server on the same machine caches. The object itself is never a link
/// that is followed, nor anything but a regular file (the repository is untrusted input). Where
/// direct I/O is refused (at the open or at a read), the same file is read buffered: through the same
/// descriptor, or opened again with the same refusal of links.
pub(super) fn read_direct(
    path: &Path,
    limit: u64,
    scratch: &mut Vec<u8>,
) -> std::io::Result<DirectRead> {
    use crate::fsutil::{aligned_window, set_o_direct, DIRECT_IO_ALIGN as ALIGN};
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let open = |direct: bool| {
        let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
        std::fs::File::options()
            .read(true)
            .custom_flags(if direct {
                flags | libc::O_DIRECT
            } else {
                flags
            })
            .open(path)
    };
    let refused = |e: &std::io::Error| match e.raw_os_error() {
        _ if e.kind() == std::io::ErrorKind::NotFound => Some(DirectRead::Missing),
        Some(libc::ELOOP) => Some(DirectRead::NotAnObject("a symbolic link")),
        Some(libc::ENXIO) => Some(DirectRead::NotAnObject("a socket")),
        _ => None,
    };
    let (file, mut direct) = match open(true) {
        Ok(f) => (f, true),
        Err(e) => match refused(&e) {
            Some(r) => return Ok(r),
            // No direct I/O there (EINVAL, or what a FUSE or network file system answers instead).
            None => match open(false) {
                Ok(f) => (f, false),
                Err(e) => return refused(&e).map(Ok).unwrap_or(Err(e)),
            },
        },
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(DirectRead::NotAnObject("not a regular file"));
    }
    if meta.len() > limit {
        return Ok(DirectRead::TooLarge);
    }
    let size = meta.len() as usize;
    let window = size.div_ceil(ALIGN) * ALIGN;
    let start = aligned_window(scratch, window);
    let buf = &mut scratch[start..start + window];
    let mut got = 0;
    while got < size {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                // A short read before the end leaves an offset direct I/O cannot go on from.
                if direct && got < size && got % ALIGN != 0 {
                    direct = !set_o_direct(&file, false);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A direct read refused: the rest buffered, through the same descriptor.
            Err(_) if direct && set_o_direct(&file, false) => direct = false,
            Err(e) => return Err(e),
        }
    }
    if got as u64 > limit {
        return Ok(DirectRead::TooLarge);
    }
    Ok(DirectRead::Read(start..start + got))
}
