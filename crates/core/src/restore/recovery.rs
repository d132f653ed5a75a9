//! The files that make `pg_ctl start` recover a restored backup: `backup_label` and `tablespace_map`
//! as `pg_backup_stop` returned them (the map pointing at where the tablespaces were restored),
//! `recovery.signal`, and the recovery settings in `postgresql.auto.conf` (which wins over
//! postgresql.conf): `restore_command`, the target and what to do there.

use super::plan::Plan;
use super::target::TargetAction;
use super::RestoreOptions;
use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

fn write_synced(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let werr = |source| Error::WriteFile {
        path: path.into(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(werr)?;
    f.write_all(text.as_bytes()).map_err(werr)?;
    f.sync_all().map_err(werr)
}

/// A PostgreSQL configuration string literal.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Writes the recovery files into `pgdata` (where the data directory is being written).
pub fn write_recovery_files(
    plan: &Plan,
    opts: &RestoreOptions,
    pgdata: &Path,
    now: &str,
) -> Result<()> {
    let m = &plan.manifest;
    write_synced(&pgdata.join("backup_label"), &m.backup_label, 0o600)?;
    let map_path = pgdata.join("tablespace_map");
    if plan.tablespaces.is_empty() {
        let _ = std::fs::remove_file(&map_path);
    } else {
        let map: String = plan
            .tablespaces
            .iter()
            .map(|t| format!("{} {}\n", t.oid, t.dir.display()))
            .collect();
        write_synced(&map_path, &map, 0o600)?;
    }
    write_synced(&pgdata.join("recovery.signal"), "", 0o600)?;

    let auto_path = pgdata.join("postgresql.auto.conf");
    let existing = std::fs::read_to_string(&auto_path).unwrap_or_default();
    let mut text: String = existing
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            !(key == "restore_command" || key.starts_with("recovery_target"))
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
    if let Some(tli) = &opts.target_timeline {
        text.push_str(&format!("recovery_target_timeline = {}\n", quote(tli)));
    }
    write_synced(&auto_path, &text, 0o600)
}
