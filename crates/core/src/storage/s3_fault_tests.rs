//! Retries of the S3 backend, through a fault-injecting HTTP proxy between object_store and moto: every
//! third request answered `503 SlowDown`, cut off in the middle of its reply, or answered later than
//! the request timeout. Whatever the fault, every put, get and list succeeds, and the bucket holds
//! exactly the objects written, byte for byte (checked directly, without the proxy). With the server
//! down, the error comes within the retry budget and names the repository and the object.
//!
//! The proxy handles one request per connection (moto answers `Connection: close`), forwarding it to
//! moto on a new connection and reading the whole reply before deciding what the client gets.

use super::s3::MAX_BACKOFF;
use super::s3_tests::{free_port, options, url, Moto};
use super::tests::k;
use super::*;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `503 SlowDown` instead of forwarding.
    SlowDown,
    /// Forwarded, then half of the reply (headers included when there is no body) and a closed
    /// connection: for a PUT, the object is stored but the client cannot know.
    DropMidReply,
    /// Forwarded, then the reply held back this long.
    Delay(Duration),
}

struct Proxy {
    port: u16,
    faults: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// A proxy to moto on `upstream`, applying `fault` to every third request.
    fn start(upstream: u16, fault: Fault) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let f = faults.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                let faulty = n.is_multiple_of(3);
                if faulty {
                    f.fetch_add(1, Ordering::SeqCst);
                }
                tokio::spawn(serve(client, upstream, faulty.then_some(fault)));
            }
        });
        Proxy {
            port,
            faults,
            runtime: Some(runtime),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn faults(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Reads one request: its head (through the blank line) and its body (by Content-Length).
async fn read_request(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "the proxy reads bodies by length only: {head}"
    );
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + len {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

async fn serve(mut client: TcpStream, upstream: u16, fault: Option<Fault>) -> std::io::Result<()> {
    let request = read_request(&mut client).await?;
    if let Some(Fault::SlowDown) = fault {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                    <Message>Please reduce your request rate.</Message></Error>";
        let reply = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return client.write_all(reply.as_bytes()).await;
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
    up.write_all(&request).await?;
    let mut reply = Vec::new();
    up.read_to_end(&mut reply).await?;
    match fault {
        Some(Fault::DropMidReply) => {
            let head_end = reply
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(reply.len(), |i| i + 4);
            let cut = if reply.len() > head_end {
                head_end + (reply.len() - head_end) / 2
            } else {
                head_end / 2
            };
            client.write_all(&reply[..cut]).await?;
            // Dropping the socket closes the connection with the reply unfinished.
            return Ok(());
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    client.write_all(&reply).await
}

/// Bytes that differ at every offset of every object (a misplaced range would show).
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[seed as usize % 4] ^ seed)
        .collect()
}

/// Puts, reads and lists through the proxy, then checks the bucket directly.
fn survives(fault: Fault, request_timeout: Duration) {
    let m = Moto::shared();
    let bucket = m.new_bucket();
    let proxy = Proxy::start(m.port, fault);
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
