//! WAL archiving: pushing files PostgreSQL hands to the archiver into the repository (with their
//! block-change summaries), and getting them back for `restore_command`.

pub mod get;
pub mod lookahead;
pub mod multi;
pub mod prefetch;
pub mod push;
pub mod summarize;

pub use get::{archive_get, GetOutcome};
pub use lookahead::ready_file;
pub use multi::{MultiPushFailure, MultiPushReport, MultiPusher};
pub use push::{ArchivePusher, PushReport, ServerFacts, SummaryReport};
