//! The library's error type. Every variant says what went wrong with which object, and where it helps,
//! what to do about it; the extension turns these into WARNINGs (archiving) or ERRORs (SQL), the CLI
//! prints them.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid setting {name} = '{value}': {reason}")]
    BadSetting {
        name: String,
        value: String,
        reason: String,
    },

    #[error("repository storage error on {key}: {source}")]
    Storage {
        key: String,
        #[source]
        source: object_store::Error,
    },

    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("stored object {key} is corrupt: {reason}")]
    CorruptObject { key: String, reason: String },

    #[error("checksum mismatch for {key}: expected SHA-256 {expected}, found {found}")]
    ChecksumMismatch {
        key: String,
        expected: String,
        found: String,
    },

    #[error(
        "WAL file {file} is already archived in {key} with a different content (stored SHA-256 {stored}, \
         new SHA-256 {new}): refusing to overwrite it; this suggests two clusters archive into the same \
         stanza or the WAL was corrupted; check the repository and the cluster"
    )]
    ArchiveMismatch {
        file: String,
        key: String,
        stored: String,
        new: String,
    },

    #[error(
        "repository {repo} stanza '{stanza}' belongs to another cluster: it holds system identifier \
         {repo_sysid} (PostgreSQL {repo_version}), this cluster has {our_sysid} (PostgreSQL {our_version}); \
         set strata.stanza to a new name or use another repository"
    )]
    WrongCluster {
        repo: String,
        stanza: String,
        repo_sysid: u64,
        repo_version: u32,
        our_sysid: u64,
        our_version: u32,
    },

    #[error(
        "repository directory {path} does not exist or is not a directory; create it (owned by the \
         postgres user) or fix strata.repo1; if it is on a file system that is not mounted, mount it"
    )]
    RepoRootMissing { path: PathBuf },

    #[error(
        "repository {repo} stanza '{stanza}' has no identity file strata.repo ({why}): nothing is written \
         into it; if the repository was moved or its file system unmounted, put it back (archiving catches \
         up by itself)"
    )]
    StanzaIdentityMissing {
        repo: String,
        stanza: String,
        why: String,
    },

    #[error("repository identity {key} has format version {found}, this pg_strata reads version {supported}")]
    UnsupportedRepoFormat {
        key: String,
        found: u32,
        supported: u32,
    },

    #[error("{what} is not a WAL file name PostgreSQL would archive (expected e.g. 000000010000000000000001, 00000002.history)")]
    BadWalFileName { what: String },

    #[error("the backup was cancelled")]
    Cancelled,

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn storage(key: &str, source: object_store::Error) -> Error {
        Error::Storage {
            key: key.to_string(),
            source,
        }
    }
}
