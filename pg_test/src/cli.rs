//! Running the `strata` binary the way an operator does: as the postgres user, with a `--config` file
//! holding the repository settings (secrets included, so that nothing secret is on a command line).

use crate::{give_to_postgres, run_as_postgres, strata_bin, Cluster, PgDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A `--config` file for the CLI with the stanza and `extra` (readable by postgres only).
pub fn conf_file(dir: &PgDir, extra: &str) -> PathBuf {
    let path = dir.path().join("strata.conf");
    std::fs::write(&path, format!("strata.stanza = 'main'\n{extra}")).unwrap();
    give_to_postgres(&path);
    path
}

/// `strata ARGS --config CONF`, as the postgres user.
pub fn strata(conf: &Path, args: &[&str]) -> Output {
    run_as_postgres(
        Command::new(strata_bin())
            .args(args)
            .arg("--config")
            .arg(conf),
    )
}

/// An output for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Restores with `args` into a new directory and starts it; returns the cluster once recovered
/// (`paused_ok`: a recovery paused at its target counts).
pub fn restore(name: &str, conf: &Path, args: &[&str], paused_ok: bool) -> (Cluster, Output) {
    let root = PgDir::new(&format!("strata-restore-{name}-"));
    let datadir = root.path().join("data");
    let mut all = vec![
        "restore",
        "--pgdata",
        datadir.to_str().unwrap(),
        "--archive-mode",
        "off",
    ];
    all.extend(args);
    let out = strata(conf, &all);
    assert!(out.status.success(), "restore {args:?}: {}", text(&out));
    // Nothing of the restore's own is left beside the target (its staging directory, the spool of
    // objects read once from a remote repository).
    let left: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".strata-"))
        .collect();
    assert!(left.is_empty(), "left beside the target: {left:?}");
    let c = Cluster::restored(name, root, datadir);
    c.start();
    c.wait_recovered(paused_ok);
    (c, out)
}
