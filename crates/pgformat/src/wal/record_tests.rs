//! Record decoding on hand-built records: every kind of header, and each inconsistency PostgreSQL's
//! DecodeXLogRecord rejects.

use super::record::{check_crc, decode};
use super::testing::{TestBlock, TestImage, TestRecord, REL};
use super::{rmid, BlockRef, WalError};
use crate::lsn::Lsn;
use crate::relfile::{ForkNumber, RelFileNode};

const LSN: Lsn = Lsn(0x0300_2028);
const END: Lsn = Lsn(0x0300_4000);
const OTHER: RelFileNode = RelFileNode {
    spc_node: 1664,
    db_node: 0,
    rel_node: 1262,
};

fn block_ref(id: u8, rel: RelFileNode, fork: ForkNumber, block: u32) -> BlockRef {
    BlockRef {
        id,
        rel,
        fork,
        block,
        has_image: false,
        apply_image: false,
        will_init: false,
        has_data: false,
    }
}

#[test]
fn decodes_every_kind_of_header() {
    let mut b0 = TestBlock::new(0, REL, 7);
    b0.image = Some(TestImage::with_hole(40, 8000));
    b0.data = b"tuple".to_vec();
    let mut b1 = TestBlock::new(1, REL, 0); // same relation: SAME_REL, no RelFileNode
    b1.fork = ForkNumber::VisibilityMap;
    let mut b3 = TestBlock::new(3, OTHER, 12); // ids may skip
    b3.will_init = true;
    b3.image = Some(TestImage {
        bytes: vec![0xC0; 300],
        hole_offset: 100,
        hole_length: 4000,
        bimg_info: 0x01 | 0x10, // hole, zstd, not applied (wal_consistency_checking)
    });
    let mut b32 = TestBlock::new(32, OTHER, 13);
    b32.image = Some(TestImage {
        bytes: vec![1; 500],
        hole_offset: 0,
        hole_length: 0,
        bimg_info: 0x02 | 0x08,
    });
    b32.fork = ForkNumber::Init;
    let rec = TestRecord {
        rmid: rmid::HEAP,
        info: 0x20,
        xid: 1234,
        blocks: vec![b0, b1, b3, b32],
        origin: Some(3),
        toplevel_xid: Some(1200),
        main_data: vec![0xAB; 300], // DATA_LONG
    };
    let bytes = rec.encode(Lsn(0x0300_1FF0));
    check_crc(LSN, &bytes).unwrap();
    let d = decode(LSN, END, &bytes).unwrap();
    assert_eq!(
        (d.lsn, d.end_lsn, d.rmid, d.info, d.xid),
        (LSN, END, 10, 0x20, 1234)
    );
    assert_eq!(d.prev, Lsn(0x0300_1FF0));
    assert_eq!(d.main_data, vec![0xAB; 300]);
    let expected = vec![
        BlockRef {
            has_image: true,
            apply_image: true,
            has_data: true,
            ..block_ref(0, REL, ForkNumber::Main, 7)
        },
        block_ref(1, REL, ForkNumber::VisibilityMap, 0),
        BlockRef {
            has_image: true,
            will_init: true,
            ..block_ref(3, OTHER, ForkNumber::Main, 12)
        },
        BlockRef {
            has_image: true,
            apply_image: true,
            ..block_ref(32, OTHER, ForkNumber::Init, 13)
        },
    ];
    assert_eq!(d.blocks, expected);
}

#[test]
fn short_main_data_and_no_main_data() {
    let d = decode(
        LSN,
        END,
        &TestRecord::new(rmid::XACT, 0, vec![5; 255]).encode(Lsn(0)),
    )
    .unwrap();
    assert_eq!(d.main_data, vec![5; 255]);
    let bytes = TestRecord::new(rmid::XLOG, 0x40, vec![]).encode(Lsn(0));
    assert_eq!(bytes.len(), 24, "a switch record is a bare header");
    let d = decode(LSN, END, &bytes).unwrap();
    assert!(d.main_data.is_empty() && d.blocks.is_empty());
}

#[test]
fn crc_covers_body_then_header() {
    let mut b = TestBlock::new(0, REL, 1);
    b.data = vec![9; 10];
    let rec = TestRecord {
        blocks: vec![b],
        ..TestRecord::new(rmid::HEAP, 0, b"main".to_vec())
    };
    let bytes = rec.encode(Lsn(0x100));
    check_crc(LSN, &bytes).unwrap();
    for at in [0, 4, 8, 16, 17, 18, 20, 24, 30, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        match check_crc(LSN, &bad) {
            Err(WalError::BadCrc { lsn, .. }) => assert_eq!(lsn, LSN),
            other => panic!("flip at {at}: {other:?}"),
        }
    }
    // 18..20 is the header padding (covered); 20..24 is xl_crc itself.
    assert!(check_crc(LSN, &bytes[..10]).is_err());
}

/// Encodes, lets `edit` corrupt the bytes, and returns the decode error's reason.
fn reason(rec: &TestRecord, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = rec.encode(Lsn(0));
    edit(&mut bytes);
    let len = bytes.len() as u32;
    bytes[..4].copy_from_slice(&len.to_le_bytes());
    match decode(LSN, END, &bytes) {
        Err(WalError::BadRecord { lsn, reason }) => {
            assert_eq!(lsn, LSN);
            reason
        }
        other => panic!("{other:?}"),
    }
}

fn two_blocks() -> TestRecord {
    let mut b0 = TestBlock::new(0, REL, 1);
    b0.data = vec![1, 2];
    let b1 = TestBlock::new(1, OTHER, 2);
    TestRecord {
        blocks: vec![b0, b1],
        ..TestRecord::new(rmid::BTREE, 0, vec![7])
    }
}

#[test]
fn block_id_errors() {
    // Record layout: header 24 | block 0: id, flags, len(2), rel(12), blkno(4) | block 1 at 44.
    let r = two_blocks();
    assert!(reason(&r, |b| b[44] = 0).contains("out-of-order block id 0"));
    assert!(reason(&r, |b| b[24] = 1).contains("out-of-order block id 1"));
    assert!(reason(&r, |b| b[44] = 33).contains("invalid block id 33"));
    assert!(reason(&r, |b| b[24] = 200).contains("invalid block id 200"));
    assert!(reason(&r, |b| b[25] |= 0x80).contains("same-rel flag without a previous relation"));
    assert!(reason(&r, |b| b[45] = 0x05).contains("invalid fork number 5"));
    assert!(reason(&r, |b| b[25] &= !0x20).contains("has-data flag is false"));
    assert!(reason(&r, |b| b[45] |= 0x20).contains("has-data flag is true but data length is 0"));
}

#[test]
fn length_errors() {
    let r = two_blocks();
    assert!(reason(&r, |b| b.push(0)).contains("follow the headers"));
    assert!(reason(&r, |b| {
        b.pop();
    })
    .contains("follow the headers"));
    assert!(reason(&r, |b| b.truncate(50)).contains("headers run past the end"));
    let mut bytes = r.encode(Lsn(0));
    bytes[0] += 1;
    assert!(
        decode(LSN, END, &bytes).is_err(),
        "xl_tot_len must match the bytes"
    );
}

#[test]
fn image_consistency_errors() {
    let with_image = |img: TestImage| {
        let mut b = TestBlock::new(0, REL, 1);
        b.image = Some(img);
        TestRecord {
            blocks: vec![b],
            ..TestRecord::new(rmid::HEAP2, 0, vec![])
        }
    };
    // Image header at 28: length(2), hole_offset(2), bimg_info(1), [hole_length(2)].
    let holed = with_image(TestImage::with_hole(40, 8000));
    assert!(reason(&holed, |b| b[30..32].copy_from_slice(&[0, 0])).contains("inconsistent image"));
    assert!(reason(&holed, |b| b[32] &= !0x01).contains("inconsistent image"));
    let full = with_image(TestImage::with_hole(0, 0));
    assert!(
        reason(&full, |b| b[30] = 8).contains("inconsistent image"),
        "hole offset without flag"
    );
    let compressed = with_image(TestImage {
        bytes: vec![3; 100],
        hole_offset: 40,
        hole_length: 0,
        bimg_info: 0x04 | 0x01,
    });
    assert!(reason(&compressed, |_| ()).contains("hole at 40 of 0 bytes"));
    let whole_compressed = with_image(TestImage {
        bytes: vec![3; 8192],
        hole_offset: 0,
        hole_length: 0,
        bimg_info: 0x04,
    });
    assert!(reason(&whole_compressed, |_| ()).contains("inconsistent image"));
    let oversized = with_image(TestImage {
        bytes: vec![3; 8200],
        hole_offset: 0,
        hole_length: 0,
        bimg_info: 0,
    });
    assert!(reason(&oversized, |_| ()).contains("larger than a page"));
}
