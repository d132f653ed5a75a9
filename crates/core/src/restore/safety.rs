//! Where a restore may write: checks on the target directories made before anything is written.
//!
//! A restore (often run as root) writes into `--pgdata` and one directory per tablespace, taken from
//! the manifest or `--tablespace-map`. Each must be a plausible place for PostgreSQL data:
//! - not `/` or a system directory, nor inside `/etc`, `/usr`, `/proc`, ... (a tampered manifest's
//!   tablespace location must not turn `--delta` into "empty /etc");
//! - no two targets inside one another (a tablespace inside the data directory, or the data directory
//!   given as a tablespace's target), and none containing or inside a local repository;
//! - not used by a running PostgreSQL: neither the data directory of a running server nor a directory
//!   its `pg_tblspc` links point to (found through `/proc`: every PostgreSQL process runs in its data
//!   directory), nor a directory with a live `postmaster.pid`.
//!
//! Paths are compared after resolving the links of their existing part, so `/srv/pg` and a link to it
//! are the same place.

use crate::{Error, Result};
use std::path::{Component, Path, PathBuf};

/// Directories that are never a restore target themselves.
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/local",
    "/var",
    "/var/lib",
    "/var/lib/postgresql",
    "/var/log",
    "/var/tmp",
];

/// Trees nothing is ever restored into.
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
    "/sys", "/usr",
];

/// The absolute, normal form of `p` with the links of its existing part resolved.
pub fn resolve(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut normal = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                normal.pop();
            }
            Component::Normal(n) => normal.push(n),
            _ => {}
        }
    }
    // Resolve the longest existing prefix, keep the rest as written.
    let mut existing = normal.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for n in rest.iter().rev() {
                out.push(n);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return normal,
        }
    }
}

fn nested(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// A target directory (`what` names it in errors) that is plausible for PostgreSQL data.
pub fn check_plausible(dir: &Path, what: &str) -> Result<PathBuf> {
    let real = resolve(dir);
    let shown = if real != dir {
        format!("{} ({})", dir.display(), real.display())
    } else {
        dir.display().to_string()
    };
    if SYSTEM_DIRS.iter().any(|s| real == Path::new(s)) {
        return Err(Error::TargetRefused(format!(
            "{what} {shown} is a system directory: refusing to restore into it; choose a directory of \
             its own{}",
            if what.starts_with("tablespace") {
                " with --tablespace-map NAME_OR_OID=DIR"
            } else {
                ""
            }
        )));
    }
    if let Some(tree) = SYSTEM_TREES.iter().find(|s| real.starts_with(s)) {
        return Err(Error::TargetRefused(format!(
            "{what} {shown} is inside {tree}: refusing to restore there; choose another directory{}",
            if what.starts_with("tablespace") {
                " with --tablespace-map NAME_OR_OID=DIR"
            } else {
                ""
            }
        )));
    }
    Ok(real)
}

/// The targets do not overlap one another or a local repository.
pub fn check_separate(targets: &[(String, PathBuf)], repo: Option<&Path>) -> Result<()> {
    for (i, (what_a, a)) in targets.iter().enumerate() {
        for (what_b, b) in &targets[i + 1..] {
            if nested(a, b) {
                return Err(Error::TargetRefused(format!(
                    "{what_a} {} and {what_b} {} are the same directory or one is inside the other: \
                     every tablespace needs a directory of its own outside the data directory (use \
                     --tablespace-map NAME_OR_OID=DIR)",
                    a.display(),
                    b.display()
                )));
            }
        }
        if let Some(repo) = repo {
            let repo = resolve(repo);
            if nested(a, &repo) {
                return Err(Error::TargetRefused(format!(
                    "{what_a} {} contains or is inside the repository {}: refusing to restore \
                     there (it would overwrite or delete the backups); choose another directory",
                    a.display(),
                    repo.display()
                )));
            }
        }
    }
    Ok(())
}

/// A PostgreSQL server running now: its postmaster's pid and its data directory.
#[derive(Debug)]
pub struct RunningServer {
    pub pid: u32,
    pub datadir: PathBuf,
    /// Where its `pg_tblspc` links point (resolved).
    pub tablespaces: Vec<PathBuf>,
    /// (device, inode) of its data directory and tablespace directories, read through
    /// `/proc/<pid>/cwd` (right even when the server runs in another mount namespace).
    pub ids: Vec<(u64, u64)>,
}

fn dev_ino(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Every running PostgreSQL server whose processes this user can see (root sees all): each
/// PostgreSQL process runs with its data directory as current directory.
pub fn running_servers() -> Vec<RunningServer> {
    let mut found: Vec<RunningServer> = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(p.path().join("exe")) else {
            continue;
        };
        let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // After a package upgrade the running binary shows as "postgres (deleted)".
        let name = name.strip_suffix(" (deleted)").unwrap_or(name);
        if name != "postgres" && name != "postmaster" {
            continue;
        }
        let Ok(cwd) = std::fs::read_link(p.path().join("cwd")) else {
            continue;
        };
        if !cwd.join("PG_VERSION").exists() || found.iter().any(|s| s.datadir == cwd) {
            continue;
        }
        let postmaster = std::fs::read_to_string(cwd.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            .unwrap_or(pid);
        let tablespaces = std::fs::read_dir(cwd.join("pg_tblspc"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::canonicalize(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let through = p.path().join("cwd");
        let mut ids: Vec<(u64, u64)> = dev_ino(&through).into_iter().collect();
        if let Ok(links) = std::fs::read_dir(through.join("pg_tblspc")) {
            ids.extend(links.flatten().filter_map(|e| dev_ino(&e.path())));
        }
        found.push(RunningServer {
            pid: postmaster,
            datadir: resolve(&cwd),
            tablespaces,
            ids,
        });
    }
    found
}

/// Refuses an opened target directory that is a running server's data or tablespace directory (by
/// device and inode: whatever path led there), or holds a live `postmaster.pid`.
pub fn check_root_not_in_use(
    root: &super::beneath::Root,
    what: &str,
    servers: &[RunningServer],
) -> Result<()> {
    let (dev, ino, _, _) = root.identity()?;
    if let Some(s) = servers.iter().find(|s| s.ids.contains(&(dev, ino))) {
        return Err(Error::ServerRunning(format!(
            "{what} {} is in use by a running PostgreSQL (pid {}, data directory {}): stop that \
             server first, or restore somewhere else",
            root.path().display(),
            s.pid,
            s.datadir.display()
        )));
    }
    let text = root.read_small("postmaster.pid", 4096).unwrap_or_default();
    check_postmaster_pid(&String::from_utf8_lossy(&text), root.path())
}

/// Refuses a directory whose `postmaster.pid` (its text) names a live process.
fn check_postmaster_pid(text: &str, dir: &Path) -> Result<()> {
    let pid: i32 = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    // SAFETY: signal 0 only checks that the process exists.
    if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 {
        return Err(Error::ServerRunning(format!(
            "PostgreSQL seems to be running in {} (postmaster.pid, pid {pid}): stop it first",
            dir.display()
        )));
    }
    Ok(())
}

/// Refuses a target that a running server uses (`what` names the target in errors).
pub fn check_not_in_use(dir: &Path, what: &str, servers: &[RunningServer]) -> Result<()> {
    let real = resolve(dir);
    for s in servers {
        if nested(&real, &s.datadir) {
            return Err(Error::ServerRunning(format!(
                "{what} {} is in use by a running PostgreSQL (pid {}, data directory {}): stop that \
                 server first, or restore somewhere else",
                dir.display(),
                s.pid,
                s.datadir.display()
            )));
        }
        if let Some(ts) = s.tablespaces.iter().find(|t| nested(&real, t)) {
            return Err(Error::ServerRunning(format!(
                "{what} {} is in use by a running PostgreSQL (pid {}, data directory {}) as tablespace \
                 directory {}: stop that server first, or restore the tablespace elsewhere with \
                 --tablespace-map NAME_OR_OID=DIR",
                dir.display(),
                s.pid,
                s.datadir.display(),
                ts.display()
            )));
        }
    }
    // A server this user cannot see through /proc still leaves a live postmaster.pid.
    let text = std::fs::read_to_string(dir.join("postmaster.pid")).unwrap_or_default();
    check_postmaster_pid(&text, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_directories_and_overlaps_are_refused() {
        for d in [
            "/",
            "/etc",
            "/etc/postgresql",
            "/usr/lib/x",
            "/var/lib",
            "/proc/1",
        ] {
            assert!(
                check_plausible(Path::new(d), "tablespace 1").is_err(),
                "{d}"
            );
        }
        assert!(check_plausible(Path::new("/srv/pg/ts1"), "tablespace 1").is_ok());
        let t = |s: &str| (s.to_string(), PathBuf::from(s));
        assert!(check_separate(&[t("/srv/a"), t("/srv/a/ts")], None).is_err());
        assert!(check_separate(&[t("/srv/a"), t("/srv/b")], None).is_ok());
        let e = check_separate(&[t("/srv")], Some(Path::new("/srv/repo")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("repository"), "{e}");
        assert_eq!(resolve(Path::new("/srv/x/../y")), PathBuf::from("/srv/y"));
    }
}
