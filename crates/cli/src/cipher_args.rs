//! The encryption settings of the CLI: the passphrase from `--cipher-pass-file PATH`, else the
//! `STRATA_REPO1_CIPHER_PASS` environment variable, else `strata.repo1_cipher_pass` of `--config`; the
//! cipher of a new stanza from `strata.repo1_cipher_type` of `--config` (only `archive-push` creates
//! stanzas). The passphrase is never printed.

use anyhow::{Context, Result};
use std::path::Path;
use strata_core::crypto::{CipherSettings, CipherType, Passphrase};

pub const PASS_ENV: &str = "STRATA_REPO1_CIPHER_PASS";

pub fn resolve(
    pass_file: Option<&Path>,
    file: &dyn Fn(&str) -> Option<String>,
) -> Result<CipherSettings> {
    let pass = match pass_file {
        Some(p) => Some(
            Passphrase::from_file(p)
                .with_context(|| format!("--cipher-pass-file {}", p.display()))?,
        ),
        None => match std::env::var(PASS_ENV) {
            Ok(v) => Some(Passphrase::new(v, PASS_ENV)?),
            Err(_) => match file("strata.repo1_cipher_pass") {
                Some(v) if !v.is_empty() => Some(Passphrase::new(
                    v.clone(),
                    "strata.repo1_cipher_pass in --config",
                )?),
                _ => None,
            },
        },
    };
    let kind = match file("strata.repo1_cipher_type") {
        Some(v) => Some(
            v.parse::<CipherType>()
                .map_err(|e| anyhow::anyhow!("strata.repo1_cipher_type in config: {e}"))?,
        ),
        None => None,
    };
    Ok(CipherSettings { kind, pass })
}

/// What `restore_command` needs to add for recovery's `archive-get` to open an encrypted stanza: the
/// passphrase file (absolute path) or the `--config` file that holds the passphrase. A passphrase from
/// the environment is not written anywhere: the server's environment must then hold it (said on stderr).
pub fn restore_command_option(
    args: &crate::repo_args::RepoArgs,
    config: &strata_core::config::RepoConfig,
) -> Result<Option<String>> {
    let quote = |p: &Path| -> Result<String> {
        let abs = std::path::absolute(p).with_context(|| p.display().to_string())?;
        Ok(format!(
            "'{}'",
            abs.display().to_string().replace('\'', "'\\''")
        ))
    };
    if let Some(p) = &args.cipher_pass_file {
        return Ok(Some(format!(" --cipher-pass-file {}", quote(p)?)));
    }
    if config.cipher.pass.is_none() {
        return Ok(None);
    }
    if std::env::var_os(PASS_ENV).is_none() {
        if let Some(c) = &args.config {
            return Ok(Some(format!(" --config {}", quote(c)?)));
        }
    }
    eprintln!(
        "strata: note: recovery's restore_command reads the cipher passphrase from {PASS_ENV}: set it \
         in the server's environment, or restore with --cipher-pass-file FILE"
    );
    Ok(None)
}
