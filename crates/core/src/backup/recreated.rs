//! Databases that may have been dropped and created again since the reference backup: the page-LSN
//! method must not trust their relation files.
//!
//! The page-LSN method keeps a page whose LSN is at or after the reference's start and, for the others,
//! lets restore take the reference's block at the same path. An old LSN proves the page unchanged only
//! if the file at that path is still the relation file the reference copied. Inside a living database
//! PostgreSQL gives every new relation file a new number from the OID counter, but a whole database can
//! be replaced under the same paths: `DROP DATABASE d; CREATE DATABASE d OID = <the same> STRATEGY
//! FILE_COPY` copies the template's files byte for byte, pages and old LSNs included (so does `STRATEGY
//! WAL_LOG` under `wal_level = minimal`, which then logs no page). With block-change summaries the DBASE
//! create record says so; in a gap nothing does, so this module looks at the database directories.
//!
//! The rule: a database (an OID, across every tablespace) is trusted only when it has a `PG_VERSION`
//! now, and each one it has is held by the reference at the same path with the same size and mtime,
//! and that mtime is more than `CLOCK_MARGIN_SECS` older than the reference's recorded start time.
//! Every relation file of any other database is stored whole (copying more, never less).
//!
//! Why that is safe: creating a database (either strategy, and `ALTER DATABASE … SET TABLESPACE`, which
//! is a copy) writes a new `PG_VERSION` into its directory, and nothing else writes one. A database
//! recreated after the reference started (the only case that matters: before, the reference copied the
//! new one) got its `PG_VERSION` at a wall-clock time after that start. Its mtime then either differs
//! from the one the reference recorded, or equals it; equal mtimes (whole seconds) put the reference's
//! at most about a second before the reference's start — the kernel stamps files with a clock that may
//! lag by a tick — and the recorded start time is taken just before `pg_backup_start`, pushed ahead
//! only by a second per backup started within the same second (labels are unique). A margin of a
//! minute covers both. The rule assumes only that the wall clock is not stepped back by more than that
//! margin in between; the manifest records no cheaper witness (inode numbers are reused after a drop).

use super::walk::SourceFile;
use crate::manifest::Manifest;
use pgformat::relfile::{parse_relation_path, TABLESPACE_VERSION_DIRECTORY};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How much older than the reference's start a database's `PG_VERSION` must be to be trusted.
pub const CLOCK_MARGIN_SECS: i64 = 60;

/// The OIDs of the databases, among those with relation files in `files` (the data directory now),
/// whose relation files the page-LSN method must not trust against `reference`.
pub fn possibly_recreated(reference: &Manifest, files: &[SourceFile]) -> BTreeSet<u32> {
    let start = reference.start_time.timestamp();
    let held: HashMap<&str, (u64, i64)> = reference
        .files
        .iter()
        .filter(|f| database_of_pg_version(&f.path).is_some())
        .map(|f| (f.path.as_str(), (f.size, f.mtime)))
        .collect();
    // Per database: whether every PG_VERSION it has now is the reference's, old enough.
    let mut trusted: BTreeMap<u32, bool> = BTreeMap::new();
    for f in files {
        let Some(db) = database_of_pg_version(&f.path) else {
            continue;
        };
        let same = held.get(f.path.as_str()).is_some_and(|&(size, mtime)| {
            size == f.size && mtime == f.mtime && mtime < start - CLOCK_MARGIN_SECS
        });
        *trusted.entry(db).or_insert(true) &= same;
    }
    files
        .iter()
        .filter_map(|f| parse_relation_path(&f.path))
        .map(|(rel, _, _)| rel.db_node)
        // Database 0 is `global`: the shared catalogs, never recreated.
        .filter(|&db| db != 0 && trusted.get(&db) != Some(&true))
        .collect()
}

/// The database OID of a database directory's `PG_VERSION` path (`base/<db>/PG_VERSION` or
/// `pg_tblspc/<spc>/<version dir>/<db>/PG_VERSION`).
fn database_of_pg_version(path: &str) -> Option<u32> {
    let parts: Vec<&str> = path.split('/').collect();
    let db = match parts.as_slice() {
        ["base", db, "PG_VERSION"] => db,
        ["pg_tblspc", _, ver, db, "PG_VERSION"] if *ver == TABLESPACE_VERSION_DIRECTORY => db,
        _ => return None,
    };
    db.parse().ok().filter(|&db| db != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FileEntry;

    /// The reference's start: 2026-11-23T02:00:00Z.
    const START: i64 = 1_795_399_200;
    const SPC: &str = "pg_tblspc/16400/PG_15_202209061";

    fn source(path: &str, mtime: i64) -> SourceFile {
        SourceFile {
            path: path.into(),
            source: path.into(),
            size: 3,
            mode: 0o600,
            mtime,
            first_block: None,
        }
    }

    fn reference(files: &[(&str, i64)]) -> Manifest {
        let mut m = crate::manifest::tests::sample();
        assert_eq!(m.start_time.timestamp(), START);
        let template = m.files[0].clone();
        m.files = files
            .iter()
            .map(|(path, mtime)| FileEntry {
                path: path.to_string(),
                size: 3,
                mtime: *mtime,
                ..template.clone()
            })
            .collect();
        m
    }

    #[test]
    fn only_databases_with_the_references_old_pg_version_are_trusted() {
        let old = START - 86_400;
        let m = reference(&[
            ("base/1/PG_VERSION", old),
            ("base/5/PG_VERSION", old),
            ("base/7/PG_VERSION", START - 30),
            ("base/8/PG_VERSION", old),
            (&format!("{SPC}/9/PG_VERSION"), old),
        ]);
        let now = vec![
            // 1: untouched, with a table in a tablespace too (no PG_VERSION there).
            source("base/1/PG_VERSION", old),
            source("base/1/1259", 0),
            source(&format!("{SPC}/1/16500"), 0),
            // 5: dropped and created again: a new PG_VERSION.
            source("base/5/PG_VERSION", START + 3600),
            source("base/5/1259", 0),
            source(&format!("{SPC}/5/16501"), 0),
            // 7: same mtime, but created within the margin of the reference's start.
            source("base/7/PG_VERSION", START - 30),
            source("base/7/1259", 0),
            // 8: moved to the tablespace (ALTER DATABASE SET TABLESPACE): not the reference's file.
            source(&format!("{SPC}/8/PG_VERSION"), old),
            source(&format!("{SPC}/8/1259"), 0),
            // 9: the same, in a tablespace.
            source(&format!("{SPC}/9/PG_VERSION"), old),
            source(&format!("{SPC}/9/1259"), 0),
            // 10: relation files but no PG_VERSION (being created or dropped while we walk).
            source("base/10/1259", 0),
            // The shared catalogs and other files.
            source("global/1262", 0),
            source("global/pg_control", 0),
            source("PG_VERSION", 0),
        ];
        let got = possibly_recreated(&m, &now);
        assert_eq!(got, BTreeSet::from([5, 7, 8, 10]));
    }

    #[test]
    fn pg_version_paths_name_their_database() {
        assert_eq!(database_of_pg_version("base/16384/PG_VERSION"), Some(16384));
        assert_eq!(
            database_of_pg_version(&format!("{SPC}/5/PG_VERSION")),
            Some(5)
        );
        assert_eq!(database_of_pg_version("PG_VERSION"), None);
        assert_eq!(database_of_pg_version("base/5/pg_filenode.map"), None);
        assert_eq!(
            database_of_pg_version("pg_tblspc/1/PG_14_x/5/PG_VERSION"),
            None
        );
    }
}
