//! moto's S3 server (`moto[server]`, installed by scripts/setup.sh into /opt/strata-moto) started on a
//! free port of 127.0.0.1, for the storage layer's S3 tests and the end-to-end ones: a real S3 HTTP
//! server, killed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto_server; killed on drop (its log removed).
pub struct Moto {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

fn moto_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::var_os("STRATA_MOTO_SERVER")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/opt/strata-moto/bin/moto_server")])
        .chain(std::env::split_paths(&path).map(|d| d.join("moto_server")));
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "moto_server (the S3 server the tests run against) is not installed: run scripts/setup.sh, \
         which installs moto[server] into /opt/strata-moto (or set STRATA_MOTO_SERVER)"
    );
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One HTTP/1.1 request without signing (moto accepts them for its own API, bucket creation and
/// listings, not for reading objects): the status and body.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).ok()?;
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&reply[..split]).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, reply[split + 4..].to_vec()))
}

impl Moto {
    /// Starts a server (a few attempts: the free port may be taken meanwhile).
    pub fn start() -> Moto {
        let bin = moto_binary();
        let log = std::env::temp_dir().join(format!(
            "strata-moto-{}-{}.log",
            std::process::id(),
            free_port()
        ));
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("moto's log file"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut m = Moto {
                child,
                port,
                log: log.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = m.child.try_wait() {
                    break; // the port was taken meanwhile, or it cannot start: see below
                }
                if http(port, "GET", "/moto-api/", b"").is_some() {
                    return m;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!(
            "moto_server did not start; its log {}:\n{}",
            log.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) {
        let (status, body) =
            http(self.port, "PUT", &format!("/{name}"), b"").expect("moto answers");
        assert_eq!(
            status,
            200,
            "creating bucket {name}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
