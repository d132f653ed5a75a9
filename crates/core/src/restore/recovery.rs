//! The files that make `pg_ctl start` recover a restored backup: `backup_label` and `tablespace_map`
//! as `pg_backup_stop` returned them (the map pointing at where the tablespaces were restored),
//! `recovery.signal`, and the recovery settings in `postgresql.auto.conf` (which wins over
//! postgresql.conf): `restore_command`, the target and what to do there.

use super::plan::Plan;
use super::target::TargetAction;
use super::write::Roots;
use super::{ArchiveMode, RestoreOptions};
use crate::Result;
use std::io::Read;

/// Writes a file of the data directory (a link in its place is replaced, never followed), given to
/// the cluster's owner when run as root.
fn write_synced(roots: &Roots, name: &str, text: &str) -> Result<()> {
    let pgdata = &roots.pgdata;
    let mut f = pgdata.create_file(name, 0o600)?;
    crate::fsutil::write_synced(&mut f, text.as_bytes(), &pgdata.path().join(name))?;
    super::write::give(pgdata, name, roots.owner)
}

/// A PostgreSQL configuration string literal. The configuration file's lexer takes a backslash as
/// an escape (`\\`, `\n`, octal…) and refuses a raw newline inside quotes, so both are escaped along
/// with the quote: a path such as `/etc/it's\new` in `restore_command` reaches the server unchanged.
fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Writes the recovery files into `pgdata` (where the data directory is being written).
pub fn write_recovery_files(
    plan: &Plan,
    opts: &RestoreOptions,
    roots: &Roots,
    now: &str,
) -> Result<()> {
    let m = &plan.manifest;
    let pgdata = &roots.pgdata;
    write_synced(roots, "backup_label", &m.backup_label)?;
    if plan.tablespaces.is_empty() {
        pgdata.remove("tablespace_map")?;
    } else {
        let map: String = plan
            .tablespaces
            .iter()
            .map(|t| format!("{} {}\n", t.oid, t.dir.display()))
            .collect();
        write_synced(roots, "tablespace_map", &map)?;
    }
    write_synced(roots, "recovery.signal", "")?;

    let mut existing = String::new();
    if let Some(mut f) = pgdata.open_existing("postgresql.auto.conf") {
        let _ = f.read_to_string(&mut existing);
    }
    let archive_off = opts.archive_mode == ArchiveMode::Off;
    let mut text: String = existing
        .lines()
        .filter(|l| {
            // Setting names are case-insensitive and may be quoted.
            let key = l
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"')
                .to_ascii_lowercase();
            !(key == "restore_command"
                || key.starts_with("recovery_target")
                || (archive_off && key == "archive_mode"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!(
        "# added by strata restore of backup {} at {now}\n",
        m.label
    ));
    text.push_str(&format!(
        "restore_command = {}\n",
        quote(&opts.restore_command)
    ));
    if let Some((name, value)) = opts.target.setting() {
        text.push_str(&format!("{name} = {}\n", quote(&value)));
    }
    if let Some(action) = opts.target_action {
        text.push_str(&format!(
            "recovery_target_action = {}\n",
            quote(TargetAction::name(action))
        ));
    }
    if let Some(tli) = &plan.recovery_timeline {
        text.push_str(&format!("recovery_target_timeline = {}\n", quote(tli)));
    }
    if archive_off {
        // A copy must not archive into the stanza it was restored from.
        text.push_str("archive_mode = 'off'\n");
    }
    write_synced(roots, "postgresql.auto.conf", &text)
}
