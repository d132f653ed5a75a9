//! The push-based WAL decoder: feed it the bytes of the WAL stream in order (any chunk sizes), then ask
//! for records until it says it needs more. It does no I/O.
//!
//! It walks the stream page by page, as PostgreSQL's `xlogreader.c` does: each page header is checked
//! (magic, flags, page address, long header on the first page of a segment, same system and segment size
//! throughout, timeline never going back) and skipped; records are MAXALIGNed (8 bytes) and may continue
//! over any number of pages and segments, each continuation page saying how much of the record is left
//! (`xlp_rem_len`). Each record's header is checked as soon as it is assembled (length, resource manager,
//! `xl_prev` pointing backwards), then its CRC, then its block headers. After an
//! XLOG_SWITCH record the rest of the segment is padding. A page flagged "overwrite contrecord" drops
//! the record being continued (PostgreSQL abandoned it). Decoding that starts at a page that begins with
//! the rest of a record skips that rest (`skipped_leading_contrecord`).
//!
//! Where valid WAL ends (a zero record length where a record should start, or a page never written),
//! the decoder reports `WalError::EndOfWal` with the LSN where it ends. Errors are final: every later
//! call returns the same error.
//!
//! Memory: the fed bytes not yet consumed (dropped as records are returned) and the one record being
//! assembled, grown as its pages arrive.

use super::page::{PageHeader, SHORT_HEADER_LEN};
use super::record::{self, DecodedRecord, RecordHeader, MAX_RECORD_LEN, SIZE_OF_XLOG_RECORD};
use super::{rmid, WalError, XLOG_SWITCH};
use crate::bytes::le_u32;
use crate::lsn::{Lsn, WAL_PAGE_SIZE};

/// Record buffer capacity reserved ahead of a record's bytes.
const KEEP_CAPACITY: usize = 64 * 1024;
/// Fed-bytes capacity kept between calls; anything larger is released once consumed. Larger than the
/// pieces callers feed (the archiver feeds 128 kB): releasing and growing again after every piece
/// cost a reallocation, page faults and a TLB flush on every CPU each time.
const KEEP_FED: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy)]
enum State {
    /// The next byte at `pos` starts a record (or a page header at a page boundary).
    RecordStart,
    /// Assembling a record of `total` bytes that starts at `lsn`.
    InRecord { lsn: Lsn, total: u32 },
    /// Skipping the rest of a record whose beginning came before the first fed byte.
    SkipContinuation { remaining: u32 },
}

/// Decodes PostgreSQL 15 WAL records from bytes fed in order.
pub struct WalDecoder {
    seg_size: u64,
    /// Fed bytes; `buf[0]` is at LSN `buf_lsn`. Bytes before `pos` are consumed.
    buf: Vec<u8>,
    buf_lsn: Lsn,
    /// Next byte to consume (may run ahead of the fed bytes while skipping padding).
    pos: Lsn,
    state: State,
    /// The record being assembled.
    record: Vec<u8>,
    /// Decoding started at a page boundary and that page's header has not been read yet.
    at_first_page: bool,
    skipped_leading_contrecord: bool,
    system_identifier: Option<u64>,
    last_tli: u32,
    position: Lsn,
    failed: Option<WalError>,
}

impl WalDecoder {
    /// A decoder whose first fed byte is at `start_lsn`: a segment start (typical), a page start, or
    /// the start of a record.
    pub fn new(start_lsn: Lsn, wal_segment_size: u32) -> WalDecoder {
        WalDecoder {
            seg_size: wal_segment_size as u64,
            buf: Vec::new(),
            buf_lsn: start_lsn,
            pos: start_lsn,
            state: State::RecordStart,
            record: Vec::new(),
            at_first_page: start_lsn.page_offset() == 0,
            skipped_leading_contrecord: false,
            system_identifier: None,
            last_tli: 0,
            position: start_lsn,
            failed: None,
        }
    }

    /// Appends bytes that continue exactly where the previously fed bytes ended. Ignored after an
    /// error (decoding cannot go on).
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.drop_consumed();
        self.buf.extend_from_slice(bytes);
    }

    /// True if the first page began with the rest of a record that started before the first fed byte,
    /// and that rest was skipped.
    pub fn skipped_leading_contrecord(&self) -> bool {
        self.skipped_leading_contrecord
    }

    /// The system identifier from the first long page header seen.
    pub fn system_identifier(&self) -> Option<u64> {
        self.system_identifier
    }

    /// The LSN up to which records were fully returned: the end of the last returned record (the
    /// segment end after XLOG_SWITCH), or the start LSN before any.
    pub fn position(&self) -> Lsn {
        self.position
    }

    /// The next complete record; `Ok(None)` when more bytes must be fed.
    pub fn next_record(&mut self) -> Result<Option<DecodedRecord>, WalError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.step() {
            Ok(Some(rec)) => Ok(Some(rec)),
            Ok(None) => {
                self.drop_consumed();
                if self.buf.capacity() > KEEP_FED && self.buf.len() <= KEEP_FED {
                    self.buf.shrink_to(KEEP_FED);
                }
                Ok(None)
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Capacities of the fed-bytes buffer and of the record buffer (for memory tests).
    #[cfg(test)]
    pub(crate) fn buffer_capacities(&self) -> (usize, usize) {
        (self.buf.capacity(), self.record.capacity())
    }

    /// Fed bytes from `pos` on.
    fn available(&self) -> &[u8] {
        let off = (self.pos.0 - self.buf_lsn.0) as usize;
        self.buf.get(off..).unwrap_or(&[])
    }

    fn drop_consumed(&mut self) {
        let consumed = ((self.pos.0 - self.buf_lsn.0) as usize).min(self.buf.len());
        if consumed > 0 {
            self.buf.drain(..consumed);
            self.buf_lsn = Lsn(self.buf_lsn.0 + consumed as u64);
        }
    }

    fn advance(&mut self, n: usize) {
        self.pos = Lsn(self.pos.0 + n as u64);
    }

    fn page_remaining(&self) -> usize {
        (WAL_PAGE_SIZE - self.pos.page_offset()) as usize
    }

    fn step(&mut self) -> Result<Option<DecodedRecord>, WalError> {
        loop {
            if self.pos.page_offset() == 0 && !self.read_page_header()? {
                return Ok(None);
            }
            match self.state {
                State::SkipContinuation { remaining } => {
                    let n = (remaining as usize).min(self.page_remaining());
                    // The skipped bytes need not have been fed yet: `pos` may run ahead.
                    self.advance(n);
                    let remaining = remaining - n as u32;
                    if remaining == 0 {
                        self.align();
                        self.state = State::RecordStart;
                    } else {
                        self.state = State::SkipContinuation { remaining };
                    }
                }
                State::RecordStart => {
                    // Records are MAXALIGNed, so xl_tot_len never straddles a page.
                    let Some(total) = le_u32(self.available(), 0) else {
                        return Ok(None);
                    };
                    if total == 0 {
                        return Err(WalError::EndOfWal { lsn: self.pos });
                    }
                    if total < SIZE_OF_XLOG_RECORD as u32 || total > MAX_RECORD_LEN {
                        return Err(WalError::BadRecord {
                            lsn: self.pos,
                            reason: format!("invalid record length {total}"),
                        });
                    }
                    let len = total as usize;
                    let off = (self.pos.0 - self.buf_lsn.0) as usize;
                    if len <= self.page_remaining() && off + len <= self.buf.len() {
                        // The whole record is on this page and fed: checked and decoded where it
                        // lies, without assembling a copy (most records are small).
                        let lsn = self.pos;
                        self.advance(len);
                        self.align();
                        let bytes = &self.buf[off..off + len];
                        check_record_header(lsn, bytes)?;
                        let rec = decode_checked(lsn, self.pos, bytes)?;
                        return Ok(Some(self.after_record(rec)));
                    }
                    self.record.clear();
                    self.record.reserve(len.min(KEEP_CAPACITY));
                    self.state = State::InRecord {
                        lsn: self.pos,
                        total,
                    };
                }
                State::InRecord { lsn, total } => {
                    let had = self.record.len();
                    let want = (total as usize - had).min(self.page_remaining());
                    let n = want.min(self.available().len());
                    if n == 0 {
                        return Ok(None);
                    }
                    let off = (self.pos.0 - self.buf_lsn.0) as usize;
                    self.record.extend_from_slice(&self.buf[off..off + n]);
                    self.advance(n);
                    if had < SIZE_OF_XLOG_RECORD && self.record.len() >= SIZE_OF_XLOG_RECORD {
                        check_record_header(lsn, &self.record)?;
                    }
                    if self.record.len() == total as usize {
                        self.align();
                        self.state = State::RecordStart;
                        return self.finish_record(lsn).map(Some);
                    }
                }
            }
        }
    }

    /// Reads and checks the header of the page starting at `pos`, and applies its flags to the
    /// record in progress. False when more bytes are needed.
    fn read_page_header(&mut self) -> Result<bool, WalError> {
        let page_lsn = self.pos;
        let avail = self.available();
        if avail.len() < SHORT_HEADER_LEN || avail.len() < PageHeader::needed(avail) {
            return Ok(false);
        }
        if avail[..SHORT_HEADER_LEN].iter().all(|&b| b == 0) {
            // A page never written: valid WAL ends before it (before the record it would continue).
            let lsn = match self.state {
                State::InRecord { lsn, .. } => lsn,
                _ => page_lsn,
            };
            return Err(WalError::EndOfWal { lsn });
        }
        let hdr = PageHeader::parse(page_lsn, avail)?;
        let bad = |reason: String| WalError::BadPageHeader {
            lsn: page_lsn,
            reason,
        };
        if page_lsn.0.is_multiple_of(self.seg_size) && hdr.seg_size.is_none() {
            return Err(bad("first page of a segment without a long header".into()));
        }
        if let Some(seg_size) = hdr.seg_size {
            if seg_size as u64 != self.seg_size {
                return Err(bad(format!(
                    "segment size {seg_size}, expected {} (another cluster's WAL?)",
                    self.seg_size
                )));
            }
        }
        if let Some(sysid) = hdr.sysid {
            match self.system_identifier {
                Some(known) if known != sysid => {
                    return Err(bad(format!(
                        "system identifier {sysid}, expected {known} (another cluster's WAL)"
                    )))
                }
                _ => self.system_identifier = Some(sysid),
            }
        }
        if hdr.tli < self.last_tli {
            return Err(bad(format!(
                "timeline {} after timeline {}",
                hdr.tli, self.last_tli
            )));
        }
        self.last_tli = hdr.tli;
        self.advance(hdr.size());
        let first = std::mem::replace(&mut self.at_first_page, false);

        match self.state {
            State::InRecord { .. } | State::SkipContinuation { .. }
                if hdr.is_overwrite_contrecord() =>
            {
                // PostgreSQL abandoned the record that should continue here and wrote a new one.
                self.record.clear();
                self.state = State::RecordStart;
            }
            State::InRecord { lsn, total } => {
                let left = total - self.record.len() as u32;
                if !hdr.is_contrecord() || hdr.rem_len != left {
                    return Err(WalError::BadRecord {
                        lsn,
                        reason: format!(
                            "continuation page {page_lsn} has contrecord flag {} and rem_len {}, \
                             {left} bytes expected",
                            hdr.is_contrecord(),
                            hdr.rem_len
                        ),
                    });
                }
            }
            State::SkipContinuation { remaining } => {
                if !hdr.is_contrecord() || hdr.rem_len != remaining {
                    return Err(bad(format!(
                        "contrecord flag {} and rem_len {} while skipping a record's last {remaining} bytes",
                        hdr.is_contrecord(),
                        hdr.rem_len
                    )));
                }
            }
            State::RecordStart if hdr.is_contrecord() => {
                if !first {
                    return Err(bad("contrecord flag where a new record starts".into()));
                }
                self.skipped_leading_contrecord = true;
                self.state = State::SkipContinuation {
                    remaining: hdr.rem_len,
                };
            }
            State::RecordStart => {}
        }
        Ok(true)
    }

    /// Records start at MAXALIGN (8-byte) boundaries.
    fn align(&mut self) {
        self.pos = Lsn((self.pos.0 + 7) & !7);
    }

    fn finish_record(&mut self, lsn: Lsn) -> Result<DecodedRecord, WalError> {
        let rec = decode_checked(lsn, self.pos, &self.record)?;
        if self.record.capacity() > 16 * KEEP_CAPACITY {
            self.record = Vec::new();
        }
        Ok(self.after_record(rec))
    }

    /// Moves on past a record decoded whole (`pos` is where the next one starts).
    fn after_record(&mut self, mut rec: DecodedRecord) -> DecodedRecord {
        if rec.rmid == rmid::XLOG && rec.info & !record::XLR_INFO_MASK == XLOG_SWITCH {
            // The rest of the segment is padding: the record "ends" at the segment end.
            let end = Lsn(self.pos.0.div_ceil(self.seg_size) * self.seg_size);
            rec.end_lsn = end;
            self.pos = end;
        }
        self.position = rec.end_lsn;
        rec
    }
}

/// Checks the fixed header of a record (its first bytes, at least `SIZE_OF_XLOG_RECORD` of them),
/// before its length is trusted.
fn check_record_header(lsn: Lsn, record: &[u8]) -> Result<(), WalError> {
    let bad = |reason: String| WalError::BadRecord { lsn, reason };
    let h = RecordHeader::read(record).ok_or_else(|| bad("short header".into()))?;
    if !rmid::is_valid(h.rmid) {
        return Err(bad(format!("invalid resource manager id {}", h.rmid)));
    }
    // xl_prev must point backwards. (PostgreSQL, reading sequentially, also requires it to name
    // exactly the previous record; pg_strata does not, so that hand-built WAL in tests may leave
    // it zero.)
    if h.prev >= lsn {
        return Err(bad(format!("incorrect prev-link {}", h.prev)));
    }
    Ok(())
}

/// A whole record's bytes, its CRC checked, decoded; `end` is where the next record starts.
fn decode_checked(lsn: Lsn, end: Lsn, record: &[u8]) -> Result<DecodedRecord, WalError> {
    record::check_crc(lsn, record)?;
    record::decode(lsn, end, record)
}
