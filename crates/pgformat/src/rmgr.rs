//! Records that change relations outside their block references (PostgreSQL 15): relation forks
//! created or truncated (Storage), relations dropped at commit or abort (Transaction), databases created
//! or dropped (Database). A record flagged `XLR_SPECIAL_REL_UPDATE` that is not one of these, or a
//! Storage or Database record of a kind not known here, is an error: a change we do not understand must
//! never be silently skipped.
//!
//! PostgreSQL 15 sets `XLR_SPECIAL_REL_UPDATE` in exactly these places:
//! - `catalog/storage.c`: `log_smgrcreate` (SMGR CREATE) and `RelationTruncate` (SMGR TRUNCATE, all forks);
//!   `contrib/pg_visibility`'s `pg_truncate_visibility_map` (SMGR TRUNCATE of the visibility map only);
//! - `access/transam/xact.c`: `XactLogCommitRecord` and `XactLogAbortRecord` when relations are dropped
//!   (COMMIT, COMMIT_PREPARED, ABORT, ABORT_PREPARED with `XACT_XINFO_HAS_RELFILENODES`);
//! - `commands/dbcommands.c`: CREATE_FILE_COPY (`CREATE DATABASE ... STRATEGY file_copy`, and the copy
//!   to the new tablespace in `ALTER DATABASE ... SET TABLESPACE`), CREATE_WAL_LOG (the default
//!   strategy: the database directory is created, its relations then come as ordinary WAL), and DROP
//!   (`DROP DATABASE`, and the old tablespace in `ALTER DATABASE ... SET TABLESPACE`).
//!
//! Layouts (main data, little-endian, no padding between parts):
//! - Storage CREATE (0x10): `{RelFileNode rnode; ForkNumber forkNum (i32)}`
//! - Storage TRUNCATE (0x20): `{BlockNumber blkno; RelFileNode rnode; int flags}`, flags 1 heap, 2 vm,
//!   4 fsm
//! - Transaction COMMIT (0x00), ABORT (0x20), COMMIT_PREPARED (0x30), ABORT_PREPARED (0x40), op mask
//!   0x70: `{TimestampTz xact_time}`, then if info has XLOG_XACT_HAS_INFO (0x80) `{uint32 xinfo}`, then
//!   by xinfo bits, in this order: dbinfo (0x1: `{Oid dbId; Oid tsId}`), subxacts (0x2: `int n` + n
//!   xids), relfilenodes (0x4: `int n` + n RelFileNodes), then parts not needed here (dropped stats,
//!   invalidations, two-phase, origin)
//! - Database CREATE_FILE_COPY (0x00): `{Oid db_id; Oid tablespace_id; Oid src_db_id; Oid
//!   src_tablespace_id}`; CREATE_WAL_LOG (0x10): `{Oid db_id; Oid tablespace_id}`; DROP (0x20):
//!   `{Oid db_id; int ntablespaces; Oid tablespace_ids[]}`
//!
//! Sources: `src/include/catalog/storage_xlog.h`, `access/xact.h`, `commands/dbcommands_xlog.h`,
//! `access/rmgrlist.h` of PostgreSQL 15.

use crate::bytes::Reader;
use crate::relfile::{ForkNumber, RelFileNode};
use crate::wal::{rmid, DecodedRecord, WalError, XLR_SPECIAL_REL_UPDATE};

/// A change to relations that a record makes outside its block references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelChange {
    /// A fork was created (empty).
    Create { rel: RelFileNode, fork: ForkNumber },
    /// Forks truncated to `heap_blocks` heap blocks: the main fork to that many blocks, the visibility
    /// map and free space map to what covers them.
    Truncate {
        rel: RelFileNode,
        heap_blocks: u32,
        main: bool,
        vm: bool,
        fsm: bool,
    },
    /// All forks of the relation were removed.
    DropRelation { rel: RelFileNode },
    /// A database directory was created (and, with the file-copy strategy, filled).
    CreateDatabase { spc_node: u32, db_node: u32 },
    /// A database's directories in these tablespaces were removed.
    DropDatabase { db_node: u32, spc_nodes: Vec<u32> },
}

const XLOG_SMGR_CREATE: u8 = 0x10;
const XLOG_SMGR_TRUNCATE: u8 = 0x20;
const SMGR_TRUNCATE_HEAP: i32 = 0x1;
const SMGR_TRUNCATE_VM: i32 = 0x2;
const SMGR_TRUNCATE_FSM: i32 = 0x4;

const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_HAS_INFO: u8 = 0x80;
const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;

const XLOG_DBASE_CREATE_FILE_COPY: u8 = 0x00;
const XLOG_DBASE_CREATE_WAL_LOG: u8 = 0x10;
const XLOG_DBASE_DROP: u8 = 0x20;

/// The resource-manager part of xl_info.
const XLR_RMGR_INFO_MASK: u8 = 0xF0;

/// The relation-level changes of a record (empty for most records).
pub fn relation_changes(rec: &DecodedRecord) -> Result<Vec<RelChange>, WalError> {
    let special = rec.info & XLR_SPECIAL_REL_UPDATE != 0;
    let op = rec.info & XLR_RMGR_INFO_MASK;
    let unknown = || WalError::UnknownSpecialRelUpdate {
        lsn: rec.lsn,
        rmid: rec.rmid,
        info: rec.info,
    };
    let mut d = MainData {
        r: Reader::new(&rec.main_data),
        rec,
    };
    match rec.rmid {
        rmid::SMGR => match op {
            XLOG_SMGR_CREATE => {
                let rel = d.rel()?;
                let fork_no = d.i32()?;
                let fork = u8::try_from(fork_no)
                    .ok()
                    .and_then(ForkNumber::from_u8)
                    .ok_or_else(|| d.bad(format!("creation of fork number {fork_no}")))?;
                Ok(vec![RelChange::Create { rel, fork }])
            }
            XLOG_SMGR_TRUNCATE => {
                let heap_blocks = d.u32()?;
                let rel = d.rel()?;
                let flags = d.i32()?;
                if flags & !(SMGR_TRUNCATE_HEAP | SMGR_TRUNCATE_VM | SMGR_TRUNCATE_FSM) != 0 {
                    return Err(d.bad(format!("truncation with unknown flags 0x{flags:X}")));
                }
                Ok(vec![RelChange::Truncate {
                    rel,
                    heap_blocks,
                    main: flags & SMGR_TRUNCATE_HEAP != 0,
                    vm: flags & SMGR_TRUNCATE_VM != 0,
                    fsm: flags & SMGR_TRUNCATE_FSM != 0,
                }])
            }
            _ => Err(unknown()),
        },
        rmid::XACT => match rec.info & XLOG_XACT_OPMASK {
            XLOG_XACT_COMMIT
            | XLOG_XACT_ABORT
            | XLOG_XACT_COMMIT_PREPARED
            | XLOG_XACT_ABORT_PREPARED => dropped_relations(&mut d),
            _ if special => Err(unknown()),
            _ => Ok(Vec::new()),
        },
        rmid::DBASE => match op {
            XLOG_DBASE_CREATE_FILE_COPY | XLOG_DBASE_CREATE_WAL_LOG => {
                // Both start with {db_id, tablespace_id}; file copy adds its source.
                let db_node = d.u32()?;
                let spc_node = d.u32()?;
                Ok(vec![RelChange::CreateDatabase { spc_node, db_node }])
            }
            XLOG_DBASE_DROP => {
                let db_node = d.u32()?;
                let n = d.count(4)?;
                let spc_nodes = (0..n).map(|_| d.u32()).collect::<Result<Vec<_>, _>>()?;
                Ok(vec![RelChange::DropDatabase { db_node, spc_nodes }])
            }
            _ => Err(unknown()),
        },
        _ if special => Err(unknown()),
        _ => Ok(Vec::new()),
    }
}

/// The relations a commit or abort record drops (ParseCommitRecord / ParseAbortRecord).
fn dropped_relations(d: &mut MainData<'_>) -> Result<Vec<RelChange>, WalError> {
    d.skip(8)?; // xact_time
    let xinfo = if d.rec.info & XLOG_XACT_HAS_INFO != 0 {
        d.u32()?
    } else {
        0
    };
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        d.skip(8)?;
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        let n = d.count(4)?;
        d.skip(n * 4)?;
    }
    let mut out = Vec::new();
    if xinfo & XACT_XINFO_HAS_RELFILENODES != 0 {
        let n = d.count(12)?;
        for _ in 0..n {
            out.push(RelChange::DropRelation { rel: d.rel()? });
        }
    }
    Ok(out)
}

/// A record's main data, read with errors that name the record.
struct MainData<'a> {
    r: Reader<'a>,
    rec: &'a DecodedRecord,
}

impl MainData<'_> {
    fn bad(&self, what: String) -> WalError {
        WalError::BadRecord {
            lsn: self.rec.lsn,
            reason: format!(
                "rmgr {} info 0x{:02X}: {what}",
                self.rec.rmid, self.rec.info
            ),
        }
    }

    fn short(&self) -> WalError {
        self.bad(format!(
            "main data of {} bytes is too short",
            self.rec.main_data.len()
        ))
    }

    fn skip(&mut self, n: usize) -> Result<(), WalError> {
        self.r.take(n).map(|_| ()).ok_or_else(|| self.short())
    }

    fn u32(&mut self) -> Result<u32, WalError> {
        self.r.u32().ok_or_else(|| self.short())
    }

    fn i32(&mut self) -> Result<i32, WalError> {
        self.r.i32().ok_or_else(|| self.short())
    }

    fn rel(&mut self) -> Result<RelFileNode, WalError> {
        self.r.rel_file_node().ok_or_else(|| self.short())
    }

    /// An array length (C int), checked against what the rest of the data can hold.
    fn count(&mut self, item_size: usize) -> Result<usize, WalError> {
        let n = self.i32()?;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(item_size) <= self.r.remaining() => Ok(n),
            _ => Err(self.bad(format!("array length {n} does not fit the main data"))),
        }
    }
}

#[cfg(test)]
mod tests;
