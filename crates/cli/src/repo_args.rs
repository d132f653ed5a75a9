//! Repository options shared by every command: `--repo`/`--repo1` … `--repo4`, `--stanza`,
//! `--repo-option NAME=VALUE` (any `strata.*` setting, e.g. `repo2_s3_endpoint=http://…`), `--config`,
//! and `--repo-number N` to use one repository only. Every setting may also come from a `STRATA_*`
//! environment variable (the name without `strata.`, upper case: `STRATA_REPO2_S3_KEY_SECRET`) or from
//! a postgresql.conf-style file's `strata.*` lines. Precedence: flag, then environment, then config
//! file, then the built-in default. All of them feed one reader (`RepoSet::from_settings`), the same as
//! the server's.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strata_core::config::names::check_setting_name;
use strata_core::config::repos::{
    is_secret, parse_repo_number, repo_setting, CIPHER_SETTINGS, MAX_REPOS,
};
use strata_core::config::s3::S3_SETTINGS;
use strata_core::config::{read_conf_file, ConfSettings, RepoConfig, RepoSet};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct RepoArgs {
    /// Repository 1 URL, e.g. file:///var/lib/strata or s3://bucket/prefix
    #[arg(
        long,
        visible_alias = "repo1",
        env = "STRATA_REPO1",
        value_name = "URL"
    )]
    pub repo: Option<String>,
    /// Repository 2 URL
    #[arg(long, env = "STRATA_REPO2", value_name = "URL")]
    pub repo2: Option<String>,
    /// Repository 3 URL
    #[arg(long, env = "STRATA_REPO3", value_name = "URL")]
    pub repo3: Option<String>,
    /// Repository 4 URL
    #[arg(long, env = "STRATA_REPO4", value_name = "URL")]
    pub repo4: Option<String>,
    /// Use only this repository (1 to 4) of those configured [default: all, in order]
    #[arg(long, value_name = "N")]
    pub repo_number: Option<String>,
    /// Any strata.* setting as NAME=VALUE, e.g. repo2_s3_endpoint=http://127.0.0.1:9000 (repeatable;
    /// prefer STRATA_REPO2_S3_KEY_SECRET or --config for secrets: the command line is visible to others)
    #[arg(long, value_name = "NAME=VALUE")]
    pub repo_option: Vec<String>,
    /// Stanza (cluster name inside the repository) [default: main]
    #[arg(long, env = "STRATA_STANZA", value_name = "NAME")]
    pub stanza: Option<String>,
    /// A postgresql.conf-style file whose strata.* lines supply settings not given otherwise
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// File holding the cipher passphrase (its first line) of the encrypted repository that
    /// --repo-number names, else of repo1; any repository's: strata.repoN_cipher_pass_file or
    /// strata.repoN_cipher_pass (STRATA_REPON_CIPHER_PASS, --config)
    #[arg(long, env = "STRATA_CIPHER_PASS_FILE", value_name = "PATH")]
    pub cipher_pass_file: Option<PathBuf>,
    /// `--config` as read by this command: read once (with its includes and postgresql.auto.conf),
    /// its warnings said once.
    #[arg(skip)]
    pub config_read: std::sync::OnceLock<ConfSettings>,
}

/// Where a setting's value came from (earlier wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Flag,
    Env,
    File,
}

/// The settings of one command, resolved by name.
pub struct Settings {
    flags: BTreeMap<String, String>,
    file: ConfSettings,
}

impl Settings {
    /// Names where a value from `--config` came from, for an error about that value (the value
    /// itself may be in a file the operator did not think of: an include, postgresql.auto.conf).
    pub fn explain(&self, e: strata_core::Error) -> anyhow::Error {
        let name = match &e {
            strata_core::Error::BadSetting { name, .. } => name.clone(),
            _ => return e.into(),
        };
        match (self.lookup(&name), self.file.origins.get(&name)) {
            (Some((_, Source::File)), Some(origin)) => {
                anyhow::Error::new(e).context(format!("{name} is set at {origin}"))
            }
            _ => e.into(),
        }
    }

    /// A setting's value and where it came from (flag, environment, file).
    pub fn lookup(&self, name: &str) -> Option<(String, Source)> {
        let nonempty = |v: &String| !v.trim().is_empty();
        if let Some(v) = self.flags.get(name).filter(|v| nonempty(v)) {
            return Some((v.clone(), Source::Flag));
        }
        if let Some(short) = name.strip_prefix("strata.") {
            let var = format!("STRATA_{}", short.to_ascii_uppercase());
            if let Ok(v) = std::env::var(&var) {
                if !v.trim().is_empty() {
                    return Some((v, Source::Env));
                }
            }
        }
        self.file
            .values
            .get(name)
            .filter(|v| nonempty(v))
            .map(|v| (v.clone(), Source::File))
    }

    /// A setting's value. A passphrase (`_cipher_pass`) and a passphrase file (`_cipher_pass_file`)
    /// are one setting given two ways: the one from the earlier source hides the other (a
    /// `--cipher-pass-file` flag wins over the passphrase of `--config`); from the same source both
    /// are returned, and refused as ambiguous.
    pub fn get(&self, name: &str) -> Option<String> {
        let (value, source) = self.lookup(name)?;
        let sibling = if let Some(base) = name.strip_suffix("_cipher_pass_file") {
            Some(format!("{base}_cipher_pass"))
        } else {
            name.strip_suffix("_cipher_pass")
                .map(|base| format!("{base}_cipher_pass_file"))
        };
        match sibling.and_then(|s| self.lookup(&s)) {
            Some((_, other)) if other < source => None,
            _ => Some(value),
        }
    }
}

impl RepoArgs {
    /// The `strata.*` settings of `--config` (none without it).
    /// A name that is no setting is warned about, as PostgreSQL does for the same file (and
    /// pgBackRest for its own), and ignored: the server drops such a line too, so nothing may read it
    /// here; the rest of the file still applies.
    fn file_settings(&self) -> Result<ConfSettings> {
        let Some(p) = &self.config else {
            return Ok(Default::default());
        };
        if let Some(read) = self.config_read.get() {
            return Ok(read.clone());
        }
        let mut settings =
            read_conf_file(p).with_context(|| format!("reading --config {}", p.display()))?;
        settings
            .values
            .retain(|name, _| match check_setting_name(name) {
                Ok(()) => true,
                Err(e) => {
                    let origin = settings
                        .origins
                        .get(name)
                        .map_or("--config", String::as_str);
                    eprintln!("strata: WARNING: {origin}: {e}; ignored");
                    false
                }
            });
        Ok(self.config_read.get_or_init(|| settings).clone())
    }

    /// Every setting from flags, environment and `--config`.
    pub fn settings(&self) -> Result<Settings> {
        let mut flags = BTreeMap::new();
        for (n, v) in [
            (1, &self.repo),
            (2, &self.repo2),
            (3, &self.repo3),
            (4, &self.repo4),
        ] {
            if let Some(v) = v {
                flags.insert(format!("strata.repo{n}"), v.clone());
            }
        }
        if let Some(s) = &self.stanza {
            flags.insert("strata.stanza".into(), s.clone());
        }
        let file = self.file_settings()?;
        if let Some(p) = &self.cipher_pass_file {
            // --repo-number's repository, else the first configured one.
            let number = match &self.repo_number {
                Some(v) => parse_repo_number("--repo-number", v)?,
                None => (1..=MAX_REPOS)
                    .find(|n| {
                        let name = format!("strata.repo{n}");
                        flags.contains_key(&name)
                            || std::env::var(format!("STRATA_REPO{n}")).is_ok_and(|v| !v.is_empty())
                            || file.values.contains_key(&name)
                    })
                    .unwrap_or(1),
            };
            // Absolute: restore_command carries it to a server whose working directory differs.
            let abs = std::path::absolute(p)
                .with_context(|| format!("--cipher-pass-file {}", p.display()))?;
            flags.insert(
                repo_setting(number, "cipher_pass_file"),
                abs.display().to_string(),
            );
        }
        for o in &self.repo_option {
            // Without '=' nothing of it is shown: it may be a secret typed with ':'.
            let (k, v) = o.split_once('=').ok_or_else(|| {
                anyhow!("a --repo-option without '=' (not shown): expected NAME=VALUE")
            })?;
            let given = k.trim();
            // A name is letters, digits, _ and dots: anything else (a secret typed after ':' or a
            // space instead of '=') is not shown.
            if !given
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                bail!("a --repo-option whose name is not a setting name (not shown): expected NAME=VALUE");
            }
            let k = given.to_ascii_lowercase();
            let name = if k.starts_with("strata.") {
                k
            } else {
                format!("strata.{k}")
            };
            // The name only: a misspelt one may hold a secret.
            check_setting_name(&name).with_context(|| format!("--repo-option {given}=…"))?;
            flags.insert(name, v.to_string());
        }
        Ok(Settings { flags, file })
    }

    /// The retention policy of repository `number`: `overrides` (unnumbered setting name, flag value)
    /// first, then its settings (see `strata_core::config::repos::retention_policy`).
    pub fn retention_policy(
        &self,
        number: u8,
        overrides: &[(&str, Option<String>)],
    ) -> Result<strata_core::retention::Policy> {
        let settings = self.settings()?;
        let get = |name: &str| -> Option<String> {
            let unnumbered = name
                .strip_prefix(&format!("strata.repo{number}_"))
                .map(|s| format!("strata.{s}"));
            let key = unnumbered.as_deref().unwrap_or(name);
            overrides
                .iter()
                .find(|(n, _)| *n == key)
                .and_then(|(_, v)| v.clone())
                .or_else(|| settings.get(name))
        };
        strata_core::config::repos::retention_policy(number, &get).map_err(|e| settings.explain(e))
    }

    /// The repositories to use: every configured one, or `--repo-number N`'s.
    pub fn resolve_all(&self) -> Result<RepoSet> {
        let set = self.resolve_configured()?;
        let number = self
            .repo_number
            .as_deref()
            .map(|v| parse_repo_number("--repo-number", v))
            .transpose()?;
        Ok(set.select(number)?)
    }

    /// Every configured repository, whatever `--repo-number` says.
    pub fn resolve_configured(&self) -> Result<RepoSet> {
        let settings = self.settings()?;
        if (1..=MAX_REPOS).all(|n| settings.get(&format!("strata.repo{n}")).is_none()) {
            bail!(
                "no repository given: use --repo URL, STRATA_REPO1, or --config with strata.repo1"
            );
        }
        RepoSet::from_settings(&|n| settings.get(n)).map_err(|e| settings.explain(e))
    }

    /// One repository: `--repo-number N`'s, else the first configured (for commands that work on one).
    pub fn resolve(&self) -> Result<RepoConfig> {
        Ok(self.resolve_all()?.repos()[0].clone())
    }

    /// The options of `strata archive-get` that reach the same repositories, for restore_command:
    /// `--config` (absolute) when given, then every repository URL, the stanza and each non-secret
    /// setting as flags (S3 settings, the cipher type, a passphrase file's path). Secrets are never
    /// written: archive-get reads them from `--config`, from `STRATA_REPON_S3_KEY(_SECRET)`,
    /// `STRATA_REPON_CIPHER_PASS` or `AWS_*` in the server's environment. Returns the options and the
    /// secrets that came from flags or the environment (so the restored server will not have them).
    pub fn archive_get_options(&self, set: &RepoSet) -> Result<(String, Vec<String>)> {
        let settings = self.settings()?;
        let q = shell_quote;
        let mut out = Vec::new();
        if let Some(c) = &self.config {
            let abs =
                std::path::absolute(c).with_context(|| format!("--config {}", c.display()))?;
            out.push(format!("--config {}", q(&abs.display().to_string())));
        }
        let stanza = set.repos()[0].stanza.clone();
        out.push(format!("--stanza {}", q(&stanza)));
        let mut outside_secrets = Vec::new();
        for r in set.repos() {
            out.push(format!("--repo{} {}", r.number, q(&r.repo.display())));
            for name in S3_SETTINGS.iter().chain(CIPHER_SETTINGS) {
                let setting = repo_setting(r.number, name);
                let found = settings
                    .get(&setting)
                    .and_then(|_| settings.lookup(&setting));
                match found {
                    Some((_, src)) if is_secret(&setting) && src != Source::File => {
                        outside_secrets.push(setting)
                    }
                    Some(_) if is_secret(&setting) => {}
                    Some((v, _)) => {
                        // A passphrase file's path as this command resolved it: recovery runs
                        // archive-get in the restored data directory, not here.
                        let v = if name.ends_with("_file") && Path::new(v.trim()).is_relative() {
                            std::path::absolute(v.trim())
                                .with_context(|| format!("{setting} {v}"))?
                                .display()
                                .to_string()
                        } else {
                            v
                        };
                        out.push(format!(
                            "--repo-option {}",
                            q(&format!("{}={v}", setting.trim_start_matches("strata.")))
                        ))
                    }
                    None => {}
                }
            }
        }
        Ok((out.join(" "), outside_secrets))
    }
}

/// Quotes a word for the shell that runs restore_command.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `f` on every repository: the first error is returned after the others ran (with one
/// repository, its error as it is); the others' errors are printed on stderr, naming the repository.
pub fn for_each_repo(set: &RepoSet, mut f: impl FnMut(&RepoConfig) -> Result<()>) -> Result<()> {
    let several = set.repos().len() > 1;
    let mut first: Option<anyhow::Error> = None;
    for r in set.repos() {
        if let Err(e) = f(r) {
            if !several {
                return Err(e);
            }
            let e = e.context(format!("repo{} ({})", r.number, r.repo.display()));
            match first {
                None => first = Some(e),
                Some(_) => eprintln!("strata: error: {e:#}"),
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::compress::CompressType;

    fn args(repo: Option<&str>, stanza: Option<&str>, config: Option<PathBuf>) -> RepoArgs {
        RepoArgs {
            repo: repo.map(Into::into),
            stanza: stanza.map(Into::into),
            config,
            ..Default::default()
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

    #[test]
    fn several_repositories_and_what_restore_command_carries() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("postgresql.conf");
        std::fs::write(
            &conf,
            "strata.repo1 = 'file:///from/conf'\nstrata.repo2 = 's3://bucket-a/pg'\n\
             strata.repo2_s3_key = 'AKIDCONF'\nstrata.repo2_s3_key_secret = 'conf-secret'\n",
        )
        .unwrap();
        let mut a = args(None, None, Some(conf));
        a.repo_option = vec![
            "repo2_s3_endpoint=http://127.0.0.1:9000".into(),
            "strata.repo2_s3_uri_style=path".into(),
        ];
        let set = a.resolve_all().unwrap();
        assert_eq!(set.numbers(), "repo1, repo2");
        let (opts, outside) = a.archive_get_options(&set).unwrap();
        assert!(opts.contains("--repo2 's3://bucket-a/pg'"), "{opts}");
        assert!(
            opts.contains("--repo-option 'repo2_s3_endpoint=http://127.0.0.1:9000'"),
            "{opts}"
        );
        assert!(opts.contains("--config '"), "{opts}");
        assert!(
            !opts.contains("conf-secret") && !opts.contains("AKIDCONF"),
            "{opts}"
        );
        assert!(outside.is_empty(), "{outside:?}");
        a.repo_option.push("repo2_s3_key_secret=flag-secret".into());
        let (opts, outside) = a.archive_get_options(&set).unwrap();
        assert!(!opts.contains("flag-secret"), "{opts}");
        assert_eq!(outside, vec!["strata.repo2_s3_key_secret".to_string()]);
        // A relative passphrase file goes into restore_command absolute (recovery runs elsewhere).
        a.repo_option
            .push("repo2_cipher_pass_file=keys/two.pass".into());
        let (opts, _) = a.archive_get_options(&set).unwrap();
        let abs = std::env::current_dir().unwrap().join("keys/two.pass");
        assert!(
            opts.contains(&format!("repo2_cipher_pass_file={}", abs.display())),
            "{opts}"
        );
        a.repo_option.pop();
        a.repo_number = Some("2".into());
        assert_eq!(a.resolve_all().unwrap().numbers(), "repo2");
        assert_eq!(a.resolve().unwrap().number, 2);
        a.repo_number = Some("3".into());
        assert!(a
            .resolve_all()
            .unwrap_err()
            .to_string()
            .contains("strata.repo3"));
        let e = RepoArgs {
            repo_option: vec!["repo1_s3_key_secret".into()],
            ..Default::default()
        }
        .settings()
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("NAME=VALUE"), "{e}");
    }

    #[test]
    fn a_misspelt_repo_option_is_refused_naming_it_and_the_nearest_setting_without_its_value() {
        let e = RepoArgs {
            repo: Some("file:///r".into()),
            repo_option: vec!["Repo1_Cipher_Pas=hunter2-secret".into()],
            ..Default::default()
        }
        .settings()
        .err()
        .unwrap();
        let text = format!("{e:#}");
        assert!(text.contains("--repo-option Repo1_Cipher_Pas"), "{text}");
        assert!(
            text.contains("did you mean strata.repo1_cipher_pass?"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        let e = RepoArgs {
            repo_option: vec!["repo1_cipher_pas:hunter3-secret".into()],
            ..Default::default()
        }
        .settings()
        .err()
        .unwrap();
        assert!(!format!("{e:#}").contains("hunter3"), "{e:#}");
        for typo in [
            "repo2_s3_key_secret:wJalrXUt/K7MDENG==",
            "repo2_s3_key_secret wJalrXUt/K7MDENG=",
        ] {
            let e = RepoArgs {
                repo_option: vec![typo.into()],
                ..Default::default()
            }
            .settings()
            .err()
            .unwrap();
            assert!(!format!("{e:#}").contains("wJalr"), "{e:#}");
        }
        // Names are case-insensitive, as in PostgreSQL.
        let ok = RepoArgs {
            repo_option: vec!["STRATA.Repo2_S3_URI_Style=path".into()],
            ..Default::default()
        }
        .settings()
        .unwrap();
        assert_eq!(ok.get("strata.repo2_s3_uri_style").as_deref(), Some("path"));
    }

    #[test]
    fn values_from_config_are_read_as_the_server_reads_them_and_errors_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("postgresql.conf");
        std::fs::write(
            &conf,
            "strata.repo1 = 'file:///r'\nstrata.compress_type = 'Zstd'\n\
             strata.compress_level = 0x2\ninclude 'more.conf'\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("more.conf"),
            "strata.retention_full = 1.6\n",
        )
        .unwrap();
        let a = args(None, None, Some(conf.clone()));
        let set = a.resolve_all().unwrap();
        assert_eq!(set.repos()[0].compress_level, 2);
        assert_eq!(a.retention_policy(1, &[]).unwrap().full, Some(2));
        std::fs::write(
            dir.path().join("more.conf"),
            "\nstrata.compress_level = 'high'\n",
        )
        .unwrap();
        // A new command reads the file again (one command reads it once).
        let a = args(None, None, Some(conf.clone()));
        let e = format!("{:#}", a.resolve_all().unwrap_err());
        assert!(
            e.contains(&format!(
                "strata.compress_level is set at {}:2",
                dir.path().join("more.conf").display()
            )),
            "{e}"
        );
    }
}
