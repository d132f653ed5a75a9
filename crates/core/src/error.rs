//! The library's error type. Every variant says what went wrong with which object, and where it helps,
//! what to do about it. The variants are what a caller must tell apart: `class` sorts them into the
//! kinds a script or a monitoring job acts on, which the extension maps to SQLSTATEs (raised as ERRORs
//! with a HINT where the fix is known) and the CLI to exit codes.

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

    /// A `strata.*` name that is no setting (`config::names`); its value is never shown (a misspelt
    /// name may hold a secret).
    #[error(
        "unknown setting {name}{}: the settings are listed in the README (Configuration)",
        nearest.as_ref().map(|n| format!(" (did you mean {n}?)")).unwrap_or_default()
    )]
    UnknownSetting {
        name: String,
        nearest: Option<String>,
    },

    /// Reading or writing an object failed (after the retries a remote repository makes).
    #[error("repository {repo}: storage error on {key}: {detail}")]
    Storage {
        repo: String,
        key: String,
        detail: String,
    },

    /// The server refused the credentials or the permission (never holds a secret).
    #[error(
        "repository {repo} refused access to {key}: {detail}; check the S3 key settings \
         (strata.repoN_s3_key and strata.repoN_s3_key_secret, or AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY), the region and the bucket's policy"
    )]
    StorageDenied {
        repo: String,
        key: String,
        detail: String,
    },

    #[error(
        "repository {repo}: bucket '{bucket}' does not exist ({detail}); create it, or fix the \
         repository URL, the endpoint or the region"
    )]
    BucketMissing {
        repo: String,
        bucket: String,
        detail: String,
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

    #[error("{key} is corrupt: checksum mismatch, expected {expected}, found {found}")]
    ChecksumMismatch {
        key: String,
        expected: String,
        found: String,
    },

    #[error(
        "WAL file {file} is already archived in {key} with a different content (stored {stored}, \
         new {new}): refusing to overwrite it; this suggests two clusters archive into the same \
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

    #[error(
        "repository identity {key} has format version {found}, this pg_strata reads version {supported}: \
         use a new stanza (strata.stanza) or a new repository for this version, and keep the version \
         that wrote it to restore from the old one"
    )]
    UnsupportedRepoFormat {
        key: String,
        found: u32,
        supported: u32,
    },

    #[error("{what} is not a WAL file name PostgreSQL would archive (expected e.g. 000000010000000000000001, 00000002.history)")]
    BadWalFileName { what: String },

    #[error("the backup was cancelled")]
    Cancelled,

    #[error("{key} is not a key pg_strata writes (it would leave the stanza or has an empty, '.' or '..' part)")]
    BadKey { key: String },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "stanza '{stanza}' does not exist in repository {repo}: check --repo/--stanza (or \
         strata.repo1/strata.stanza); a stanza is created by the first archived WAL file"
    )]
    StanzaMissing { repo: String, stanza: String },

    #[error(
        "backup '{label}' not found in {repo} stanza '{stanza}'; `strata info` lists the backups"
    )]
    BackupNotFound {
        label: String,
        repo: String,
        stanza: String,
    },

    #[error("{0}")]
    NoBackup(String),

    /// The cipher passphrase does not open the stanza's keyring; `context` names the stanza, the
    /// repository and where the passphrase comes from (empty where they are not known).
    #[error("cannot decrypt the repository key: wrong cipher passphrase{context}")]
    WrongCipherPass { context: String },

    /// The encryption settings do not fit the stanza (a passphrase missing or not wanted, encryption
    /// asked for an unencrypted stanza); the message says the fix. Never holds a secret.
    #[error("{0}")]
    Cipher(String),

    #[error("backup {label} cannot be restored: {reason}; choose another with --set (`strata info` lists them)")]
    ChainBroken { label: String, reason: String },

    #[error(
        "WAL file {file}, needed to make backup {label} consistent, is {how} in the archive ({repo} stanza \
         '{stanza}'): the backup cannot be restored; choose another with --set"
    )]
    WalMissing {
        file: String,
        label: String,
        how: String,
        repo: String,
        stanza: String,
    },

    #[error(
        "WAL file {file}, needed to recover past the end of backup {label}, is missing from the \
         archive ({repo} stanza '{stanza}') while later WAL is there: recovery would stop at it. \
         This backup restores only to its end: use --type immediate, choose a target before it, or \
         a newer backup with --set (strata.retention_archive expires the WAL after older backups)"
    )]
    WalGap {
        file: String,
        label: String,
        repo: String,
        stanza: String,
    },

    #[error("{what} {path} is not empty: restore into an empty or new directory, or add --delta to rewrite only the files that differ")]
    TargetNotEmpty { what: String, path: PathBuf },

    #[error("{0}")]
    ServerRunning(String),

    /// A restore target refused for safety (a system directory, overlapping the repository, someone
    /// else's, a link where a directory must be...).
    #[error("{0}")]
    TargetRefused(String),

    /// Another backup or claim holds what this one needs.
    #[error("{0}")]
    Busy(String),

    /// The cluster or the repository changed under a running operation (a timeline switch, a claim
    /// removed): running it again is the fix.
    #[error("{0}")]
    StateChanged(String),

    /// Input that is not what it claims to be (a WAL file of another cluster or the wrong size).
    #[error("{0}")]
    BadInput(String),

    /// Something pg_strata does not handle (another PostgreSQL major version, another catalog
    /// version's tablespace directory).
    #[error("{0}")]
    Unsupported(String),

    /// A defect of pg_strata (a thread panicked, a library failed where it cannot): report it.
    #[error("internal error: {0}")]
    Internal(String),

    /// An error of one of several repositories (`strata.repoN`): the same meaning as the error inside.
    #[error("repo{number}: {error}")]
    InRepo { number: u8, error: Box<Error> },
}

/// An error and its causes, as one line ("a: b: c"), skipping a cause already in its parent's text.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

/// The kinds of failure a caller acts on differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// A setting or argument is wrong: fix it.
    InvalidArgument,
    /// The repository, stanza or backup named does not exist.
    NotFound,
    /// The repository holds something damaged, missing or foreign: it needs attention.
    Corrupt,
    /// Reading or writing storage failed: perhaps transient.
    Io,
    /// Not now: another operation holds it, or the state does not allow it (a target in use).
    Busy,
    /// The target of a restore was refused.
    TargetRefused,
    Cancelled,
    Unsupported,
    Internal,
}

impl Error {
    /// This error, said of repository `number`.
    pub fn in_repo(self, number: u8) -> Error {
        match self {
            e @ Error::InRepo { .. } => e,
            e => Error::InRepo {
                number,
                error: Box::new(e),
            },
        }
    }

    /// The error inside `InRepo` (itself otherwise).
    pub fn inner(&self) -> &Error {
        match self {
            Error::InRepo { error, .. } => error.inner(),
            e => e,
        }
    }

    /// A storage failure of `repo` on `key`, with the whole chain of causes in one line.
    pub fn storage(repo: &str, key: &str, source: &object_store::Error) -> Error {
        Error::Storage {
            repo: repo.to_string(),
            key: key.to_string(),
            detail: error_chain(source),
        }
    }

    pub fn class(&self) -> ErrorClass {
        use Error::*;
        match self {
            InRepo { error, .. } => error.class(),
            BadSetting { .. }
            | UnknownSetting { .. }
            | BadWalFileName { .. }
            | BadInput(_)
            | WrongCipherPass { .. }
            | Cipher(_) => ErrorClass::InvalidArgument,
            RepoRootMissing { .. }
            | BucketMissing { .. }
            | StanzaMissing { .. }
            | BackupNotFound { .. }
            | NoBackup(_)
            | WalGap { .. } => ErrorClass::NotFound,
            CorruptObject { .. }
            | ChecksumMismatch { .. }
            | ArchiveMismatch { .. }
            | WrongCluster { .. }
            | StanzaIdentityMissing { .. }
            | ChainBroken { .. }
            | WalMissing { .. }
            // Keys come from the repository (users' keys are checked as settings or labels first).
            | BadKey { .. } => ErrorClass::Corrupt,
            Storage { .. } | StorageDenied { .. } | ReadFile { .. } | WriteFile { .. } | Io { .. } => {
                ErrorClass::Io
            }
            Busy(_) | StateChanged(_) | ServerRunning(_) => ErrorClass::Busy,
            TargetNotEmpty { .. } | TargetRefused(_) => ErrorClass::TargetRefused,
            Cancelled => ErrorClass::Cancelled,
            UnsupportedRepoFormat { .. } | Unsupported(_) => ErrorClass::Unsupported,
            Internal(_) => ErrorClass::Internal,
        }
    }

    /// The SQLSTATE the extension raises this error with (five characters, PostgreSQL's codes).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::InRepo { error, .. } => error.sqlstate(),
            Error::RepoRootMissing { .. }
            | Error::BucketMissing { .. }
            | Error::StanzaMissing { .. } => {
                "58P01" // undefined_file
            }
            Error::StorageDenied { .. } => "42501", // insufficient_privilege
            Error::WrongCipherPass { .. } => "28P01", // invalid_password
            Error::BackupNotFound { .. } => "42704", // undefined_object
            Error::NoBackup(_) | Error::StateChanged(_) => "55000", // object_not_in_prerequisite_state
            Error::WalGap { .. } => "55000",
            Error::WrongCluster { .. } | Error::StanzaIdentityMissing { .. } => "55000",
            Error::Busy(_) | Error::ServerRunning(_) => "55006", // object_in_use
            Error::TargetNotEmpty { .. } | Error::TargetRefused(_) => "55000",
            _ => match self.class() {
                ErrorClass::InvalidArgument => "22023", // invalid_parameter_value
                ErrorClass::Corrupt => "XX001",         // data_corrupted
                ErrorClass::Io => "58030",              // io_error
                ErrorClass::Cancelled => "57014",       // query_canceled
                ErrorClass::Unsupported => "0A000",     // feature_not_supported
                _ => "XX000",                           // internal_error
            },
        }
    }

    /// What to do about it, where the message itself does not already say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::InRepo { error, .. } => return error.hint(),
            Error::WrongCluster { .. } => {
                return Some("each cluster needs a stanza of its own: set strata.stanza to a new name")
            }
            Error::StanzaIdentityMissing { .. } => {
                return Some(
                    "put the repository back (mount it) if it was moved; archiving catches up by itself",
                )
            }
            Error::StateChanged(_) => return Some("fix the cause named in the message, then run it again"),
            Error::StorageDenied { .. } | Error::BucketMissing { .. } => return None,
            Error::Storage { repo, .. } if repo.starts_with("s3://") => {
                return Some(
                    "check that the S3 server is reachable (endpoint, network, TLS); transient \
                     failures were already retried within strata.repoN_s3_retry_timeout",
                )
            }
            _ => {}
        }
        match self.class() {
            ErrorClass::Corrupt => Some(
                "the repository is damaged or inconsistent: run `strata info`, and take a new full \
                 backup (SELECT backup_start('full')) once the cause is fixed",
            ),
            ErrorClass::Io => Some(
                "check that the repository is mounted, writable by the postgres user and not full",
            ),
            ErrorClass::Busy => Some("wait for the other operation to finish, then try again"),
            ErrorClass::Internal => Some("this is a pg_strata defect: please report it"),
            _ => None,
        }
    }

    /// The `strata` command's exit code for this error (documented in the README).
    pub fn exit_code(&self) -> i32 {
        match self.class() {
            ErrorClass::NotFound => 3,
            ErrorClass::Corrupt => 4,
            ErrorClass::TargetRefused | ErrorClass::Busy => 5,
            ErrorClass::Io => 6,
            _ => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_sqlstate_and_exit_code() {
        let corrupt = Error::CorruptObject {
            key: "main/backup/20261201-040000F/manifest.json".into(),
            reason: "not valid JSON".into(),
        };
        let cases: Vec<(Error, &str, i32)> = vec![
            (corrupt, "XX001", 4),
            (
                Error::ChainBroken {
                    label: "20261201-040000F_20261202-040000I".into(),
                    reason: "its full is missing".into(),
                },
                "XX001",
                4,
            ),
            (
                Error::StanzaMissing {
                    repo: "file:///r".into(),
                    stanza: "main".into(),
                },
                "58P01",
                3,
            ),
            (Error::RepoRootMissing { path: "/r".into() }, "58P01", 3),
            (
                Error::BackupNotFound {
                    label: "x".into(),
                    repo: "file:///r".into(),
                    stanza: "main".into(),
                },
                "42704",
                3,
            ),
            (Error::Busy("a backup runs".into()), "55006", 5),
            (
                Error::TargetNotEmpty {
                    what: "--pgdata".into(),
                    path: "/d".into(),
                },
                "55000",
                5,
            ),
            (
                Error::BadSetting {
                    name: "backup kind".into(),
                    value: "weekly".into(),
                    reason: "expected full, diff or incr".into(),
                },
                "22023",
                2,
            ),
            (Error::Cancelled, "57014", 2),
            (Error::Internal("a thread panicked".into()), "XX000", 2),
        ];
        for (e, sqlstate, code) in cases {
            assert_eq!(e.sqlstate(), sqlstate, "{e}");
            assert_eq!(e.exit_code(), code, "{e}");
        }
        assert!(Error::Internal("x".into())
            .hint()
            .unwrap()
            .contains("defect"));
    }
}
