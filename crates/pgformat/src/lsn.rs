//! Log sequence numbers, timelines and WAL file names.
//!
//! An LSN is a byte position in the WAL stream, printed by PostgreSQL as `X/Y` (two hex halves). WAL is
//! cut into segments of `wal_segment_size` bytes; a segment file is named by its timeline, then the
//! segment number split into a "log" (high part) and a "seg" (low part), each as 8 hex digits:
//! `TTTTTTTTLLLLLLLLSSSSSSSS`, where one log holds `0x1_0000_0000 / wal_segment_size` segments.

use std::fmt;
use std::str::FromStr;

/// PostgreSQL 15's default and most common segment size.
pub const DEFAULT_WAL_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;
/// WAL page size (XLOG_BLCKSZ).
pub const WAL_PAGE_SIZE: u32 = 8192;

/// A position in the WAL stream.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const INVALID: Lsn = Lsn(0);

    /// The segment number this LSN falls in.
    pub fn segment_number(self, wal_segment_size: u32) -> u64 {
        self.0 / wal_segment_size as u64
    }

    /// Offset of this LSN inside its segment.
    pub fn segment_offset(self, wal_segment_size: u32) -> u32 {
        (self.0 % wal_segment_size as u64) as u32
    }

    /// Offset of this LSN inside its WAL page.
    pub fn page_offset(self) -> u32 {
        (self.0 % WAL_PAGE_SIZE as u64) as u32
    }

    /// Sixteen hex digits, zero padded: sorts like the LSN itself (used in repository keys).
    pub fn to_sortable_hex(self) -> String {
        format!("{:016X}", self.0)
    }

    pub fn from_sortable_hex(s: &str) -> Option<Lsn> {
        // from_str_radix alone would take a leading '+'.
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Lsn)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN \"{0}\": expected two hexadecimal halves like 0/16B3748")]
pub struct ParseLsnError(pub String);

impl FromStr for Lsn {
    type Err = ParseLsnError;
    fn from_str(s: &str) -> Result<Lsn, ParseLsnError> {
        let err = || ParseLsnError(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let hex = |h: &str| (1..=8).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(hi) || !hex(lo) {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

/// A WAL timeline id.
pub type TimeLineId = u32;

/// What a file name in `pg_wal` (or handed to `archive_command`) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalFileName {
    /// `TTTTTTTTLLLLLLLLSSSSSSSS`: a complete segment.
    Segment { timeline: TimeLineId, segno: u64 },
    /// `TTTTTTTTLLLLLLLLSSSSSSSS.partial`: the last, incomplete segment of a timeline left at promotion.
    Partial { timeline: TimeLineId, segno: u64 },
    /// `TTTTTTTT.history`: the history of a timeline.
    History { timeline: TimeLineId },
    /// `TTTTTTTTLLLLLLLLSSSSSSSS.OOOOOOOO.backup`: a backup history file.
    BackupHistory {
        timeline: TimeLineId,
        segno: u64,
        offset: u32,
    },
}

fn parse_hex8(s: &str) -> Option<u32> {
    if s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn parse_segment_part(s: &str, wal_segment_size: u32) -> Option<(TimeLineId, u64)> {
    // ASCII first: 24 bytes of multi-byte characters would make the slices below panic.
    if s.len() != 24 || !s.is_ascii() {
        return None;
    }
    let tli = parse_hex8(&s[0..8])?;
    let log = parse_hex8(&s[8..16])? as u64;
    let seg = parse_hex8(&s[16..24])? as u64;
    let per_log = segments_per_log(wal_segment_size);
    if seg >= per_log {
        return None;
    }
    Some((tli, log * per_log + seg))
}

/// Segments in one "log" (the middle 8 hex digits of a segment name).
pub fn segments_per_log(wal_segment_size: u32) -> u64 {
    0x1_0000_0000u64 / wal_segment_size as u64
}

impl WalFileName {
    /// Parses a WAL file name, as PostgreSQL hands it to the archiver or asks for it in recovery.
    pub fn parse(name: &str, wal_segment_size: u32) -> Option<WalFileName> {
        if let Some(tli) = name.strip_suffix(".history") {
            return Some(WalFileName::History {
                timeline: parse_hex8(tli)?,
            });
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            let (timeline, segno) = parse_segment_part(seg, wal_segment_size)?;
            return Some(WalFileName::Partial { timeline, segno });
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (seg, off) = rest.split_once('.')?;
            let (timeline, segno) = parse_segment_part(seg, wal_segment_size)?;
            return Some(WalFileName::BackupHistory {
                timeline,
                segno,
                offset: parse_hex8(off)?,
            });
        }
        let (timeline, segno) = parse_segment_part(name, wal_segment_size)?;
        Some(WalFileName::Segment { timeline, segno })
    }

    pub fn timeline(&self) -> TimeLineId {
        match *self {
            WalFileName::Segment { timeline, .. }
            | WalFileName::Partial { timeline, .. }
            | WalFileName::History { timeline }
            | WalFileName::BackupHistory { timeline, .. } => timeline,
        }
    }
}

/// The 24 hex digit name of a segment.
pub fn segment_file_name(timeline: TimeLineId, segno: u64, wal_segment_size: u32) -> String {
    let per_log = segments_per_log(wal_segment_size);
    format!(
        "{:08X}{:08X}{:08X}",
        timeline,
        segno / per_log,
        segno % per_log
    )
}

/// The first LSN of a segment.
pub fn segment_start_lsn(segno: u64, wal_segment_size: u32) -> Lsn {
    Lsn(segno * wal_segment_size as u64)
}

/// The name of a timeline's history file, `TTTTTTTT.history`.
pub fn history_file_name(timeline: TimeLineId) -> String {
    format!("{timeline:08X}.history")
}

/// A timeline written as PostgreSQL writes it in file names: 8 upper-case hex digits.
pub fn parse_timeline_hex(s: &str) -> Option<TimeLineId> {
    parse_hex8(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_text() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn(0x0100_0028).to_string(), "0/1000028");
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
        assert!("/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn segment_names_match_postgresql() {
        let sz = DEFAULT_WAL_SEGMENT_SIZE;
        assert_eq!(segment_file_name(1, 1, sz), "000000010000000000000001");
        assert_eq!(segment_file_name(2, 0x1FF, sz), "0000000200000001000000FF");
        assert_eq!(
            WalFileName::parse("0000000200000001000000FF", sz),
            Some(WalFileName::Segment {
                timeline: 2,
                segno: 0x1FF
            })
        );
        assert_eq!(
            WalFileName::parse("00000002.history", sz),
            Some(WalFileName::History { timeline: 2 })
        );
        assert_eq!(
            WalFileName::parse("000000010000000000000002.00000028.backup", sz),
            Some(WalFileName::BackupHistory {
                timeline: 1,
                segno: 2,
                offset: 0x28
            })
        );
        assert_eq!(
            WalFileName::parse("000000010000000000000003.partial", sz),
            Some(WalFileName::Partial {
                timeline: 1,
                segno: 3
            })
        );
        // seg part beyond the segments of one log, lower case, wrong lengths
        assert_eq!(WalFileName::parse("000000010000000000000100", sz), None);
        assert_eq!(WalFileName::parse("00000001000000000000000a", sz), None);
        assert_eq!(WalFileName::parse("0000000100000000000001", sz), None);
        assert_eq!(WalFileName::parse("pg_wal", sz), None);
    }

    #[test]
    fn names_of_multi_byte_characters_are_refused_not_panicked_on() {
        let sz = DEFAULT_WAL_SEGMENT_SIZE;
        // Names of 24 bytes that are not 24 characters; in the second, byte 8 falls inside an 'é'
        // (slicing there used to panic).
        let names = [
            "€€€€€€€€".to_string(),
            format!("0000000{}0", "é".repeat(8)),
            format!("{}.partial", "é".repeat(12)),
            format!("{}.00000028.backup", "ü".repeat(12)),
        ];
        for name in &names {
            assert_eq!(WalFileName::parse(name, sz), None, "{name}");
        }
        assert_eq!(names[1].len(), 24);
        assert!("+/1".parse::<Lsn>().is_err());
        assert!("0/+1".parse::<Lsn>().is_err());
        assert_eq!(Lsn::from_sortable_hex("+000000000000001"), None);
        assert_eq!(Lsn::from_sortable_hex("0000000000000001"), Some(Lsn(1)));
    }

    #[test]
    fn lsn_positions() {
        let sz = DEFAULT_WAL_SEGMENT_SIZE;
        let lsn = Lsn(0x0300_2028);
        assert_eq!(lsn.segment_number(sz), 3);
        assert_eq!(lsn.segment_offset(sz), 0x2028);
        assert_eq!(lsn.page_offset(), 0x28);
        assert_eq!(segment_start_lsn(3, sz), Lsn(0x0300_0000));
        assert_eq!(Lsn::from_sortable_hex(&lsn.to_sortable_hex()), Some(lsn));
    }
}
