//! The settings of an S3 repository: where the bucket is (`s3://bucket/prefix`, an endpoint for
//! S3-compatible servers, region, URI style), how to authenticate (a key and its secret, or the standard
//! `AWS_*` environment variables and instance credentials that object_store reads), TLS, and how long to
//! retry.
//!
//! Secrets never leave this struct in text: its `Debug` says only whether a key is set, a refused
//! secret's value is never echoed in an error, and endpoints holding credentials (`user:pass@`) are
//! refused so that the endpoint can be printed.
//!
//! Settings are named `strata.repoN_s3_<name>`; `S3Options::set` takes any such name, so the server's
//! GUCs, the CLI's flags and a configuration file all go through one parser.

use crate::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// How requests address the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriStyle {
    /// `https://bucket.endpoint/key` (AWS's default and pgBackRest's).
    Host,
    /// `https://endpoint/bucket/key` (most self-hosted servers, and any endpoint given as an IP address).
    Path,
}

/// How "create only if absent" is done on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionalCreate {
    /// One PUT with `If-None-Match: *`: the server refuses (412) to replace an object. AWS S3 since
    /// 2024, MinIO, Cloudflare R2, Ceph RGW recent versions, moto.
    IfNoneMatch,
    /// A HEAD, then a PUT when absent: for servers that ignore `If-None-Match`. Two writers racing on
    /// the same key inside that window can both succeed (the last one wins); pg_strata's writers use
    /// distinct keys or hold a claim, and archived WAL of one cluster is written by one archiver.
    HeadThenPut,
}

/// The settings of an S3 repository besides its bucket and prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Options {
    /// `http(s)://host[:port]` of an S3-compatible server; None for AWS (from the region).
    pub endpoint: Option<String>,
    /// None: `AWS_REGION`/`AWS_DEFAULT_REGION`, else us-east-1.
    pub region: Option<String>,
    pub uri_style: UriStyle,
    /// The access key id; None: from `AWS_ACCESS_KEY_ID` or instance credentials.
    pub key: Option<String>,
    /// The secret access key; None: from `AWS_SECRET_ACCESS_KEY` or instance credentials.
    pub key_secret: Option<String>,
    /// A PEM file of certificate authorities to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    pub verify_tls: bool,
    /// Retries of one request after a transient failure (5xx, 429/503 SlowDown, timeouts, resets).
    pub max_retries: usize,
    /// No retry starts later than this after a request's first attempt: a failure is reported within
    /// `retry_timeout + request_timeout` and one pause between attempts (at most 5 s).
    pub retry_timeout: Duration,
    /// One attempt of one request, body included.
    pub request_timeout: Duration,
    pub conditional_create: ConditionalCreate,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: None,
            uri_style: UriStyle::Host,
            key: None,
            key_secret: None,
            ca_file: None,
            verify_tls: true,
            max_retries: 10,
            retry_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(120),
            conditional_create: ConditionalCreate::IfNoneMatch,
        }
    }
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "(set)" } else { "(unset)" };
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("uri_style", &self.uri_style)
            .field("key", &set(&self.key))
            .field("key_secret", &set(&self.key_secret))
            .field("ca_file", &self.ca_file)
            .field("verify_tls", &self.verify_tls)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("conditional_create", &self.conditional_create)
            .finish()
    }
}

/// The setting names `S3Options::set` knows, after `strata.repoN_`.
pub const S3_SETTINGS: &[&str] = &[
    "s3_endpoint",
    "s3_region",
    "s3_uri_style",
    "s3_key",
    "s3_key_secret",
    "s3_ca_file",
    "s3_verify_tls",
    "s3_max_retries",
    "s3_retry_timeout",
    "s3_request_timeout",
    "s3_conditional_put",
];

impl S3Options {
    /// Sets one option from a setting `strata.repoN_s3_<name>` (or just `s3_<name>`). An empty value
    /// restores the default. Errors name the setting and, for secrets, never show the value.
    pub fn set(&mut self, setting: &str, value: &str) -> Result<()> {
        let Some(i) = setting.find("s3_") else {
            return Err(bad(setting, value, "not an S3 setting"));
        };
        let name = &setting[i..];
        let value = value.trim();
        let d = S3Options::default();
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
        match name {
            "s3_endpoint" => self.endpoint = check_endpoint(setting, value)?,
            "s3_region" => {
                if !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(bad(setting, value, "a region is letters, digits and '-'"));
                }
                self.region = opt(value)
            }
            "s3_uri_style" => {
                self.uri_style = match value.to_ascii_lowercase().as_str() {
                    "" | "host" => UriStyle::Host,
                    "path" => UriStyle::Path,
                    _ => return Err(bad(setting, value, "expected host or path")),
                }
            }
            "s3_key" | "s3_key_secret" => {
                if value.chars().any(char::is_control) {
                    return Err(bad(setting, "(hidden)", "it holds control characters"));
                }
                let v = opt(value);
                if name == "s3_key" {
                    self.key = v
                } else {
                    self.key_secret = v
                }
            }
            "s3_ca_file" => {
                if !value.is_empty() && !value.starts_with('/') {
                    return Err(bad(setting, value, "use an absolute path"));
                }
                self.ca_file = opt(value).map(PathBuf::from)
            }
            "s3_verify_tls" => {
                self.verify_tls = match value.to_ascii_lowercase().as_str() {
                    "" | "on" | "true" | "yes" | "1" => true,
                    "off" | "false" | "no" | "0" => false,
                    _ => return Err(bad(setting, value, "expected on or off")),
                }
            }
            "s3_max_retries" => {
                self.max_retries = match value {
                    "" => d.max_retries,
                    v => v
                        .parse()
                        .ok()
                        .filter(|n| *n <= 100)
                        .ok_or_else(|| bad(setting, v, "expected a number from 0 to 100"))?,
                }
            }
            "s3_retry_timeout" => {
                self.retry_timeout = parse_duration(setting, value, d.retry_timeout)?
            }
            "s3_request_timeout" => {
                self.request_timeout = parse_duration(setting, value, d.request_timeout)?;
                if self.request_timeout.is_zero() {
                    return Err(bad(setting, value, "a request needs some time"));
                }
            }
            "s3_conditional_put" => {
                self.conditional_create = match value.to_ascii_lowercase().as_str() {
                    "" | "if-none-match" => ConditionalCreate::IfNoneMatch,
                    "head" => ConditionalCreate::HeadThenPut,
                    _ => return Err(bad(setting, value, "expected if-none-match or head")),
                }
            }
            _ => {
                return Err(bad(
                    setting,
                    value,
                    &format!("unknown S3 setting; known: {}", S3_SETTINGS.join(", ")),
                ))
            }
        }
        Ok(())
    }
}

fn bad(name: &str, value: &str, reason: &str) -> Error {
    Error::BadSetting {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn check_endpoint(setting: &str, value: &str) -> Result<Option<String>> {
    if value.is_empty() {
        return Ok(None);
    }
    let Some(rest) = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
    else {
        return Err(bad(
            setting,
            value,
            "expected http(s)://host[:port], like https://s3.example.com",
        ));
    };
    if rest.contains('@') {
        // Never echo it: it may hold a password.
        return Err(bad(
            setting,
            "(hidden)",
            "credentials do not belong in the endpoint; use the _s3_key and _s3_key_secret settings",
        ));
    }
    let host = rest.trim_end_matches('/');
    if host.is_empty()
        || host.contains('/')
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    {
        return Err(bad(
            setting,
            value,
            "expected http(s)://host[:port] with no path, like https://s3.example.com",
        ));
    }
    Ok(Some(value.trim_end_matches('/').to_string()))
}

/// `90`, `90s`, `500ms`, `2min`; empty: the default.
fn parse_duration(setting: &str, value: &str, default: Duration) -> Result<Duration> {
    if value.is_empty() {
        return Ok(default);
    }
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (n, unit) = value.split_at(split);
    let n: u64 = n.parse().map_err(|_| {
        bad(
            setting,
            value,
            "expected a duration like 60s, 500ms or 2min",
        )
    })?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "min" => Duration::from_secs(n * 60),
        _ => {
            return Err(bad(
                setting,
                value,
                "expected a duration like 60s, 500ms or 2min",
            ))
        }
    };
    if d > Duration::from_secs(3600) {
        return Err(bad(setting, value, "at most 1 hour"));
    }
    Ok(d)
}

/// Splits and checks what follows `s3://`: a bucket name as S3 allows it, and a prefix of non-empty
/// segments without '.' or '..' or control characters. A trailing '/' is dropped.
pub(super) fn parse_location(rest: &str) -> std::result::Result<(String, String), String> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let ok_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric()
        && !bucket.contains("..");
    if !ok_bucket {
        return Err(
            "the bucket name must be 3 to 63 lowercase letters, digits, '.' or '-', \
                    starting and ending with a letter or digit, like s3://my-bucket/prefix"
                .into(),
        );
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    if prefix.chars().any(char::is_control) {
        return Err("the prefix must not contain control characters".into());
    }
    if !prefix.is_empty() {
        for seg in prefix.split('/') {
            match seg {
                "" => {
                    return Err(
                        "the prefix must not have empty parts ('//' or a leading '/')".into(),
                    )
                }
                "." | ".." => return Err("the prefix must not contain '.' or '..' parts".into()),
                _ if seg.contains(['\\', '*', '?', '#']) => {
                    return Err("the prefix must not contain '\\', '*', '?' or '#'".into())
                }
                _ => {}
            }
        }
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RepoUrl;

    #[test]
    fn s3_urls() {
        let RepoUrl::S3 { bucket, prefix, .. } =
            RepoUrl::parse("strata.repo1", "s3://my-bucket/pg/main/").unwrap()
        else {
            panic!("not S3")
        };
        assert_eq!((bucket.as_str(), prefix.as_str()), ("my-bucket", "pg/main"));
        let u = RepoUrl::parse("strata.repo1", "s3://b.example").unwrap();
        assert_eq!(u.display(), "s3://b.example");
        let e = RepoUrl::parse("strata.repo2", "s3://-x/p")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("strata.repo2") && e.contains("bucket name"),
            "{e}"
        );
    }

    #[test]
    fn settings_are_checked_and_secrets_never_shown() {
        let mut o = S3Options::default();
        o.set("strata.repo1_s3_endpoint", "http://127.0.0.1:9000/")
            .unwrap();
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        o.set("strata.repo1_s3_uri_style", "path").unwrap();
        o.set("strata.repo1_s3_key", "AKIDEXAMPLE").unwrap();
        o.set("strata.repo1_s3_key_secret", "wJalrXUtnFEMI")
            .unwrap();
        o.set("strata.repo1_s3_retry_timeout", "500ms").unwrap();
        o.set("strata.repo1_s3_request_timeout", "2min").unwrap();
        o.set("strata.repo1_s3_verify_tls", "off").unwrap();
        o.set("strata.repo1_s3_conditional_put", "head").unwrap();
        assert_eq!(o.uri_style, UriStyle::Path);
        assert_eq!(o.retry_timeout, Duration::from_millis(500));
        assert_eq!(o.request_timeout, Duration::from_secs(120));
        assert!(!o.verify_tls);
        assert_eq!(o.conditional_create, ConditionalCreate::HeadThenPut);
        let dbg = format!("{o:?}");
        assert!(!dbg.contains("AKID") && !dbg.contains("wJalr"), "{dbg}");
        for (name, value, why) in [
            ("strata.repo1_s3_endpoint", "ftp://x", "http"),
            ("strata.repo1_s3_endpoint", "http://x/path", "no path"),
            ("strata.repo1_s3_uri_style", "virtual", "host or path"),
            ("strata.repo1_s3_retry_timeout", "5 weeks", "duration"),
            ("strata.repo1_s3_max_retries", "-1", "number"),
            ("strata.repo1_s3_ca_file", "rel/ca.pem", "absolute"),
            ("strata.repo1_s3_colour", "x", "unknown"),
        ] {
            let e = o.set(name, value).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(why), "{name}: {e}");
        }
        let e = o
            .set(
                "strata.repo1_s3_endpoint",
                "https://u:hunter2@s3.example.com",
            )
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2") && e.contains("_s3_key"), "{e}");
        let e = o
            .set("strata.repo1_s3_key_secret", "zq\u{1}x9")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("zq") && e.contains("hidden"), "{e}");
        o.set("strata.repo1_s3_endpoint", "").unwrap();
        assert_eq!(o.endpoint, None);
    }
}
