//! Golden tests. First, bytes written by a real PostgreSQL 15.20 server (initdb of a fresh cluster,
//! copied from its first segment with the records `pg_waldump` showed there), so that the layouts and
//! the CRC are checked against PostgreSQL itself and not only against our own writer. Then a small
//! hand-built sequence of pages whose every decoded field is spelled out.

use super::testing::{TestBlock, TestImage, TestRecord, WalWriter, TEST_SEG_SIZE};
use super::{rmid, BlockRef, DecodedRecord, WalDecoder, WalError};
use crate::lsn::{Lsn, DEFAULT_WAL_SEGMENT_SIZE as SEG16};
use crate::relfile::{ForkNumber, RelFileNode};
use crate::rmgr::{relation_changes, RelChange};

fn unhex(parts: &[&str]) -> Vec<u8> {
    let s: String = parts.concat();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes `bytes` fed at `start`: the records, then what the decoder said last.
fn decode_at(start: Lsn, bytes: &[u8]) -> (Vec<DecodedRecord>, Result<(), WalError>) {
    let mut d = WalDecoder::new(start, SEG16);
    d.feed(bytes);
    let mut out = Vec::new();
    loop {
        match d.next_record() {
            Ok(Some(r)) => out.push(r),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
}

/// pg_waldump: `rmgr: XLOG len (rec/tot): 114/114, tx: 0, lsn: 0/01000028, prev 0/00000000, desc:
/// CHECKPOINT_SHUTDOWN redo 0/1000028; tli 1; ...` — the long page header of segment 1 and the first
/// record of a cluster whose system identifier is 7711489019284092339.
const PG15_SEGMENT_START: &[&str] = &[
    "10d102000100000000000001000000000000000000000000b3f5c0e367b6046b00000001002000007200000000000000",
    "000000000000000000000000955d0fa2ff58280000010000000001000000010000000100000000000000030000000000",
    "000010270000010000000000000003000000010000000100000001000000fe7f000067b6046b00000000000000000000",
    "000000000000fe7f0000000000000000",
];

#[test]
fn real_pg15_segment_start() {
    let bytes = unhex(PG15_SEGMENT_START);
    let (recs, end) = decode_at(Lsn(0x0100_0000), &bytes);
    assert_eq!(end, Ok(()), "the next record is not fed yet");
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        (r.lsn, r.end_lsn, r.prev),
        (Lsn(0x0100_0028), Lsn(0x0100_00A0), Lsn(0))
    );
    assert_eq!((r.rmid, r.info, r.xid), (rmid::XLOG, 0x00, 0)); // CHECKPOINT_SHUTDOWN
    assert!(r.blocks.is_empty());
    assert_eq!(
        r.main_data.len(),
        114 - 24 - 2,
        "CheckPoint, after a short data header"
    );
    assert_eq!(
        r.main_data[..8],
        0x0100_0028u64.to_le_bytes(),
        "redo 0/1000028"
    );
    assert_eq!(
        super::segment_system_identifier(&bytes),
        Some(7_711_489_019_284_092_339)
    );
    let mut d = WalDecoder::new(Lsn(0x0100_0000), SEG16);
    d.feed(&bytes);
    d.next_record().unwrap();
    assert_eq!(d.system_identifier(), Some(7_711_489_019_284_092_339));
    assert_eq!(d.position(), Lsn(0x0100_00A0));
}

/// `rmgr: Btree len (rec/tot): 61/177, tx: 273, lsn: 0/011C24B8, prev 0/011C1610, desc: INSERT_UPPER
/// off 2, blkref #0: rel 1663/1/2704 blk 3 FPW, blkref #1: rel 1663/1/2704 blk 1`: an image with a
/// hole, and a second block of the same relation (SAME_REL).
const PG15_BTREE_INSERT_UPPER: &[&str] = &[
    "b10000001101000010161c0100000000100b0000c860e8ec0010000074002400037f06000001000000900a0000030000",
    "000180000001000000ff020000000078cc0701bc7e00002400b01ff01f042000000000e89f1000b09f4000d09f300000",
    "000400010020605f70675f757365725f6d617070696e670000000000000000000002000100186070675f6c617267656f",
    "626a65637400000000010000000820000000000000000001000000020000000200",
];

/// `rmgr: XLOG len (rec/tot): 49/137, tx: 1, lsn: 0/01014470, prev 0/010143E0, desc: FPI ,
/// blkref #0: rel 1664/0/6115 blk 0 FPW`: a shared catalog's page, mostly hole.
const PG15_FPI_GLOBAL: &[&str] = &[
    "8900000001000000e043010100000000b0000000809022c30010000058004800038006000000000000e3170000000000",
    "000000000000000000000000004800f01ff01f0420000000006231050004000000000000000000000000000000000000",
    "000000000000000000000000000000f0bf010000000000000000000000000000000000000008000000",
];

#[test]
fn real_pg15_records_with_block_references() {
    let image = |id, rel, block| BlockRef {
        id,
        rel,
        fork: ForkNumber::Main,
        block,
        has_image: true,
        apply_image: true,
        will_init: false,
        has_data: false,
    };
    let idx = RelFileNode {
        spc_node: 1663,
        db_node: 1,
        rel_node: 2704,
    };
    let (recs, end) = decode_at(Lsn(0x011C_24B8), &unhex(PG15_BTREE_INSERT_UPPER));
    assert_eq!(end, Ok(()));
    let r = &recs[0];
    assert_eq!(
        (r.lsn, r.end_lsn, r.prev),
        (Lsn(0x011C_24B8), Lsn(0x011C_2570), Lsn(0x011C_1610))
    );
    assert_eq!((r.rmid, r.info, r.xid), (rmid::BTREE, 0x10, 273));
    assert_eq!(
        r.blocks,
        vec![
            image(0, idx, 3),
            BlockRef {
                has_image: false,
                apply_image: false,
                ..image(1, idx, 1)
            }
        ]
    );
    assert_eq!(r.main_data, vec![2, 0], "xl_btree_insert: offnum 2");

    let shared = RelFileNode {
        spc_node: 1664,
        db_node: 0,
        rel_node: 6115,
    };
    let (recs, end) = decode_at(Lsn(0x0101_4470), &unhex(PG15_FPI_GLOBAL));
    assert_eq!(end, Ok(()));
    let r = &recs[0];
    assert_eq!(
        (r.lsn, r.end_lsn, r.rmid, r.info, r.xid),
        (Lsn(0x0101_4470), Lsn(0x0101_4500), rmid::XLOG, 0xB0, 1)
    );
    assert_eq!(r.blocks, vec![image(0, shared, 0)]);
    assert!(r.main_data.is_empty());

    // One flipped bit anywhere is a CRC error at the record's LSN.
    let mut bad = unhex(PG15_FPI_GLOBAL);
    bad[100] ^= 0x04;
    let (_, end) = decode_at(Lsn(0x0101_4470), &bad);
    assert!(
        matches!(
            end,
            Err(WalError::BadCrc {
                lsn: Lsn(0x0101_4470),
                expected: 0xC3229080,
                ..
            })
        ),
        "{end:?}"
    );
}

const S1: Lsn = Lsn(TEST_SEG_SIZE as u64);
const HEAP_REL: RelFileNode = RelFileNode {
    spc_node: 1663,
    db_node: 5,
    rel_node: 16384,
};
const INDEX_REL: RelFileNode = RelFileNode {
    spc_node: 1663,
    db_node: 5,
    rel_node: 16390,
};
const NEW_REL: RelFileNode = RelFileNode {
    spc_node: 16400,
    db_node: 5,
    rel_node: 16401,
};

/// Eight records over two 1 MB segments; the fifth crosses a page boundary, the seventh is
/// XLOG_SWITCH.
fn golden_stream() -> Vec<u8> {
    let mut w = WalWriter::new(S1, TEST_SEG_SIZE);
    // 1. XLOG NEXTOID: main data only.
    w.insert(&TestRecord::new(
        rmid::XLOG,
        0x30,
        24576u32.to_le_bytes().to_vec(),
    ));
    // 2. Heap INSERT+INIT_PAGE: one block, re-initialized, with tuple data; xl_heap_insert main data.
    let mut b = TestBlock::new(0, HEAP_REL, 0);
    b.will_init = true;
    b.data = (1..=20).collect();
    w.insert(&TestRecord {
        xid: 750,
        blocks: vec![b],
        ..TestRecord::new(rmid::HEAP, 0x80, vec![1, 0, 0])
    });
    // 3. Btree INSERT_LEAF after a checkpoint: a full-page image with a hole, and a second block of
    //    the same relation.
    let mut b0 = TestBlock::new(0, INDEX_REL, 1);
    b0.image = Some(TestImage::with_hole(40, 8000));
    let b1 = TestBlock::new(1, INDEX_REL, 0);
    w.insert(&TestRecord {
        xid: 750,
        blocks: vec![b0, b1],
        ..TestRecord::new(rmid::BTREE, 0x00, vec![7, 0])
    });
    // 4. Storage CREATE of a fork in another tablespace.
    let create = [16400u32, 5, 16401, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    w.insert(&TestRecord::new(rmid::SMGR, 0x10 | 0x01, create));
    // 5. A logical message of 9000 bytes: crosses from page 0 into page 1.
    w.insert(&TestRecord {
        xid: 750,
        ..TestRecord::new(rmid::LOGICALMSG, 0x00, vec![0xEE; 9000])
    });
    // 6. Transaction COMMIT dropping a relation.
    let mut commit = 0x0002_9A8B_0000_0000u64.to_le_bytes().to_vec();
    for v in [0x4u32, 1, 1663, 5, 16384] {
        commit.extend(v.to_le_bytes());
    }
    w.insert(&TestRecord {
        xid: 750,
        ..TestRecord::new(rmid::XACT, 0x80 | 0x01, commit)
    });
    // 7. XLOG_SWITCH, then 8. a first record in segment 2.
    w.switch();
    w.insert(&TestRecord::new(rmid::STANDBY, 0x10, vec![0; 8]));
    w.out
}

#[test]
fn hand_built_pages_decode_to_these_records() {
    let bytes = golden_stream();
    assert_eq!(bytes.len(), 0x10_004A, "the last record ends unaligned");
    // Page headers: the long one that starts segment 1; page 1 continuing record 5 (flag 0x0001,
    // xlp_rem_len 1285); the long one that starts segment 2.
    assert_eq!(
        hex(&bytes[..40]),
        concat!(
            "10d1",
            "0200",
            "01000000",         // magic 0xD110, long header, timeline 1
            "0000100000000000", // page address 0/100000
            "00000000",
            "00000000",         // xlp_rem_len, padding
            "c77130d3d1487665", // system identifier 7311111111111111111
            "00001000",
            "00200000", // segment size 1 MB, WAL block size 8192
        )
    );
    assert_eq!(
        hex(&bytes[0x2000..0x2018]),
        "10d101000100000000201000000000000505000000000000"
    );
    assert_eq!(
        &hex(&bytes[0x10_0000..0x10_0018])[..32],
        "10d10200010000000000200000000000"
    );

    let block = |id, rel, block| BlockRef {
        id,
        rel,
        fork: ForkNumber::Main,
        block,
        has_image: false,
        apply_image: false,
        will_init: false,
        has_data: false,
    };
    let rec = |lsn: u64, end: u64, prev: u64, rmid: u8, info: u8, xid: u32| DecodedRecord {
        lsn: Lsn(lsn),
        end_lsn: Lsn(end),
        rmid,
        info,
        xid,
        prev: Lsn(prev),
        blocks: vec![],
        main_data: vec![],
    };
    let mut commit_data = 0x0002_9A8B_0000_0000u64.to_le_bytes().to_vec();
    for v in [0x4u32, 1, 1663, 5, 16384] {
        commit_data.extend(v.to_le_bytes());
    }
    let expected = vec![
        DecodedRecord {
            main_data: vec![0, 0x60, 0, 0],
            ..rec(0x10_0028, 0x10_0048, 0, 0, 0x30, 0)
        },
        DecodedRecord {
            blocks: vec![BlockRef {
                will_init: true,
                has_data: true,
                ..block(0, HEAP_REL, 0)
            }],
            main_data: vec![1, 0, 0],
            ..rec(0x10_0048, 0x10_0090, 0x10_0028, rmid::HEAP, 0x80, 750)
        },
        DecodedRecord {
            blocks: vec![
                BlockRef {
                    has_image: true,
                    apply_image: true,
                    ..block(0, INDEX_REL, 1)
                },
                block(1, INDEX_REL, 0),
            ],
            main_data: vec![7, 0],
            ..rec(0x10_0090, 0x10_0190, 0x10_0048, rmid::BTREE, 0x00, 750)
        },
        DecodedRecord {
            main_data: [16400u32, 5, 16401, 0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            ..rec(0x10_0190, 0x10_01C0, 0x10_0090, rmid::SMGR, 0x11, 0)
        },
        DecodedRecord {
            main_data: vec![0xEE; 9000],
            ..rec(0x10_01C0, 0x10_2520, 0x10_0190, rmid::LOGICALMSG, 0x00, 750)
        },
        DecodedRecord {
            main_data: commit_data,
            ..rec(0x10_2520, 0x10_2558, 0x10_01C0, rmid::XACT, 0x81, 750)
        },
        rec(0x10_2558, 0x20_0000, 0x10_2520, rmid::XLOG, 0x40, 0),
        DecodedRecord {
            main_data: vec![0; 8],
            ..rec(0x20_0028, 0x20_0050, 0x10_2558, rmid::STANDBY, 0x10, 0)
        },
    ];
    for chunk in [bytes.len(), 8192, 100, 7] {
        let mut d = WalDecoder::new(S1, TEST_SEG_SIZE);
        let mut got = Vec::new();
        for c in bytes.chunks(chunk) {
            d.feed(c);
            while let Some(r) = d.next_record().unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got.len(), expected.len(), "chunk {chunk}");
        for (g, e) in got.iter().zip(&expected) {
            let strip = |r: &DecodedRecord| DecodedRecord {
                main_data: vec![],
                ..r.clone()
            };
            assert_eq!(strip(g), strip(e), "chunk {chunk}");
            assert!(
                g.main_data == e.main_data,
                "main data of {}, chunk {chunk}",
                g.lsn
            );
        }
        assert_eq!(d.position(), Lsn(0x20_0050));
    }
    let changes: Vec<_> = expected
        .iter()
        .map(|r| relation_changes(r).unwrap())
        .collect();
    assert_eq!(
        changes[3],
        vec![RelChange::Create {
            rel: NEW_REL,
            fork: ForkNumber::Main
        }]
    );
    assert_eq!(changes[5], vec![RelChange::DropRelation { rel: HEAP_REL }]);
    assert!(changes
        .iter()
        .enumerate()
        .all(|(i, c)| c.is_empty() || i == 3 || i == 5));
}
