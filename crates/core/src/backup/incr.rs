//! What a diff or incr backup copies of each file, relative to its reference backup.
//!
//! - A file the reference does not have, a file of a database created since: stored whole.
//! - A free space map fork (never tracked in WAL summaries, and changed without WAL): read whole and
//!   stored unless identical to the reference's copy, like the files that are not relations.
//! - A relation fork, when the summaries cover the whole range: only the blocks they list, plus every
//!   block at or past the fork's smallest length since the reference (its limit), in incremental form.
//! - A relation fork, when the summaries have a gap: every page read, kept when its LSN is at or after
//!   the reference's start or it is new (all zero); visibility maps are stored whole then, because
//!   clearing a visibility bit does not advance the VM page's LSN. Except in a database that may have
//!   been dropped and created again since the reference (see `recreated`): stored whole.
//! - Any other file: read and compared piece by piece with the reference's copy; identical pieces are
//!   referenced, not stored.

use super::recreated::possibly_recreated;
use super::walk::SourceFile;
use crate::changes::ChangeMap;
use crate::manifest::{BackupMethod, FileEntry, Manifest, Piece};
use crate::summary::{DbEvent, ForkKey};
use pgformat::lsn::Lsn;
use pgformat::relfile::{parse_relation_path, ForkNumber, RELSEG_SIZE};
use std::collections::{BTreeSet, HashMap, HashSet};

/// How one file is copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileMode {
    /// Read and store everything.
    Whole,
    /// Read everything; pieces equal to the reference's (same index, size and digest) are referenced.
    CompareWithReference(Vec<Piece>),
    /// Incremental form from the summaries: `changed` blocks (file-local numbers, ascending) and every
    /// block from `all_from` up.
    Blocks { changed: Vec<u32>, all_from: u32 },
    /// Incremental form from page LSNs: pages with LSN >= `since`, or new.
    PageLsn { since: Lsn },
}

/// The plan of a diff or incr backup.
pub struct IncrementalPlan {
    reference_files: HashMap<String, FileEntry>,
    changes: ChangeMap,
    created_dbs: HashSet<(u32, u32)>,
    /// In a gap: the databases whose relation files are stored whole (they may have been recreated).
    recreated_dbs: BTreeSet<u32>,
    since: Lsn,
}

impl IncrementalPlan {
    /// The plan for copying `files` (the data directory now) relative to `reference`.
    pub fn new(reference: &Manifest, changes: ChangeMap, files: &[SourceFile]) -> IncrementalPlan {
        let reference_files = reference
            .files
            .iter()
            .map(|f| {
                let mut f = f.clone();
                // Pieces of the reference's own objects are named by its label from now on.
                for p in &mut f.pieces {
                    p.backup.get_or_insert_with(|| reference.label.clone());
                }
                (f.path.clone(), f)
            })
            .collect();
        let created_dbs = changes
            .changes
            .db_events
            .iter()
            .filter_map(|e| match e {
                DbEvent::Created { spc, db } => Some((*spc, *db)),
                DbEvent::Dropped { .. } => None,
            })
            .collect();
        // With summaries the DBASE records name the created databases; in a gap only the directories can.
        let recreated_dbs = if changes.complete() {
            BTreeSet::new()
        } else {
            possibly_recreated(reference, files)
        };
        IncrementalPlan {
            reference_files,
            changes,
            created_dbs,
            recreated_dbs,
            since: reference.start_lsn,
        }
    }

    /// The method this plan uses, and why when it is the fallback.
    pub fn method(&self) -> (BackupMethod, Option<String>) {
        if self.changes.complete() {
            return (BackupMethod::BlockSummaries, None);
        }
        let gaps: Vec<String> = self
            .changes
            .gaps
            .iter()
            .take(3)
            .map(|g| format!("{}..{}: {}", g.start, g.end, g.reason))
            .collect();
        let more = self.changes.gaps.len().saturating_sub(3);
        let mut reason = format!(
            "block-change summaries do not cover {}{}",
            gaps.join("; "),
            if more > 0 {
                format!(" (and {more} more gaps)")
            } else {
                String::new()
            }
        );
        if !self.recreated_dbs.is_empty() {
            let dbs: Vec<String> = self
                .recreated_dbs
                .iter()
                .take(10)
                .map(u32::to_string)
                .collect();
            let more = self.recreated_dbs.len().saturating_sub(10);
            reason.push_str(&format!(
                "; the relation files of databases {}{} were stored whole (their PG_VERSION is not \
                 the reference's, or too recent to prove they were not dropped and created again)",
                dbs.join(", "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            ));
        }
        (BackupMethod::PageLsn, Some(reason))
    }

    /// How `file` is copied.
    pub fn mode_for(&self, file: &SourceFile) -> FileMode {
        let Some(reference) = self.reference_files.get(&file.path) else {
            return FileMode::Whole;
        };
        let Some((rel, fork, segno)) = parse_relation_path(&file.path) else {
            return compare_or_whole(reference);
        };
        if self.created_dbs.contains(&(rel.spc_node, rel.db_node))
            || self.recreated_dbs.contains(&rel.db_node)
        {
            return FileMode::Whole;
        }
        match fork {
            ForkNumber::Fsm | ForkNumber::Init => return compare_or_whole(reference),
            ForkNumber::VisibilityMap if !self.changes.complete() => return FileMode::Whole,
            _ => {}
        }
        if !self.changes.complete() {
            return FileMode::PageLsn { since: self.since };
        }
        let first = segno.saturating_mul(RELSEG_SIZE);
        let end = first.saturating_add(RELSEG_SIZE);
        let Some(fork_changes) = self.changes.changes.forks.get(&ForkKey::new(rel, fork)) else {
            return FileMode::Blocks {
                changed: Vec::new(),
                all_from: RELSEG_SIZE,
            };
        };
        let all_from = fork_changes
            .limit
            .map_or(RELSEG_SIZE, |l| l.saturating_sub(first).min(RELSEG_SIZE));
        if all_from == 0 {
            return FileMode::Whole;
        }
        let changed = fork_changes
            .blocks
            .range(first..end)
            .map(|b| b - first)
            .filter(|&b| b < all_from)
            .collect();
        FileMode::Blocks { changed, all_from }
    }
}

/// Compare with the reference when it holds the file whole with piece checksums; else store it whole.
fn compare_or_whole(reference: &FileEntry) -> FileMode {
    if reference.incremental.is_none() && reference.pieces.iter().all(|p| p.digest.is_some()) {
        FileMode::CompareWithReference(reference.pieces.clone())
    } else {
        FileMode::Whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::Gap;
    use crate::summary::Summary;
    use pgformat::relfile::RelFileNode;

    fn source(path: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            source: path.into(),
            size: 8192,
            mode: 0o600,
            mtime: 0,
            first_block: None,
        }
    }

    fn reference(paths: &[&str]) -> Manifest {
        let mut m = crate::manifest::tests::sample();
        m.label = "20260101-000000F".parse().unwrap();
        m.start_lsn = Lsn(0x100_0000);
        let template = m.files[0].clone();
        m.files = paths
            .iter()
            .map(|p| FileEntry {
                path: p.to_string(),
                ..template.clone()
            })
            .collect();
        m
    }

    #[test]
    fn each_kind_of_file_gets_its_mode() {
        let m = reference(&[
            "base/5/16384",
            "base/5/16384.1",
            "base/5/16384_fsm",
            "base/5/16384_vm",
            "base/5/16385",
            "base/5/16386",
            "base/7/16400",
            "base/5/16390",
            "global/pg_control",
            "base/5/PG_VERSION",
            "base/8/PG_VERSION",
            "base/8/16500",
        ]);
        let key = |rel, fork| {
            ForkKey::new(
                RelFileNode::new(1663, 5, rel),
                ForkNumber::from_u8(fork).unwrap(),
            )
        };
        let mut s = Summary::new(1, Lsn(0x100_0000), Lsn(0x300_0000));
        s.mark_modified(key(16384, 0), 3);
        s.mark_modified(key(16384, 0), RELSEG_SIZE + 9);
        s.mark_modified(key(16384, 2), 0);
        s.set_limit(key(16385, 0), 4);
        s.mark_modified(key(16385, 0), 1);
        s.set_limit(key(16386, 0), 0);
        s.db_events.push(DbEvent::Created { spc: 1663, db: 7 });
        let plan = IncrementalPlan::new(
            &m,
            ChangeMap {
                changes: s.clone(),
                gaps: vec![],
            },
            &[],
        );
        assert_eq!(plan.method().0, BackupMethod::BlockSummaries);
        let mode = |p: &str| plan.mode_for(&source(p));
        let blocks = |changed: Vec<u32>, all_from| FileMode::Blocks { changed, all_from };
        assert_eq!(mode("base/5/16384"), blocks(vec![3], RELSEG_SIZE));
        assert_eq!(mode("base/5/16384.1"), blocks(vec![9], RELSEG_SIZE));
        assert_eq!(mode("base/5/16384_vm"), blocks(vec![0], RELSEG_SIZE));
        assert!(matches!(
            mode("base/5/16384_fsm"),
            FileMode::CompareWithReference(_)
        ));
        assert_eq!(mode("base/5/16385"), blocks(vec![1], 4));
        assert_eq!(
            mode("base/5/16386"),
            FileMode::Whole,
            "dropped and recreated"
        );
        assert_eq!(mode("base/5/99999"), FileMode::Whole, "new file");
        assert_eq!(mode("base/7/16400"), FileMode::Whole, "new database");
        assert!(matches!(
            mode("global/pg_control"),
            FileMode::CompareWithReference(p) if p[0].backup.as_deref() == Some("20260101-000000F")
        ));
        // An untouched relation: nothing but its length.
        assert_eq!(mode("base/5/16390"), blocks(vec![], RELSEG_SIZE));

        // In the gap, database 8 has a PG_VERSION newer than the reference's: dropped and created again?
        let pg_version = |db: u32, mtime: i64| SourceFile {
            size: 3,
            mtime,
            ..source(&format!("base/{db}/PG_VERSION"))
        };
        let now = [
            pg_version(5, m.files[0].mtime),
            source("base/5/16384"),
            pg_version(8, m.files[0].mtime + 1),
            source("base/8/16500"),
        ];
        let plan = IncrementalPlan::new(
            &m,
            ChangeMap {
                changes: s,
                gaps: vec![Gap {
                    start: Lsn(0x200_0000),
                    end: Lsn(0x300_0000),
                    reason: "no block-change summary".into(),
                }],
            },
            &now,
        );
        let (method, reason) = plan.method();
        assert_eq!(method, BackupMethod::PageLsn);
        let reason = reason.unwrap();
        assert!(reason.contains("0/2000000..0/3000000"), "{reason}");
        assert!(reason.contains("databases 8 were stored whole"), "{reason}");
        assert_eq!(plan.mode_for(&source("base/8/16500")), FileMode::Whole);
        assert_eq!(
            plan.mode_for(&source("base/5/16384")),
            FileMode::PageLsn {
                since: Lsn(0x100_0000)
            }
        );
        assert_eq!(plan.mode_for(&source("base/5/16384_vm")), FileMode::Whole);
    }
}
