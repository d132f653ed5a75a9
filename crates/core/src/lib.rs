//! pg_strata's repository and engines, in plain Rust shared by the extension and the `strata` binary:
//! storage over object_store, the stored-object format (hash, then compress), repository identity and
//! paths, WAL push and get, and block-change summaries. Nothing here links PostgreSQL.

pub mod archive;
pub mod backup;
pub mod catalog;
pub mod chain;
pub mod changes;
pub mod compress;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod identity;
pub mod incremental;
pub mod manifest;
pub mod object;
pub mod owner;
pub mod parallel;
pub mod paths;
pub mod repo;
pub mod restore;
pub mod storage;
pub mod summary;

pub use error::{Error, ErrorClass, Result};
pub use repo::Repo;
