//! The one place that builds repository keys. Layout under `<repo>/<stanza>/`:
//!
//! ```text
//! strata.repo                                   repository identity (JSON)
//! archive/<TTTTTTTTLLLLLLLL>/<segment>.<ext>    WAL segments, .partial and .backup files (ext = compression)
//! archive/<TTTTTTTT>.history.<ext>              timeline history files
//! summary/<TTTTTTTT>/<start>-<end>.blkref       block-change summary of one archived segment
//! backup/<label>/claim.json                     a backup's claim on its label: its first object
//! backup/<label>/manifest.json                  a backup's manifest: its commit point, written last
//! backup/<label>/data/<NNNNNNNN>                file contents: chunks of large files, bundles of small ones
//! ```
//! LSNs in keys are 16 hex digits so that keys sort like LSNs. Summaries are grouped by timeline because
//! after a promotion two timelines cover the same LSNs with different WAL.

use crate::compress::CompressType;
use crate::{Error, Result};
use pgformat::lsn::{Lsn, TimeLineId, WalFileName};

/// Keys of one stanza in one repository.
#[derive(Clone, Debug)]
pub struct RepoPaths {
    stanza: String,
}

impl RepoPaths {
    pub fn new(stanza: &str) -> RepoPaths {
        RepoPaths {
            stanza: stanza.to_string(),
        }
    }

    pub fn stanza(&self) -> &str {
        &self.stanza
    }

    pub fn identity(&self) -> String {
        format!("{}/strata.repo", self.stanza)
    }

    pub fn archive_root(&self) -> String {
        format!("{}/archive", self.stanza)
    }

    /// Key of an archived WAL file (segment, partial, backup history or timeline history).
    pub fn archive_file(
        &self,
        file_name: &str,
        compress: CompressType,
        wal_segment_size: u32,
    ) -> Result<String> {
        let parsed = WalFileName::parse(file_name, wal_segment_size).ok_or_else(|| {
            Error::BadWalFileName {
                what: file_name.to_string(),
            }
        })?;
        let ext = compress.extension();
        Ok(match parsed {
            WalFileName::History { .. } => format!("{}/{file_name}.{ext}", self.archive_root()),
            _ => format!(
                "{}/{}/{file_name}.{ext}",
                self.archive_root(),
                &file_name[0..16]
            ),
        })
    }

    /// Key of the block-change summary for the WAL of `timeline` in `[start, end)`.
    pub fn summary(&self, timeline: TimeLineId, start: Lsn, end: Lsn) -> String {
        format!(
            "{}/summary/{timeline:08X}/{}-{}.blkref",
            self.stanza,
            start.to_sortable_hex(),
            end.to_sortable_hex()
        )
    }

    /// Prefix holding all summaries of a timeline.
    pub fn summary_dir(&self, timeline: TimeLineId) -> String {
        format!("{}/summary/{timeline:08X}", self.stanza)
    }

    /// Prefix holding every backup of the stanza.
    pub fn backup_root(&self) -> String {
        format!("{}/backup", self.stanza)
    }

    /// Prefix holding one backup (its manifest and data objects).
    pub fn backup_dir(&self, label: &str) -> String {
        format!("{}/backup/{label}", self.stanza)
    }

    /// Key of a backup's manifest.
    pub fn backup_manifest(&self, label: &str) -> String {
        format!("{}/backup/{label}/manifest.json", self.stanza)
    }

    /// Key of a backup's claim on its label, its first object (see `backup::claim`).
    pub fn backup_claim(&self, label: &str) -> String {
        format!("{}/backup/{label}/claim.json", self.stanza)
    }

    /// Name of a data object inside its backup, as manifests record it.
    pub fn backup_object_name(number: u64) -> String {
        format!("data/{number:08}")
    }

    /// Key of a data object of a backup, from the name its manifest records.
    pub fn backup_object(&self, label: &str, name: &str) -> String {
        format!("{}/backup/{label}/{name}", self.stanza)
    }

    /// Parses a summary key back into (timeline, start, end).
    pub fn parse_summary_key(key: &str) -> Option<(TimeLineId, Lsn, Lsn)> {
        let mut parts = key.rsplit('/');
        let file = parts.next()?.strip_suffix(".blkref")?;
        let tli = u32::from_str_radix(parts.next()?, 16).ok()?;
        let (start, end) = file.split_once('-')?;
        Some((
            tli,
            Lsn::from_sortable_hex(start)?,
            Lsn::from_sortable_hex(end)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const SZ: u32 = 16 * 1024 * 1024;

    #[test]
    fn keys_follow_the_layout() {
        let p = RepoPaths::new("main");
        assert_eq!(p.identity(), "main/strata.repo");
        assert_eq!(
            p.archive_file("000000010000000A000000FF", CompressType::Zstd, SZ)
                .unwrap(),
            "main/archive/000000010000000A/000000010000000A000000FF.zst"
        );
        assert_eq!(
            p.archive_file("00000002.history", CompressType::Lz4, SZ)
                .unwrap(),
            "main/archive/00000002.history.lz4"
        );
        assert_eq!(
            p.archive_file(
                "000000010000000000000002.00000028.backup",
                CompressType::None,
                SZ
            )
            .unwrap(),
            "main/archive/0000000100000000/000000010000000000000002.00000028.backup.raw"
        );
        assert!(p
            .archive_file("../etc/passwd", CompressType::None, SZ)
            .is_err());
        let k = p.summary(1, Lsn(0x0100_0000), Lsn(0x0200_0000));
        assert_eq!(
            k,
            "main/summary/00000001/0000000001000000-0000000002000000.blkref"
        );
        assert_eq!(
            p.backup_object("20261123-020000F", &RepoPaths::backup_object_name(12)),
            "main/backup/20261123-020000F/data/00000012"
        );
        assert_eq!(
            p.backup_manifest("20261123-020000F"),
            "main/backup/20261123-020000F/manifest.json"
        );
        assert_eq!(
            RepoPaths::parse_summary_key(&k),
            Some((1, Lsn(0x0100_0000), Lsn(0x0200_0000)))
        );
    }
}
