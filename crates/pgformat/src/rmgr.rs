//! Records that change relations outside their block references (PostgreSQL 15): relation fork
//! creation and truncation (Storage), relations dropped at commit or abort (Transaction), databases
//! created or dropped (Database). Any other record flagged XLR_SPECIAL_REL_UPDATE is an error: a change
//! we do not understand must never be silently skipped.
//!
//! Layouts (main data, little-endian, no padding between parts):
//! - Storage CREATE (0x10): `{RelFileNode rnode; ForkNumber forkNum (i32)}`
//! - Storage TRUNCATE (0x20): `{BlockNumber blkno; RelFileNode rnode; int flags}`, flags 1 heap, 2 vm, 4 fsm
//! - Transaction COMMIT (0x00), ABORT (0x20), COMMIT_PREPARED (0x30), ABORT_PREPARED (0x40):
//!   `{TimestampTz xact_time}`, then if info has 0x80 `{uint32 xinfo}`, then by xinfo bits in this order:
//!   dbinfo (1: 8 bytes), subxacts (2: int n + n xids), relfilenodes (4: int n + n RelFileNodes), ...
//! - Database CREATE_FILE_COPY (0x00): `{db_id, tablespace_id, src_db_id, src_tablespace_id}`;
//!   CREATE_WAL_LOG (0x10): `{db_id, tablespace_id}`; DROP (0x20): `{db_id; int ntablespaces; Oid[]}`

use crate::relfile::{ForkNumber, RelFileNode};
use crate::wal::{rmid, DecodedRecord, WalError, XLR_SPECIAL_REL_UPDATE};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelChange {
    /// A fork was created (empty).
    Create {
        rel: RelFileNode,
        fork: ForkNumber,
    },
    /// Forks truncated to `heap_blocks` heap blocks (the VM and FSM to the matching length).
    Truncate {
        rel: RelFileNode,
        heap_blocks: u32,
        main: bool,
        vm: bool,
        fsm: bool,
    },
    /// All forks of the relation were removed.
    DropRelation {
        rel: RelFileNode,
    },
    CreateDatabase {
        spc_node: u32,
        db_node: u32,
    },
    DropDatabase {
        db_node: u32,
        spc_nodes: Vec<u32>,
    },
}

const XLOG_SMGR_CREATE: u8 = 0x10;
const XLOG_SMGR_TRUNCATE: u8 = 0x20;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_HAS_INFO: u8 = 0x80;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;
const XLOG_DBASE_CREATE_FILE_COPY: u8 = 0x00;
const XLOG_DBASE_CREATE_WAL_LOG: u8 = 0x10;
const XLOG_DBASE_DROP: u8 = 0x20;
const SMGR_TRUNCATE_HEAP: u32 = 0x1;
const SMGR_TRUNCATE_VM: u32 = 0x2;
const SMGR_TRUNCATE_FSM: u32 = 0x4;

struct Data<'a> {
    b: &'a [u8],
    pos: usize,
    rec: &'a DecodedRecord,
}

impl<'a> Data<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WalError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| WalError::BadRecord {
                lsn: self.rec.lsn,
                reason: format!(
                    "main data of rmgr {} info 0x{:02X} is {} bytes, too short",
                    self.rec.rmid,
                    self.rec.info,
                    self.b.len()
                ),
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, WalError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn rel(&mut self) -> Result<RelFileNode, WalError> {
        Ok(RelFileNode::from_le_bytes(
            self.take(12)?.try_into().expect("12"),
        ))
    }
    /// A count as a C int, bounded by what could fit in the rest of the data.
    fn count(&mut self, item: usize) -> Result<usize, WalError> {
        let n = self.u32()? as i32;
        if n < 0 || (n as usize).saturating_mul(item) > self.b.len() - self.pos {
            return Err(WalError::BadRecord {
                lsn: self.rec.lsn,
                reason: format!("bad array length {n}"),
            });
        }
        Ok(n as usize)
    }
}

/// The relation-level changes of a record (empty for most records).
pub fn relation_changes(rec: &DecodedRecord) -> Result<Vec<RelChange>, WalError> {
    let mut d = Data {
        b: &rec.main_data,
        pos: 0,
        rec,
    };
    let special = rec.info & XLR_SPECIAL_REL_UPDATE != 0;
    let op = rec.info & 0xF0;
    let unknown = || WalError::UnknownSpecialRelUpdate {
        lsn: rec.lsn,
        rmid: rec.rmid,
        info: rec.info,
    };
    match rec.rmid {
        rmid::SMGR if op == XLOG_SMGR_CREATE => {
            let rel = d.rel()?;
            let fork_no = d.u32()?;
            let fork = u8::try_from(fork_no)
                .ok()
                .and_then(ForkNumber::from_u8)
                .ok_or_else(|| WalError::BadRecord {
                    lsn: rec.lsn,
                    reason: format!("smgr create of fork {fork_no}"),
                })?;
            Ok(vec![RelChange::Create { rel, fork }])
        }
        rmid::SMGR if op == XLOG_SMGR_TRUNCATE => {
            let heap_blocks = d.u32()?;
            let rel = d.rel()?;
            let flags = d.u32()?;
            Ok(vec![RelChange::Truncate {
                rel,
                heap_blocks,
                main: flags & SMGR_TRUNCATE_HEAP != 0,
                vm: flags & SMGR_TRUNCATE_VM != 0,
                fsm: flags & SMGR_TRUNCATE_FSM != 0,
            }])
        }
        rmid::XACT => {
            let xop = rec.info & XLOG_XACT_OPMASK;
            if ![
                XLOG_XACT_COMMIT,
                XLOG_XACT_ABORT,
                XLOG_XACT_COMMIT_PREPARED,
                XLOG_XACT_ABORT_PREPARED,
            ]
            .contains(&xop)
            {
                return if special {
                    Err(unknown())
                } else {
                    Ok(Vec::new())
                };
            }
            d.take(8)?; // xact_time
            let xinfo = if rec.info & XLOG_XACT_HAS_INFO != 0 {
                d.u32()?
            } else {
                0
            };
            if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
                d.take(8)?;
            }
            if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
                let n = d.count(4)?;
                d.take(n * 4)?;
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
        rmid::DBASE => match op {
            XLOG_DBASE_CREATE_FILE_COPY | XLOG_DBASE_CREATE_WAL_LOG => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn rec(rmid: u8, info: u8, main_data: Vec<u8>) -> DecodedRecord {
        DecodedRecord {
            lsn: Lsn(0x1000),
            end_lsn: Lsn(0x1040),
            rmid,
            info,
            xid: 0,
            prev: Lsn(0),
            blocks: vec![],
            main_data,
        }
    }
    fn le(vals: &[u32]) -> Vec<u8> {
        vals.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
    const R: RelFileNode = RelFileNode {
        spc_node: 1663,
        db_node: 5,
        rel_node: 16384,
    };

    #[test]
    fn storage_records() {
        let c = relation_changes(&rec(rmid::SMGR, 0x10 | 1, le(&[1663, 5, 16384, 2]))).unwrap();
        assert_eq!(
            c,
            vec![RelChange::Create {
                rel: R,
                fork: ForkNumber::VisibilityMap
            }]
        );
        let t = relation_changes(&rec(rmid::SMGR, 0x20 | 1, le(&[7, 1663, 5, 16384, 3]))).unwrap();
        assert_eq!(
            t,
            vec![RelChange::Truncate {
                rel: R,
                heap_blocks: 7,
                main: true,
                vm: true,
                fsm: false
            }]
        );
        assert!(relation_changes(&rec(rmid::SMGR, 0x20 | 1, le(&[7, 1663]))).is_err());
    }

    #[test]
    fn commit_with_dropped_relations() {
        // xact_time, xinfo = dbinfo|subxacts|relfilenodes, dbinfo, 2 subxacts, 2 rels
        let mut d = vec![0u8; 8];
        d.extend(le(&[
            1 | 2 | 4,
            5,
            1663,
            2,
            900,
            901,
            2,
            1663,
            5,
            16384,
            1663,
            5,
            16390,
        ]));
        let c = relation_changes(&rec(rmid::XACT, 0x80, d.clone())).unwrap();
        assert_eq!(
            c,
            vec![
                RelChange::DropRelation { rel: R },
                RelChange::DropRelation {
                    rel: RelFileNode {
                        rel_node: 16390,
                        ..R
                    }
                }
            ]
        );
        // Abort prepared has the same layout.
        assert_eq!(
            relation_changes(&rec(rmid::XACT, 0x80 | 0x40, d))
                .unwrap()
                .len(),
            2
        );
        // A plain commit without xinfo drops nothing.
        assert!(relation_changes(&rec(rmid::XACT, 0x00, vec![0; 8]))
            .unwrap()
            .is_empty());
        // A lying count is an error, not a huge allocation.
        let mut bad = vec![0u8; 8];
        bad.extend(le(&[4, 1_000_000]));
        assert!(relation_changes(&rec(rmid::XACT, 0x80, bad)).is_err());
    }

    #[test]
    fn database_records() {
        let c = relation_changes(&rec(rmid::DBASE, 0x10 | 1, le(&[16400, 1663]))).unwrap();
        assert_eq!(
            c,
            vec![RelChange::CreateDatabase {
                spc_node: 1663,
                db_node: 16400
            }]
        );
        let c = relation_changes(&rec(rmid::DBASE, 1, le(&[16400, 1663, 1, 1663]))).unwrap();
        assert_eq!(
            c,
            vec![RelChange::CreateDatabase {
                spc_node: 1663,
                db_node: 16400
            }]
        );
        let d =
            relation_changes(&rec(rmid::DBASE, 0x20 | 1, le(&[16400, 2, 1663, 16500]))).unwrap();
        assert_eq!(
            d,
            vec![RelChange::DropDatabase {
                db_node: 16400,
                spc_nodes: vec![1663, 16500]
            }]
        );
    }

    #[test]
    fn unknown_special_updates_are_errors() {
        let e = relation_changes(&rec(rmid::HEAP, 0x01, vec![])).unwrap_err();
        assert!(matches!(
            e,
            WalError::UnknownSpecialRelUpdate { rmid: 10, .. }
        ));
        assert!(relation_changes(&rec(rmid::HEAP, 0x00, vec![]))
            .unwrap()
            .is_empty());
    }
}
