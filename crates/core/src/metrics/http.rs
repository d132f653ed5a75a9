//! The smallest HTTP/1.x server that Prometheus needs: one request per connection, answered and
//! closed. Only `GET /metrics` (and `HEAD`) answers 200; another path is 404, another method 405.
//! Whatever is not a well-formed request head within `Limits` (size, time) gets 400, or nothing at
//! all when the client went away or stayed silent, and the connection is closed: a garbage request
//! costs at most `Limits::timeout` of the one thread serving, never a crash. A `stop` callback is
//! polled while reading so that a server shutdown does not wait for a slow client.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Bounds on one request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The request head (request line and headers) may not be longer.
    pub max_head: usize,
    /// The whole request must arrive within this time.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8192,
            timeout: Duration::from_secs(5),
        }
    }
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (`head`: a HEAD request, no body wanted).
    Metrics {
        head: bool,
    },
    NotFound,
    MethodNotAllowed,
    /// Not HTTP, too large, or not UTF-8: answered 400.
    Bad(&'static str),
    /// The client closed or said nothing in time, or the server is stopping: nothing is answered.
    Gone,
}

/// Reads a request head from `stream` and says what it asks for.
pub fn read_request(stream: &mut TcpStream, limits: Limits, stop: &dyn Fn() -> bool) -> Request {
    let deadline = Instant::now() + limits.timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = head_end(&buf) {
            return parse_head(&buf[..end]);
        }
        if buf.len() > limits.max_head {
            return Request::Bad("request head too large");
        }
        let now = Instant::now();
        if now >= deadline || stop() {
            return Request::Gone;
        }
        // Short slices, to notice `stop` while a client dawdles.
        let slice = (deadline - now).min(Duration::from_millis(200));
        if stream.set_read_timeout(Some(slice)).is_err() {
            return Request::Gone;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Request::Gone,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Request::Gone,
        }
    }
}

/// Where the head ends (after the blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_head(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else {
        return Request::Bad("not UTF-8");
    };
    let line = text.lines().next().unwrap_or("");
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Request::Bad("not a request line");
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !token(method) || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Request::Bad("not a request line");
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::MethodNotAllowed,
    };
    if path == "/metrics" {
        Request::Metrics { head }
    } else {
        Request::NotFound
    }
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes a whole response (the connection is closed after it).
pub fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    head_only: bool,
    timeout: Duration,
) -> std::io::Result<()> {
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// Serves one connection: reads the request, answers it with `metrics()` for `/metrics`, closes.
pub fn serve(
    mut stream: TcpStream,
    limits: Limits,
    stop: &dyn Fn() -> bool,
    metrics: &mut dyn FnMut() -> String,
) -> Request {
    // An accepted socket may inherit a non-blocking listener's mode on some systems.
    let _ = stream.set_nonblocking(false);
    let request = read_request(&mut stream, limits, stop);
    let t = limits.timeout;
    let text = "text/plain; charset=utf-8";
    let _ = match &request {
        Request::Metrics { head } => {
            respond(&mut stream, "200 OK", CONTENT_TYPE, &metrics(), *head, t)
        }
        Request::NotFound => respond(
            &mut stream,
            "404 Not Found",
            text,
            "only /metrics is served\n",
            false,
            t,
        ),
        Request::MethodNotAllowed => respond(
            &mut stream,
            "405 Method Not Allowed",
            text,
            "use GET\n",
            false,
            t,
        ),
        Request::Bad(why) => respond(
            &mut stream,
            "400 Bad Request",
            text,
            &format!("{why}\n"),
            false,
            t,
        ),
        Request::Gone => Ok(()),
    };
    if matches!(request, Request::Bad(_)) {
        linger(&mut stream);
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    request
}

/// After answering a request that was cut short, reads (a bounded amount, for a bounded time) what
/// the client still sends: closing with unread data makes the kernel reset the connection, and the
/// client might lose the answer.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut left: usize = 2 << 20;
    let mut chunk = [0u8; 16384];
    while left > 0 && Instant::now() < deadline {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Sends `bytes` (then closes the write side when `close`), serves, returns what was served and
    /// the raw response.
    fn exchange(bytes: &[u8], close: bool, limits: Limits) -> (Request, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = bytes.to_vec();
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            // The server may answer (400) and close before everything is sent: ignore write errors.
            let _ = c.write_all(&bytes);
            if close {
                let _ = c.shutdown(std::net::Shutdown::Write);
            }
            let mut out = Vec::new();
            let _ = c.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        });
        let (stream, _) = listener.accept().unwrap();
        let req = serve(stream, limits, &|| false, &mut || "m 1\n".to_string());
        (req, client.join().unwrap())
    }

    fn quick() -> Limits {
        Limits {
            max_head: 8192,
            timeout: Duration::from_millis(500),
        }
    }

    #[test]
    fn metrics_is_served_with_the_text_format_content_type() {
        let (req, out) = exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", false, quick());
        assert_eq!(req, Request::Metrics { head: false });
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(
            out.contains("Content-Type: text/plain; version=0.0.4"),
            "{out}"
        );
        assert!(out.contains("Content-Length: 4\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nm 1\n"), "{out}");
        let (req, out) = exchange(b"GET /metrics?x=1 HTTP/1.0\n\n", false, quick());
        assert_eq!(req, Request::Metrics { head: false });
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let (req, out) = exchange(b"HEAD /metrics HTTP/1.1\r\n\r\n", false, quick());
        assert_eq!(req, Request::Metrics { head: true });
        assert!(out.ends_with("\r\n\r\n"), "{out}");
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let (req, out) = exchange(b"GET / HTTP/1.1\r\n\r\n", false, quick());
        assert_eq!(req, Request::NotFound);
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        let (req, _) = exchange(b"GET /metricsx HTTP/1.1\r\n\r\n", false, quick());
        assert_eq!(req, Request::NotFound);
        let (req, out) = exchange(b"POST /metrics HTTP/1.1\r\n\r\n", false, quick());
        assert_eq!(req, Request::MethodNotAllowed);
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    }

    #[test]
    fn garbage_gets_400_or_nothing() {
        let (req, out) = exchange(b"\x00\xff\xfe garbage\r\n\r\n", false, quick());
        assert_eq!(req, Request::Bad("not UTF-8"));
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        let (req, _) = exchange(b"hello there\r\n\r\n", false, quick());
        assert_eq!(req, Request::Bad("not a request line"));
        let (req, _) = exchange(b"GET  /metrics HTTP/1.1\r\n\r\n", false, quick());
        assert_eq!(req, Request::Bad("not a request line"));
        // A huge header: 400 as soon as the limit is passed, without reading the rest.
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 1 << 20));
        let (req, out) = exchange(&big, false, quick());
        assert_eq!(req, Request::Bad("request head too large"));
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        // Half a request, then closed: nothing to answer.
        let (req, out) = exchange(b"GET /met", true, quick());
        assert_eq!((req, out.as_str()), (Request::Gone, ""));
    }

    #[test]
    fn a_silent_client_is_dropped_after_the_timeout_or_at_stop() {
        let started = Instant::now();
        let (req, out) = exchange(b"GET /metrics HTTP/1.1\r\n", false, quick());
        assert_eq!((req, out.as_str()), (Request::Gone, ""));
        assert!(started.elapsed() < Duration::from_secs(3));

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        let started = Instant::now();
        let slow = Limits {
            max_head: 8192,
            timeout: Duration::from_secs(60),
        };
        assert_eq!(read_request(&mut s, slow, &|| true), Request::Gone);
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(c);
    }
}
