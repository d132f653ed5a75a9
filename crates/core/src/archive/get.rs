//! Getting an archived WAL file back, for `restore_command` (`strata archive-get`).
//!
//! Not archived is a normal answer (recovery probes for files that do not exist) and is reported as
//! `NotFound`, not as an error. Anything else that goes wrong is an error, and nothing is left at the
//! destination: the file is written to a temporary name beside it and renamed into place only after its
//! digest matched. Not fsynced: PostgreSQL makes a file restored from the archive durable itself when
//! it keeps it (`KeepFileRestoredFromArchive` renames it into pg_wal with `durable_rename`, which
//! fsyncs the file and the directory), and one it does not keep is fetched again after a crash.

use crate::fsutil::werr;
use crate::paths::RepoKey;
use crate::repo::Repo;
use crate::Result;
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq, Eq)]
pub enum GetOutcome {
    Restored { key: RepoKey, bytes: u64 },
    NotFound,
}

/// Fetches `file_name` into `dest`: one request to read the object (after the identity, read once).
pub fn archive_get(repo: &Repo, file_name: &str, dest: &Path) -> Result<GetOutcome> {
    let seg_size = repo.identity()?.wal_segment_size;
    let Some((key, plain)) = repo.fetch_wal(file_name, seg_size)? else {
        return Ok(GetOutcome::NotFound);
    };
    write_atomically(dest, &plain)?;
    Ok(GetOutcome::Restored {
        key,
        bytes: plain.len() as u64,
    })
}

fn write_atomically(dest: &Path, data: &[u8]) -> Result<()> {
    let mut tmp_name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(".strata-tmp");
    let tmp: PathBuf = dest.with_file_name(tmp_name);
    let result = (|| -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // A stale temporary (a crash) is unlinked, never followed; the new one is made exclusively.
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(werr(dest))?;
        std::io::Write::write_all(&mut f, data).map_err(werr(dest))?;
        drop(f);
        std::fs::rename(&tmp, dest).map_err(werr(dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
