//! One module per `strata` command.

pub mod annotate;
pub mod archive_get;
pub mod archive_push;
pub mod check;
pub mod expire;
pub mod info;
pub mod metrics;
pub mod rekey;
pub mod restore;
pub mod verify;
