//! Several repositories at once: `strata.repo1` … `strata.repo4`, any mix of local and S3, each with its
//! own S3 settings (`strata.repoN_s3_*`) and retention policy (`strata.repoN_retention_*`; repo1's are
//! also the unnumbered `strata.retention_*`). The stanza and compression are shared.
//!
//! One reader for every source: the server's GUCs, the CLI's flags, `STRATA_*` environment variables and
//! `--config` files all come down to a `name -> value` function, so every one of them accepts the same
//! names and refuses bad values the same way. Secrets (`_s3_key`, `_s3_key_secret`) are read like the
//! rest but never printed: `is_secret` tells writers of settings (restore_command) to leave them out.

use super::s3::S3_SETTINGS;
use super::{check_compress_level, check_stanza, RepoConfig, RepoUrl, S3Options};
use crate::compress::CompressType;
use crate::{Error, Result};

/// `strata.repo1` … `strata.repo4`.
pub const MAX_REPOS: u8 = 4;

/// The retention settings a repository has its own copy of (`strata.repoN_retention_*`).
pub const RETENTION_SETTINGS: &[&str] = &[
    "retention_full",
    "retention_full_type",
    "retention_diff",
    "retention_window",
    "retention_min_full",
    "retention_archive",
    "retention_archive_type",
];

/// The encryption settings of each repository (`strata.repoN_cipher_*`): the cipher of a stanza created
/// from then on, and its passphrase, given as the value or as a file whose first line it is.
pub const CIPHER_SETTINGS: &[&str] = &["cipher_type", "cipher_pass", "cipher_pass_file"];

/// The configured repositories, in the order of their numbers (never empty).
#[derive(Clone, Debug)]
pub struct RepoSet {
    repos: Vec<RepoConfig>,
}

/// Whether a setting holds a secret (never printed, never written into restore_command).
pub fn is_secret(name: &str) -> bool {
    // `strata.repo1_s3_key`, `repo1_s3_key_secret`, `s3_key`: what follows the last `s3_`.
    matches!(
        name.rsplit_once("s3_").map(|(_, t)| t),
        Some("key" | "key_secret")
    ) || name.ends_with("cipher_pass")
}

/// The name of a per-repository setting: `strata.repo2_s3_endpoint` for (2, "s3_endpoint").
pub fn repo_setting(number: u8, name: &str) -> String {
    format!("strata.repo{number}_{name}")
}

/// Parses `1`..`4` (also `repo2`), for `--repo-number` and the like.
pub fn parse_repo_number(what: &str, value: &str) -> Result<u8> {
    let v = value.trim();
    let v = v.strip_prefix("repo").unwrap_or(v);
    v.parse::<u8>()
        .ok()
        .filter(|n| (1..=MAX_REPOS).contains(n))
        .ok_or_else(|| Error::BadSetting {
            name: what.to_string(),
            value: value.to_string(),
            reason: format!("expected a repository number from 1 to {MAX_REPOS}"),
        })
}

impl RepoSet {
    /// Reads the repositories from settings by name (absent or empty: unset). An error when none is set
    /// or a value is bad, naming the setting.
    pub fn from_settings(get: &dyn Fn(&str) -> Option<String>) -> Result<RepoSet> {
        let get = |n: &str| get(n).filter(|v| !v.trim().is_empty());
        let stanza = get("strata.stanza").unwrap_or_else(|| "main".into());
        check_stanza(&stanza)?;
        let compress_type: CompressType = match get("strata.compress_type") {
            Some(v) => v.trim().parse().map_err(|e: String| Error::BadSetting {
                name: "strata.compress_type".into(),
                value: v.clone(),
                reason: e,
            })?,
            None => CompressType::Zstd,
        };
        let compress_level = match get("strata.compress_level") {
            Some(v) => super::pg_int::parse_pg_int(&v)
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| Error::BadSetting {
                    name: "strata.compress_level".into(),
                    value: v.clone(),
                    reason: "not a number".into(),
                })?,
            None => 3,
        };
        check_compress_level(compress_type, compress_level)?;
        let mut repos = Vec::new();
        for number in 1..=MAX_REPOS {
            let name = format!("strata.repo{number}");
            let Some(url) = get(&name) else { continue };
            let mut repo = RepoUrl::parse(&name, url.trim())?;
            if let RepoUrl::S3 { options, .. } = &mut repo {
                *options = s3_options(number, &get)?;
            }
            repos.push(RepoConfig {
                number,
                repo,
                stanza: stanza.clone(),
                compress_type,
                compress_level,
                cipher: cipher_settings(number, &get)?,
            });
        }
        if repos.is_empty() {
            return Err(Error::BadSetting {
                name: "strata.repo1".into(),
                value: String::new(),
                reason: "no repository is set; set strata.repo1 (e.g. file:///var/lib/strata or \
                         s3://bucket/prefix)"
                    .into(),
            });
        }
        Ok(RepoSet { repos })
    }

    /// One repository (tests, and callers that built a `RepoConfig` themselves).
    pub fn single(config: RepoConfig) -> RepoSet {
        RepoSet {
            repos: vec![config],
        }
    }

    /// Overrides the compression of every repository (the CLI's `--compress-type`/`--compress-level`).
    pub fn set_compression(&mut self, kind: Option<CompressType>, level: Option<i32>) {
        for r in &mut self.repos {
            if let Some(k) = kind {
                r.compress_type = k;
            }
            if let Some(l) = level {
                r.compress_level = l;
            }
        }
    }

    pub fn repos(&self) -> &[RepoConfig] {
        &self.repos
    }

    /// Repository `number`, or an error saying it is not configured.
    pub fn get(&self, number: u8) -> Result<&RepoConfig> {
        self.repos
            .iter()
            .find(|r| r.number == number)
            .ok_or_else(|| Error::BadSetting {
                name: format!("strata.repo{number}"),
                value: String::new(),
                reason: format!(
                    "repository {number} is not configured (configured: {})",
                    self.numbers()
                ),
            })
    }

    /// Only repository `number` when given, else all of them.
    pub fn select(self, number: Option<u8>) -> Result<RepoSet> {
        match number {
            None => Ok(self),
            Some(n) => Ok(RepoSet::single(self.get(n)?.clone())),
        }
    }

    /// "repo1, repo2", for messages.
    pub fn numbers(&self) -> String {
        self.repos
            .iter()
            .map(|r| format!("repo{}", r.number))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The encryption settings of repository `number`: `strata.repoN_cipher_type` (absent: not said, and a
/// new stanza is encrypted when a passphrase is given), the passphrase from `strata.repoN_cipher_pass_file`
/// (its first line) or `strata.repoN_cipher_pass`; both at once is refused as ambiguous.
pub fn cipher_settings(
    number: u8,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::crypto::CipherSettings> {
    use crate::crypto::{CipherSettings, CipherType, Passphrase};
    let type_name = repo_setting(number, "cipher_type");
    let kind = match get(&type_name) {
        Some(v) => Some(
            v.trim()
                .parse::<CipherType>()
                .map_err(|reason| Error::BadSetting {
                    name: type_name.clone(),
                    value: v.clone(),
                    reason,
                })?,
        ),
        None => None,
    };
    let pass_name = repo_setting(number, "cipher_pass");
    let file_name = repo_setting(number, "cipher_pass_file");
    // A passphrase that cannot be had is this repository's error, said when it is used: the others
    // keep working (a restore or archive-get from another repository, say).
    let (pass, pass_error) = match (get(&file_name), get(&pass_name)) {
        (Some(_), Some(_)) => (
            None,
            Some(format!(
                "{file_name} and {pass_name} are both set: give the passphrase one way only \
                 (clear {pass_name} when moving to a passphrase file)"
            )),
        ),
        (Some(path), None) => {
            let path = std::path::PathBuf::from(path.trim());
            match Passphrase::from_file(&path) {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(format!("{file_name}: {e}"))),
            }
        }
        (None, Some(text)) => (Some(Passphrase::new(text, &pass_name)?), None),
        (None, None) => (None, None),
    };
    Ok(CipherSettings {
        kind,
        pass,
        pass_error,
    })
}

fn s3_options(number: u8, get: &dyn Fn(&str) -> Option<String>) -> Result<S3Options> {
    let mut options = S3Options::default();
    for name in S3_SETTINGS {
        let setting = repo_setting(number, name);
        if let Some(v) = get(&setting) {
            options.set(&setting, &v)?;
        }
    }
    Ok(options)
}

/// The retention policy of repository `number`: its `strata.repoN_retention_*` settings; repo1's are
/// the unnumbered `strata.retention_*` (the server defines no `strata.repo1_retention_*`: reading one
/// here would let the CLI apply a policy the server does not).
pub fn retention_policy(
    number: u8,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::retention::Policy> {
    let get = |n: &str| get(n).filter(|v| !v.trim().is_empty());
    crate::retention::Policy::from_settings(|name| {
        let short = name.strip_prefix("strata.").unwrap_or(name);
        if number == 1 {
            get(name)
        } else {
            get(&repo_setting(number, short))
        }
    })
    .map_err(|e| match e {
        Error::BadSetting {
            name,
            value,
            reason,
        } if number != 1 => Error::BadSetting {
            name: repo_setting(number, name.strip_prefix("strata.").unwrap_or(&name)),
            value,
            reason,
        },
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn repositories_are_read_in_order_with_their_own_s3_settings() {
        let s = set(&[
            ("strata.repo1", "file:///var/lib/strata"),
            ("strata.repo3", "s3://bucket/pg"),
            ("strata.repo3_s3_endpoint", "http://127.0.0.1:9000"),
            ("strata.repo3_s3_key_secret", "sekrit"),
            ("strata.repo3_s3_key", "AKID"),
            (
                "strata.repo1_s3_endpoint",
                "http://ignored-for-a-local-repo:1",
            ),
            ("strata.stanza", "db1"),
        ]);
        let r = RepoSet::from_settings(&|n| s.get(n).cloned()).unwrap();
        assert_eq!(r.numbers(), "repo1, repo3");
        let RepoUrl::S3 { options, .. } = &r.get(3).unwrap().repo else {
            panic!()
        };
        assert_eq!(options.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(options.key_secret.as_deref(), Some("sekrit"));
        assert_eq!(r.get(3).unwrap().stanza, "db1");
        let e = r.get(2).unwrap_err().to_string();
        assert!(
            e.contains("strata.repo2") && e.contains("repo1, repo3"),
            "{e}"
        );
        assert_eq!(r.select(Some(3)).unwrap().numbers(), "repo3");
        assert!(
            format!("{:?}", RepoSet::from_settings(&|n| s.get(n).cloned()))
                .find("sekrit")
                .is_none()
        );
    }

    #[test]
    fn none_set_or_a_bad_value_is_refused_naming_the_setting() {
        let e = RepoSet::from_settings(&|_| None).unwrap_err().to_string();
        assert!(e.contains("strata.repo1"), "{e}");
        let s = set(&[
            ("strata.repo2", "s3://b-1/x"),
            ("strata.repo2_s3_uri_style", "odd"),
        ]);
        let e = RepoSet::from_settings(&|n| s.get(n).cloned())
            .unwrap_err()
            .to_string();
        assert!(e.contains("strata.repo2_s3_uri_style"), "{e}");
        assert_eq!(parse_repo_number("--repo-number", "repo2").unwrap(), 2);
        assert!(parse_repo_number("--repo-number", "5").is_err());
        assert!(is_secret("strata.repo4_s3_key") && is_secret("strata.repo1_s3_key_secret"));
        assert!(!is_secret("strata.repo1_s3_endpoint"));
        assert!(is_secret("s3_key") && is_secret("s3_key_secret") && !is_secret("s3_region"));
    }

    #[test]
    fn retention_is_per_repository_and_unnumbered_means_repo1() {
        let s = set(&[
            ("strata.retention_full", "2"),
            ("strata.repo2_retention_full", "5"),
            ("strata.repo3_retention_full_type", "weekly"),
        ]);
        let get = |n: &str| s.get(n).cloned();
        assert_eq!(retention_policy(1, &get).unwrap().full, Some(2));
        assert_eq!(retention_policy(2, &get).unwrap().full, Some(5));
        assert!(!retention_policy(4, &get).unwrap().is_set());
        let e = retention_policy(3, &get).unwrap_err().to_string();
        assert!(e.contains("strata.repo3_retention_full_type"), "{e}");
    }

    #[test]
    fn each_repository_has_its_own_cipher_settings() {
        use crate::crypto::{CipherType, Passphrase};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass");
        std::fs::write(&file, "from-a-file\nignored second line\n").unwrap();
        let s = set(&[
            ("strata.repo1", "file:///a"),
            ("strata.repo2", "file:///b"),
            ("strata.repo3", "file:///c"),
            ("strata.repo2_cipher_type", "aes-256-gcm"),
            ("strata.repo2_cipher_pass", "two-pass"),
            ("strata.repo3_cipher_pass_file", file.to_str().unwrap()),
        ]);
        let r = RepoSet::from_settings(&|n| s.get(n).cloned()).unwrap();
        assert_eq!(r.get(1).unwrap().cipher, Default::default());
        let two = &r.get(2).unwrap().cipher;
        assert_eq!(two.kind, Some(CipherType::Aes256Gcm));
        assert_eq!(
            two.pass,
            Some(Passphrase::new("two-pass".into(), "t").unwrap())
        );
        let three = &r.get(3).unwrap().cipher;
        assert_eq!(
            (three.kind, three.pass.clone()),
            (
                None,
                Some(Passphrase::new("from-a-file".into(), "t").unwrap())
            )
        );
        assert!(!format!("{r:?}").contains("two-pass"));
        assert!(
            is_secret("strata.repo2_cipher_pass") && !is_secret("strata.repo2_cipher_pass_file")
        );

        let mut both = s.clone();
        both.insert("strata.repo3_cipher_pass".into(), "x".into());
        // The repository's own error, when it is used; the set itself is read.
        let r = RepoSet::from_settings(&|n| both.get(n).cloned()).unwrap();
        let e = r.get(3).unwrap().cipher.pass_error.clone().unwrap();
        assert!(
            e.contains("strata.repo3_cipher_pass_file") && e.contains("one way only"),
            "{e}"
        );
        assert_eq!(r.get(2).unwrap().cipher.pass_error, None);
        let mut bad = s.clone();
        bad.insert("strata.repo2_cipher_type".into(), "rot13".into());
        let e = RepoSet::from_settings(&|n| bad.get(n).cloned())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("strata.repo2_cipher_type") && e.contains("aes-256-gcm"),
            "{e}"
        );
        let mut missing = s;
        missing.insert(
            "strata.repo3_cipher_pass_file".into(),
            "/nonexistent/pass".into(),
        );
        let r = RepoSet::from_settings(&|n| missing.get(n).cloned()).unwrap();
        let e = r.get(3).unwrap().cipher.pass_error.clone().unwrap();
        // Named by its setting; the path is not shown (it may be a passphrase put there).
        assert!(
            e.contains("strata.repo3_cipher_pass_file")
                && e.contains("no file at")
                && !e.contains("/nonexistent/pass"),
            "{e}"
        );
    }
}
