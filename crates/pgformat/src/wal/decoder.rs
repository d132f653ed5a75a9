//! The push-based WAL decoder: feed it bytes in order (any chunk sizes), ask for records.
//!
//! It walks the byte stream page by page: each page header is checked (magic, page address) and
//! skipped; records are MAXALIGNed (8 bytes) and may continue over any number of pages and segments
//! (`xlp_rem_len` on each continuation page must match what is left of the record). After an
//! XLOG_SWITCH record the rest of the segment is padding. Decoding that starts at a segment whose first
//! page continues a record from before skips that continuation (`skipped_leading_contrecord`).
//! Memory: the unconsumed fed bytes and the one record being assembled.

use super::page::{PageHeader, XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD};
use super::record::{self, DecodedRecord, SIZE_OF_XLOG_RECORD};
use super::{rmid, WalError};
use crate::lsn::{Lsn, WAL_PAGE_SIZE};

const XLOG_SWITCH: u8 = 0x40;

#[derive(Debug)]
enum State {
    /// Next byte at `pos` starts a record.
    RecordStart,
    /// Assembling a record of `total` bytes that started at `lsn`.
    InRecord { lsn: Lsn, total: usize },
    /// Skipping the rest of a record whose beginning we never saw.
    SkipContinuation { remaining: u32 },
    /// After XLOG_SWITCH: skip to the next segment boundary.
    SkipToSegmentEnd,
}

pub struct WalDecoder {
    seg_size: u64,
    /// Fed bytes not yet consumed; `buf[0]` is at LSN `buf_lsn`.
    buf: Vec<u8>,
    buf_lsn: Lsn,
    /// Next byte to consume.
    pos: Lsn,
    state: State,
    record: Vec<u8>,
    /// No page header has been read yet.
    at_first_page: bool,
    skipped_leading_contrecord: bool,
    system_identifier: Option<u64>,
    position: Lsn,
}

impl WalDecoder {
    /// A decoder whose first fed byte is at `start_lsn` (a segment or page start, or a record start).
    pub fn new(start_lsn: Lsn, wal_segment_size: u32) -> WalDecoder {
        WalDecoder {
            seg_size: wal_segment_size as u64,
            buf: Vec::new(),
            buf_lsn: start_lsn,
            pos: start_lsn,
            state: State::RecordStart,
            record: Vec::new(),
            at_first_page: true,
            skipped_leading_contrecord: false,
            system_identifier: None,
            position: start_lsn,
        }
    }

    /// Appends bytes that continue exactly where the previously fed bytes ended.
    pub fn feed(&mut self, bytes: &[u8]) {
        // Drop consumed bytes first so that the buffer does not grow with the stream.
        let consumed = (self.pos.0 - self.buf_lsn.0) as usize;
        if consumed > 0 && consumed <= self.buf.len() {
            self.buf.drain(..consumed);
            self.buf_lsn = self.pos;
        }
        self.buf.extend_from_slice(bytes);
    }

    pub fn skipped_leading_contrecord(&self) -> bool {
        self.skipped_leading_contrecord
    }

    pub fn system_identifier(&self) -> Option<u64> {
        self.system_identifier
    }

    /// End of the last record returned (where decoding can be trusted up to).
    pub fn position(&self) -> Lsn {
        self.position
    }

    fn available(&self) -> &[u8] {
        let off = (self.pos.0 - self.buf_lsn.0) as usize;
        self.buf.get(off..).unwrap_or(&[])
    }

    fn advance(&mut self, n: usize) {
        self.pos = Lsn(self.pos.0 + n as u64);
    }

    fn page_remaining(&self) -> usize {
        (WAL_PAGE_SIZE - self.pos.page_offset()) as usize
    }

    /// The next complete record; `Ok(None)` when more bytes must be fed.
    pub fn next_record(&mut self) -> Result<Option<DecodedRecord>, WalError> {
        loop {
            if self.pos.page_offset() == 0 && !matches!(self.state, State::SkipToSegmentEnd) {
                let avail = self.available();
                if avail.len() < 4 || avail.len() < PageHeader::needed(avail) {
                    return Ok(None);
                }
                let hdr = PageHeader::parse(self.pos, avail)?;
                if let Some(sysid) = hdr.sysid {
                    self.system_identifier.get_or_insert(sysid);
                }
                if self.pos.0.is_multiple_of(self.seg_size) && hdr.seg_size.is_none() {
                    return Err(WalError::BadPageHeader {
                        lsn: self.pos,
                        reason: "first page of a segment without a long header".into(),
                    });
                }
                let page_lsn = self.pos;
                self.advance(hdr.len());
                let first = std::mem::replace(&mut self.at_first_page, false);
                self.on_page_header(page_lsn, &hdr, first)?;
                continue;
            }
            match self.state {
                State::SkipToSegmentEnd => {
                    let to_end =
                        ((self.seg_size - self.pos.0 % self.seg_size) % self.seg_size) as usize;
                    let n = to_end.min(self.available().len());
                    self.advance(n);
                    if n < to_end {
                        return Ok(None);
                    }
                    self.state = State::RecordStart;
                }
                State::SkipContinuation { remaining } => {
                    let n = (remaining as usize)
                        .min(self.page_remaining())
                        .min(self.available().len());
                    if n == 0 {
                        return Ok(None);
                    }
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
                    let avail = self.available();
                    if avail.len() < 4 {
                        return Ok(None);
                    }
                    let total = u32::from_le_bytes(avail[0..4].try_into().expect("4")) as usize;
                    if total == 0 {
                        return Err(WalError::EndOfWal { lsn: self.pos });
                    }
                    if total < SIZE_OF_XLOG_RECORD {
                        return Err(WalError::BadRecord {
                            lsn: self.pos,
                            reason: format!(
                                "record length {total} is shorter than a record header"
                            ),
                        });
                    }
                    if total > 1 << 30 {
                        return Err(WalError::BadRecord {
                            lsn: self.pos,
                            reason: format!("record length {total}"),
                        });
                    }
                    self.record.clear();
                    self.record.reserve(total);
                    self.state = State::InRecord {
                        lsn: self.pos,
                        total,
                    };
                }
                State::InRecord { lsn, total } => {
                    let want = (total - self.record.len()).min(self.page_remaining());
                    let n = want.min(self.available().len());
                    if n == 0 {
                        return Ok(None);
                    }
                    let off = (self.pos.0 - self.buf_lsn.0) as usize;
                    self.record.extend_from_slice(&self.buf[off..off + n]);
                    self.advance(n);
                    if self.record.len() < total {
                        continue;
                    }
                    self.align();
                    self.state = State::RecordStart;
                    return self.finish_record(lsn).map(Some);
                }
            }
        }
    }

    fn on_page_header(
        &mut self,
        page_lsn: Lsn,
        hdr: &PageHeader,
        first: bool,
    ) -> Result<(), WalError> {
        let contrecord = hdr.info & XLP_FIRST_IS_CONTRECORD != 0;
        match self.state {
            State::InRecord { lsn, total } => {
                if hdr.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    // The record we were assembling was never completed: PostgreSQL overwrote it.
                    self.record.clear();
                    self.state = State::RecordStart;
                } else if !contrecord || hdr.rem_len as usize != total - self.record.len() {
                    return Err(WalError::BadRecord {
                        lsn,
                        reason: format!(
                            "continuation page {page_lsn} has rem_len {} (contrecord {contrecord}), {} bytes expected",
                            hdr.rem_len,
                            total - self.record.len()
                        ),
                    });
                }
            }
            State::RecordStart if contrecord => {
                if first {
                    self.skipped_leading_contrecord = true;
                    self.state = State::SkipContinuation {
                        remaining: hdr.rem_len,
                    };
                } else {
                    return Err(WalError::BadPageHeader {
                        lsn: page_lsn,
                        reason: "continuation flag set where a new record starts".into(),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Records start at MAXALIGN (8-byte) boundaries.
    fn align(&mut self) {
        self.pos = Lsn((self.pos.0 + 7) & !7);
    }

    fn finish_record(&mut self, lsn: Lsn) -> Result<DecodedRecord, WalError> {
        record::check_crc(lsn, &self.record)?;
        let rec = record::decode(lsn, self.pos, &self.record)?;
        self.position = self.pos;
        if rec.rmid == rmid::XLOG && rec.info & 0xF0 == XLOG_SWITCH {
            self.state = State::SkipToSegmentEnd;
            self.position = Lsn(self.pos.0.div_ceil(self.seg_size) * self.seg_size);
        }
        Ok(rec)
    }
}
