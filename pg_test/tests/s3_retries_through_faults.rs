//! The whole pipeline on S3 through a fault-injecting proxy (`strata_core::testkit::fault_proxy`: every third
//! request a `503 SlowDown`, a reply cut off mid-way, or a reply later than the request timeout):
//! archiving, a full and an incremental backup, restores of the incr and to the end of the archive.
//! Every fault is absorbed by the retries within the budget — no archive attempt fails — and nothing
//! stored is duplicated or damaged: `strata verify` straight against moto is clean, the listing holds
//! the two backups taken and nothing else, and every archived segment read back directly is the
//! server's own, byte for byte.

use pg_test::cli::{conf_file, restore, strata, text};
use pg_test::s3::S3Server;
use pg_test::{assert_same_dump, strata_bin, write_rows, Archiving, PgDir};
use std::process::Command;
use std::time::Duration;
use strata_core::testkit::fault_proxy::{Fault, FaultProxy};

/// Generous retries, and a request timeout the proxy's held-back replies overrun.
const RETRIES: &str = "strata.repo1_s3_max_retries = 10\nstrata.repo1_s3_retry_timeout = '90s'\n\
                       strata.repo1_s3_request_timeout = '1500ms'\n";

#[test]
fn archiving_backups_and_restores_survive_s3_faults_without_damage() {
    let s3 = S3Server::start("strata-e2e-faults");
    let proxy = FaultProxy::start(
        s3.moto_port,
        &[
            Fault::SlowDown,
            Fault::DropMidReply,
            Fault::Delay(Duration::from_secs(2)),
        ],
    );
    let faulty = format!(
        "{}{RETRIES}",
        s3.conf_with_endpoint(1, "pg", &proxy.endpoint())
    );
    let a = Archiving::new("s3faults", &faulty);
    let c = &a.cluster;
    let confdir = PgDir::new("strata-conf-faults-");
    let faulty_conf = conf_file(&confdir, &faulty);
    let direct_dir = PgDir::new("strata-conf-direct-");
    let direct_conf = conf_file(&direct_dir, &s3.conf(1, "pg"));

    write_rows(c, 1, 10000);
    a.archive_all();
    let full = a.backup("full");
    write_rows(c, 2, 10000);
    let incr = a.backup("incr");
    let dump_incr = c.dumpall();
    for step in 3..5 {
        write_rows(c, step, 10000);
        let _ = a.switch_wal();
    }
    a.archive_all();
    let dump_end = c.dumpall();
    assert!(
        proxy.faults() >= 20,
        "only {} faults injected",
        proxy.faults()
    );
    assert_eq!(
        a.status("failed_count"),
        "0",
        "an archive attempt failed: {}",
        a.status("last_error")
    );
    let listing = c.psql(
        "postgres",
        "SELECT string_agg(label || ':' || kind, ' ' ORDER BY label) FROM strata_backups",
    );
    assert_eq!(listing, format!("{full}:full {incr}:incr"));

    // Restores through the proxy.
    let (r, _) = restore(
        "faults-incr",
        &faulty_conf,
        &["--set", &incr, "--type", "immediate"],
        true,
    );
    assert_same_dump(&r.dumpall(), &dump_incr, "the incr restored through faults");
    r.stop();
    let (r, _) = restore("faults-end", &faulty_conf, &[], false);
    assert_same_dump(
        &r.dumpall(),
        &dump_end,
        "the end of the archive, WAL read through faults",
    );
    r.stop();

    // Straight against moto: everything stored is sound and there is nothing more than was written.
    let out = strata(&direct_conf, &["verify"]);
    assert!(out.status.success(), "verify: {}", text(&out));
    let backups: Vec<String> = s3
        .keys("pg/main/backup/")
        .iter()
        .filter_map(|k| k.split('/').nth(3).map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(backups, vec![full.clone(), incr.clone()]);
    let segments: Vec<String> = s3
        .keys("pg/main/archive/")
        .iter()
        .filter_map(|k| k.rsplit('/').next().map(str::to_string))
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert!(segments.len() >= 5, "{segments:?}");
    let dir = tempfile::tempdir().unwrap();
    for wal in &segments {
        let dest = dir.path().join(wal);
        let out = Command::new(strata_bin())
            .args(["archive-get", wal])
            .arg(&dest)
            .arg("--config")
            .arg(&direct_conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "archive-get {wal}: {}", text(&out));
        let ours = std::fs::read(c.wal_dir().join(wal)).unwrap();
        assert!(std::fs::read(&dest).unwrap() == ours, "{wal} differs");
    }
    eprintln!(
        "{} faults injected; {} segments and 2 backups stored intact",
        proxy.faults(),
        segments.len()
    );
}
