//! pg_strata's repository and engines, in plain Rust shared by the extension and the `strata` binary.
//! Nothing here links PostgreSQL.
//!
//! - the repository: the handle every operation takes (`repo`: one stanza of one repository), storage
//!   over object_store behind per-backend capabilities (`storage`), its settings (`config`), typed
//!   keys (`paths`), identity and stanza guard (`identity`), the stored-object format (`object`:
//!   hash, then compress, `compress`);
//! - WAL: archive push and get (`archive`), block-change summaries of archived WAL (`summary`) and the
//!   changed-block maps made of them (`changes`);
//! - backups: manifests and their validation (`manifest`), the catalog of a stanza's backups and WAL
//!   (`catalog`), chains and timeline histories (`chain`), the incremental file format
//!   (`incremental`), taking a backup (`backup`) and restoring one (`restore`, `owner`);
//! - metrics in the Prometheus text format, shared by the extension and the CLI (`metrics`);
//! - errors with their class, SQLSTATE and exit code (`error`); the bounded parallel runner
//!   (`parallel`) and local-file helpers (`fsutil`) the engines share.

pub mod archive;
pub mod backup;
pub mod catalog;
pub mod chain;
pub mod changes;
pub mod check;
pub mod compress;
pub mod config;
pub mod crypto;
pub mod error;
pub mod fsutil;
pub mod identity;
pub mod incremental;
pub mod manifest;
pub mod metrics;
pub mod object;
pub mod owner;
pub mod parallel;
pub mod paths;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod storage;
pub mod summary;
pub mod testhook;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod verify;

pub use error::{Error, ErrorClass, Result};
pub use repo::Repo;
