//! `strata`, pg_strata's command-line tool: argument parsing and output only; the work is done by
//! `strata_core`. Exit codes (a message on stderr for every error):
//!
//! - 0 success; 1 archive-get: the file is not archived (normal during recovery)
//! - 2 an error not listed below (a bad argument among them; archive-get: every error, except in
//!   archive recovery, where it is 200 so that PostgreSQL stops instead of ending recovery early —
//!   see `commands::archive_get`)
//! - 3 the repository, stanza or backup named does not exist
//! - 4 the repository is damaged or inconsistent (a corrupt object, a broken chain, missing WAL,
//!   another cluster's stanza)
//! - 5 a restore target was refused (not empty, used by a running server, unsafe), or another
//!   operation holds what was asked for
//! - 6 reading or writing storage failed (perhaps transient: retry)

mod commands;
mod repo_args;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "pg_strata: PostgreSQL backups, WAL archive and restore"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pin a backup (kept whatever the retention policy says) or unpin it, with a note.
    Annotate(commands::annotate::Args),
    /// Fetch an archived WAL file into DESTPATH (for restore_command). Exit 1 when it is not archived.
    ArchiveGet(commands::archive_get::Args),
    /// Archive WAL files from a path (the extension's archiver does this inside the server; this command
    /// is for archive_command set-ups and benchmarks).
    ArchivePush(commands::archive_push::Args),
    /// Check the repository's health: reachable and writable, the stanza, backup ages, usage, the last
    /// verification. Exit 0 all ok, 1 warnings, 2 errors.
    Check(commands::check::Args),
    /// Remove the backups the retention policy does not keep, and the WAL no kept backup needs.
    Expire(commands::expire::Args),
    /// Show the stanza's cluster, WAL archive and backups.
    Info(commands::info::Args),
    /// Print the repository's metrics in the Prometheus text format (for node_exporter's textfile
    /// collector).
    Metrics(commands::metrics::Args),
    /// Rotate the keys of an encrypted stanza: a new passphrase (--new-cipher-pass-file) and/or a new
    /// data key for new objects (--new-data-key), without rewriting the repository.
    Rekey(commands::rekey::Args),
    /// Restore a backup into a data directory (server down), ready for point-in-time recovery.
    Restore(commands::restore::Args),
    /// Read back every object of the stanza (or one backup and its chain) and check it: exit 0 all
    /// good, 1 warnings only, 2 errors found, 3 could not run.
    Verify(commands::verify::Args),
}

fn main() {
    let cli = Cli::parse();
    // restore_command's contract: 0 restored, 1 not archived, anything else an error.
    let fixed_error_code = matches!(cli.command, Command::ArchiveGet(_));
    let result = match cli.command {
        Command::Annotate(args) => commands::annotate::run(args),
        Command::ArchiveGet(args) => commands::archive_get::run(args),
        Command::ArchivePush(args) => commands::archive_push::run(args),
        Command::Check(args) => commands::check::run(args),
        Command::Expire(args) => commands::expire::run(args),
        Command::Info(args) => commands::info::run(args),
        Command::Metrics(args) => commands::metrics::run(args),
        Command::Rekey(args) => commands::rekey::run(args),
        Command::Restore(args) => commands::restore::run(args),
        Command::Verify(args) => commands::verify::run(args),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: error: {}", error_chain(&e));
            match e.downcast_ref::<strata_core::Error>() {
                Some(e) if !fixed_error_code => e.exit_code(),
                // archive-get's own codes say what recovery should do; an error is a failure.
                _ if fixed_error_code => commands::archive_get::failure_code(2),
                _ => 2,
            }
        }
    };
    std::process::exit(code);
}

/// An error and its causes, each said once: many errors already include their cause's text (`cannot
/// read FILE: No such file or directory`), which `{:#}` would repeat.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
