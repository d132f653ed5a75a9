//! The decoder on streams written by the test WAL writer: chunking, records over pages and segments,
//! starting inside a record, overwritten contrecords, XLOG_SWITCH, end of WAL, memory, and each error.

use super::testing::{TestBlock, TestRecord, WalWriter, REL, SYSID, TEST_SEG_SIZE as SEG};
use super::{rmid, DecodedRecord, WalDecoder, WalError, XLOG_SWITCH};
use crate::lsn::{Lsn, WAL_PAGE_SIZE};

const PAGE: u64 = WAL_PAGE_SIZE as u64;
const S1: Lsn = Lsn(SEG as u64); // start of segment 1

fn heap(block: u32, main_len: usize) -> TestRecord {
    let mut b = TestBlock::new(0, REL, block);
    b.data = vec![block as u8; 1 + block as usize % 50];
    TestRecord {
        xid: 700 + block,
        blocks: vec![b],
        ..TestRecord::new(rmid::HEAP, 0x00, vec![0x5A; main_len])
    }
}

/// Feeds `bytes` in chunks and collects records until the decoder needs more or fails.
fn decode(start: Lsn, bytes: &[u8], chunk: usize) -> (Vec<DecodedRecord>, Option<WalError>) {
    let mut d = WalDecoder::new(start, SEG);
    let mut out = Vec::new();
    for c in bytes.chunks(chunk) {
        d.feed(c);
        loop {
            match d.next_record() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// Where the writer's next record starts.
fn next_start(w: &WalWriter) -> Lsn {
    Lsn((w.pos().0 + 7) & !7)
}

/// Inserts records so that the last one ends exactly at the end of a page; returns their LSNs.
fn fill_page_exactly(w: &mut WalWriter, block: u32) -> Vec<Lsn> {
    let mut at = Vec::new();
    let base = heap(block, 0).encode(Lsn(0)).len() + 5; // with a DATA_LONG header
    loop {
        let start = next_start(w);
        let room = match (start.page_offset(), start.0 % SEG as u64) {
            (0, 0) => (PAGE - 40) as usize, // a long header comes first
            (0, _) => (PAGE - 24) as usize,
            (off, _) => (PAGE - off as u64) as usize,
        };
        if room >= base + 256 {
            at.push(w.insert(&heap(block, room - base)));
            assert_eq!(
                w.pos().page_offset(),
                0,
                "record ends exactly at the page end"
            );
            return at;
        }
        at.push(w.insert(&heap(block + 1, 300)));
    }
}

fn lsns(recs: &[DecodedRecord]) -> Vec<Lsn> {
    recs.iter().map(|r| r.lsn).collect()
}

/// A stream of two segments and a bit: small records, records ending exactly at a page end, a record
/// header split over two pages, a record over several pages, a record over a segment boundary.
fn varied_stream() -> (WalWriter, Vec<Lsn>) {
    let mut w = WalWriter::new(S1, SEG);
    let mut at = Vec::new();
    for i in 0..40 {
        at.push(w.insert(&heap(i, (i as usize * 37) % 300)));
    }
    // A record ending exactly at a page end, then one whose header straddles a page boundary.
    at.extend(fill_page_exactly(&mut w, 1000));
    loop {
        let left = PAGE - next_start(&w).page_offset() as u64;
        if left < 24 {
            break;
        }
        at.push(w.insert(&heap(2000, 10)));
    }
    let split = w.insert(&heap(3000, 100));
    assert!(
        PAGE - (split.page_offset() as u64) < 24,
        "header split over two pages"
    );
    at.push(split);
    at.push(w.insert(&heap(4000, 30_000))); // several pages
    while w.pos().0 < S1.0 + SEG as u64 - 3000 {
        at.push(w.insert(&heap(5000 + at.len() as u32, 500)));
    }
    at.push(w.insert(&heap(6000, 20_000))); // crosses into segment 2
    assert!(w.pos().0 > S1.0 + SEG as u64);
    at.push(w.insert(&heap(7000, 2_500_000))); // crosses into segment 3
    for i in 0..5 {
        at.push(w.insert(&heap(8000 + i, 10)));
    }
    (w, at)
}

#[test]
fn any_chunk_size_gives_the_same_records() {
    let (w, at) = varied_stream();
    let (whole, err) = decode(S1, &w.out, w.out.len());
    assert_eq!(err, None);
    assert_eq!(lsns(&whole), at);
    for r in &whole {
        assert_eq!(r.blocks.len(), 1);
        assert_eq!(r.xid, 700 + r.blocks[0].block);
    }
    assert_eq!(
        whole.last().map(|r| r.end_lsn),
        Some(Lsn((w.pos().0 + 7) & !7))
    );
    for chunk in [7, 8, 24, 4096, 8192, 8193, 1 << 20] {
        let (got, err) = decode(S1, &w.out, chunk);
        assert_eq!(err, None, "chunk {chunk}");
        assert!(got == whole, "chunk {chunk}");
    }
    // Byte by byte over the first pages.
    let (got, _) = decode(S1, &w.out[..3 * PAGE as usize], 1);
    assert!(!got.is_empty());
    assert!(got[..] == whole[..got.len()]);
}

#[test]
fn end_lsns_and_position_follow_the_records() {
    let (w, _) = varied_stream();
    let mut d = WalDecoder::new(S1, SEG);
    assert_eq!(d.position(), S1);
    assert_eq!(d.system_identifier(), None);
    d.feed(&w.out);
    let mut prev_end: Option<Lsn> = None;
    while let Some(r) = d.next_record().unwrap() {
        assert_eq!(d.position(), r.end_lsn);
        assert_eq!(r.end_lsn.0 % 8, 0);
        if let Some(end) = prev_end {
            // The next record starts at the previous end, or after the page header there.
            let gap = r.lsn.0 - end.0;
            assert!(
                gap == 0 || gap == 24 || gap == 40,
                "gap {gap} before {}",
                r.lsn
            );
        }
        prev_end = Some(r.end_lsn);
    }
    assert_eq!(d.system_identifier(), Some(SYSID));
    assert!(!d.skipped_leading_contrecord());
}

#[test]
fn memory_stays_bounded() {
    let (w, at) = varied_stream();
    let mut d = WalDecoder::new(S1, SEG);
    d.feed(&w.out); // more than 2 MB at once
    let mut n = 0;
    while d.next_record().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, at.len());
    let (buf, record) = d.buffer_capacities();
    assert!(buf <= 1 << 20, "fed bytes kept: {buf}");
    assert!(record <= 1 << 20, "record buffer kept: {record}");
    // Fed page by page, the buffer never holds more than about a page.
    let mut d = WalDecoder::new(S1, SEG);
    for c in w.out.chunks(PAGE as usize) {
        d.feed(c);
        while d.next_record().unwrap().is_some() {}
        assert!(d.buffer_capacities().0 <= 2 * PAGE as usize);
    }
}

#[test]
fn starting_inside_a_record_skips_its_rest() {
    let (w, _) = varied_stream();
    let (all, _) = decode(S1, &w.out, w.out.len());
    // Segment 2 begins inside the 20 kB record; segment 3 inside the 2.5 MB one, several pages deep.
    for seg in [2u64, 3] {
        let start = Lsn(seg * SEG as u64);
        let from = (start.0 - S1.0) as usize;
        let mut d = WalDecoder::new(start, SEG);
        for c in w.out[from..].chunks(5000) {
            d.feed(c);
        }
        let first = d.next_record().unwrap().unwrap();
        assert!(d.skipped_leading_contrecord());
        let expected = all.iter().find(|r| r.lsn > start).unwrap();
        assert_eq!(&first, expected);
        assert_eq!(d.system_identifier(), Some(SYSID));
    }
    // Starting at a page inside the 30 kB record, whose rest spans more pages.
    let big = all.iter().find(|r| r.blocks[0].block == 4000).unwrap();
    assert!(big.end_lsn.0 - big.lsn.0 > 3 * PAGE);
    let page = Lsn((big.lsn.0 / PAGE + 1) * PAGE);
    let (from_page, err) = decode(page, &w.out[(page.0 - S1.0) as usize..], 8192);
    assert_eq!(err, None);
    assert_eq!(from_page[0].lsn, big.end_lsn);
    // Starting at a page boundary between records skips nothing.
    let clean = all.iter().find(|r| r.blocks[0].block == 1000).unwrap();
    assert_eq!(clean.end_lsn.page_offset(), 0);
    let mut d = WalDecoder::new(clean.end_lsn, SEG);
    d.feed(&w.out[(clean.end_lsn.0 - S1.0) as usize..]);
    assert_eq!(
        d.next_record().unwrap().unwrap().lsn.0,
        clean.end_lsn.0 + 24
    );
    assert!(!d.skipped_leading_contrecord());
    // Starting at a record's own LSN, in the middle of a page.
    let mid = &all[5];
    let (got, _) = decode(mid.lsn, &w.out[(mid.lsn.0 - S1.0) as usize..], 100);
    assert_eq!(got[0], *mid);
}

#[test]
fn overwritten_contrecord_is_dropped() {
    let mut w = WalWriter::new(S1, SEG);
    let a = w.insert(&heap(1, 10));
    let room = (PAGE - w.pos().page_offset() as u64) as usize;
    w.insert(&heap(2, room - 200)); // leaves a little room on the first page
    let before = w.prev;
    let aborted = w.insert_aborted(&heap(3, 5000));
    let c = w.insert(&TestRecord::new(rmid::XLOG, 0xD0, vec![0; 16])); // XLOG_OVERWRITE_CONTRECORD
    let d_ = w.insert(&heap(4, 10));
    let (got, err) = decode(S1, &w.out, 1000);
    assert_eq!(err, None);
    assert_eq!(lsns(&got), vec![a, before, c, d_]);
    assert!(!lsns(&got).contains(&aborted));
    assert_eq!(
        c,
        Lsn(S1.0 + PAGE + 24),
        "the overwrite record starts the next page"
    );
    assert_eq!(got[2].prev, before);
}

#[test]
fn switch_skips_to_the_next_segment() {
    let mut w = WalWriter::new(S1, SEG);
    let a = w.insert(&heap(1, 10));
    let sw = w.switch();
    let b = w.insert(&heap(2, 10));
    assert_eq!(b, Lsn(2 * SEG as u64 + 40));
    let (got, err) = decode(S1, &w.out, 8192);
    assert_eq!(err, None);
    assert_eq!(lsns(&got), vec![a, sw, b]);
    assert_eq!((got[1].rmid, got[1].info), (rmid::XLOG, XLOG_SWITCH));
    assert_eq!(
        got[1].end_lsn,
        Lsn(2 * SEG as u64),
        "a switch record ends at the segment end"
    );

    // Fed one segment at a time: after the switch, the decoder needs the next segment.
    let mut d = WalDecoder::new(S1, SEG);
    d.feed(&w.out[..SEG as usize]);
    assert_eq!(d.next_record().unwrap().unwrap().lsn, a);
    assert_eq!(d.next_record().unwrap().unwrap().lsn, sw);
    assert_eq!(d.position(), Lsn(2 * SEG as u64));
    assert_eq!(d.next_record().unwrap(), None);
    d.feed(&w.out[SEG as usize..]);
    assert_eq!(d.next_record().unwrap().unwrap().lsn, b);
}

#[test]
fn end_of_wal() {
    let mut w = WalWriter::new(S1, SEG);
    let a = w.insert(&heap(1, 10));
    let b = w.insert(&heap(2, 10));
    let end = Lsn((w.pos().0 + 7) & !7);
    w.zero_fill_segment();
    let (got, err) = decode(S1, &w.out, 8192);
    assert_eq!(lsns(&got), vec![a, b]);
    assert_eq!(err, Some(WalError::EndOfWal { lsn: end }));

    // A record whose continuation page was never written: WAL ends where that record starts.
    let mut w = WalWriter::new(S1, SEG);
    let a = w.insert(&heap(1, 10));
    let torn = w.insert(&heap(2, 20_000));
    let mut bytes = w.out.clone();
    bytes.truncate(PAGE as usize);
    bytes.resize(4 * PAGE as usize, 0);
    let (got, err) = decode(S1, &bytes, 8192);
    assert_eq!(lsns(&got), vec![a]);
    assert_eq!(err, Some(WalError::EndOfWal { lsn: torn }));

    // An unwritten page where a record would start.
    let mut w = WalWriter::new(S1, SEG);
    assert_eq!(fill_page_exactly(&mut w, 1), vec![Lsn(S1.0 + 40)]);
    w.zero_fill_to(Lsn(S1.0 + 2 * PAGE));
    let (_, err) = decode(S1, &w.out, 8192);
    assert_eq!(
        err,
        Some(WalError::EndOfWal {
            lsn: Lsn(S1.0 + PAGE)
        })
    );
}

/// Thirty records of about 750 bytes from the start of segment 1.
fn sample() -> (Vec<u8>, Vec<Lsn>) {
    let mut w = WalWriter::new(S1, SEG);
    let at = (0..30).map(|i| w.insert(&heap(i, 700))).collect();
    (w.out, at)
}

/// The sample stream corrupted by `edit`, decoded: the first error.
fn error_after(edit: impl FnOnce(&mut Vec<u8>, &[Lsn])) -> WalError {
    let (mut bytes, at) = sample();
    edit(&mut bytes, &at);
    let (_, err) = decode(S1, &bytes, 8192);
    err.expect("an error")
}

fn off(lsn: Lsn) -> usize {
    (lsn.0 - S1.0) as usize
}

#[test]
fn page_header_errors_name_the_page() {
    let p1 = Lsn(S1.0 + PAGE);
    let page_err = |e: WalError| match e {
        WalError::BadPageHeader { lsn, reason } => (lsn, reason),
        other => panic!("{other:?}"),
    };
    let (lsn, reason) = page_err(error_after(|b, _| b[off(p1)] = 0x0D));
    assert_eq!(lsn, p1);
    assert!(reason.contains("magic"), "{reason}");
    let (lsn, reason) = page_err(error_after(|b, _| b[off(p1) + 12] = 1)); // pageaddr high word
    assert_eq!(lsn, p1);
    assert!(reason.contains("recycled"), "{reason}");
    let (_, reason) = page_err(error_after(|b, _| b[2] &= !0x02)); // no long header
    assert!(reason.contains("without a long header"), "{reason}");
    let (_, reason) = page_err(error_after(|b, _| b[34] = 0x20)); // xlp_seg_size 2 MB
    assert!(reason.contains("segment size"), "{reason}");
    let (_, reason) = page_err(error_after(|b, _| b[off(p1) + 4] = 0)); // timeline 1 -> 0
    assert!(reason.contains("timeline 0 after timeline 1"), "{reason}");

    // A second segment from another cluster.
    let mut w = WalWriter::new(S1, SEG);
    w.insert(&heap(1, 10));
    w.switch();
    w.insert(&heap(2, 10));
    let mut bytes = w.out.clone();
    bytes[SEG as usize + 24] ^= 1;
    let (got, err) = decode(S1, &bytes, 8192);
    assert_eq!(got.len(), 2);
    let (lsn, reason) = page_err(err.unwrap());
    assert_eq!(lsn, Lsn(2 * SEG as u64));
    assert!(reason.contains("system identifier"), "{reason}");
}

#[test]
fn continuation_errors() {
    // Records of 700 bytes: the one crossing into page 1 is continued there.
    let p1 = Lsn(S1.0 + PAGE);
    let crossing = |at: &[Lsn]| *at.iter().rev().find(|l| l.0 < p1.0).unwrap();
    let mut rec_at = Lsn(0);
    let e = error_after(|b, at| {
        rec_at = crossing(at);
        b[off(p1) + 2] &= !0x01; // no contrecord flag
    });
    assert!(
        matches!(e, WalError::BadRecord { lsn, ref reason } if lsn == rec_at && reason.contains("contrecord flag false")),
        "{e}"
    );
    let e = error_after(|b, _| b[off(p1) + 16] ^= 0x04); // rem_len
    assert!(
        matches!(e, WalError::BadRecord { ref reason, .. } if reason.contains("rem_len")),
        "{e}"
    );
    // A contrecord flag on a page where a new record starts.
    let mut w = WalWriter::new(S1, SEG);
    fill_page_exactly(&mut w, 1);
    w.insert(&heap(2, 10));
    let mut bytes = w.out.clone();
    bytes[PAGE as usize + 2] |= 0x01;
    let (_, err) = decode(S1, &bytes, 8192);
    assert!(
        matches!(err, Some(WalError::BadPageHeader { ref reason, .. }) if reason.contains("new record starts")),
        "{err:?}"
    );
}

#[test]
fn record_errors_name_the_record() {
    let (_, at) = sample();
    let e = error_after(|b, at| b[off(at[3]) + 40] ^= 0xFF);
    let WalError::BadCrc { lsn, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(lsn, at[3]);
    let e =
        error_after(|b, at| b[off(at[4])..off(at[4]) + 4].copy_from_slice(&20u32.to_le_bytes()));
    assert_eq!(e.lsn(), at[4]);
    assert!(e.to_string().contains("invalid record length 20"), "{e}");
    let e = error_after(|b, at| b[off(at[4]) + 17] = 60); // xl_rmid
    assert!(e.to_string().contains("resource manager id 60"), "{e}");
    let e = error_after(|b, at| {
        let o = off(at[4]) + 8;
        b[o..o + 8].copy_from_slice(&at[4].0.to_le_bytes()); // xl_prev pointing at itself
    });
    assert!(e.to_string().contains("prev-link"), "{e}");
    assert_eq!(e.lsn(), at[4]);
}

#[test]
fn errors_are_final() {
    let mut w = WalWriter::new(S1, SEG);
    let a = w.insert(&heap(1, 10));
    let b = w.insert(&heap(2, 10));
    let mut bytes = w.out.clone();
    bytes[off(b) + 30] ^= 1;
    let mut d = WalDecoder::new(S1, SEG);
    d.feed(&bytes);
    let first = d.next_record().unwrap().unwrap();
    assert_eq!(first.lsn, a);
    let e = d.next_record().unwrap_err();
    assert_eq!(e.lsn(), b);
    d.feed(&[0; 100]);
    assert_eq!(d.next_record().unwrap_err(), e);
    assert_eq!(d.position(), first.end_lsn);
}
