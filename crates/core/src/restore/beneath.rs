//! Files and directories strictly beneath a root directory, reached without following any symbolic
//! link on the way.
//!
//! `strata restore` often runs as root over directories that another user (postgres) can write. A path
//! like `<pgdata>/base/5/1259` must never lead outside `<pgdata>`, whatever that user put there: a
//! `base` that is a symlink to `/etc`, a `1259` that is a symlink to `/root/.bashrc`, or either swapped
//! for a link while the restore runs. So every access starts at a descriptor of the root (opened once;
//! a root that is itself a link is the operator's choice and is followed) and walks the path one
//! component at a time with `openat(O_NOFOLLOW)`: a link anywhere on the way is an error (for reading
//! and walking) or is removed and replaced by what the backup has (for writing). The only links a
//! restore creates are `pg_tblspc/<oid>`, made here with `symlinkat`.
//!
//! Paths given here are relative, `/`-separated and already validated (`manifest::check_path`).

use crate::{Error, Result};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// An open root directory.
pub struct Root {
    dir: OwnedFd,
    path: PathBuf,
}

fn c_name(name: &str) -> Result<CString> {
    CString::new(name)
        .map_err(|_| Error::TargetRefused(format!("file name {name:?} contains a NUL byte")))
}

fn last_error(path: PathBuf) -> Error {
    Error::WriteFile {
        path,
        source: std::io::Error::last_os_error(),
    }
}

/// `openat` with `O_NOFOLLOW | O_CLOEXEC` added; None when the entry does not exist.
fn open_at(
    dir: &OwnedFd,
    name: &CString,
    flags: i32,
    mode: u32,
) -> std::io::Result<Option<OwnedFd>> {
    // SAFETY: a valid directory descriptor and a NUL-terminated name; the result is a new descriptor
    // we own, or -1.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// What an entry of a directory is, without following it.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Kind {
    Missing,
    Dir,
    File,
    /// A symbolic link or anything else (device, socket, fifo).
    Other,
}

fn kind_at(dir: &OwnedFd, name: &CString) -> Kind {
    // SAFETY: zeroed stat is a valid out-parameter; the descriptor and name are valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Kind::Missing;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => Kind::File,
        _ => Kind::Other,
    }
}

/// Removes an entry (recursively for a directory) without following links. Reached through the
/// descriptor's `/proc/self/fd` path so that the directory itself is the one we opened;
/// `std::fs::remove_dir_all` does not follow links below it.
fn remove_at(dir: &OwnedFd, name: &str) -> std::io::Result<()> {
    let c = CString::new(name).map_err(std::io::Error::other)?;
    match kind_at(dir, &c) {
        Kind::Missing => Ok(()),
        Kind::Dir => std::fs::remove_dir_all(fd_path(dir).join(name)),
        _ => {
            // SAFETY: valid descriptor and name.
            if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        }
    }
}

/// The path of an open descriptor under /proc (Linux), to list or remove through it.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

impl Root {
    /// Opens `path` as a root (it must be a directory; a link at `path` itself is followed).
    pub fn open(path: &Path) -> Result<Root> {
        let file = File::open(path).map_err(|source| Error::WriteFile {
            path: path.into(),
            source,
        })?;
        if !file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(Error::TargetRefused(format!(
                "{} is not a directory",
                path.display()
            )));
        }
        Ok(Root {
            dir: file.into(),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the absolute path `real` (which should have no links: a resolved path) one component at
    /// a time from `/` with `O_NOFOLLOW`, so a link swapped in since it was resolved is refused, never
    /// followed. With `create`, missing components are made (mode 0700). None when it does not exist
    /// and `create` is false.
    pub fn open_resolved(real: &Path, create: bool) -> Result<Option<Root>> {
        let slash = Root::open(Path::new("/"))?;
        let rel = real
            .to_str()
            .ok_or_else(|| Error::TargetRefused(format!("{} is not valid UTF-8", real.display())))?
            .trim_start_matches('/')
            .trim_end_matches('/');
        let dir = match slash.dir(rel, false) {
            Ok(d) => d,
            Err(Error::ReadFile { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && create =>
            {
                slash.create_dirs(rel)?
            }
            Err(Error::ReadFile { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(Error::ReadFile { source, .. }) => {
                return Err(Error::TargetRefused(format!(
                    "{}: {source} (a link appeared in the path since it was checked?)",
                    real.display()
                )))
            }
            Err(e) => return Err(e),
        };
        Ok(Some(Root {
            dir,
            path: real.to_path_buf(),
        }))
    }

    /// Makes the missing directories of `rel` (mode 0700) without replacing anything that exists.
    fn create_dirs(&self, rel: &str) -> Result<OwnedFd> {
        let mut cur = self.dir("", false)?;
        let mut done = String::new();
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            if !done.is_empty() {
                done.push('/');
            }
            done.push_str(comp);
            let name = c_name(comp)?;
            self.mkdir_at(&cur, &name, &done)?;
            cur = self.open_dir_at(&cur, &name, &done)?;
        }
        Ok(cur)
    }

    /// A second handle on the same directory.
    pub fn try_clone(&self) -> Result<Root> {
        Ok(Root {
            dir: self.dir("", false)?,
            path: self.path.clone(),
        })
    }

    /// Makes the new directory `name` inside this one (mode 0700; it must not exist) and opens it.
    /// The directory is made and then opened by name: whoever can write this directory could swap
    /// another in between, so the one opened must be this user's own, reachable by nobody else.
    pub fn create_child(&self, name: &str) -> Result<Root> {
        let c = c_name(name)?;
        let path = self.full(name);
        // SAFETY: valid descriptor and name.
        if unsafe { libc::mkdirat(self.dir.as_raw_fd(), c.as_ptr(), 0o700) } != 0 {
            return Err(last_error(path));
        }
        let child = Root {
            dir: self.open_dir_at(&self.dir, &c, name)?,
            path,
        };
        if !child.is_private() {
            return Err(Error::TargetRefused(format!(
                "{}: the directory just made is not this user's own with mode 0700: something \
                 else changed {} meanwhile",
                child.path.display(),
                self.path.display()
            )));
        }
        Ok(child)
    }

    /// Whether this directory is owned by this process's user and reachable by nobody else (0700).
    fn is_private(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(fd) = self.dir.try_clone() else {
            return false;
        };
        File::from(fd).metadata().is_ok_and(|m| {
            // SAFETY: geteuid has no preconditions.
            m.is_dir() && m.uid() == unsafe { libc::geteuid() } && m.mode() & 0o077 == 0
        })
    }

    /// Opens the existing directory `name` inside this one (not through a link).
    pub fn open_child(&self, name: &str) -> Result<Option<Root>> {
        let c = c_name(name)?;
        match open_at(&self.dir, &c, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
            Ok(Some(dir)) => Ok(Some(Root {
                dir,
                path: self.full(name),
            })),
            Ok(None) => Ok(None),
            Err(source) => Err(Error::ReadFile {
                path: self.full(name),
                source,
            }),
        }
    }

    /// Renames entry `from` of this directory to `to`, failing if `to` exists.
    pub fn rename_noreplace(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (c_name(from)?, c_name(to)?);
        // SAFETY: valid descriptors and names.
        let r = unsafe {
            libc::renameat2(
                self.dir.as_raw_fd(),
                f.as_ptr(),
                self.dir.as_raw_fd(),
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r != 0 {
            return Err(last_error(self.full(to)));
        }
        Ok(())
    }

    /// (device, inode, owner uid, mode) of the opened directory.
    pub fn identity(&self) -> Result<(u64, u64, u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let meta = File::from(self.dir("", false)?)
            .metadata()
            .map_err(|source| Error::ReadFile {
                path: self.path.clone(),
                source,
            })?;
        Ok((meta.dev(), meta.ino(), meta.uid(), meta.mode()))
    }

    /// Whether the directory has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.list("")?.is_empty())
    }

    /// Reads a regular file below this directory (not through links), at most `limit` bytes.
    pub fn read_small(&self, rel: &str, limit: u64) -> Option<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        self.open_existing(rel)?
            .take(limit)
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    }

    /// Gives entry `rel` (a link itself, never its target) to uid/gid.
    pub fn chown(&self, rel: &str, uid: u32, gid: u32) -> Result<()> {
        if rel.is_empty() {
            // SAFETY: valid descriptor.
            if unsafe { libc::fchown(self.dir.as_raw_fd(), uid, gid) } != 0 {
                return Err(last_error(self.path.clone()));
            }
            return Ok(());
        }
        let (dir, name) = self.parent(rel, false)?;
        let c = c_name(name)?;
        // SAFETY: valid descriptor and name; AT_SYMLINK_NOFOLLOW changes a link itself.
        let r = unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                c.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(last_error(self.full(rel)));
        }
        Ok(())
    }

    /// Where the opened directory really is (through /proc, whatever happened to the path since).
    pub fn real_path(&self) -> PathBuf {
        std::fs::read_link(fd_path(&self.dir)).unwrap_or_else(|_| self.path.clone())
    }

    fn full(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    /// Opens the directory `rel` ("" is the root). With `create`, missing directories are made (mode
    /// 0700, the caller sets the recorded mode) and anything that is not a directory on the way (a
    /// link, a file) is removed and replaced by one; without it, such an entry is an error.
    pub fn dir(&self, rel: &str, create: bool) -> Result<OwnedFd> {
        let mut cur = self.dir.try_clone().map_err(|source| Error::WriteFile {
            path: self.path.clone(),
            source,
        })?;
        if rel.is_empty() {
            return Ok(cur);
        }
        let mut done = String::new();
        for comp in rel.split('/') {
            if !done.is_empty() {
                done.push('/');
            }
            done.push_str(comp);
            let name = c_name(comp)?;
            let flags = libc::O_RDONLY | libc::O_DIRECTORY;
            let opened = open_at(&cur, &name, flags, 0);
            let next = match opened {
                Ok(Some(fd)) => fd,
                Ok(None) if create => {
                    self.mkdir_at(&cur, &name, &done)?;
                    self.open_dir_at(&cur, &name, &done)?
                }
                // ELOOP (a link) or ENOTDIR (a file): replace it when creating.
                Err(e)
                    if create
                        && matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) =>
                {
                    remove_at(&cur, comp).map_err(|source| Error::WriteFile {
                        path: self.full(&done),
                        source,
                    })?;
                    self.mkdir_at(&cur, &name, &done)?;
                    self.open_dir_at(&cur, &name, &done)?
                }
                Ok(None) => {
                    return Err(Error::ReadFile {
                        path: self.full(&done),
                        source: std::io::ErrorKind::NotFound.into(),
                    })
                }
                Err(source) => {
                    return Err(Error::ReadFile {
                        path: self.full(&done),
                        source,
                    })
                }
            };
            cur = next;
        }
        Ok(cur)
    }

    fn mkdir_at(&self, dir: &OwnedFd, name: &CString, rel: &str) -> Result<()> {
        // SAFETY: valid descriptor and name.
        if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(Error::WriteFile {
                    path: self.full(rel),
                    source: e,
                });
            }
        }
        Ok(())
    }

    fn open_dir_at(&self, dir: &OwnedFd, name: &CString, rel: &str) -> Result<OwnedFd> {
        match open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
            Ok(Some(fd)) => Ok(fd),
            Ok(None) => Err(Error::WriteFile {
                path: self.full(rel),
                source: std::io::ErrorKind::NotFound.into(),
            }),
            Err(source) => Err(Error::WriteFile {
                path: self.full(rel),
                source,
            }),
        }
    }

    /// Splits `rel` into its parent directory (opened, created when `create`) and its last name.
    fn parent<'a>(&self, rel: &'a str, create: bool) -> Result<(OwnedFd, &'a str)> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        Ok((self.dir(dir, create)?, name))
    }

    /// Creates (or truncates) the regular file `rel` for writing, its parents created as needed; a
    /// link or directory in its place is removed first, never followed.
    ///
    /// An existing entry is unlinked first and the file made anew with `O_EXCL`: writing through a
    /// hard link to someone else's file, or blocking on a FIFO swapped in, is impossible.
    pub fn create_file(&self, rel: &str, mode: u32) -> Result<File> {
        let (dir, name) = self.parent(rel, true)?;
        let c = c_name(name)?;
        remove_at(&dir, name).map_err(|source| Error::WriteFile {
            path: self.full(rel),
            source,
        })?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        match open_at(&dir, &c, flags, mode) {
            Ok(Some(fd)) => Ok(File::from(fd)),
            Ok(None) => Err(last_error(self.full(rel))),
            Err(source) => Err(Error::WriteFile {
                path: self.full(rel),
                source,
            }),
        }
    }

    /// Opens the regular file `rel` for reading and writing its metadata; None when it does not exist
    /// or is not a regular file reached without links.
    pub fn open_existing(&self, rel: &str) -> Option<File> {
        let (dir, name) = self.parent(rel, false).ok()?;
        let c = c_name(name).ok()?;
        if kind_at(&dir, &c) != Kind::File {
            return None;
        }
        let fd = open_at(&dir, &c, libc::O_RDWR | libc::O_NONBLOCK, 0).ok()??;
        let file = File::from(fd);
        // A file with other names may be someone else's file linked in: never ours to keep or chown.
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().ok()?;
        (meta.is_file() && meta.nlink() == 1).then_some(file)
    }

    /// What `rel` is, not following links.
    pub fn kind(&self, rel: &str) -> Kind {
        let Ok((dir, name)) = self.parent(rel, false) else {
            return Kind::Missing;
        };
        let Ok(c) = c_name(name) else {
            return Kind::Missing;
        };
        kind_at(&dir, &c)
    }

    /// Removes `rel` (recursively for a directory), not following links.
    pub fn remove(&self, rel: &str) -> Result<()> {
        let Ok((dir, name)) = self.parent(rel, false) else {
            return Ok(());
        };
        remove_at(&dir, name).map_err(|source| Error::WriteFile {
            path: self.full(rel),
            source,
        })
    }

    /// Names in directory `rel` (not following links on the way).
    pub fn list(&self, rel: &str) -> Result<Vec<String>> {
        let dir = self.dir(rel, false)?;
        let entries = std::fs::read_dir(fd_path(&dir)).map_err(|source| Error::ReadFile {
            path: self.full(rel),
            source,
        })?;
        Ok(entries
            .flatten()
            .map(|e| OsStr::as_bytes(&e.file_name()).to_vec())
            .filter_map(|b| String::from_utf8(b).ok())
            .collect())
    }

    /// Makes `rel` a symbolic link to `target` (replacing whatever is there, never following it).
    pub fn symlink(&self, rel: &str, target: &Path) -> Result<()> {
        let (dir, name) = self.parent(rel, true)?;
        let c = c_name(name)?;
        let full = self.full(rel);
        let werr = crate::fsutil::werr(&full);
        let t = CString::new(target.as_os_str().as_bytes()).map_err(|_| {
            Error::TargetRefused(format!("{} contains a NUL byte", target.display()))
        })?;
        remove_at(&dir, name).map_err(&werr)?;
        // SAFETY: valid descriptor and NUL-terminated strings.
        if unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) } != 0 {
            return Err(werr(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Where `rel` links to, if it is a link.
    pub fn read_link(&self, rel: &str) -> Option<PathBuf> {
        let (dir, name) = self.parent(rel, false).ok()?;
        std::fs::read_link(fd_path(&dir).join(name)).ok()
    }

    /// Sets the mode of directory `rel` (reached without links).
    pub fn set_dir_mode(&self, rel: &str, mode: u32) -> Result<()> {
        let dir = self.dir(rel, false)?;
        // SAFETY: valid descriptor.
        if unsafe { libc::fchmod(dir.as_raw_fd(), mode as libc::mode_t) } != 0 {
            return Err(last_error(self.full(rel)));
        }
        Ok(())
    }

    /// fsyncs directory `rel`.
    pub fn sync_dir(&self, rel: &str) -> Result<()> {
        let dir = self.dir(rel, false)?;
        crate::fsutil::sync(&File::from(dir), &self.full(rel))
    }
}

#[cfg(test)]
#[path = "beneath_tests.rs"]
mod tests;
