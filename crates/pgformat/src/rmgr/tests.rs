//! Each relation-changing record parsed from hand-built main data, laid out as PostgreSQL 15 writes it.

use super::*;
use crate::lsn::Lsn;

fn rec(rmid: u8, info: u8, main_data: Vec<u8>) -> DecodedRecord {
    DecodedRecord {
        lsn: Lsn(0x0100_1000),
        end_lsn: Lsn(0x0100_1040),
        rmid,
        info,
        xid: 0,
        prev: Lsn(0x0100_0F00),
        blocks: vec![],
        main_data,
    }
}

fn changes(rmid: u8, info: u8, main_data: Vec<u8>) -> Result<Vec<RelChange>, WalError> {
    relation_changes(&rec(rmid, info, main_data))
}

fn le(vals: &[u32]) -> Vec<u8> {
    vals.iter().flat_map(|v| v.to_le_bytes()).collect()
}

const R: RelFileNode = RelFileNode {
    spc_node: 1663,
    db_node: 5,
    rel_node: 16384,
};
const R2: RelFileNode = RelFileNode {
    spc_node: 16390,
    db_node: 5,
    rel_node: 16391,
};
const SPECIAL: u8 = XLR_SPECIAL_REL_UPDATE;

#[test]
fn storage_create() {
    for (fork_no, fork) in [
        (0, ForkNumber::Main),
        (2, ForkNumber::VisibilityMap),
        (3, ForkNumber::Init),
    ] {
        let c = changes(rmid::SMGR, 0x10 | SPECIAL, le(&[1663, 5, 16384, fork_no])).unwrap();
        assert_eq!(c, vec![RelChange::Create { rel: R, fork }]);
    }
    let e = changes(rmid::SMGR, 0x10 | SPECIAL, le(&[1663, 5, 16384, 4])).unwrap_err();
    assert!(e.to_string().contains("fork number 4"), "{e}");
    let e = changes(rmid::SMGR, 0x10 | SPECIAL, le(&[1663, 5, 16384, u32::MAX])).unwrap_err();
    assert!(e.to_string().contains("fork number -1"), "{e}");
}

#[test]
fn storage_truncate() {
    let t = changes(rmid::SMGR, 0x20 | SPECIAL, le(&[7, 1663, 5, 16384, 7])).unwrap();
    assert_eq!(
        t,
        vec![RelChange::Truncate {
            rel: R,
            heap_blocks: 7,
            main: true,
            vm: true,
            fsm: true
        }]
    );
    // pg_truncate_visibility_map: the visibility map alone, to nothing.
    let t = changes(rmid::SMGR, 0x20 | SPECIAL, le(&[0, 16390, 5, 16391, 2])).unwrap();
    assert_eq!(
        t,
        vec![RelChange::Truncate {
            rel: R2,
            heap_blocks: 0,
            main: false,
            vm: true,
            fsm: false
        }]
    );
    let short = changes(rmid::SMGR, 0x20 | SPECIAL, le(&[7, 1663])).unwrap_err();
    assert_eq!(short.lsn(), Lsn(0x0100_1000));
    assert!(short.to_string().contains("too short"), "{short}");
    assert!(changes(rmid::SMGR, 0x20 | SPECIAL, le(&[7, 1663, 5, 16384, 8])).is_err());
    // Storage has no other record kinds: one is not understood.
    assert!(matches!(
        changes(rmid::SMGR, 0x30 | SPECIAL, vec![]),
        Err(WalError::UnknownSpecialRelUpdate {
            rmid: 2,
            info: 0x31,
            ..
        })
    ));
}

/// xl_xact_commit/abort main data: xact_time, then the optional parts in ParseCommitRecord's order.
fn xact(
    xinfo: Option<u32>,
    dbinfo: bool,
    subxacts: &[u32],
    rels: &[RelFileNode],
    tail: &[u8],
) -> Vec<u8> {
    let mut d = 0x0002_9A8B_1234_5678u64.to_le_bytes().to_vec();
    if let Some(x) = xinfo {
        d.extend(x.to_le_bytes());
    }
    if dbinfo {
        d.extend(le(&[5, 1663]));
    }
    if !subxacts.is_empty() {
        d.extend(le(&[subxacts.len() as u32]));
        d.extend(le(subxacts));
    }
    if !rels.is_empty() {
        d.extend(le(&[rels.len() as u32]));
        for r in rels {
            d.extend(le(&[r.spc_node, r.db_node, r.rel_node]));
        }
    }
    d.extend(tail);
    d
}

#[test]
fn commit_and_abort_with_dropped_relations() {
    let dropped = vec![
        RelChange::DropRelation { rel: R },
        RelChange::DropRelation { rel: R2 },
    ];
    // dbinfo | subxacts | relfilenodes | invals, with 2 subtransactions and an invalidation tail.
    let full = xact(
        Some(0x1 | 0x2 | 0x4 | 0x8),
        true,
        &[900, 901],
        &[R, R2],
        &[1, 0, 0, 0, 9, 9],
    );
    for op in [0x00, 0x20, 0x30, 0x40] {
        let c = changes(rmid::XACT, 0x80 | op | SPECIAL, full.clone()).unwrap();
        assert_eq!(c, dropped, "op 0x{op:02X}");
    }
    // Relations without dbinfo or subtransactions (an abort of a CREATE TABLE).
    let abort = xact(Some(0x4), false, &[], &[R], &[]);
    assert_eq!(
        changes(rmid::XACT, 0x80 | 0x20 | SPECIAL, abort).unwrap(),
        vec![RelChange::DropRelation { rel: R }]
    );
    // Commits without dropped relations: no xinfo at all, or xinfo without the flag.
    assert!(changes(rmid::XACT, 0x00, xact(None, false, &[], &[], &[]))
        .unwrap()
        .is_empty());
    let no_rels = xact(Some(0x1 | 0x2), true, &[900], &[], &[]);
    assert!(changes(rmid::XACT, 0x80, no_rels).unwrap().is_empty());
}

#[test]
fn malformed_transaction_records_are_errors() {
    // A count larger than the data is an error, not a huge allocation.
    let mut lying = xact(Some(0x4), false, &[], &[], &[]);
    lying.extend(le(&[1_000_000]));
    assert!(changes(rmid::XACT, 0x80 | SPECIAL, lying).is_err());
    let mut negative = xact(Some(0x2), false, &[], &[], &[]);
    negative.extend(le(&[u32::MAX]));
    assert!(changes(rmid::XACT, 0x80, negative).is_err());
    assert!(changes(rmid::XACT, 0x80 | SPECIAL, vec![0; 10]).is_err());
    // Other transaction records carry no relation changes; flagged, they are not understood.
    assert!(changes(rmid::XACT, 0x50, le(&[700, 0])).unwrap().is_empty());
    assert!(matches!(
        changes(rmid::XACT, 0x10 | SPECIAL, vec![]),
        Err(WalError::UnknownSpecialRelUpdate {
            rmid: 1,
            info: 0x11,
            ..
        })
    ));
}

#[test]
fn database_records() {
    let created = vec![RelChange::CreateDatabase {
        spc_node: 1663,
        db_node: 16400,
    }];
    assert_eq!(
        changes(rmid::DBASE, 0x10 | SPECIAL, le(&[16400, 1663])).unwrap(),
        created
    );
    assert_eq!(
        changes(rmid::DBASE, SPECIAL, le(&[16400, 1663, 1, 1663])).unwrap(),
        created
    );
    let d = changes(rmid::DBASE, 0x20 | SPECIAL, le(&[16400, 2, 1663, 16500])).unwrap();
    assert_eq!(
        d,
        vec![RelChange::DropDatabase {
            db_node: 16400,
            spc_nodes: vec![1663, 16500]
        }]
    );
    assert!(changes(rmid::DBASE, 0x20 | SPECIAL, le(&[16400, 3, 1663])).is_err());
    assert!(changes(rmid::DBASE, 0x10 | SPECIAL, le(&[16400])).is_err());
    assert!(matches!(
        changes(rmid::DBASE, 0x30 | SPECIAL, vec![]),
        Err(WalError::UnknownSpecialRelUpdate { rmid: 4, .. })
    ));
}

#[test]
fn unknown_special_updates_are_errors() {
    for id in [rmid::HEAP, rmid::XLOG, rmid::TBLSPC, rmid::RELMAP, 200] {
        let e = changes(id, 0x30 | SPECIAL, vec![1, 2, 3]).unwrap_err();
        assert_eq!(
            e,
            WalError::UnknownSpecialRelUpdate {
                lsn: Lsn(0x0100_1000),
                rmid: id,
                info: 0x31
            }
        );
        assert!(changes(id, 0x30, vec![1, 2, 3]).unwrap().is_empty());
    }
}
