//! pg_cron, for real: Debian's pg_cron (1.4: minute resolution, no seconds syntax) preloaded beside
//! pg_strata schedules `SELECT backup_start('incr')` and `backup_verify()` every minute. Its job
//! history shows `succeeded` for a run that took a backup (pg_cron records the command's row count,
//! not its result, so the label is matched by time against `strata_backups`) and for a verification
//! (whose result the metrics show); with the repository gone, the next runs show `failed` with
//! pg_strata's own message; once fixed, the next run succeeds again.

use pg_test::{Archiving, Cluster};
use std::time::{Duration, Instant};

/// The first run of job `job` that started after `after` (an SQL timestamptz) and finished:
/// (status, return_message, start_time, end_time).
fn run_after(c: &Cluster, job: &str, after: &str, secs: u64) -> (String, String, String, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let row = c.psql(
            "postgres",
            &format!(
                "SELECT status, replace(coalesce(return_message, ''), E'\\n', ' '), start_time, end_time \
                 FROM cron.job_run_details JOIN cron.job USING (jobid) \
                 WHERE jobname = '{job}' AND start_time > '{after}' \
                   AND status IN ('succeeded', 'failed') ORDER BY start_time LIMIT 1"
            ),
        );
        if !row.is_empty() {
            let v: Vec<&str> = row.splitn(4, '|').collect();
            return (v[0].into(), v[1].into(), v[2].into(), v[3].into());
        }
        assert!(
            Instant::now() < deadline,
            "no pg_cron run after {after} within {secs} s; runs:\n{}\nlog:\n{}",
            c.psql(
                "postgres",
                "SELECT * FROM cron.job_run_details ORDER BY runid"
            ),
            c.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn pg_cron_schedules_backups_and_its_history_tells_the_truth() {
    let a = Archiving::new("cron", "");
    let c = &a.cluster;
    // pg_cron connects over libpq: to this cluster's socket directory (it listens on no TCP port).
    c.append_conf(&format!(
        "shared_preload_libraries = 'pg_strata,pg_cron'\ncron.database_name = 'postgres'\n\
         cron.host = '{}'\n",
        c.socket_dir().display()
    ));
    c.stop();
    c.start();
    c.psql("postgres", "CREATE EXTENSION pg_cron");
    let version = c.psql(
        "postgres",
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'",
    );
    assert!(
        version.starts_with("1.4"),
        "pg_cron {version}: use its seconds syntax when >= 1.5"
    );
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g",
    );
    a.backup("full");

    let scheduled = c.psql("postgres", "SELECT now()");
    c.psql(
        "postgres",
        "SELECT cron.schedule('strata-incr', '* * * * *', $$SELECT backup_start('incr')$$)",
    );
    c.psql(
        "postgres",
        "SELECT cron.schedule('strata-verify', '* * * * *', $$SELECT count(*) FROM backup_verify()$$)",
    );
    let (status, message, start, end) = run_after(c, "strata-incr", &scheduled, 150);
    assert_eq!(status, "succeeded", "{message}");
    let label = c.psql(
        "postgres",
        &format!(
            "SELECT label FROM strata_backups WHERE kind = 'incr' \
             AND start_time >= date_trunc('second', '{start}'::timestamptz) AND stop_time <= '{end}'"
        ),
    );
    assert!(
        label.ends_with('I'),
        "no incr taken by the run {start} .. {end}: {label:?}"
    );
    println!("pg_cron run at {start}: {status} ({message}), backup {label}");
    let (status, message, _, _) = run_after(c, "strata-verify", &scheduled, 150);
    assert_eq!(status, "succeeded", "{message}");
    let verified = c.psql(
        "postgres",
        "SELECT value FROM strata_metrics() WHERE name = 'strata_verify_last_errors'",
    );
    assert_eq!(
        verified, "0",
        "the scheduled verification, as the metrics show it"
    );

    // The repository gone (a disk not mounted): the next run fails with pg_strata's message.
    let repo1 = c.psql("postgres", "SHOW strata.repo1");
    c.psql(
        "postgres",
        "ALTER SYSTEM SET strata.repo1 = 'file:///nonexistent/strata-repo'; SELECT pg_reload_conf();",
    );
    let broken = c.psql("postgres", "SELECT now()");
    for job in ["strata-incr", "strata-verify"] {
        let (status, message, _, _) = run_after(c, job, &broken, 150);
        assert_eq!(status, "failed", "{job}: {message}");
        assert!(
            message.contains("/nonexistent/strata-repo") && message.contains("does not exist"),
            "{job}: {message}"
        );
        println!("pg_cron {job} with the repository missing: {status}: {message}");
    }

    // Fixed: the next run succeeds and takes an incr.
    c.psql(
        "postgres",
        "ALTER SYSTEM RESET strata.repo1; SELECT pg_reload_conf();",
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.psql("postgres", "SHOW strata.repo1"), repo1);
    let fixed = c.psql("postgres", "SELECT now()");
    let (status, message, start, _) = run_after(c, "strata-incr", &fixed, 150);
    assert_eq!(status, "succeeded", "{message}");
    let incrs = c.psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM strata_backups WHERE kind = 'incr' \
             AND start_time >= date_trunc('second', '{start}'::timestamptz)"
        ),
    );
    assert_eq!(incrs, "1");
    let (status, message, _, _) = run_after(c, "strata-verify", &fixed, 150);
    assert_eq!(status, "succeeded", "{message}");
    c.psql("postgres", "SELECT cron.unschedule('strata-incr')");
    c.psql("postgres", "SELECT cron.unschedule('strata-verify')");
}
