//! The `backup_label` file PostgreSQL 15's `pg_backup_stop` returns: where recovery of a base backup
//! starts (start WAL location and its segment file, the checkpoint, the timeline). Lines are
//! `KEY: value`; the ones read here are always written by PostgreSQL 15.

use crate::lsn::Lsn;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupLabel {
    pub start_lsn: Lsn,
    pub start_wal_file: String,
    pub checkpoint_lsn: Lsn,
    pub start_timeline: u32,
    pub label: String,
    pub start_time: String,
}

/// A backup_label that lacks a line or has a malformed one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupLabelError(pub String);

impl fmt::Display for BackupLabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backup_label: {}", self.0)
    }
}

impl std::error::Error for BackupLabelError {}

impl BackupLabel {
    pub fn parse(text: &str) -> Result<BackupLabel, BackupLabelError> {
        let field = |key: &str| -> Result<&str, BackupLabelError> {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
                .map(str::trim)
                .ok_or_else(|| BackupLabelError(format!("no '{key}:' line")))
        };
        let lsn = |key: &str, v: &str| -> Result<Lsn, BackupLabelError> {
            v.parse()
                .map_err(|_| BackupLabelError(format!("{key}: '{v}' is not an LSN")))
        };
        let start = field("START WAL LOCATION")?;
        let (start_lsn, file) = start
            .split_once(" (file ")
            .and_then(|(l, f)| Some((l, f.strip_suffix(')')?)))
            .ok_or_else(|| {
                BackupLabelError(format!(
                    "START WAL LOCATION: '{start}' is not '<lsn> (file <segment>)'"
                ))
            })?;
        let tli = field("START TIMELINE")?;
        Ok(BackupLabel {
            start_lsn: lsn("START WAL LOCATION", start_lsn)?,
            start_wal_file: file.to_string(),
            checkpoint_lsn: lsn("CHECKPOINT LOCATION", field("CHECKPOINT LOCATION")?)?,
            start_timeline: tli.parse().map_err(|_| {
                BackupLabelError(format!("START TIMELINE: '{tli}' is not a number"))
            })?,
            label: field("LABEL")?.to_string(),
            start_time: field("START TIME")?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // As returned by pg_backup_stop(true) on PostgreSQL 15.20.
    const REAL: &str = "START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n\
CHECKPOINT LOCATION: 0/3000068\n\
BACKUP METHOD: streamed\n\
BACKUP FROM: primary\n\
START TIME: 2026-11-23 23:26:38 UTC\n\
LABEL: 20261123-232638F\n\
START TIMELINE: 1\n";

    #[test]
    fn parses_what_postgresql_writes() {
        let l = BackupLabel::parse(REAL).unwrap();
        assert_eq!(l.start_lsn, Lsn(0x0300_0028));
        assert_eq!(l.start_wal_file, "000000010000000000000003");
        assert_eq!(l.checkpoint_lsn, Lsn(0x0300_0068));
        assert_eq!(l.start_timeline, 1);
        assert_eq!(l.label, "20261123-232638F");
        assert_eq!(l.start_time, "2026-11-23 23:26:38 UTC");
    }

    #[test]
    fn missing_or_bad_lines_are_named() {
        let e = BackupLabel::parse(&REAL.replace("START TIMELINE: 1\n", "")).unwrap_err();
        assert!(e.to_string().contains("START TIMELINE"), "{e}");
        let e = BackupLabel::parse(&REAL.replace("0/3000068", "zz")).unwrap_err();
        assert!(e.to_string().contains("CHECKPOINT LOCATION: 'zz'"), "{e}");
    }
}
