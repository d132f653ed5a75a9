//! Walking a running cluster's data directory and tablespaces to list what a backup copies.
//!
//! What is left out follows pg_basebackup (PostgreSQL 15's basebackup.c), because those are the files
//! PostgreSQL recreates or must not find after a restore: the contents of pg_wal (recovery fetches WAL
//! from the archive), pg_replslot, pg_dynshmem, pg_notify, pg_serial, pg_snapshots, pg_stat_tmp and
//! pg_subtrans (the directories themselves are kept), postmaster.pid/opts, backup_label, tablespace_map,
//! backup_manifest, relcache init files, `pgsql_tmp*` temporary files and directories, temporary relations
//! (`tNNN_NNN`), and every fork of an unlogged relation except its init fork (recovery resets unlogged
//! relations from their init forks).
//!
//! Tablespaces are walked through their location, under `pg_tblspc/<oid>/` in the backup's paths, and only
//! the server's own version directory there (`PG_<major>_<catalog version>`, given by the caller from the
//! server's version: other versions' directories belong to other clusters; one of the same major version
//! but another catalog version is refused). Relation file names are read by `pgformat::relfile`. Files
//! may vanish while we walk: that is normal during an online backup and such files are simply not listed.

use crate::manifest::{Directory, Tablespace};
use crate::{Error, Result};
use pgformat::relfile::{parse_relation_file_name, parse_relation_path, ForkNumber};
use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Directories whose contents are not backed up (the directory is).
const EXCLUDED_DIR_CONTENTS: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files of the data directory's top level that are never backed up.
const EXCLUDED_TOP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
];

/// One file to copy.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Path in the backup, relative to PGDATA (`pg_tblspc/<oid>/...` for tablespaces).
    pub path: String,
    /// Where to read it.
    pub source: PathBuf,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    /// For relation data files: the block number of the file's first block (segment * RELSEG_SIZE),
    /// used to verify page checksums.
    pub first_block: Option<u32>,
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    pub directories: Vec<Directory>,
    pub files: Vec<SourceFile>,
}

/// Lists the directories and files a backup of `pgdata` (with `tablespaces`) copies; `version_dir` is
/// the directory the server makes in each tablespace (`pgformat::relfile::tablespace_version_directory`).
pub fn walk(pgdata: &Path, tablespaces: &[Tablespace], version_dir: &str) -> Result<Walk> {
    let mut out = Walk::default();
    walk_dir(pgdata, "", &mut out, true)?;
    // "PG_15_" of "PG_15_202209061": the directories of this major version.
    let major_prefix = match version_dir.rfind('_') {
        Some(i) => &version_dir[..=i],
        None => version_dir,
    };
    for ts in tablespaces {
        let location = Path::new(&ts.location);
        let rel = format!("pg_tblspc/{}", ts.oid);
        for entry in read_dir(location)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == version_dir {
                walk_dir(
                    &location.join(&name),
                    &format!("{rel}/{name}"),
                    &mut out,
                    false,
                )?;
            } else if name.starts_with(major_prefix) {
                return Err(Error::Unsupported(format!(
                    "tablespace {} ({}) holds {name}, not {version_dir}: it was made by a server of \
                     another catalog version, whose files this backup cannot read",
                    ts.name,
                    location.display()
                )));
            }
        }
    }
    Ok(out)
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::ReadFile {
        path: dir.into(),
        source,
    })?;
    let mut entries: Vec<std::fs::DirEntry> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// Records `dir` (as `rel`, unless it is the root) and everything below it that is backed up.
fn walk_dir(dir: &Path, rel: &str, out: &mut Walk, is_pgdata_root: bool) -> Result<()> {
    let entries = match read_dir(dir) {
        Ok(e) => e,
        // A directory dropped while we walk (DROP DATABASE, a temp directory): nothing to copy.
        Err(Error::ReadFile { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    if !is_pgdata_root {
        let Ok(meta) = std::fs::metadata(dir) else {
            return Ok(());
        };
        out.directories.push(Directory {
            path: rel.to_string(),
            mode: meta.permissions().mode() & 0o7777,
        });
    }
    let names: Vec<String> = entries
        .iter()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let unlogged = unlogged_relations(&names);
    for (entry, name) in entries.iter().zip(&names) {
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if is_excluded(name, is_pgdata_root, &unlogged) {
            continue;
        }
        // Tablespace links are walked through their locations (see `walk`); record the directory only.
        if rel == "pg_tblspc" {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // vanished
        };
        if meta.is_dir() {
            if is_pgdata_root && EXCLUDED_DIR_CONTENTS.contains(&name.as_str()) {
                out.directories.push(Directory {
                    path: child_rel.clone(),
                    mode: meta.permissions().mode() & 0o7777,
                });
                if name == "pg_wal" {
                    out.directories.push(Directory {
                        path: "pg_wal/archive_status".into(),
                        mode: meta.permissions().mode() & 0o7777,
                    });
                }
                continue;
            }
            walk_dir(&path, &child_rel, out, false)?;
        } else if meta.is_file() {
            let first_block = parse_relation_path(&child_rel)
                .map(|(_, _, segno)| segno.saturating_mul(pgformat::relfile::RELSEG_SIZE));
            out.files.push(SourceFile {
                path: child_rel,
                source: path,
                size: meta.len(),
                mode: meta.permissions().mode() & 0o7777,
                mtime: meta.mtime(),
                first_block,
            });
        }
    }
    Ok(())
}

fn is_excluded(name: &str, top: bool, unlogged: &HashSet<u32>) -> bool {
    if top && EXCLUDED_TOP_FILES.contains(&name) {
        return true;
    }
    if name.starts_with("pgsql_tmp") || name.starts_with("pg_internal.init") {
        return true;
    }
    if is_temp_relation(name) {
        return true;
    }
    // An unlogged relation keeps only its init fork.
    parse_relation_file_name(name)
        .is_some_and(|(rel, fork, _)| unlogged.contains(&rel) && fork != ForkNumber::Init)
}

/// Relfilenodes that have an init fork in this directory, i.e. unlogged relations.
fn unlogged_relations(names: &[String]) -> HashSet<u32> {
    names
        .iter()
        .filter_map(|n| parse_relation_file_name(n))
        .filter(|(_, fork, _)| *fork == ForkNumber::Init)
        .map(|(rel, _, _)| rel)
        .collect()
}

/// Temporary relations are `t<backend id>_<relfilenode>[_fork][.segment]`.
fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, rel)) = rest.split_once('_') else {
        return false;
    };
    !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && parse_relation_file_name(rel).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_out_what_pg_basebackup_leaves_out() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for dir in [
            "base/5",
            "global",
            "pg_wal/archive_status",
            "pg_replslot/s",
            "pg_tblspc",
            "pg_stat",
        ] {
            std::fs::create_dir_all(p.join(dir)).unwrap();
        }
        for f in [
            "PG_VERSION",
            "postmaster.pid",
            "backup_label",
            "pg_wal/000000010000000000000001",
            "pg_replslot/s/state",
            "global/pg_control",
            "global/pg_internal.init",
            "base/5/1259",
            "base/5/16384",
            "base/5/16384_init",
            "base/5/16384_fsm",
            "base/5/16384.1",
            "base/5/t3_16390",
            "base/5/pgsql_tmp123",
            "base/5/16400_vm",
            "pg_stat/pgstat.stat",
        ] {
            std::fs::write(p.join(f), b"x").unwrap();
        }
        let w = walk(p, &[], "PG_15_202209061").unwrap();
        let files: Vec<&str> = w.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            files,
            vec![
                "PG_VERSION",
                "base/5/1259",
                "base/5/16384_init",
                "base/5/16400_vm",
                "global/pg_control",
                "pg_stat/pgstat.stat"
            ]
        );
        let dirs: Vec<&str> = w.directories.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            dirs,
            vec![
                "base",
                "base/5",
                "global",
                "pg_replslot",
                "pg_stat",
                "pg_tblspc",
                "pg_wal",
                "pg_wal/archive_status"
            ]
        );
        let vm = w
            .files
            .iter()
            .find(|f| f.path == "base/5/16400_vm")
            .unwrap();
        assert_eq!(vm.first_block, Some(0));
        assert_eq!(w.files[0].first_block, None);
    }

    #[test]
    fn tablespaces_are_walked_through_their_location() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path().join("data");
        let loc = d.path().join("ts");
        std::fs::create_dir_all(pgdata.join("pg_tblspc")).unwrap();
        std::fs::create_dir_all(loc.join("PG_15_202209061/5")).unwrap();
        std::fs::create_dir_all(loc.join("PG_16_202307071/5")).unwrap();
        std::fs::write(loc.join("PG_15_202209061/5/16500.2"), b"x").unwrap();
        std::fs::write(loc.join("PG_16_202307071/5/1"), b"x").unwrap();
        std::os::unix::fs::symlink(&loc, pgdata.join("pg_tblspc/16499")).unwrap();
        let ts = Tablespace {
            oid: 16499,
            name: "t".into(),
            location: loc.display().to_string(),
        };
        let w = walk(&pgdata, std::slice::from_ref(&ts), "PG_15_202209061").unwrap();
        let files: Vec<&str> = w.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(files, vec!["pg_tblspc/16499/PG_15_202209061/5/16500.2"]);
        assert_eq!(w.files[0].first_block, Some(2 * 131072));
        // A directory of the same major version but another catalog version: refused, not skipped.
        std::fs::create_dir_all(loc.join("PG_15_202209999")).unwrap();
        let e = walk(&pgdata, &[ts], "PG_15_202209061")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PG_15_202209999") && e.contains("catalog version"),
            "{e}"
        );
    }
}
