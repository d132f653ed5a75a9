//! `backup_rekey()`: key rotation of an encrypted repository from SQL, as `strata rekey` does. The new
//! passphrase is read from a file on the server (`new_cipher_pass_file`), never passed as text: a
//! statement's text reaches the server log, `pg_stat_activity` and `pg_stat_statements`.
//!
//! Superuser only (checked here, beyond the strata_operator grant every function gets): choosing the
//! passphrase of the repository means being able to read all of it.

use pgrx::prelude::*;

/// Rotates the keys of repository `repo`'s stanza: `new_data_key` adds a data key that new objects use
/// from now on; `new_cipher_pass_file` seals the keyring under the passphrase that file's first line
/// holds (then point `strata.repoN_cipher_pass_file` at it, clearing `strata.repoN_cipher_pass` if
/// set, and reload: until then archiving into that repository fails and PostgreSQL keeps the WAL).
/// Returns what was done.
#[pg_extern(volatile)]
fn backup_rekey(
    repo: default!(i32, 1),
    new_data_key: default!(bool, false),
    new_cipher_pass_file: default!(Option<String>, "NULL"),
) -> String {
    // SAFETY: a plain catalog lookup of the current role, in a backend.
    if !unsafe { pg_sys::superuser() } {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "backup_rekey() is for superusers only",
            "Who chooses a repository's passphrase can read the whole repository."
        );
    }
    let number = u8::try_from(repo).unwrap_or(0);
    let new_pass = new_cipher_pass_file.map(|p| {
        strata_core::crypto::Passphrase::from_file(std::path::Path::new(&p))
            .unwrap_or_else(|e| crate::errors::raise("backup_rekey(): new_cipher_pass_file", e))
    });
    let done = crate::repo_gucs::repo(number)
        .and_then(|config| {
            let repo = strata_core::Repo::open_config(&config)?;
            strata_core::crypto::keyring::rotate(&repo, new_data_key, new_pass.as_ref())
        })
        .unwrap_or_else(|e| crate::errors::raise("backup_rekey() rotated nothing", e));
    let mut said = Vec::new();
    if let Some(id) = done.data_key {
        said.push(format!("data key {id} added, used for new objects"));
    }
    if let Some(g) = done.resealed {
        said.push(format!(
            "keyring generation {g} sealed under the new passphrase: set \
             strata.repo{number}_cipher_pass_file to the new file (and clear \
             strata.repo{number}_cipher_pass if it is set) and reload"
        ));
    }
    said.join("; ")
}
