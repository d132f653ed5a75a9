//! The metrics endpoint (`strata.metrics_listen`) on a real server, read with a real HTTP client and
//! parsed with Prometheus's own text parser (Python's `prometheus_client`, from the venv the set-up
//! makes): after backups, a failed backup and archiving, every value equals what `strata_backups`,
//! `archive_status()`, `backup_recoverability()` and the repository's files say; the repository
//! figures are cached (and forgotten after a backup); `strata_metrics()` and `strata metrics` agree;
//! garbage, oversized and half requests get 400 or nothing and leave the same worker answering; the
//! worker stops with the server and comes back with it.

use pg_test::{Archiving, Cluster};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Sends raw bytes and reads the whole answer (empty when the server closed without one).
fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// GET a path: (status line, headers lower-cased, body).
fn get(port: u16, path: &str) -> (String, BTreeMap<String, String>, String) {
    let out = raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    );
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// The samples of a text, as Prometheus's text parser reads it: (name, labels) -> value. The parser
/// fails on anything malformed, which fails the test.
fn parse(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let python =
        std::env::var("STRATA_PYTHON").unwrap_or_else(|_| "/opt/strata-py/bin/python".into());
    let script = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = []\n\
        for fam in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in fam.samples:\n\
        \x20       out.append([s.name, s.labels, s.value, fam.type])\n\
        print(json.dumps(out))\n";
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} (run scripts/setup.sh): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter()
        .map(|r| {
            let labels = r[1]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            if r[0].as_str().unwrap().ends_with("_total") {
                assert_eq!(r[3], "counter", "{r:?}");
            }
            (
                (r[0].as_str().unwrap().to_string(), labels),
                r[2].as_f64().unwrap(),
            )
        })
        .collect()
}

type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.insert("stanza".into(), "main".into());
    samples.get(&(name.to_string(), want)).copied()
}

fn must(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels)
        .unwrap_or_else(|| panic!("{name}{labels:?} missing in {samples:#?}"))
}

fn scrape(port: u16) -> Samples {
    let (status, headers, body) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let ct = headers.get("content-type").cloned().unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse(&body)
}

fn num(c: &Cluster, sql: &str) -> f64 {
    let v = c.psql("postgres", sql);
    v.parse().unwrap_or_else(|_| panic!("{sql} gave {v:?}"))
}

/// Sum of the sizes of the files under a directory (object_store's staging files, with a '#', left out).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in entries {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            total += du(&e.path());
        } else if !e.file_name().to_string_lossy().contains('#') {
            total += m.len();
        }
    }
    total
}

/// The pid of the metrics worker (its process title names it), a child of the postmaster.
fn worker_pid(c: &Cluster) -> Option<u32> {
    let pm = std::fs::read_to_string(c.datadir.join("postmaster.pid")).ok()?;
    let pm: u32 = pm.lines().next()?.trim().parse().ok()?;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pm) && String::from_utf8_lossy(&cmdline).contains("pg_strata metrics") {
            return Some(pid);
        }
    }
    None
}

fn wait_endpoint(c: &Cluster, port: u16) {
    c.wait_for("the metrics endpoint", 60, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/metrics").0.contains("200")
    });
}

#[test]
fn metrics_endpoint_tells_the_truth_and_survives_garbage() {
    let port = free_port();
    let a = Archiving::new(
        "metrics",
        &format!("strata.metrics_listen = '127.0.0.1:{port}'\n"),
    );
    let c = &a.cluster;
    wait_endpoint(c, port);
    let pid = worker_pid(c).expect("the metrics worker runs");
    assert!(c.log().contains(&format!(
        "serving metrics on http://127.0.0.1:{port}/metrics"
    )));

    // Backups of two kinds, one failed backup (repository missing), WAL archived.
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 100000) g",
    );
    let full = a.backup("full");
    c.psql(
        "postgres",
        "INSERT INTO t SELECT g, 'y' FROM generate_series(1, 20000) g",
    );
    let incr = a.backup("incr");
    let url = a.repo_url();
    c.psql(
        "postgres",
        "ALTER SYSTEM SET strata.repo1 = 'file:///nonexistent/strata-repo'; SELECT pg_reload_conf();",
    );
    std::thread::sleep(Duration::from_millis(500));
    let e = c
        .try_psql("postgres", "SELECT backup_start('diff')")
        .unwrap_err();
    assert!(e.contains("nonexistent"), "{e}");
    c.psql(
        "postgres",
        "ALTER SYSTEM RESET strata.repo1; SELECT pg_reload_conf();",
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.psql("postgres", "SHOW strata.repo1"), url);
    let wal = a.switch_wal();
    a.wait_archived(&wal);
    // WAL written but not archived: the lag.
    c.psql(
        "postgres",
        "INSERT INTO t SELECT g, 'z' FROM generate_series(1, 20000) g",
    );

    let seg_end = |c: &Cluster| {
        let last = c.psql("postgres", "SELECT last_archived_wal FROM pg_stat_archiver");
        match pgformat::lsn::WalFileName::parse(&last, 16 << 20) {
            Some(pgformat::lsn::WalFileName::Segment { segno, .. }) => (segno + 1) * (16 << 20),
            other => panic!("{last}: {other:?}"),
        }
    };
    let insert = |c: &Cluster| {
        num(
            c,
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')",
        ) as u64
    };
    let status = |c: &Cluster| {
        c.psql(
            "postgres",
            "SELECT archived_count, failed_count, summaries_missing FROM archive_status()",
        )
    };
    let status_before = status(c);
    let lag_before = insert(c) - seg_end(c);
    let m = scrape(port);
    let lag_after = insert(c) - seg_end(c);
    assert_eq!(
        status(c),
        status_before,
        "archiving moved during the scrape"
    );

    // The server's counters.
    let counts: Vec<f64> = status_before
        .split('|')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(must(&m, "strata_archived_segments_total", &[]), counts[0]);
    assert_eq!(must(&m, "strata_archive_failures_total", &[]), counts[1]);
    assert_eq!(must(&m, "strata_summaries_missing_total", &[]), counts[2]);
    assert!(counts[0] >= 3.0, "{status_before}");
    let last_ok = num(
        c,
        "SELECT extract(epoch FROM last_archived_time) FROM archive_status()",
    );
    assert!(
        (must(&m, "strata_archive_last_success_timestamp_seconds", &[]) - last_ok).abs() < 1e-3
    );
    let lag = must(&m, "strata_archive_lag_bytes", &[]) as u64;
    assert!(
        lag_before > 1 << 20,
        "the inserts wrote {lag_before} bytes of WAL"
    );
    assert!(
        (lag_before..=lag_after).contains(&lag),
        "{lag_before} <= {lag} <= {lag_after}"
    );
    let ready = std::fs::read_dir(c.wal_dir().join("archive_status"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".ready")
        })
        .count();
    assert_eq!(must(&m, "strata_archive_ready_files", &[]), ready as f64);
    assert_eq!(
        must(&m, "strata_backup_failures_total", &[("kind", "diff")]),
        1.0
    );
    assert_eq!(
        must(&m, "strata_backup_failures_total", &[("kind", "full")]),
        0.0
    );
    assert_eq!(
        must(&m, "strata_backup_failures_total", &[("kind", "incr")]),
        0.0
    );
    assert_eq!(must(&m, "strata_backup_running", &[]), 0.0);
    let version = c.psql("postgres", "SHOW server_version");
    assert_eq!(
        must(
            &m,
            "strata_info",
            &[("version", "0.1.0"), ("pg_version", &version)]
        ),
        1.0
    );

    // The repository's figures, against strata_backups and the files.
    assert_eq!(must(&m, "strata_repository_up", &[]), 1.0);
    for kind in ["full", "diff", "incr"] {
        let n = num(
            c,
            &format!("SELECT count(*) FROM strata_backups WHERE kind = '{kind}'"),
        );
        assert_eq!(must(&m, "strata_backups", &[("kind", kind)]), n, "{kind}");
    }
    for (kind, label) in [("full", &full), ("incr", &incr)] {
        let row = c.psql(
            "postgres",
            &format!(
                "SELECT extract(epoch FROM stop_time), extract(epoch FROM stop_time - start_time), \
                 stored_size, read_size, database_size FROM strata_backups WHERE label = '{label}'"
            ),
        );
        let v: Vec<f64> = row.split('|').map(|x| x.parse().unwrap()).collect();
        let k = [("kind", kind)];
        assert!((must(&m, "strata_backup_last_success_timestamp_seconds", &k) - v[0]).abs() < 1e-3);
        // Start is the label's time, which may be ahead of the clock (labels are unique): never negative.
        assert!((must(&m, "strata_backup_last_duration_seconds", &k) - v[1].max(0.0)).abs() < 1e-3);
        assert_eq!(
            must(&m, "strata_backup_last_stored_bytes", &k),
            v[2],
            "{kind}"
        );
        assert_eq!(
            must(&m, "strata_backup_last_read_bytes", &k),
            v[3],
            "{kind}"
        );
        assert_eq!(
            must(&m, "strata_backup_last_database_bytes", &k),
            v[4],
            "{kind}"
        );
    }
    assert_eq!(
        value(
            &m,
            "strata_backup_last_success_timestamp_seconds",
            &[("kind", "diff")]
        ),
        None
    );
    let rec = num(c, "SELECT extract(epoch FROM recoverable_from_time) FROM backup_recoverability() WHERE timeline = 1");
    assert!(
        (must(
            &m,
            "strata_recoverable_from_timestamp_seconds",
            &[("timeline", "1")]
        ) - rec)
            .abs()
            < 1e-3
    );
    let stanza_dir = a.repo.path().join("main");
    assert_eq!(
        must(&m, "strata_repository_bytes", &[("kind", "backups")]),
        du(&stanza_dir.join("backup")) as f64
    );
    assert_eq!(
        must(&m, "strata_repository_bytes", &[("kind", "wal")]),
        du(&stanza_dir.join("archive")) as f64
    );
    assert_eq!(
        must(&m, "strata_repository_bytes", &[("kind", "summaries")]),
        du(&stanza_dir.join("summary")) as f64
    );
    assert_eq!(
        must(&m, "strata_repository_wal_segments", &[("timeline", "1")]),
        a.archived_segment_names().len() as f64
    );
    // Never verified: absent, not zero.
    assert_eq!(value(&m, "strata_verify_last_timestamp_seconds", &[]), None);

    // strata_metrics() and strata_metrics_text() say the same (the figures come from the same cache).
    assert_eq!(
        num(c, "SELECT value FROM strata_metrics() WHERE name = 'strata_backups' AND labels->>'kind' = 'full'"),
        must(&m, "strata_backups", &[("kind", "full")])
    );
    assert_eq!(
        num(c, "SELECT value FROM strata_metrics() WHERE name = 'strata_backup_last_stored_bytes' AND labels @> '{\"kind\": \"incr\", \"stanza\": \"main\"}'"),
        must(&m, "strata_backup_last_stored_bytes", &[("kind", "incr")])
    );
    let from_sql = parse(&c.psql("postgres", "SELECT strata_metrics_text()"));
    assert_eq!(
        value(&from_sql, "strata_repository_bytes", &[("kind", "wal")]),
        value(&m, "strata_repository_bytes", &[("kind", "wal")])
    );

    // The CLI prints the same repository figures (and no server counters).
    let out = a.strata(&["metrics"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli = parse(&String::from_utf8_lossy(&out.stdout));
    for (name, labels) in [
        ("strata_backups", vec![("kind", "full")]),
        ("strata_backups", vec![("kind", "incr")]),
        ("strata_backup_last_stored_bytes", vec![("kind", "incr")]),
        ("strata_repository_bytes", vec![("kind", "backups")]),
        ("strata_repository_bytes", vec![("kind", "wal")]),
        (
            "strata_recoverable_from_timestamp_seconds",
            vec![("timeline", "1")],
        ),
    ] {
        assert_eq!(
            value(&cli, name, &labels),
            value(&m, name, &labels),
            "{name}{labels:?}"
        );
    }
    assert_eq!(value(&cli, "strata_archived_segments_total", &[]), None);
    let out = Command::new(pg_test::strata_bin())
        .args([
            "metrics",
            "--repo",
            "file:///nonexistent/strata-repo",
            "--stanza",
            "main",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let down = parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(must(&down, "strata_repository_up", &[]), 0.0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonexistent"));

    // Cached: new WAL archived meanwhile does not show until the figures are older than
    // strata.metrics_cache_seconds (60 by default), and their age grows; a backup forgets them.
    let wal_bytes = must(&m, "strata_repository_bytes", &[("kind", "wal")]);
    let age = must(&m, "strata_repository_figures_age_seconds", &[]);
    let wal = a.switch_wal();
    a.wait_archived(&wal);
    std::thread::sleep(Duration::from_millis(1100));
    let m2 = scrape(port);
    assert_eq!(
        must(&m2, "strata_repository_bytes", &[("kind", "wal")]),
        wal_bytes
    );
    assert!(must(&m2, "strata_repository_figures_age_seconds", &[]) >= age + 1.0);
    assert!(
        must(&m2, "strata_archived_segments_total", &[]) > counts[0],
        "counters are live"
    );
    a.backup("incr");
    let m3 = scrape(port);
    assert_eq!(must(&m3, "strata_backups", &[("kind", "incr")]), 2.0);
    assert!(must(&m3, "strata_repository_bytes", &[("kind", "wal")]) > wal_bytes);
    // A shorter period, by reload; and a verification recorded by someone shows up.
    c.psql(
        "postgres",
        "ALTER SYSTEM SET strata.metrics_cache_seconds = 1; SELECT pg_reload_conf();",
    );
    let repo = strata_core::Repo::open(
        &strata_core::config::RepoUrl::parse("repo", &url).unwrap(),
        "main",
    )
    .unwrap();
    strata_core::verify::record(
        &repo,
        &strata_core::verify::LastResult {
            finished: chrono::Utc::now(),
            seconds: 3.5,
            set: None,
            backups_checked: 3,
            errors: 0,
            warnings: 2,
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let m4 = scrape(port);
    assert_eq!(must(&m4, "strata_verify_last_warnings", &[]), 2.0);
    assert_eq!(must(&m4, "strata_verify_last_errors", &[]), 0.0);
    assert_eq!(must(&m4, "strata_verify_last_duration_seconds", &[]), 3.5);

    // Only /metrics; garbage, oversized and half requests get 400 or nothing.
    assert!(get(port, "/").0.starts_with("HTTP/1.1 404"));
    assert!(get(port, "/metrics/../x").0.starts_with("HTTP/1.1 404"));
    assert!(raw(port, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let garbage: Vec<u8> = (0..10_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let answer = raw(port, &garbage);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 1 << 20));
    big.extend(b"\r\n\r\n");
    let answer = raw(port, &big);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert!(raw(port, b"HELLO\r\n\r\n").starts_with("HTTP/1.1 400"));
    {
        let mut half = TcpStream::connect(("127.0.0.1", port)).unwrap();
        half.write_all(b"GET /metr").unwrap();
    } // closed half-way
    {
        // A silent client, given up on after the request timeout; the next client waits its turn.
        let _silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let started = std::time::Instant::now();
        assert!(scrape(port).contains_key(&(
            "strata_repository_up".to_string(),
            [("stanza".to_string(), "main".to_string())].into()
        )));
        assert!(started.elapsed() < Duration::from_secs(15));
    }
    scrape(port);
    assert_eq!(worker_pid(c), Some(pid), "the worker did not restart");
    let log = c.log();
    assert!(log.contains("metrics endpoint: refused a request"), "{log}");
    assert!(
        !log.contains("terminated by signal") && !log.contains("PANIC"),
        "{log}"
    );

    // It stops with the server (exit 0: no restart, no message) and comes back with it.
    c.stop();
    let log = c.log();
    assert!(
        !log.contains(&format!("(PID {pid}) exited")) && !log.contains("terminated by signal"),
        "the worker's exit was logged:\n{log}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens after the stop"
    );
    c.start();
    wait_endpoint(c, port);
    let new_pid = worker_pid(c).expect("the worker runs again");
    assert_ne!(new_pid, pid);
    // Counters start again at zero; the repository's figures are still there.
    let m5 = scrape(port);
    assert_eq!(
        must(&m5, "strata_backup_failures_total", &[("kind", "diff")]),
        0.0
    );
    assert_eq!(must(&m5, "strata_backups", &[("kind", "incr")]), 2.0);
}

/// An address already in use does not keep the server from running: the worker logs why and tries
/// again until the address is free, then serves.
#[test]
fn a_taken_address_is_logged_and_retried() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let a = Archiving::new(
        "metrics-taken",
        &format!("strata.metrics_listen = '127.0.0.1:{port}'\n"),
    );
    let c = &a.cluster;
    c.wait_for("the worker to report the taken address", 30, || {
        c.log()
            .contains(&format!("cannot serve metrics on 127.0.0.1:{port}"))
    });
    assert_eq!(c.psql("postgres", "SELECT 1"), "1");
    drop(taken);
    wait_endpoint(c, port);
    assert_eq!(must(&scrape(port), "strata_backup_running", &[]), 0.0);
}
