//! The encryption settings of the CLI: the passphrase from `--cipher-pass-file PATH`, else the
//! `STRATA_REPO1_CIPHER_PASS` environment variable, else `strata.repo1_cipher_pass` of `--config`; the
//! cipher of a new stanza from `strata.repo1_cipher_type` of `--config` (only `archive-push` creates
//! stanzas). The passphrase is never printed.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use strata_core::crypto::{CipherSettings, CipherType, Passphrase};

pub const PASS_ENV: &str = "STRATA_REPO1_CIPHER_PASS";

pub fn resolve(
    pass_file: Option<&Path>,
    file: &BTreeMap<String, String>,
) -> Result<CipherSettings> {
    let pass = match pass_file {
        Some(p) => Some(
            Passphrase::from_file(p)
                .with_context(|| format!("--cipher-pass-file {}", p.display()))?,
        ),
        None => match std::env::var(PASS_ENV) {
            Ok(v) => Some(Passphrase::new(v, PASS_ENV)?),
            Err(_) => match file.get("strata.repo1_cipher_pass") {
                Some(v) if !v.is_empty() => Some(Passphrase::new(
                    v.clone(),
                    "strata.repo1_cipher_pass in --config",
                )?),
                _ => None,
            },
        },
    };
    let kind = match file.get("strata.repo1_cipher_type") {
        Some(v) => Some(
            v.parse::<CipherType>()
                .map_err(|e| anyhow::anyhow!("strata.repo1_cipher_type in config: {e}"))?,
        ),
        None => None,
    };
    Ok(CipherSettings { kind, pass })
}
