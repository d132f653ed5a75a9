//! Repository options shared by every command: `--repo`, `--stanza`, `--config`, with the same settings
//! from `STRATA_*` environment variables or from a postgresql.conf-style file's `strata.*` lines.
//! Precedence: flag, then environment, then config file, then the built-in default.

use anyhow::{Context, Result};
use std::path::PathBuf;
use strata_core::compress::CompressType;
use strata_core::config::{read_conf_file, RepoConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct RepoArgs {
    /// Repository URL, e.g. file:///var/lib/strata
    #[arg(long, env = "STRATA_REPO1", value_name = "URL")]
    pub repo: Option<String>,
    /// Stanza (cluster name inside the repository) [default: main]
    #[arg(long, env = "STRATA_STANZA", value_name = "NAME")]
    pub stanza: Option<String>,
    /// A postgresql.conf-style file whose strata.* lines supply settings not given otherwise
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// File holding the repository cipher passphrase (its first line; encrypted repositories; or
    /// STRATA_REPO1_CIPHER_PASS, or strata.repo1_cipher_pass in --config)
    #[arg(long, env = "STRATA_CIPHER_PASS_FILE", value_name = "PATH")]
    pub cipher_pass_file: Option<PathBuf>,
}

impl RepoArgs {
    /// The `strata.*` settings of `--config` (none without it).
    pub fn settings(&self) -> Result<std::collections::BTreeMap<String, String>> {
        Ok(match &self.config {
            Some(p) => {
                read_conf_file(p).with_context(|| format!("reading --config {}", p.display()))?
            }
            None => Default::default(),
        })
    }

    /// The retention policy: `overrides` (setting name, flag value) first, then `--config`'s lines.
    pub fn retention_policy(
        &self,
        overrides: &[(&str, Option<String>)],
    ) -> Result<strata_core::retention::Policy> {
        let file = self.settings()?;
        Ok(strata_core::retention::Policy::from_settings(|name| {
            overrides
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.clone())
                .or_else(|| file.get(name).cloned())
        })?)
    }

    /// Resolves the repository configuration.
    pub fn resolve(&self) -> Result<RepoConfig> {
        let file = self.settings()?;
        let repo = self.repo.clone().or_else(|| file.get("strata.repo1").cloned()).ok_or_else(|| {
            anyhow::anyhow!("no repository given: use --repo URL, STRATA_REPO1, or --config with strata.repo1")
        })?;
        let stanza = self
            .stanza
            .clone()
            .or_else(|| file.get("strata.stanza").cloned())
            .unwrap_or_else(|| "main".into());
        let compress_type: CompressType = match file.get("strata.compress_type") {
            Some(v) => v
                .parse()
                .map_err(|e: String| anyhow::anyhow!("strata.compress_type in config: {e}"))?,
            None => CompressType::Zstd,
        };
        let compress_level = match file.get("strata.compress_level") {
            Some(v) => v.parse().with_context(|| {
                format!("strata.compress_level = '{v}' in config is not a number")
            })?,
            None => 3,
        };
        let mut config = RepoConfig::new(&repo, &stanza, compress_type, compress_level)?;
        config.cipher = crate::cipher_args::resolve(self.cipher_pass_file.as_deref(), &file)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(repo: Option<&str>, stanza: Option<&str>, config: Option<PathBuf>) -> RepoArgs {
        RepoArgs {
            repo: repo.map(Into::into),
            stanza: stanza.map(Into::into),
            config,
            cipher_pass_file: None,
        }
    }

    #[test]
    fn flags_win_over_the_config_file_which_fills_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("postgresql.conf");
        std::fs::write(
            &conf,
            "strata.repo1 = 'file:///from/conf'\nstrata.stanza = 'confstanza'\nstrata.compress_type = 'lz4'\n",
        )
        .unwrap();
        let c = args(None, None, Some(conf.clone())).resolve().unwrap();
        assert_eq!(c.repo.display(), "file:///from/conf");
        assert_eq!(c.stanza, "confstanza");
        assert_eq!(c.compress_type, CompressType::Lz4);
        let c = args(Some("file:///flag"), Some("s"), Some(conf))
            .resolve()
            .unwrap();
        assert_eq!(
            (c.repo.display().as_str(), c.stanza.as_str()),
            ("file:///flag", "s")
        );
    }

    #[test]
    fn missing_or_bad_settings_are_clear_errors() {
        let e = args(None, None, None).resolve().unwrap_err().to_string();
        assert!(e.contains("--repo URL"), "{e}");
        let e = args(Some("relative/x"), None, None)
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("relative paths are not allowed"), "{e}");
        let e = args(Some("file:///x"), None, Some("/nonexistent/pg.conf".into()))
            .resolve()
            .unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/pg.conf"), "{e:#}");
    }
}
