//! PostgreSQL 15 formats, and nothing else: WAL pages and records, block references, the records that
//! change relations outside block references, LSNs, timelines and segment names, relation file paths.
//! This is the only crate that knows PostgreSQL's byte layouts; it does no I/O, so it is tested with plain
//! `cargo test` and shared by the extension and the `strata` binary.

pub mod backup_label;
pub mod bytes;
pub mod control;
pub mod lsn;
pub mod page;
pub mod relfile;
pub mod rmgr;
pub mod wal;
