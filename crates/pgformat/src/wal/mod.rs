//! PostgreSQL 15 WAL: pages, records and their block references, decoded by a push-based decoder that
//! does no I/O (`feed(bytes)`, then `next_record()` until it says it needs more). Errors carry the LSN.

mod decoder;
mod page;
mod record;

pub use decoder::WalDecoder;
pub use page::{segment_system_identifier, XLOG_PAGE_MAGIC};
pub use record::{BlockRef, DecodedRecord, XLR_SPECIAL_REL_UPDATE};

use crate::lsn::Lsn;

/// Resource manager ids of PostgreSQL 15 (rmgrlist.h order).
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
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    #[error("invalid WAL page header at {lsn}: {reason}")]
    BadPageHeader { lsn: Lsn, reason: String },
    #[error("invalid WAL record at {lsn}: {reason}")]
    BadRecord { lsn: Lsn, reason: String },
    #[error("WAL record at {lsn} has CRC {found:08X}, expected {expected:08X}")]
    BadCrc { lsn: Lsn, expected: u32, found: u32 },
    #[error("end of valid WAL at {lsn} (zero record length)")]
    EndOfWal { lsn: Lsn },
    #[error(
        "WAL record at {lsn} (rmgr {rmid}, info 0x{info:02X}) changes relations outside block references \
         in a way pg_strata does not know"
    )]
    UnknownSpecialRelUpdate { lsn: Lsn, rmid: u8, info: u8 },
}
