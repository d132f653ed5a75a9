//! Summarizing archived segments into block-change summaries.
//!
//! A segment's summary holds the records that *end* in it, i.e. whose end LSN is in (start, end]. A record
//! that begins in the previous segment is therefore summarized with the segment where it ends, which needs
//! the previous segment's tail. The archiver archives segments in order, so the decoder is carried from
//! one segment to the next; after a restart (or a gap) the previous segment is fetched once (from pg_wal
//! or the repository) to recover the tail. If it cannot be had, the summary is stored as missing: a
//! summary that might lack a record must never be trusted.

use crate::summary::{RecentMarks, Summary};
use pgformat::lsn::{segment_start_lsn, Lsn, TimeLineId};
use pgformat::wal::WalDecoder;

/// Bytes handed to the decoder at a time.
const FEED_CHUNK: usize = 128 * 1024;

/// Keeps the decoder between consecutive segments of one timeline.
pub struct SegmentSummarizer {
    wal_segment_size: u32,
    carry: Option<Carry>,
}

struct Carry {
    timeline: TimeLineId,
    next_segno: u64,
    decoder: WalDecoder,
}

/// What kind of WAL file is being summarized.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    /// A complete segment.
    Complete,
    /// A `.partial` segment: valid WAL ends somewhere inside it.
    Partial,
}

impl SegmentSummarizer {
    pub fn new(wal_segment_size: u32) -> SegmentSummarizer {
        SegmentSummarizer {
            wal_segment_size,
            carry: None,
        }
    }

    /// Summarizes one segment. `previous` is called only if the segment starts in the middle of a record
    /// and the decoder was not carried over from the previous segment: it returns that segment's bytes.
    /// Never fails: a segment that cannot be summarized gives a summary marked missing.
    pub fn summarize(
        &mut self,
        timeline: TimeLineId,
        segno: u64,
        kind: SegmentKind,
        data: &[u8],
        previous: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Summary {
        let start = segment_start_lsn(segno, self.wal_segment_size);
        let end = Lsn(start.0 + self.wal_segment_size as u64);
        let carried = match self.carry.take() {
            Some(c) if c.timeline == timeline && c.next_segno == segno => Some(c.decoder),
            _ => None,
        };
        let mut decoder = match carried {
            Some(d) => d,
            None => match self.cold_decoder(segno, data, previous) {
                Ok(d) => d,
                Err(reason) => return Summary::missing(timeline, start, end, reason),
            },
        };
        let mut summary = Summary::new(timeline, start, end);
        let mut recent = RecentMarks::default();
        // Fed in pieces so that the decoder's copy of the bytes stays in the CPU cache.
        for piece in data.chunks(FEED_CHUNK) {
            decoder.feed(piece);
            loop {
                match decoder.next_record() {
                    Ok(Some(rec)) => {
                        if rec.end_lsn <= start {
                            continue; // ended in the previous segment: summarized there
                        }
                        if let Err(e) = summary.add_record_after(&rec, &mut recent) {
                            return Summary::missing(timeline, start, end, e.to_string());
                        }
                    }
                    Ok(None) => break,
                    // A .partial segment ends where valid WAL ends: zeros, or stale pages of a recycled
                    // file (wrong page address, bad CRC). PostgreSQL's own reader stops there too.
                    Err(_) if kind == SegmentKind::Partial => {
                        summary.end = decoder.position().max(start);
                        return summary;
                    }
                    Err(e) => return Summary::missing(timeline, start, end, e.to_string()),
                }
            }
        }
        if kind == SegmentKind::Complete {
            self.carry = Some(Carry {
                timeline,
                next_segno: segno + 1,
                decoder,
            });
        } else {
            summary.end = decoder.position();
        }
        summary
    }

    /// A decoder positioned so that feeding `data` yields every record ending in it: starts at the
    /// segment, or at the previous segment when this one begins with the rest of a record.
    fn cold_decoder(
        &self,
        segno: u64,
        data: &[u8],
        previous: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Result<WalDecoder, String> {
        let start = segment_start_lsn(segno, self.wal_segment_size);
        let mut probe = WalDecoder::new(start, self.wal_segment_size);
        // The first page tells whether the segment begins inside a record.
        let first_page = &data[..data.len().min(pgformat::lsn::WAL_PAGE_SIZE as usize)];
        probe.feed(first_page);
        let _ = probe.next_record();
        if !probe.skipped_leading_contrecord() || segno == 0 {
            return Ok(WalDecoder::new(start, self.wal_segment_size));
        }
        let prev = previous().ok_or_else(|| {
            format!(
                "segment at {start} begins inside a record that started in the previous segment, \
                 which is neither in pg_wal nor in the repository"
            )
        })?;
        let mut d = WalDecoder::new(
            segment_start_lsn(segno - 1, self.wal_segment_size),
            self.wal_segment_size,
        );
        d.feed(&prev);
        loop {
            match d.next_record() {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(d),
                Err(e) => return Err(format!("cannot decode the previous segment's tail: {e}")),
            }
        }
    }
}
