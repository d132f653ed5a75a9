//! A cluster archiving through pg_strata into a fresh local repository (`Archiving`), and what the
//! tests ask of it: WAL switches waited for until archived, archived objects by name, backups from
//! SQL, the `strata` binary run against its repository.

use crate::{run_as_postgres, strata_bin, Cluster, PgDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A cluster archiving into a fresh local repository.
pub struct Archiving {
    pub cluster: Cluster,
    pub repo: PgDir,
}

impl Archiving {
    pub fn new(name: &str, extra: &str) -> Archiving {
        Self::new_with(name, extra, &["--data-checksums"])
    }

    /// With the given initdb arguments.
    pub fn new_with(name: &str, extra: &str, initdb_args: &[&str]) -> Archiving {
        let repo = PgDir::new(&format!("strata-repo-{name}-"));
        let cluster = Cluster::init_with(
            name,
            &format!(
                "shared_preload_libraries = 'pg_strata'\narchive_mode = on\narchive_library = 'pg_strata'\n\
                 strata.repo1 = 'file://{}'\nstrata.stanza = 'main'\nwal_keep_size = '2GB'\n\
                 archive_timeout = 0\n{extra}",
                repo.path().display()
            ),
            initdb_args,
        );
        cluster.start();
        cluster.psql("postgres", "CREATE EXTENSION pg_strata");
        Archiving { cluster, repo }
    }

    pub fn repo_url(&self) -> String {
        format!("file://{}", self.repo.path().display())
    }

    /// Switches to a new segment and waits until it is archived: everything written so far is in the
    /// archive.
    pub fn archive_all(&self) {
        let last = self.switch_wal();
        self.wait_archived(&last);
    }

    /// Switches to a new segment and returns the name of the one just finished.
    pub fn switch_wal(&self) -> String {
        // A commit record first, so that there is always something to switch away from.
        self.cluster.psql("postgres", "SELECT txid_current()");
        self.cluster
            .psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
    }

    pub fn status(&self, column: &str) -> String {
        self.cluster.psql(
            "postgres",
            &format!("SELECT {column} FROM archive_status()"),
        )
    }

    /// `archive_status().failed_count`: failed archive attempts since the server started.
    pub fn failed_count(&self) -> i64 {
        self.status("failed_count").parse().expect("a count")
    }

    pub fn wait_archived(&self, wal: &str) {
        let c = &self.cluster;
        c.wait_for(&format!("{wal} archived"), 120, || {
            let done = c.psql(
                "postgres",
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            );
            done.as_str() >= wal
                && !c
                    .wal_dir()
                    .join("archive_status")
                    .join(format!("{wal}.ready"))
                    .exists()
        });
    }

    pub fn archive_get(&self, wal: &str, dest: &Path) -> std::process::Output {
        Command::new(strata_bin())
            .arg("archive-get")
            .arg(wal)
            .arg(dest)
            .arg("--repo")
            .arg(self.repo_url())
            .args(["--stanza", "main"])
            .output()
            .expect("run strata")
    }

    /// Where an archived WAL file of `stanza` is stored (the repository layout is strata_core's).
    pub fn archived_object(&self, stanza: &str, wal: &str) -> PathBuf {
        let keys = strata_core::paths::RepoKeys::new(stanza).expect("a valid stanza");
        let key = keys.archive_file(wal, 16 << 20).expect("a WAL file name");
        self.repo.path().join(key.as_str())
    }

    /// Where a backup's manifest of stanza `main` is stored, and its key.
    pub fn manifest_object(&self, label: &str) -> (PathBuf, String) {
        let keys = strata_core::paths::RepoKeys::new("main").expect("a valid stanza");
        let key = keys.backup_manifest(label).expect("a backup label");
        (self.repo.path().join(key.as_str()), key.to_string())
    }

    /// Names of every archived WAL file (segments, .partial, .backup, .history), sorted.
    pub fn archived_files(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut dirs = vec![self.repo.path().join("main/archive")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("archive dir") {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Some(name) = path.file_name().and_then(|s| s.to_str()) {
                    // object_store's local staging files (with a '#') are not archived files.
                    if !name.contains('#') {
                        names.push(name.to_string());
                    }
                }
            }
        }
        names.sort();
        names
    }

    /// Names of the archived complete segments, sorted.
    /// `SELECT backup_start(kind)` (waiting); returns the label.
    pub fn backup(&self, kind: &str) -> String {
        self.cluster
            .psql("postgres", &format!("SELECT backup_start('{kind}')"))
    }

    /// Runs `strata` with this repository's options plus `args`; returns the output.
    pub fn strata(&self, args: &[&str]) -> Output {
        let out = Command::new(strata_bin())
            .args(args)
            .arg("--repo")
            .arg(self.repo_url())
            .args(["--stanza", "main"])
            .output()
            .expect("run strata");
        out
    }

    /// Runs `strata restore --pgdata DIR args...` with this repository, as the postgres user.
    pub fn restore_into(&self, pgdata: &Path, args: &[&str]) -> Output {
        run_as_postgres(
            Command::new(strata_bin())
                .arg("restore")
                .arg("--pgdata")
                .arg(pgdata)
                .args(args)
                .arg("--repo")
                .arg(self.repo_url())
                .args(["--stanza", "main"]),
        )
    }

    /// Restores into a fresh directory (owned by postgres, as `strata restore` run by the postgres user
    /// would leave it) with extra `strata restore` arguments; returns the cluster, not started.
    pub fn restore_new(&self, name: &str, args: &[&str]) -> Cluster {
        let root = PgDir::new(&format!("strata-restore-{name}-"));
        let datadir = root.path().join("data");
        let out = self.restore_into(&datadir, args);
        assert!(
            out.status.success(),
            "strata restore {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster::restored(name, root, datadir)
    }

    pub fn archived_segment_names(&self) -> Vec<String> {
        let mut names = self.archived_files();
        names.retain(|n| {
            matches!(
                pgformat::lsn::WalFileName::parse(n, 16 << 20),
                Some(pgformat::lsn::WalFileName::Segment { .. })
            )
        });
        names
    }
}
