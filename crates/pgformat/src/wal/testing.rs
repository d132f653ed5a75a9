//! Test support: a small WAL writer that lays out records the way PostgreSQL 15's `XLogInsert` and
//! `CopyXLogRecordToWAL` do (page headers, long header at each segment start, MAXALIGNed records split
//! over pages with contrecord flags and `xlp_rem_len`, CRC-32C), so that decoder tests can build any
//! stream, including ones PostgreSQL rarely writes (overwritten contrecords, torn pages).

use crate::lsn::{Lsn, WAL_PAGE_SIZE};
use crate::relfile::{ForkNumber, RelFileNode, BLCKSZ};
use crate::wal::{
    rmid, XLOG_PAGE_MAGIC, XLOG_SWITCH, XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD,
    XLP_LONG_HEADER,
};

pub(crate) const SYSID: u64 = 7_311_111_111_111_111_111;
pub(crate) const TEST_SEG_SIZE: u32 = 1 << 20;

/// A full-page image as stored in a record.
#[derive(Clone, Debug)]
pub(crate) struct TestImage {
    /// The stored bytes (the page minus its hole, or compressed bytes).
    pub bytes: Vec<u8>,
    pub hole_offset: u16,
    /// Written only for compressed images with a hole.
    pub hole_length: u16,
    pub bimg_info: u8,
}

impl TestImage {
    /// An uncompressed image of a page with a hole, to be restored at redo.
    pub fn with_hole(hole_offset: u16, hole_length: u16) -> TestImage {
        let len = BLCKSZ as usize - hole_length as usize;
        TestImage {
            bytes: (0..len).map(|i| (i % 251) as u8).collect(),
            hole_offset,
            hole_length,
            bimg_info: if hole_length > 0 { 0x01 | 0x02 } else { 0x02 },
        }
    }
}

/// A block reference to encode.
#[derive(Clone, Debug)]
pub(crate) struct TestBlock {
    pub id: u8,
    pub rel: RelFileNode,
    pub fork: ForkNumber,
    pub block: u32,
    pub image: Option<TestImage>,
    pub data: Vec<u8>,
    pub will_init: bool,
}

impl TestBlock {
    pub fn new(id: u8, rel: RelFileNode, block: u32) -> TestBlock {
        TestBlock {
            id,
            rel,
            fork: ForkNumber::Main,
            block,
            image: None,
            data: Vec::new(),
            will_init: false,
        }
    }
}

/// A record to encode.
#[derive(Clone, Debug, Default)]
pub(crate) struct TestRecord {
    pub rmid: u8,
    pub info: u8,
    pub xid: u32,
    pub blocks: Vec<TestBlock>,
    pub origin: Option<u16>,
    pub toplevel_xid: Option<u32>,
    pub main_data: Vec<u8>,
}

impl TestRecord {
    pub fn new(rmid: u8, info: u8, main_data: Vec<u8>) -> TestRecord {
        TestRecord {
            rmid,
            info,
            main_data,
            ..Default::default()
        }
    }

    /// The record's bytes, with a correct CRC, as XLogRecordAssemble lays them out.
    pub fn encode(&self, prev: Lsn) -> Vec<u8> {
        let mut headers: Vec<u8> = Vec::new();
        let mut payload: Vec<u8> = Vec::new();
        let mut last_rel = None;
        for b in &self.blocks {
            let mut flags = b.fork as u8;
            if b.image.is_some() {
                flags |= 0x10;
            }
            if !b.data.is_empty() {
                flags |= 0x20;
            }
            if b.will_init {
                flags |= 0x40;
            }
            if last_rel == Some(b.rel) {
                flags |= 0x80;
            }
            headers.push(b.id);
            headers.push(flags);
            headers.extend((b.data.len() as u16).to_le_bytes());
            if let Some(img) = &b.image {
                headers.extend((img.bytes.len() as u16).to_le_bytes());
                headers.extend(img.hole_offset.to_le_bytes());
                headers.push(img.bimg_info);
                if img.bimg_info & 0x01 != 0 && img.bimg_info & 0x1C != 0 {
                    headers.extend(img.hole_length.to_le_bytes());
                }
                payload.extend(&img.bytes);
            }
            if last_rel != Some(b.rel) {
                for oid in [b.rel.spc_node, b.rel.db_node, b.rel.rel_node] {
                    headers.extend(oid.to_le_bytes());
                }
            }
            headers.extend(b.block.to_le_bytes());
            payload.extend(&b.data);
            last_rel = Some(b.rel);
        }
        if let Some(origin) = self.origin {
            headers.push(253);
            headers.extend(origin.to_le_bytes());
        }
        if let Some(xid) = self.toplevel_xid {
            headers.push(252);
            headers.extend(xid.to_le_bytes());
        }
        if !self.main_data.is_empty() {
            if self.main_data.len() < 256 {
                headers.push(255);
                headers.push(self.main_data.len() as u8);
            } else {
                headers.push(254);
                headers.extend((self.main_data.len() as u32).to_le_bytes());
            }
        }
        payload.extend(&self.main_data);
        let tot_len = 24 + headers.len() + payload.len();
        let mut rec = Vec::with_capacity(tot_len);
        rec.extend((tot_len as u32).to_le_bytes());
        rec.extend(self.xid.to_le_bytes());
        rec.extend(prev.0.to_le_bytes());
        rec.push(self.info);
        rec.push(self.rmid);
        rec.extend([0, 0]);
        rec.extend([0; 4]); // CRC, below
        rec.extend(headers);
        rec.extend(payload);
        set_crc(&mut rec);
        rec
    }
}

/// Computes and stores the CRC of an encoded record.
pub(crate) fn set_crc(rec: &mut [u8]) {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[24..]), &rec[..20]);
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
}

/// Writes a WAL stream starting at a segment (or page) boundary.
pub(crate) struct WalWriter {
    pub start: Lsn,
    pub seg_size: u32,
    pub tli: u32,
    pub out: Vec<u8>,
    pub prev: Lsn,
    /// Extra xlp_info flags for the next page header written.
    pending_flags: u16,
}

impl WalWriter {
    pub fn new(start: Lsn, seg_size: u32) -> WalWriter {
        assert_eq!(start.page_offset(), 0);
        WalWriter {
            start,
            seg_size,
            tli: 1,
            out: Vec::new(),
            prev: Lsn(0),
            pending_flags: 0,
        }
    }

    /// LSN of the next byte written.
    pub fn pos(&self) -> Lsn {
        Lsn(self.start.0 + self.out.len() as u64)
    }

    fn page_header(&mut self, info: u16, rem_len: u32) {
        let lsn = self.pos();
        let long = lsn.0.is_multiple_of(self.seg_size as u64);
        let info = info | self.pending_flags | if long { XLP_LONG_HEADER } else { 0 };
        self.pending_flags = 0;
        self.out.extend(XLOG_PAGE_MAGIC.to_le_bytes());
        self.out.extend(info.to_le_bytes());
        self.out.extend(self.tli.to_le_bytes());
        self.out.extend(lsn.0.to_le_bytes());
        self.out.extend(rem_len.to_le_bytes());
        self.out.extend([0; 4]);
        if long {
            self.out.extend(SYSID.to_le_bytes());
            self.out.extend(self.seg_size.to_le_bytes());
            self.out.extend(WAL_PAGE_SIZE.to_le_bytes());
        }
    }

    /// Writes `bytes` as (the start of) a record at the current, aligned position, continuing over
    /// pages; stops early after `limit` bytes. Returns the record's LSN.
    fn write_record_bytes(&mut self, bytes: &[u8], limit: usize) -> Lsn {
        while !self.out.len().is_multiple_of(8) {
            self.out.push(0);
        }
        if self.pos().page_offset() == 0 {
            self.page_header(0, 0);
        }
        let lsn = self.pos();
        let mut written = 0;
        while written < limit {
            if self.pos().page_offset() == 0 {
                self.page_header(XLP_FIRST_IS_CONTRECORD, (bytes.len() - written) as u32);
            }
            let room = (WAL_PAGE_SIZE - self.pos().page_offset()) as usize;
            let n = room.min(limit - written);
            self.out.extend(&bytes[written..written + n]);
            written += n;
        }
        lsn
    }

    /// Inserts a record, linked to the previous one. Returns its LSN.
    pub fn insert(&mut self, rec: &TestRecord) -> Lsn {
        let bytes = rec.encode(self.prev);
        self.insert_bytes(&bytes)
    }

    /// Inserts already encoded bytes as a record (they may be corrupt on purpose).
    pub fn insert_bytes(&mut self, bytes: &[u8]) -> Lsn {
        let lsn = self.write_record_bytes(bytes, bytes.len());
        self.prev = lsn;
        lsn
    }

    /// Writes a record only up to the end of the page it starts on, as when a server crashed before
    /// writing the rest; the next page is flagged XLP_FIRST_IS_OVERWRITE_CONTRECORD, as PostgreSQL
    /// does after recovery. The record is not linked as previous.
    pub fn insert_aborted(&mut self, rec: &TestRecord) -> Lsn {
        let bytes = rec.encode(self.prev);
        while !self.out.len().is_multiple_of(8) {
            self.out.push(0);
        }
        let room = (WAL_PAGE_SIZE - self.pos().page_offset()) as usize;
        assert!(
            bytes.len() > room && room >= 24,
            "the record must cross the page end"
        );
        let lsn = self.write_record_bytes(&bytes, room);
        self.pending_flags = XLP_FIRST_IS_OVERWRITE_CONTRECORD;
        lsn
    }

    /// Inserts XLOG_SWITCH and pads to the end of the segment (with page headers, as PostgreSQL).
    pub fn switch(&mut self) -> Lsn {
        let lsn = self.insert(&TestRecord::new(rmid::XLOG, XLOG_SWITCH, Vec::new()));
        let seg = self.seg_size as u64;
        while !self.pos().0.is_multiple_of(seg) {
            if self.pos().page_offset() == 0 {
                self.page_header(0, 0);
            }
            self.out.push(0);
        }
        lsn
    }

    /// Pads with zeros (unwritten WAL) up to `lsn`.
    pub fn zero_fill_to(&mut self, lsn: Lsn) {
        self.out.resize((lsn.0 - self.start.0) as usize, 0);
    }

    /// Pads with zeros to the end of the current segment.
    pub fn zero_fill_segment(&mut self) {
        let seg = self.seg_size as u64;
        let end = self.pos().0.div_ceil(seg) * seg;
        self.zero_fill_to(Lsn(end));
    }
}

/// A relation for tests.
pub(crate) const REL: RelFileNode = RelFileNode {
    spc_node: 1663,
    db_node: 5,
    rel_node: 16384,
};
