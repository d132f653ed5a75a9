//! `strata info`: what a stanza holds — its cluster, the archive's WAL range per timeline and every
//! backup — as text for people or as JSON for scripts (in the spirit of `pgbackrest info`). A backup
//! whose manifest cannot be read is shown as damaged (with why) beside the others, never hides them.
//! With several repositories, each is shown in turn (JSON: one element per repository, with its
//! `repo_number`); one that cannot be read is an error on stderr and does not hide the others.

use crate::repo_args::{for_each_repo, RepoArgs};
use anyhow::{bail, Result};
use serde_json::json;
use strata_core::catalog;
use strata_core::config::RepoConfig;
use strata_core::manifest::time_text;
use strata_core::retention::{self, pin, Keep};
use strata_core::Repo;

#[derive(clap::Args)]
pub struct Args {
    /// Output format: text or json
    #[arg(long, default_value = "text", value_name = "text|json")]
    pub output: String,
    #[command(flatten)]
    pub repo: RepoArgs,
}

fn size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn run(args: Args) -> Result<i32> {
    if args.output != "text" && args.output != "json" {
        bail!("--output '{}': expected text or json", args.output);
    }
    let set = args.repo.resolve_all()?;
    let mut docs = Vec::new();
    let mut first = true;
    let result = for_each_repo(&set, |config| {
        if !first && args.output == "text" {
            println!();
        }
        first = false;
        if let Some(doc) = show(&args, config)? {
            docs.push(doc);
        }
        Ok(())
    });
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&docs)?);
    }
    result.map(|()| 0)
}

/// Shows one repository: printed as text, or returned as a JSON object.
fn show(args: &Args, config: &RepoConfig) -> Result<Option<serde_json::Value>> {
    let repo = Repo::open_config(config)?;
    let id = repo.identity()?;
    let archive = catalog::archive_ranges(&repo, id.wal_segment_size)?;
    let segments = catalog::archived_segments(&repo, id.wal_segment_size)?;
    // How far past its end a backup can be recovered: to any later point, or (a hole in the archive
    // after it, e.g. left by strata.retention_archive) only to its end.
    let seg = u64::from(id.wal_segment_size);
    let hole_after = |m: &strata_core::manifest::ManifestHead| {
        segments
            .get(&m.timeline)
            .and_then(|s| catalog::first_hole(s, m.stop_lsn.0 / seg + 1, None))
            .map(|n| pgformat::lsn::segment_file_name(m.timeline, n, id.wal_segment_size))
    };
    let recovery_of = |m: &strata_core::manifest::ManifestHead| match hole_after(m) {
        Some(file) => format!("to its end only (WAL file {file} after it is not archived)"),
        None => "to its end or any later point of the archive".to_string(),
    };
    // The keyring's ids and the current one (objects name theirs in their headers; a full backup and
    // an expiry retire the objects of older keys).
    let keys = repo.data_keys()?;
    let listing = catalog::list_backups_tolerant(&repo)?;
    let usage = match &keys {
        Some(_) => {
            let labels: Vec<String> = listing.sound.iter().map(|m| m.label.to_string()).collect();
            Some(strata_core::crypto::usage::key_usage(&repo, &labels)?)
        }
        None => None,
    };
    let cipher = keys.as_ref().zip(usage.as_ref()).map(|(k, u)| {
        let used: serde_json::Map<String, serde_json::Value> = k
            .ids()
            .iter()
            .map(|id| {
                let backups = u.backups.get(id).cloned().unwrap_or_default();
                let archive = u.archive.is_some_and(|(lo, hi)| (lo..=hi).contains(id));
                (
                    id.to_string(),
                    json!({"backups": backups, "archive": archive}),
                )
            })
            .collect();
        json!({"type": "aes-256-gcm", "key_ids": k.ids(), "current_key": k.current(), "key_usage": used})
    });
    let leases = retention::lease::read_all(&repo, chrono::Utc::now())?;
    let (backups, damaged) = (&listing.sound, &listing.damaged);
    // What the policy of --config keeps, and why (the same decision `strata expire` takes now).
    let policy = args.repo.retention_policy(config.number, &[])?;
    let annotations = pin::annotations(&repo, backups.iter().map(|m| &m.label));
    let decision = retention::decide_now(backups, &policy, &pin::pinned(&annotations));
    let retention_of = |label: &strata_core::manifest::Label| match decision.keep.get(label) {
        Some(Keep::Pinned) => "kept: pinned".to_string(),
        Some(Keep::Leased) => "kept: a restore holds a lease on it".to_string(),
        Some(Keep::Policy(why)) => format!("kept: {why}"),
        Some(Keep::Base(by)) => format!("kept: {by} is built on it"),
        None => "expires at the next expiry".to_string(),
    };
    if args.output == "json" {
        let doc = json!({
            "name": config.stanza,
            "repo": config.repo.display(),
            "repo_number": config.number,
            "system_identifier": id.system_identifier,
            "pg_version": id.pg_version,
            "wal_segment_size": id.wal_segment_size,
            "cipher": cipher,
            "retention": policy.describe(),
            "leases": leases.live.iter().map(|l| json!({
                "holder": l.holder, "backups": l.backups, "wal_from": l.wal_from.to_string(),
                "until": l.until,
            })).collect::<Vec<_>>(),
            "recoverable_from": backups.iter().fold(
                std::collections::BTreeMap::<String, serde_json::Value>::new(),
                |mut acc, m| {
                    acc.entry(m.timeline.to_string()).or_insert_with(|| json!({
                        "time": m.stop_time, "lsn": m.stop_lsn.to_string(), "backup": m.label,
                    }));
                    acc
                },
            ),
            "archive": archive.iter().map(|r| json!({
                "timeline": r.timeline, "min": r.first, "max": r.last, "segments": r.segments,
            })).collect::<Vec<_>>(),
            "backup": backups.iter().map(|m| json!({
                "label": m.label,
                "kind": m.kind.name(),
                "requested_kind": m.requested_kind.name(),
                "prior": m.prior,
                "references": m.references,
                "method": m.method.name(),
                "method_reason": m.method_reason,
                "read_size": m.read_size,
                "timestamp": {"start": m.start_time, "stop": m.stop_time},
                "lsn": {"start": m.start_lsn.to_string(), "stop": m.stop_lsn.to_string()},
                "wal": {"start": m.start_wal_file, "stop": m.stop_wal_file},
                "timeline": m.timeline,
                "database_size": m.database_size,
                "stored_size": m.stored_size,
                "file_count": m.file_count,
                "page_checksum_errors": m.page_checksum_error_count,
                "compress": {"type": m.compress_type, "level": m.compress_level},
                "retention": retention_of(&m.label),
                "recovery": recovery_of(m),
                "pitr": hole_after(m).is_none(),
                "pinned": annotations.get(&m.label).is_some_and(|a| a.keep),
                "note": annotations.get(&m.label).and_then(|a| a.note.clone()),
            })).collect::<Vec<_>>(),
            "backup_damaged": damaged.iter().map(|(label, why)| json!({
                "label": label, "error": why,
            })).collect::<Vec<_>>(),
        });
        return Ok(Some(doc));
    }
    println!("stanza: {}", config.stanza);
    println!(
        "    repository: {} (repo{})",
        config.repo.display(),
        config.number
    );
    println!(
        "    cluster: system identifier {}, PostgreSQL {}",
        id.system_identifier, id.pg_version
    );
    match &keys {
        Some(k) => println!(
            "    encryption: aes-256-gcm, data keys {} (current {})",
            k.ids()
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            k.current()
        ),
        None => println!("    encryption: none"),
    }
    if let (Some(k), Some(u)) = (&keys, &usage) {
        for id in k.ids() {
            println!("        key {id}: {}", u.describe(id));
        }
    }
    println!("    retention: {}", policy.describe());
    // The oldest point each timeline can be restored to: the end of its oldest backup.
    let mut oldest: std::collections::BTreeMap<u32, &strata_core::manifest::ManifestHead> =
        Default::default();
    for m in backups {
        oldest.entry(m.timeline).or_insert(m);
    }
    for (tli, m) in &oldest {
        println!(
            "    recoverable on timeline {tli} from: {} / {} (the end of backup {})",
            time_text(m.stop_time),
            m.stop_lsn,
            m.label
        );
    }
    for l in &leases.live {
        let labels: Vec<&str> = l.backups.iter().map(|b| b.as_str()).collect();
        println!(
            "    lease: {} holds {} and the WAL from {} until {} (a restore; expiry keeps them)",
            l.holder,
            labels.join(", "),
            l.wal_from,
            time_text(l.until)
        );
    }
    if archive.is_empty() {
        println!("    wal archive: empty");
    }
    for r in &archive {
        println!(
            "    wal archive (timeline {}): {} / {} ({} segments)",
            r.timeline, r.first, r.last, r.segments
        );
    }
    if backups.is_empty() && damaged.is_empty() {
        println!("    no backups");
    }
    for (label, why) in damaged {
        println!();
        println!("    damaged backup: {label}");
        println!("        error: {why}");
    }
    for m in backups {
        let requested = if m.requested_kind != m.kind {
            format!(" (requested {})", m.requested_kind)
        } else {
            String::new()
        };
        println!();
        println!("    {} backup: {}{requested}", m.kind, m.label);
        if let Some(p) = &m.prior {
            println!("        prior: {p}");
        }
        if !m.references.is_empty() {
            let refs: Vec<&str> = m.references.iter().map(|l| l.as_str()).collect();
            println!("        references: {}", refs.join(", "));
        }
        match &m.method_reason {
            Some(why) => println!("        method: {} ({why})", m.method.name()),
            None => println!("        method: {}", m.method.name()),
        }
        println!(
            "        timestamp start/stop: {} / {}",
            time_text(m.start_time),
            time_text(m.stop_time)
        );
        println!(
            "        lsn start/stop: {} / {}, timeline {}",
            m.start_lsn, m.stop_lsn, m.timeline
        );
        println!(
            "        wal start/stop: {} / {}",
            m.start_wal_file, m.stop_wal_file
        );
        println!(
            "        database size: {}, read: {}, stored: {} ({} files, {} {})",
            size(m.database_size),
            size(m.read_size),
            size(m.stored_size),
            m.file_count,
            m.compress_type.name(),
            m.compress_level
        );
        let errors = m.page_checksum_error_count;
        if errors > 0 {
            println!("        page checksum errors: {errors}");
        }
        println!("        retention: {}", retention_of(&m.label));
        println!("        restorable: {}", recovery_of(m));
        if let Some(note) = annotations.get(&m.label).and_then(|a| a.note.as_deref()) {
            println!("        note: {note}");
        }
    }
    Ok(None)
}
