//! The harness shared by pg_strata's end-to-end tests: throwaway PostgreSQL 15 clusters (initdb, pg_ctl,
//! psql) in temporary directories, run as the `postgres` user when the tests run as root (PostgreSQL
//! refuses to run as root, and CI runs as root).
//!
//! A `Cluster` listens only on a Unix socket in its own directory and on a port chosen per test, so tests
//! can run side by side; dropping it stops the server and removes its directories.

mod archiving;
pub mod cli;
pub mod s3;

pub use archiving::Archiving;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};

/// Directory of PostgreSQL 15's programs on Debian.
pub const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

pub fn pg_bin(name: &str) -> PathBuf {
    Path::new(PG_BIN_DIR).join(name)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command as the `postgres` user when we are root (PostgreSQL programs refuse root).
pub fn run_as_postgres(cmd: &mut Command) -> Output {
    let output = if is_root() {
        let mut wrapped = Command::new("runuser");
        wrapped.arg("-u").arg("postgres").arg("--");
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                wrapped.env(k, v);
            }
        }
        wrapped.arg("env");
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                let mut kv = k.to_os_string();
                kv.push("=");
                kv.push(v);
                wrapped.arg(kv);
            }
        }
        wrapped.arg(cmd.get_program()).args(cmd.get_args());
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped.output()
    } else {
        cmd.output()
    };
    output.unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

/// Runs a command as postgres and panics with its output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run_as_postgres(cmd);
    if !out.status.success() {
        panic!(
            "{:?} {:?} failed ({}):\nstdout: {}\nstderr: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory that the postgres user may write to.
pub struct PgDir {
    dir: tempfile::TempDir,
}

impl PgDir {
    pub fn new(prefix: &str) -> PgDir {
        let base = std::env::var_os("STRATA_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).expect("create test temp base");
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(base)
            .expect("create temp dir");
        give_to_postgres(dir.path());
        PgDir { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Makes a path owned by postgres (when root), so the server and archiver can write there.
pub fn give_to_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(path)
            .status()
            .expect("run chown");
        assert!(status.success(), "chown {path:?} failed");
    }
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

fn pick_port() -> u16 {
    // Spread test binaries (one process each) over distinct ranges, then count up inside one.
    let base = 20000 + (std::process::id() % 2000) as u16 * 10;
    base + NEXT_PORT.fetch_add(1, Ordering::SeqCst) % 10
}

/// A throwaway PostgreSQL 15 cluster.
pub struct Cluster {
    pub name: String,
    pub datadir: PathBuf,
    pub port: u16,
    /// Holds the data directory, the socket and the log.
    pub root: PgDir,
}

impl Cluster {
    /// initdb (with data checksums) into a fresh directory and append `conf` to postgresql.conf.
    pub fn init(name: &str, conf: &str) -> Cluster {
        Self::init_with(name, conf, &["--data-checksums"])
    }

    /// initdb with the given extra initdb arguments.
    pub fn init_with(name: &str, conf: &str, initdb_args: &[&str]) -> Cluster {
        let root = PgDir::new(&format!("strata-{name}-"));
        let datadir = root.path().join("data");
        run_ok(
            Command::new(pg_bin("initdb"))
                .arg("-D")
                .arg(&datadir)
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                .args(initdb_args),
        );
        let port = pick_port();
        let cluster = Cluster {
            name: name.to_string(),
            datadir,
            port,
            root,
        };
        cluster.append_conf(&format!(
            "port = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\n\
             shared_buffers = 32MB\nmax_wal_size = 256MB\nlogging_collector = off\n{conf}\n",
            cluster.socket_dir().display()
        ));
        cluster
    }

    /// A cluster over an existing data directory (a restore), using the given port.
    pub fn adopt(name: &str, root: PgDir, datadir: PathBuf, port: u16) -> Cluster {
        Cluster {
            name: name.to_string(),
            datadir,
            port,
            root,
        }
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.root.path().to_path_buf()
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.datadir.join("pg_wal")
    }

    pub fn append_conf(&self, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.datadir.join("postgresql.conf"))
            .expect("open postgresql.conf");
        writeln!(f, "{text}").expect("write postgresql.conf");
    }

    /// `pg_ctl start -w`, whatever comes of it: its output.
    pub fn try_start(&self) -> Output {
        run_as_postgres(
            Command::new(pg_bin("pg_ctl"))
                .arg("-D")
                .arg(&self.datadir)
                .arg("-l")
                .arg(self.log_file())
                .args(["-w", "-t", "120", "start"]),
        )
    }

    pub fn start(&self) {
        let out = self.try_start();
        if !out.status.success() {
            panic!(
                "pg_ctl start of {} failed:\n{}\nlog:\n{}",
                self.name,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
    }

    /// Stops the server (fast mode) if it runs.
    pub fn stop(&self) {
        if self.datadir.join("postmaster.pid").exists() {
            run_as_postgres(
                Command::new(pg_bin("pg_ctl"))
                    .arg("-D")
                    .arg(&self.datadir)
                    .args(["-w", "-t", "120", "-m", "fast", "stop"]),
            );
        }
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn psql_command(&self, db: &str) -> Command {
        let mut cmd = Command::new(pg_bin("psql"));
        cmd.args(["-qXAt", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db]);
        cmd
    }

    /// Runs SQL and returns trimmed stdout; panics with stderr on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        match self.try_psql(db, sql) {
            Ok(out) => out,
            Err(e) => panic!("psql on {} ({db}) failed for:\n{sql}\n{e}", self.name),
        }
    }

    /// Runs SQL; Err carries stderr. NOTICEs and WARNINGs on success are returned by `psql_full`.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        self.psql_full(db, sql).map(|(out, _)| out)
    }

    /// Runs SQL (statements run one by one, as from a script); Ok((stdout, stderr)).
    pub fn psql_full(&self, db: &str, sql: &str) -> Result<(String, String), String> {
        static N: AtomicU16 = AtomicU16::new(0);
        let script = self
            .root
            .path()
            .join(format!("script-{}.sql", N.fetch_add(1, Ordering::SeqCst)));
        std::fs::write(&script, sql).expect("write SQL script");
        let out = run_as_postgres(self.psql_command(db).arg("-f").arg(&script));
        let _ = std::fs::remove_file(&script);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok((
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
                stderr,
            ))
        } else {
            Err(stderr)
        }
    }

    /// pg_dumpall of the whole cluster, for comparing restored data with the source.
    pub fn dumpall(&self) -> String {
        self.dumpall_with(&[])
    }

    /// pg_dumpall with extra options (e.g. `--no-unlogged-table-data`: a restore has unlogged tables
    /// empty, as after a crash).
    pub fn dumpall_with(&self, options: &[&str]) -> String {
        // pg_dump 15.14+ brackets each dump with \restrict/\unrestrict and a random key: drop them so
        // that two dumps of the same data compare equal.
        let dump = run_ok(
            Command::new(pg_bin("pg_dumpall"))
                .arg("-h")
                .arg(self.socket_dir())
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", "postgres"])
                .args(options),
        );
        dump.lines()
            .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// pg_dump of one database (plain SQL), for comparing one restored database with its source.
    pub fn dump_db(&self, db: &str) -> String {
        let dump = run_ok(
            Command::new(pg_bin("pg_dump"))
                .arg("-h")
                .arg(self.socket_dir())
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", "postgres", db]),
        );
        dump.lines()
            .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// A cluster over a data directory written by `strata restore` in `root`: its own port and socket
    /// (appended to postgresql.conf, later lines win), not started.
    pub fn restored(name: &str, root: PgDir, datadir: PathBuf) -> Cluster {
        let port = pick_port();
        let c = Cluster::adopt(name, root, datadir, port);
        c.append_conf(&format!(
            "port = {port}\nunix_socket_directories = '{}'",
            c.socket_dir().display()
        ));
        c
    }

    /// Waits until the server accepts connections and has left recovery (or reached a paused target
    /// when `paused_ok`).
    pub fn wait_recovered(&self, paused_ok: bool) {
        self.wait_for("the end of recovery", 180, || {
            match self.try_psql(
                "postgres",
                "SELECT pg_is_in_recovery()::text || ' ' || \
                 CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END",
            ) {
                Ok(s) => s.starts_with("false") || (paused_ok && s == "true paused"),
                Err(_) => false,
            }
        });
    }

    /// Waits until `cond` holds, polling every 100 ms, up to `secs` seconds.
    pub fn wait_for(&self, what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "timed out after {secs}s waiting for {what} on {}\nlog:\n{}",
            self.name,
            self.log()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if is_root() {
            // postgres owns the files; TempDir removal as root works regardless.
        }
    }
}

/// Asserts two dumps are equal; on failure shows the first differing lines, not megabytes of dump.
pub fn assert_same_dump(restored: &str, source: &str, what: &str) {
    if restored == source {
        return;
    }
    let (r, s): (Vec<&str>, Vec<&str>) = (restored.lines().collect(), source.lines().collect());
    let first = r
        .iter()
        .zip(&s)
        .position(|(a, b)| a != b)
        .unwrap_or(r.len().min(s.len()));
    let show = |v: &[&str]| v[first.saturating_sub(3)..(first + 5).min(v.len())].join("\n");
    panic!(
        "{what}: dumps differ at line {} ({} vs {} lines)\nrestored:\n{}\nsource:\n{}",
        first + 1,
        r.len(),
        s.len(),
        show(&r),
        show(&s)
    );
}

/// A command's standard output, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's standard error, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Path of the `strata` binary under test: `STRATA_BIN`, else the one on PATH.
pub fn strata_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STRATA_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from("strata")
}

/// Every file below `dir` (recursively), not following symbolic links.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("a readable directory") {
            let e = e.expect("a directory entry");
            if e.file_type().expect("its type").is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Writes step `step` of a simple load into table `t` (created on first use): `rows` new rows of md5
/// text, and an update of about one row in 97 of those before.
pub fn write_rows(c: &Cluster, step: u32, rows: u32) {
    c.psql(
        "postgres",
        &format!(
            "CREATE TABLE IF NOT EXISTS t (id int primary key, v text);
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series({step} * {rows} + 1, {step} * {rows} + {rows}) g;
             UPDATE t SET v = 'step {step}' WHERE id % 97 = {step};"
        ),
    );
}
