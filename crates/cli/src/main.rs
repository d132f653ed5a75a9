//! `strata`, pg_strata's command-line tool: argument parsing and output only; the work is done by
//! `strata_core`. Exit codes: 0 success, 1 "not found" for archive-get (normal during recovery),
//! 2 any error (with a message on stderr).

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
    /// Fetch an archived WAL file into DESTPATH (for restore_command). Exit 1 when it is not archived.
    ArchiveGet(commands::archive_get::Args),
    /// Archive WAL files from a path (the extension's archiver does this inside the server; this command
    /// is for archive_command set-ups and benchmarks).
    ArchivePush(commands::archive_push::Args),
    /// Show the stanza's cluster, WAL archive and backups.
    Info(commands::info::Args),
    /// Restore a backup into a data directory (server down), ready for point-in-time recovery.
    Restore(commands::restore::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ArchiveGet(args) => commands::archive_get::run(args),
        Command::ArchivePush(args) => commands::archive_push::run(args),
        Command::Info(args) => commands::info::run(args),
        Command::Restore(args) => commands::restore::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("strata: error: {e:#}");
            std::process::exit(2);
        }
    }
}
