//! A fault-injecting HTTP proxy between pg_strata and moto, for retry tests (the storage layer's and the
//! end-to-end ones): every third request gets a fault, the given faults taking turns — a `503 SlowDown`
//! reply instead of forwarding, the reply cut off in the middle (for a PUT: stored, but the client
//! cannot know), the reply held back longer than the client's request timeout. One request per
//! connection (moto answers `Connection: close`); the whole reply is read from moto before the client
//! gets its part.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct FaultProxy {
    pub port: u16,
    faults: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// `503 SlowDown` instead of forwarding.
    SlowDown,
    /// Forwarded, then half of the reply (headers included when there is no body) and a closed
    /// connection.
    DropMidReply,
    /// Forwarded, then the reply held back this long (make it longer than the request timeout).
    Delay(Duration),
}

impl FaultProxy {
    /// A proxy to moto on `upstream` giving every third request the next of `faults` in turn.
    pub fn start(upstream: u16, faults: &[Fault]) -> FaultProxy {
        assert!(!faults.is_empty(), "at least one fault");
        let kinds = faults.to_vec();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("its port").port();
        let faults = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (faults.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = 0usize;
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        seen += 1;
                        let fault = seen.is_multiple_of(3).then(|| {
                            let n = f.fetch_add(1, Ordering::SeqCst);
                            kinds[n % kinds.len()]
                        });
                        std::thread::spawn(move || {
                            let _ = serve(client, upstream, fault);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy { port, faults, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many faults were injected so far.
    pub fn faults(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads one request: its head (through the blank line) and its body (by Content-Length).
fn read_request(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk)?;
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
        .map_or(0, |v| v.trim().parse().expect("a length"));
    while buf.len() < head_end + len {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

fn serve(mut client: TcpStream, upstream: u16, fault: Option<Fault>) -> std::io::Result<()> {
    let request = read_request(&mut client)?;
    if let Some(Fault::SlowDown) = fault {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                    <Message>Please reduce your request rate.</Message></Error>";
        let reply = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return client.write_all(reply.as_bytes());
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(&request)?;
    let mut reply = Vec::new();
    up.read_to_end(&mut reply)?;
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
            // Returning drops the socket: the connection closes with the reply unfinished.
            return client.write_all(&reply[..cut]);
        }
        Some(Fault::Delay(d)) => std::thread::sleep(d),
        _ => {}
    }
    client.write_all(&reply)
}
