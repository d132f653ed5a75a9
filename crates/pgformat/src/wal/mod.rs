//! PostgreSQL 15 WAL: pages, records and their block references, decoded by a push-based decoder that
//! does no I/O (`feed(bytes)`, then `next_record()` until it says it needs more). Errors carry the LSN.

mod decoder;
mod page;
mod record;

#[cfg(test)]
mod decoder_tests;
#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod record_tests;
#[cfg(test)]
pub(crate) mod testing;

pub use decoder::WalDecoder;
pub use page::{
    segment_system_identifier, PageHeader, LONG_HEADER_LEN, SHORT_HEADER_LEN, XLOG_PAGE_MAGIC,
    XLP_BKP_REMOVABLE, XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD, XLP_LONG_HEADER,
};
pub use record::{
    BlockRef, DecodedRecord, SIZE_OF_XLOG_RECORD, XLR_INFO_MASK, XLR_MAX_BLOCK_ID,
    XLR_SPECIAL_REL_UPDATE,
};

use crate::lsn::Lsn;

/// XLOG resource manager record: switch to a new segment (`src/include/catalog/pg_control.h`).
pub const XLOG_SWITCH: u8 = 0x40;

/// Resource manager ids of PostgreSQL 15 (`src/include/access/rmgrlist.h` order, `rmgr.h` ranges).
pub mod rmid {
    pub const XLOG: u8 = 0;
    pub const XACT: u8 = 1;
    pub const SMGR: u8 = 2;
    pub const CLOG: u8 = 3;
    pub const DBASE: u8 = 4;
    pub const TBLSPC: u8 = 5;
    pub const MULTIXACT: u8 = 6;
    pub const RELMAP: u8 = 7;
    pub const STANDBY: u8 = 8;
    pub const HEAP2: u8 = 9;
    pub const HEAP: u8 = 10;
    pub const BTREE: u8 = 11;
    pub const HASH: u8 = 12;
    pub const GIN: u8 = 13;
    pub const GIST: u8 = 14;
    pub const SEQ: u8 = 15;
    pub const SPGIST: u8 = 16;
    pub const BRIN: u8 = 17;
    pub const COMMIT_TS: u8 = 18;
    pub const REPLORIGIN: u8 = 19;
    pub const GENERIC: u8 = 20;
    pub const LOGICALMSG: u8 = 21;
    /// RM_MAX_BUILTIN_ID.
    pub const MAX_BUILTIN: u8 = LOGICALMSG;
    /// RM_MIN_CUSTOM_ID: ids 128..=255 belong to extensions (custom resource managers, PG 15+).
    pub const MIN_CUSTOM: u8 = 128;

    /// The names pg_waldump prints, indexed by id.
    pub const NAMES: [&str; 22] = [
        "XLOG",
        "Transaction",
        "Storage",
        "CLOG",
        "Database",
        "Tablespace",
        "MultiXact",
        "RelMap",
        "Standby",
        "Heap2",
        "Heap",
        "Btree",
        "Hash",
        "Gin",
        "Gist",
        "Sequence",
        "SPGist",
        "BRIN",
        "CommitTs",
        "ReplicationOrigin",
        "Generic",
        "LogicalMessage",
    ];

    /// True for a built-in or custom resource manager id (RmgrIdIsValid).
    pub fn is_valid(id: u8) -> bool {
        id <= MAX_BUILTIN || id >= MIN_CUSTOM
    }

    /// The name pg_waldump prints for an id: the built-in name, or `custom###`.
    pub fn name(id: u8) -> String {
        match NAMES.get(id as usize) {
            Some(n) => n.to_string(),
            None => format!("custom{id:03}"),
        }
    }
}

/// What can go wrong decoding WAL; every error names the LSN it happened at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    #[error("invalid WAL page header at {lsn}: {reason}")]
    BadPageHeader { lsn: Lsn, reason: String },
    #[error("invalid WAL record at {lsn}: {reason}")]
    BadRecord { lsn: Lsn, reason: String },
    #[error("WAL record at {lsn} has CRC {expected:08X}, computed {found:08X}")]
    BadCrc { lsn: Lsn, expected: u32, found: u32 },
    /// Valid WAL ends at `lsn`: a zero record length where a record should start, or a page that was
    /// never written (all zeros). Normal at the end of a `.partial` segment.
    #[error("end of valid WAL at {lsn}")]
    EndOfWal { lsn: Lsn },
    #[error(
        "WAL record at {lsn} (rmgr {rmid}, info 0x{info:02X}) changes relations outside block \
         references in a way pg_strata does not know"
    )]
    UnknownSpecialRelUpdate { lsn: Lsn, rmid: u8, info: u8 },
}

impl WalError {
    /// The LSN the error is about.
    pub fn lsn(&self) -> Lsn {
        match *self {
            WalError::BadPageHeader { lsn, .. }
            | WalError::BadRecord { lsn, .. }
            | WalError::BadCrc { lsn, .. }
            | WalError::EndOfWal { lsn }
            | WalError::UnknownSpecialRelUpdate { lsn, .. } => lsn,
        }
    }
}
