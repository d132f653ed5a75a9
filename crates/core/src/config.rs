//! Settings shared by the extension and the CLI: the repository URL, the stanza, compression.
//!
//! The server reads them from `strata.*` GUCs; the CLI from flags, `STRATA_*` environment variables or a
//! postgresql.conf-style file whose `strata.*` lines are read (so the server's own postgresql.conf
//! configures the restore tool). Validation lives here so that both reject bad values the same way.
//! An S3 repository's own settings (endpoint, keys, retries) are in `s3`.

pub mod conf_file;
mod conf_lexer;
pub mod names;
pub mod pg_int;
pub mod repos;
pub mod s3;

use crate::compress::{CompressType, ZSTD_LEVELS};
use crate::{Error, Result};
pub use conf_file::{parse_conf, read_conf_file, ConfSettings};
pub use repos::{RepoSet, MAX_REPOS};
pub use s3::{ConditionalCreate, S3Options, UriStyle};
use std::path::PathBuf;

/// Where a repository lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoUrl {
    /// `file:///absolute/path`
    Local(PathBuf),
    /// `s3://bucket/prefix`: objects under `prefix/` (no leading or trailing '/'; empty for the
    /// bucket's root) of an S3 or S3-compatible bucket.
    S3 {
        bucket: String,
        prefix: String,
        options: S3Options,
    },
}

impl RepoUrl {
    /// Parses a repository URL: an absolute local path (`file:///...`) or an S3 bucket and prefix
    /// (`s3://bucket/prefix`, with default `S3Options`: set them with `S3Options::set`).
    pub fn parse(name: &str, value: &str) -> Result<RepoUrl> {
        let bad = |reason: &str| Error::BadSetting {
            name: name.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if value.is_empty() {
            return Err(bad(
                "it is empty; set it to a URL like file:///var/lib/strata",
            ));
        }
        if let Some(path) = value.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a file:// URL needs an absolute path, like file:///var/lib/strata",
                ));
            }
            if path.split('/').any(|c| c == "..") {
                return Err(bad("the path must not contain '..'"));
            }
            return Ok(RepoUrl::Local(PathBuf::from(path)));
        }
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = s3::parse_location(rest).map_err(|why| bad(&why))?;
            return Ok(RepoUrl::S3 {
                bucket,
                prefix,
                options: S3Options::default(),
            });
        }
        if value.starts_with('/') {
            return Err(bad(&format!("write it as a URL: file://{value}")));
        }
        if !value.contains("://") {
            return Err(bad(
                "relative paths are not allowed; use a URL like file:///var/lib/strata",
            ));
        }
        Err(bad(
            "unsupported URL scheme; use file:///absolute/path or s3://bucket/prefix",
        ))
    }

    /// The URL as the user wrote it (never holds a secret).
    pub fn display(&self) -> String {
        match self {
            RepoUrl::Local(p) => format!("file://{}", p.display()),
            RepoUrl::S3 { bucket, prefix, .. } if prefix.is_empty() => format!("s3://{bucket}"),
            RepoUrl::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

/// Checks a stanza name: it becomes a directory/prefix name in the repository.
pub fn check_stanza(value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !value.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::BadSetting {
            name: "strata.stanza".into(),
            value: value.into(),
            reason: "use 1 to 64 letters, digits, '_', '-' or '.', not starting with '.'".into(),
        })
    }
}

/// Checks a compression level for a compression type.
pub fn check_compress_level(kind: CompressType, level: i32) -> Result<()> {
    if kind == CompressType::Zstd && !ZSTD_LEVELS.contains(&level) {
        return Err(Error::BadSetting {
            name: "strata.compress_level".into(),
            value: level.to_string(),
            reason: format!(
                "zstd levels go from {} to {}",
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            ),
        });
    }
    Ok(())
}

/// Everything needed to reach a repository and write to it.
#[derive(Clone, Debug)]
pub struct RepoConfig {
    /// Its number, 1 to `MAX_REPOS` (`strata.repoN`).
    pub number: u8,
    pub repo: RepoUrl,
    pub stanza: String,
    pub compress_type: CompressType,
    pub compress_level: i32,
    /// Encryption (`crypto`): the cipher for a new stanza and the passphrase (never printed).
    pub cipher: crate::crypto::CipherSettings,
}

impl RepoConfig {
    pub fn new(
        repo: &str,
        stanza: &str,
        compress_type: CompressType,
        compress_level: i32,
    ) -> Result<RepoConfig> {
        let repo = RepoUrl::parse("strata.repo1", repo)?;
        check_stanza(stanza)?;
        check_compress_level(compress_type, compress_level)?;
        Ok(RepoConfig {
            number: 1,
            repo,
            stanza: stanza.to_string(),
            compress_type,
            compress_level,
            cipher: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_urls() {
        assert_eq!(
            RepoUrl::parse("r", "file:///var/lib/strata").unwrap(),
            RepoUrl::Local("/var/lib/strata".into())
        );
        for (v, why) in [
            ("file://var/lib", "absolute"),
            ("var/lib", "relative"),
            ("/var/lib", "file:///var/lib"),
            ("http://x", "unsupported"),
            ("s3://", "bucket"),
            ("s3://Bucket/p", "bucket"),
            ("s3://bu/p", "bucket"),
            ("s3://bucket/a//b", "empty"),
            ("s3://bucket/a/../b", ".."),
            ("s3://bucket/a/\u{7}", "control"),
            ("", "empty"),
            ("file:///a/../b", ".."),
        ] {
            let e = RepoUrl::parse("strata.repo1", v).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("strata.repo1"), "{v}: {e}");
        }
    }

    #[test]
    fn stanza_and_levels() {
        assert!(check_stanza("main").is_ok());
        assert!(check_stanza("../x").is_err());
        assert!(check_stanza("").is_err());
        assert!(check_compress_level(CompressType::Zstd, 25).is_err());
        assert!(check_compress_level(CompressType::Lz4, 25).is_ok());
    }
}
