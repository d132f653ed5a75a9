//! Retries of the S3 backend, through a fault-injecting HTTP proxy between object_store and moto: every
//! third request answered `503 SlowDown`, cut off in the middle of its reply, or answered later than
//! the request timeout. Whatever the fault, every put, get and list succeeds, and the bucket holds
//! exactly the objects written, byte for byte (checked directly, without the proxy). With the server
//! down, the error comes within the retry budget and names the repository and the object.
//!
//! The proxy is `testkit::fault_proxy`'s, shared with the end-to-end tests.

use super::s3::MAX_BACKOFF;
use super::s3_tests::{free_port, new_bucket, options, shared_moto, url};
use super::tests::k;
use super::*;
use crate::testkit::fault_proxy::{Fault, FaultProxy};
use std::time::{Duration, Instant};

/// Bytes that differ at every offset of every object (a misplaced range would show).
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[seed as usize % 4] ^ seed)
        .collect()
}

/// Puts, reads and lists through the proxy, then checks the bucket directly.
fn survives(fault: Fault, request_timeout: Duration) {
    let m = shared_moto();
    let bucket = new_bucket(&m);
    let proxy = FaultProxy::start(m.port, &[fault]);
    let mut o = options(&proxy.endpoint());
    o.request_timeout = request_timeout;
    o.retry_timeout = Duration::from_secs(60);
    o.max_retries = 10;
    let s = Storage::open(&url(&bucket, "r", o)).unwrap();
    let objects: Vec<(RepoKey, Vec<u8>)> = (0..6u8)
        .map(|i| (k(&format!("st/o{i}")), pattern(i, 150_000 + usize::from(i))))
        .collect();
    for (key, data) in &objects {
        assert_eq!(
            s.put_new(key, data.clone()).unwrap(),
            PutOutcome::Written,
            "{key}"
        );
    }
    s.put_replace(&k("st/latest"), b"o5".to_vec()).unwrap();
    for (key, data) in &objects {
        assert!(s.get(key).unwrap().unwrap() == data[..], "{key} reads back");
        let piece = s.get_range(key, 1000, 50_000).unwrap().unwrap();
        assert!(piece == data[1000..51_000], "{key} range");
        assert_eq!(s.size(key).unwrap(), Some(data.len() as u64));
    }
    let mut expected: Vec<(RepoKey, u64)> = objects
        .iter()
        .map(|(key, d)| (key.clone(), d.len() as u64))
        .collect();
    expected.push((k("st/latest"), 2));
    expected.sort();
    assert_eq!(s.list(&k("st")).unwrap(), expected);
    assert!(
        proxy.faults() >= 5,
        "only {} faults injected",
        proxy.faults()
    );
    // 6 creates, 1 replace, 3 reads of each object, 1 listing: more attempts than that are retries
    // made here (a reply lost or cut short), not inside object_store (5xx, timeouts of reads).
    let operations = 6 + 1 + 6 * 3 + 1;
    eprintln!(
        "{fault:?}: {} faults injected, {} attempts for {operations} operations",
        proxy.faults(),
        s.requests()
    );
    if !matches!(fault, Fault::SlowDown) {
        assert!(
            s.requests() > operations,
            "the lost replies were retried here"
        );
    }

    // The bucket itself, without the proxy: these objects, byte-identical, and nothing else.
    let direct = Storage::open(&url(&bucket, "", options(&m.endpoint()))).unwrap();
    let all = direct.list(&k("r")).unwrap();
    assert_eq!(all.len(), expected.len(), "{all:?}");
    for (key, data) in &objects {
        let stored = direct.get(&k(&format!("r/{key}"))).unwrap().unwrap();
        assert!(stored == data[..], "{key} stored byte-identical");
    }
}

#[test]
fn retries_through_slow_down_replies() {
    survives(Fault::SlowDown, Duration::from_secs(10));
}

#[test]
fn retries_through_connections_dropped_mid_reply() {
    survives(Fault::DropMidReply, Duration::from_secs(10));
}

#[test]
fn retries_through_replies_later_than_the_request_timeout() {
    survives(
        Fault::Delay(Duration::from_millis(1600)),
        Duration::from_millis(1000),
    );
}

#[test]
fn a_server_down_fails_within_the_retry_budget_naming_repository_and_object() {
    let port = free_port(); // nothing listens there
    let mut o = options(&format!("http://127.0.0.1:{port}"));
    o.retry_timeout = Duration::from_secs(2);
    o.request_timeout = Duration::from_secs(1);
    let bound = o.retry_timeout + o.request_timeout + MAX_BACKOFF + Duration::from_secs(2);
    let s = Storage::open(&url("bucket", "pg", o)).unwrap();
    let key = k("main/archive/15-1/0000000100000000/000000010000000000000001.zst");
    let t = Instant::now();
    let errors = [
        s.put_new(&key, vec![1; 100]).unwrap_err(),
        s.get(&key).unwrap_err(),
        s.list(&k("main")).unwrap_err(),
    ];
    assert!(t.elapsed() < bound * 3, "took {:?}", t.elapsed());
    eprintln!("server down: failed in {:?}", t.elapsed());
    for e in errors {
        let text = e.to_string();
        eprintln!("{text}");
        assert_eq!(e.class(), crate::ErrorClass::Io, "{text}");
        assert!(
            text.contains("s3://bucket/pg (endpoint http://127.0.0.1:"),
            "{text}"
        );
        assert!(
            text.contains("main/archive") || text.contains("main:"),
            "{text}"
        );
    }
}
