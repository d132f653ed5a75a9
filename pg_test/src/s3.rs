//! A real S3 server for end-to-end tests: moto's server mode (`moto_server`, installed by
//! scripts/setup.sh into /opt/strata-moto) on 127.0.0.1, with a bucket made for the test, behind a
//! `Gate`: a TCP relay that can be closed (connections refused, open ones cut) and opened again, to
//! stop "the S3 server" for a while without losing what moto holds in memory. Dropping `S3Server`
//! stops both.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
pub use strata_core::testkit::moto::http;
use strata_core::testkit::moto::{free_port, Moto};

/// The access key id and secret the tests configure (moto accepts any).
pub const S3_KEY: &str = "AKIDSTRATAE2EKEY";
pub const S3_SECRET: &str = "e2e-secret-Zq8v3Lw9Xk2Tb7Rn";

/// moto_server with one bucket, reached through a `Gate`.
pub struct S3Server {
    pub gate: Gate,
    moto: Moto,
    /// moto itself, without the gate (for a proxy of one's own).
    pub moto_port: u16,
    pub bucket: String,
}

impl S3Server {
    pub fn start(bucket: &str) -> S3Server {
        let moto = Moto::start();
        moto.create_bucket(bucket);
        S3Server {
            gate: Gate::open_to(moto.port),
            moto_port: moto.port,
            moto,
            bucket: bucket.to_string(),
        }
    }

    /// The endpoint clients use (the gate's).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.gate.port)
    }

    /// `strata.repoN = 's3://bucket/prefix'` and its settings, as postgresql.conf lines: path style, the
    /// test keys, short retries (a stopped server fails an archive attempt within seconds).
    pub fn conf(&self, n: u8, prefix: &str) -> String {
        self.conf_with_endpoint(n, prefix, &self.endpoint())
    }

    /// The same settings reaching the server at `endpoint` (a proxy in front of moto, or moto itself).
    pub fn conf_with_endpoint(&self, n: u8, prefix: &str, endpoint: &str) -> String {
        format!(
            "strata.repo{n} = 's3://{}/{prefix}'\nstrata.repo{n}_s3_endpoint = '{}'\n\
             strata.repo{n}_s3_uri_style = 'path'\nstrata.repo{n}_s3_region = 'us-east-1'\n\
             strata.repo{n}_s3_key = '{S3_KEY}'\nstrata.repo{n}_s3_key_secret = '{S3_SECRET}'\n\
             strata.repo{n}_s3_max_retries = 2\nstrata.repo{n}_s3_retry_timeout = '3s'\n\
             strata.repo{n}_s3_request_timeout = '10s'\n",
            self.bucket, endpoint
        )
    }

    /// Every key in the bucket under `prefix`, straight from moto (not through the gate).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = http(
            self.moto.port,
            "GET",
            &format!(
                "/{}?list-type=2&prefix={prefix}&max-keys=100000",
                self.bucket
            ),
            b"",
        )
        .expect("list");
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body);
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// Every object of `stanza` stored under `prefix` (`s3://bucket/prefix/stanza/...`): its key below
    /// the bucket and its bytes, read with strata_core's own (signing) S3 client, since moto refuses
    /// unsigned reads of objects.
    pub fn stanza_objects(&self, prefix: &str, stanza: &str) -> Vec<(String, Vec<u8>)> {
        let conf = strata_core::config::parse_conf(&format!(
            "strata.stanza = '{stanza}'\n{}",
            self.conf(1, prefix)
        ));
        let set = strata_core::config::RepoSet::from_settings(&|n| conf.get(n).cloned())
            .expect("the test's S3 settings");
        let repo = strata_core::Repo::open_config(set.get(1).unwrap()).expect("open the bucket");
        let listed = repo
            .storage()
            .list(repo.keys().stanza_root())
            .expect("list the stanza");
        listed
            .into_iter()
            .map(|(key, _)| {
                let body = repo
                    .storage()
                    .get(&key)
                    .expect("get")
                    .expect("a listed object");
                (format!("{prefix}/{key}"), body.to_vec())
            })
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Then the fields: moto is killed when `moto` drops.
        self.gate.close();
    }
}

/// A TCP relay to a port that can be closed and opened again.
pub struct Gate {
    pub port: u16,
    target: u16,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    listener: Mutex<Option<Arc<AtomicBool>>>,
}

impl Gate {
    fn open_to(target: u16) -> Gate {
        let g = Gate {
            port: free_port(),
            target,
            open: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
            listener: Mutex::new(None),
        };
        g.open();
        g
    }

    /// Accepts connections again (on the same port).
    pub fn open(&self) {
        if self.open.swap(true, Ordering::SeqCst) {
            return;
        }
        let listener = (0..100)
            .find_map(|_| {
                TcpListener::bind(("127.0.0.1", self.port))
                    .map_err(|_| std::thread::sleep(Duration::from_millis(100)))
                    .ok()
            })
            .expect("rebind the gate's port");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        *self.listener.lock().unwrap() = Some(stop.clone());
        let (target, conns) = (self.target, self.conns.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        let mut list = conns.lock().unwrap();
                        for s in [&client, &server] {
                            if let Ok(c) = s.try_clone() {
                                list.push(c);
                            }
                        }
                        relay(client, server);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            // The listener is dropped here: connections are refused until `open`.
        });
    }

    /// Refuses new connections and cuts the open ones.
    pub fn close(&self) {
        if !self.open.swap(false, Ordering::SeqCst) {
            return;
        }
        if let Some(stop) = self.listener.lock().unwrap().take() {
            stop.store(true, Ordering::SeqCst);
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Let the accept loop see the flag and drop its listener.
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn relay(client: TcpStream, server: TcpStream) {
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
        pipe(client, s2);
        pipe(server, c2);
    }
}
