//! `strata rekey`: rotates the keys of an encrypted stanza without rewriting it (see
//! `strata_core::crypto::keyring`). `--new-data-key` adds a data key that objects written from then on
//! use (older objects keep theirs, which stay in the keyring); `--new-cipher-pass-file FILE` seals the
//! keyring under a new passphrase, after which the current one no longer opens it. Both write one new
//! keyring generation; a crash leaves the old keyring or the new one in force, never neither.

use crate::repo_args::RepoArgs;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use strata_core::crypto::keyring;
use strata_core::crypto::Passphrase;
use strata_core::Repo;

#[derive(clap::Args)]
pub struct Args {
    /// File holding the new cipher passphrase (its first line)
    #[arg(long, value_name = "FILE")]
    pub new_cipher_pass_file: Option<PathBuf>,
    /// Add a data key, used for every object written from now on
    #[arg(long)]
    pub new_data_key: bool,
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub fn run(args: Args) -> Result<i32> {
    if args.new_cipher_pass_file.is_none() && !args.new_data_key {
        bail!("say what to rotate: --new-cipher-pass-file FILE and/or --new-data-key");
    }
    let new_pass = match &args.new_cipher_pass_file {
        Some(p) => Some(
            Passphrase::from_file(p)
                .with_context(|| format!("--new-cipher-pass-file {}", p.display()))?,
        ),
        None => None,
    };
    let config = args.repo.resolve()?;
    let repo = Repo::open_config(&config)?;
    let done = keyring::rotate(&repo, args.new_data_key, new_pass.as_ref())?;
    if let Some(key_id) = done.data_key {
        println!(
            "stanza {}: data key {key_id} added, used for new objects from now on",
            repo.stanza()
        );
    }
    if let Some(generation) = done.resealed {
        println!(
            "stanza {}: keyring sealed under the new passphrase (generation {generation}); the old \
             passphrase no longer opens it: update {} or the file {} names (one of the two) and \
             reload",
            repo.stanza(),
            repo.setting("cipher_pass"),
            repo.setting("cipher_pass_file"),
        );
    }
    Ok(0)
}
