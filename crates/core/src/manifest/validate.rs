//! Checking a manifest before anything in it is used.
//!
//! The repository is untrusted input: the postgres user (or anyone with the bucket's keys) can write
//! it, and `strata restore` is often run as root. So a manifest read back is checked as a whole, and
//! refused naming the first bad entry, before a restore, a backup or `strata info` relies on it:
//! - every file and directory path is relative, `/`-separated, without empty, `.` or `..` components,
//!   NUL or control characters, so it cannot leave the data directory;
//! - a path under `pg_tblspc/` names one of the manifest's tablespaces and goes into its
//!   `PG_<version>_<catalog version>` directory (never the link `pg_tblspc/<oid>` itself);
//! - no path is listed twice, and no file shares a path with a directory;
//! - modes are permission bits only: no set-user-id or set-group-id file;
//! - tablespace locations are absolute and normal (and not `/`), OIDs are unique;
//! - object names are `data/<number>`: a key built from them stays inside the backup directory (labels
//!   — `prior`, `references`, a piece's `backup` — are `Label`s, which only a label-shaped string
//!   becomes);
//! - the chain is consistent: a full has no prior, a diff or incr has its prior as its last reference,
//!   the chain starts with the full its label names, and the label's letter is the kind;
//! - the WAL range is what the LSNs say, the segment size a power of two, the timeline not 0;
//! - text shown to operators (method reason, tablespace, user and group names) holds no control
//!   characters (times, compression and digests are typed: they cannot hold any);
//! - sizes add up: a whole file's size is the sum of its pieces' sizes, a file in incremental form is
//!   its length in blocks, a piece of this backup lies inside one of its listed objects, and the head's
//!   counts are the body's.
//!
//! The head alone (`ManifestHead::validate`) is checked when a listing reads only heads.

use super::{BackupKind, Manifest, ManifestHead};
use pgformat::lsn::{segment_file_name, Lsn};

/// The largest piece a backup makes is one 8 MB chunk (or 1024 blocks of an incremental file) plus
/// headers; anything far larger is a tampered manifest trying to make a restore allocate it.
pub const MAX_PIECE_SIZE: u64 = 64 << 20;
/// Data objects (chunks, bundles) are a few pieces: a restore reads one whole to check it.
pub const MAX_OBJECT_SIZE: u64 = 256 << 20;
use std::collections::{HashMap, HashSet};

/// Checks one relative path of a manifest; the error says what is wrong with it.
pub fn check_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("path {path:?} {why}"));
    if path.is_empty() {
        return bad("is empty");
    }
    if path.len() > 4096 {
        return bad("is too long");
    }
    if path.starts_with('/') {
        return bad("is absolute");
    }
    if path.chars().any(|c| c.is_control()) {
        return bad("contains a control character or NUL");
    }
    for comp in path.split('/') {
        match comp {
            "" => return bad("has an empty component"),
            "." | ".." => return bad("has a '.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// An absolute, normal directory path (a tablespace location).
pub fn check_absolute_dir(path: &str) -> Result<(), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("{path:?} is not an absolute path"));
    };
    if rest.is_empty() {
        return Err("'/' is not a tablespace location".into());
    }
    check_path(rest.trim_end_matches('/')).map_err(|e| format!("location {e}"))
}

/// `data/<digits>`, as `RepoPaths::backup_object_name` makes them.
fn is_object_name(name: &str) -> bool {
    name.strip_prefix("data/")
        .is_some_and(|n| (1..=20).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
}

impl ManifestHead {
    /// Checks what a listing shows and what choosing a reference relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.label.kind() != self.kind {
            return Err(format!(
                "label {} says the kind is {}, the manifest says {}",
                self.label,
                self.label.kind(),
                self.kind
            ));
        }
        let chain_ok = match self.kind {
            BackupKind::Full => self.prior.is_none() && self.references.is_empty(),
            _ => {
                self.prior.is_some()
                    && self.references.last() == self.prior.as_ref()
                    && self
                        .references
                        .first()
                        .is_some_and(|f| *f == self.label.full_part())
            }
        };
        if !chain_ok {
            return Err(format!(
                "{} backup {} has prior {:?} and references {:?}, which do not make a chain",
                self.kind,
                self.label,
                self.prior.as_ref().map(|l| l.as_str()),
                self.references
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
            ));
        }
        if !self.wal_segment_size.is_power_of_two()
            || !(1 << 20..=1 << 30).contains(&self.wal_segment_size)
        {
            return Err(format!(
                "WAL segment size {} is not a power of two between 1 MB and 1 GB",
                self.wal_segment_size
            ));
        }
        if self.timeline == 0 {
            return Err("timeline 0 does not exist".into());
        }
        // The WAL the backup needs is exactly what its LSNs say (a restore reads every segment of
        // the range: it must not be made arbitrarily long).
        let seg = self.wal_segment_size;
        let first = segment_file_name(self.timeline, self.start_lsn.segment_number(seg), seg);
        let last = segment_file_name(
            self.timeline,
            Lsn(self.stop_lsn.0.saturating_sub(1)).segment_number(seg),
            seg,
        );
        if self.stop_lsn < self.start_lsn
            || self.start_wal_file != first
            || self.stop_wal_file != last
        {
            return Err(format!(
                "WAL range {}..{} does not match the LSNs {}..{} of timeline {}",
                self.start_wal_file,
                self.stop_wal_file,
                self.start_lsn,
                self.stop_lsn,
                self.timeline
            ));
        }
        // Text shown to operators (strata info, errors) holds no terminal control sequences.
        if let Some(text) = &self.method_reason {
            if text.chars().any(|c| c.is_control()) {
                return Err(format!("{text:?} contains a control character"));
            }
        }
        Ok(())
    }
}

impl Manifest {
    /// Checks everything a restore will turn into a path, a key or a length (see the module comment).
    pub fn validate(&self) -> Result<(), String> {
        self.head.validate()?;
        if self.file_count != self.files.len() as u64
            || self.page_checksum_error_count != self.counted_page_checksum_errors()
        {
            return Err(format!(
                "the head counts {} files and {} page checksum errors, the body {} and {}",
                self.file_count,
                self.page_checksum_error_count,
                self.files.len(),
                self.counted_page_checksum_errors()
            ));
        }
        let names = self.tablespaces.iter().map(|t| t.name.as_str()).chain(
            self.owner
                .iter()
                .flat_map(|o| [o.user.as_str(), o.group.as_str()]),
        );
        for text in names {
            if text.chars().any(|c| c.is_control()) {
                return Err(format!("{text:?} contains a control character"));
            }
        }
        let mut oids = HashSet::new();
        for t in &self.tablespaces {
            if t.oid == 0 || !oids.insert(t.oid) {
                return Err(format!("tablespace OID {} is zero or listed twice", t.oid));
            }
            check_absolute_dir(&t.location)
                .map_err(|e| format!("tablespace {} ({}): {e}", t.name, t.oid))?;
        }
        let check_tree_path = |path: &str| -> Result<(), String> {
            check_path(path)?;
            let mut comps = path.split('/');
            if comps.next() == Some("pg_tblspc") {
                match (comps.next(), comps.next()) {
                    (None, _) => {}
                    // The OID exactly as written in pg_tblspc (no "016400", no "+16400").
                    (Some(oid), Some(version))
                        if oid
                            .parse::<u32>()
                            .is_ok_and(|o| oids.contains(&o) && o.to_string() == oid)
                            && version.starts_with("PG_") => {}
                    _ => {
                        return Err(format!(
                            "path {path:?} is not inside a tablespace of the backup \
                             (pg_tblspc/<oid>/PG_<version>_...)"
                        ))
                    }
                }
            }
            // pg_wal's contents are never backed up: only its archive_status directory is listed,
            // and a restore makes nothing else there (it may be an operator's link).
            if path.starts_with("pg_wal/") && path != "pg_wal/archive_status" {
                return Err(format!("path {path:?} is inside pg_wal"));
            }
            Ok(())
        };
        let mut dirs = HashSet::new();
        for d in &self.directories {
            check_tree_path(&d.path)?;
            if d.mode & !0o7777 != 0 || d.mode & 0o4000 != 0 {
                return Err(format!("directory {:?} has mode {:o}", d.path, d.mode));
            }
            if !dirs.insert(d.path.as_str()) {
                return Err(format!("directory {:?} is listed twice", d.path));
            }
        }
        let objects: HashMap<&str, u64> = self
            .objects
            .iter()
            .map(|o| (o.name.as_str(), o.size))
            .collect();
        if let Some(o) = self.objects.iter().find(|o| o.size > MAX_OBJECT_SIZE) {
            return Err(format!(
                "object {:?} has {} bytes: objects are at most {MAX_OBJECT_SIZE}",
                o.name, o.size
            ));
        }
        if let Some(o) = self.objects.iter().find(|o| !is_object_name(&o.name)) {
            return Err(format!("object name {:?} is not data/<number>", o.name));
        }
        if objects.len() != self.objects.len() {
            return Err("an object is listed twice".into());
        }
        let mut files = HashSet::new();
        for f in &self.files {
            check_tree_path(&f.path)?;
            if f.path.starts_with("pg_tblspc/") && f.path.split('/').count() < 4 {
                return Err(format!(
                    "file {:?} is not inside a tablespace directory",
                    f.path
                ));
            }
            if f.mode & !0o777 != 0 {
                return Err(format!(
                    "file {:?} has mode {:o} (only permission bits are allowed)",
                    f.path, f.mode
                ));
            }
            if dirs.contains(f.path.as_str()) || !files.insert(f.path.as_str()) {
                return Err(format!(
                    "file {:?} is listed twice or as a directory too",
                    f.path
                ));
            }
            if let Some(p) = f
                .pieces
                .iter()
                .find(|p| p.size > MAX_PIECE_SIZE || p.length > MAX_PIECE_SIZE)
            {
                return Err(format!(
                    "file {:?} has a piece of {} bytes ({} stored): pieces are at most {MAX_PIECE_SIZE}",
                    f.path, p.size, p.length
                ));
            }
            let expected = match f.incremental {
                Some(blocks) => blocks as u64 * pgformat::relfile::BLCKSZ as u64,
                None => f
                    .pieces
                    .iter()
                    .try_fold(0u64, |sum, p| sum.checked_add(p.size))
                    .unwrap_or(u64::MAX),
            };
            if f.size != expected {
                return Err(format!(
                    "file {:?} has size {} but its {} add up to {expected}",
                    f.path,
                    f.size,
                    if f.incremental.is_some() {
                        "blocks"
                    } else {
                        "pieces"
                    }
                ));
            }
            for p in &f.pieces {
                if !is_object_name(&p.object) {
                    return Err(format!(
                        "file {:?} refers to object {:?}, which is not data/<number>",
                        f.path, p.object
                    ));
                }
                match &p.backup {
                    // A piece held in another backup must be held in this one's chain: what expiry
                    // keeps with it (the references) is what restore reads.
                    Some(holder) if !self.references.contains(holder) => {
                        return Err(format!(
                            "file {:?} refers to backup {holder}, which is not in its chain {:?}",
                            f.path, self.references
                        ));
                    }
                    Some(_) => {}
                    None => {
                        let size = objects.get(p.object.as_str()).copied();
                        if !size.is_some_and(|s| p.lies_within(s)) {
                            return Err(format!(
                                "file {:?} has a piece at {}+{} of object {}, which the backup does \
                                 not hold",
                                f.path, p.offset, p.length, p.object
                            ));
                        }
                    }
                }
            }
        }
        // A file inside another file (`PG_VERSION/x`) cannot be created: refuse rather than fail late.
        for f in &self.files {
            let mut prefix = f.path.as_str();
            while let Some((parent, _)) = prefix.rsplit_once('/') {
                if files.contains(parent) {
                    return Err(format!("file {:?} is inside file {parent:?}", f.path));
                }
                prefix = parent;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{label, reseal, sample, sample_incr, time};
    use super::*;

    fn refused(edit: impl FnOnce(&mut Manifest)) -> String {
        let mut m = sample();
        edit(&mut m);
        Manifest::from_bytes("stanza/backup/x/manifest.json", &m.label, &m.to_bytes())
            .expect_err("a bad manifest must be refused")
            .to_string()
    }

    /// Refused when written by hand (checksums recomputed): `from` replaced by `to` in the stored text.
    fn refused_text(from: &str, to: &str) -> String {
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        assert!(text.contains(from), "{from} not in {text}");
        let edited = reseal(text.replacen(from, to, 1).as_bytes());
        Manifest::from_bytes("stanza/backup/x/manifest.json", "20261123-020000F", &edited)
            .expect_err("a bad manifest must be refused")
            .to_string()
    }

    #[test]
    fn paths_that_leave_the_data_directory_are_refused() {
        for bad in [
            "../../../tmp/x",
            "/tmp/x",
            "base/../../../x",
            "base//x",
            "./PG_VERSION",
            "",
            "base/x\0y",
            "base/x\ny",
        ] {
            let e = refused(|m| m.files[0].path = bad.into());
            assert!(e.contains("refused") && e.contains("path"), "{bad:?}: {e}");
            let e = refused(|m| m.directories[0].path = bad.into());
            assert!(e.contains("refused"), "{bad:?}: {e}");
        }
        assert!(check_path("base/16384/2619_fsm").is_ok());
    }

    #[test]
    fn keys_stay_inside_the_backup_and_sizes_add_up() {
        let e = refused(|m| m.files[0].pieces[0].object = "../../../archive/x".into());
        assert!(e.contains("data/<number>"), "{e}");
        let e = refused(|m| m.objects[0].name = "data/../../x".into());
        assert!(e.contains("data/<number>"), "{e}");
        // Labels, times and digests are typed: junk in them does not even parse.
        let e = refused_text(
            "\"object\": \"data/00000000\"",
            "\"backup\": \"../other\", \"object\": \"data/00000000\"",
        );
        assert!(
            e.contains("not a backup label") && e.contains("refused"),
            "{e}"
        );
        let e = refused_text("\"prior\":null", "\"prior\":\"..\"");
        assert!(e.contains("not a backup label"), "{e}");
        let e = refused_text("2026-11-23T02:00:05Z", "\\u001b[2J");
        assert!(e.contains("invalid manifest head"), "{e}");
        let e = refused_text("\"zstd\"", "\"zstd9\"");
        assert!(e.contains("invalid manifest head"), "{e}");
        let e = refused_text(&"ab".repeat(32), &"AB".repeat(32));
        assert!(e.contains("not a digest"), "{e}");
        let e = refused(|m| m.files[0].size = 4);
        assert!(e.contains("add up to 3"), "{e}");
        let e = refused(|m| m.files[0].pieces[0].length = 60);
        assert!(e.contains("does not hold"), "{e}");
        let e = refused(|m| m.files[0].mode = 0o4755);
        assert!(e.contains("mode"), "{e}");
        let e = refused(|m| m.files[0].pieces[0].size = u64::MAX);
        assert!(e.contains("at most"), "{e}");
        let e = refused(|m| m.objects[0].size = 1 << 40);
        assert!(e.contains("at most"), "{e}");
        let e = refused(|m| m.stop_wal_file = "0000000100000000000FFFFF".into());
        assert!(e.contains("WAL range"), "{e}");
        // The start time is the label's, which may be ahead of the clock (a label is never reused):
        // a stop time before it is written by backups and read back.
        let mut m = sample();
        m.stop_time = time("2026-11-23T01:59:59Z");
        Manifest::from_bytes("k", &m.label, &m.to_bytes()).unwrap();
        let e = refused(|m| m.method_reason = Some("x\u{1b}]0;owned\u{7}".into()));
        assert!(e.contains("control character"), "{e}");
        let e = refused(|m| m.directories[0].path = "pg_wal/etc".into());
        assert!(e.contains("inside pg_wal"), "{e}");
        let e = refused_text("\"file_count\":1", "\"file_count\":2");
        assert!(e.contains("counts 2 files"), "{e}");
    }

    #[test]
    fn the_chain_a_head_names_is_consistent() {
        let full = sample();
        let incr = sample_incr(&full, "20261123-020000F_20261124-020000I");
        incr.validate().unwrap();
        let incr2 = sample_incr(&incr, "20261123-020000F_20261125-020000I");
        incr2.validate().unwrap();
        let bad = |edit: &dyn Fn(&mut Manifest)| {
            let mut m = incr2.clone();
            edit(&mut m);
            m.validate().unwrap_err()
        };
        let e = bad(&|m| m.kind = BackupKind::Diff);
        assert!(e.contains("says the kind is incr"), "{e}");
        let e = bad(&|m| m.prior = None);
        assert!(e.contains("do not make a chain"), "{e}");
        let e = bad(&|m| m.references.reverse());
        assert!(e.contains("do not make a chain"), "{e}");
        let e = bad(&|m| m.references[0] = label("20261122-020000F"));
        assert!(e.contains("do not make a chain"), "{e}");
        let e = refused(|m| m.prior = Some(label("20261122-020000F")));
        assert!(e.contains("do not make a chain"), "{e}");
    }

    #[test]
    fn tablespace_paths_and_locations_are_checked() {
        use crate::manifest::{Directory, Tablespace};
        let ts = |loc: &str| Tablespace {
            oid: 16400,
            name: "t".into(),
            location: loc.into(),
        };
        for loc in ["relative/dir", "/", "/srv/../etc", "/srv//x"] {
            let e = refused(|m| m.tablespaces = vec![ts(loc)]);
            assert!(e.contains("tablespace"), "{loc}: {e}");
        }
        let e = refused(|m| m.files[0].path = "pg_tblspc/16400/PG_15_1/x".into());
        assert!(e.contains("not inside a tablespace"), "{e}");
        let e = refused(|m| {
            m.tablespaces = vec![ts("/srv/ts")];
            m.files[0].path = "pg_tblspc/016400/PG_15_1/x".into();
        });
        assert!(e.contains("not inside a tablespace"), "{e}");
        let e = refused(|m| {
            m.tablespaces = vec![ts("/srv/ts")];
            m.directories.push(Directory {
                path: "pg_tblspc/16400".into(),
                mode: 0o700,
            });
        });
        assert!(e.contains("not inside a tablespace"), "{e}");
        let mut m = sample();
        m.tablespaces = vec![ts("/srv/ts")];
        m.files[0].path = "pg_tblspc/16400/PG_15_202209061/5/1".into();
        m.validate().unwrap();
    }
}
