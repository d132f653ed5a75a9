//! The S3 backend (`s3://bucket/prefix`): object_store's `AmazonS3` (request signing, retries with
//! backoff, `If-None-Match: *` for creates) under the repository's prefix, plus what only a bucket has:
//! a root that may not exist or may refuse the credentials (probed by listing at most one key), ETags
//! as fingerprints, and errors that must name the repository and never a secret.
//!
//! Messages: object_store's errors carry the request URL and the server's XML error body. The body is
//! cut to its `Code` and `Message` (S3 puts the access key id, the string to sign and the canonical
//! request in some of them), and the key and its secret are blanked out of whatever remains.

use super::{Backend, Io, ObjectStamp, RetryBudget, Stamp};
use crate::config::{ConditionalCreate, S3Options, UriStyle};
use crate::error::error_chain;
use crate::paths::RepoKey;
use crate::{Error, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as ObjPath;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use std::path::Path;
use std::sync::Arc;

/// The longest pause between two attempts of a request.
pub(super) const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);

pub struct S3Backend {
    store: Arc<dyn ObjectStore>,
    /// The bucket without the prefix, for the root probe.
    s3: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    describe: String,
    /// Values blanked out of every message.
    secrets: Vec<String>,
    budget: RetryBudget,
    create_by_head: bool,
}

impl S3Backend {
    /// Prepares the client; nothing is sent yet (`check_root` probes the bucket).
    pub fn open(bucket: &str, prefix: &str, o: &S3Options) -> Result<S3Backend> {
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let bad = |name: &str, value: &str, reason: String| Error::BadSetting {
            name: format!("strata.repoN_s3_{name}"),
            value: value.to_string(),
            reason,
        };
        if o.key.is_some() != o.key_secret.is_some() {
            return Err(bad(
                if o.key.is_some() { "key_secret" } else { "key" },
                "",
                format!("{url}: set both _s3_key and _s3_key_secret, or neither (to use AWS_* variables)"),
            ));
        }
        let mut client = ClientOptions::new()
            .with_timeout(o.request_timeout)
            .with_allow_invalid_certificates(!o.verify_tls);
        if let Some(ca) = &o.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                bad(
                    "ca_file",
                    &ca.display().to_string(),
                    format!("cannot read it: {e}"),
                )
            })?;
            let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
                bad(
                    "ca_file",
                    &ca.display().to_string(),
                    format!("not a PEM bundle: {e}"),
                )
            })?;
            for c in certs {
                client = client.with_root_certificate(c);
            }
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_client_options(client)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    max_backoff: MAX_BACKOFF,
                    ..BackoffConfig::default()
                },
                max_retries: o.max_retries,
                retry_timeout: o.retry_timeout,
            })
            .with_virtual_hosted_style_request(o.uri_style == UriStyle::Host);
        if let Some(region) = &o.region {
            b = b.with_region(region);
        }
        if let Some(endpoint) = &o.endpoint {
            b = b.with_endpoint(match o.uri_style {
                // object_store takes a host-style endpoint with the bucket in it.
                UriStyle::Host => {
                    let (scheme, host) = endpoint.split_once("://").unwrap_or(("https", endpoint));
                    format!("{scheme}://{bucket}.{host}")
                }
                UriStyle::Path => endpoint.clone(),
            });
        }
        if let (Some(key), Some(secret)) = (&o.key, &o.key_secret) {
            b = b.with_access_key_id(key).with_secret_access_key(secret);
        }
        let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
        if endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
        {
            b = b.with_allow_http(true);
        }
        let mut secrets: Vec<String> = [
            o.key.clone(),
            o.key_secret.clone(),
            std::env::var("AWS_ACCESS_KEY_ID").ok(),
            std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
            std::env::var("AWS_SESSION_TOKEN").ok(),
        ]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let describe = match (&o.endpoint, endpoint) {
            (Some(e), _) => format!("{url} (endpoint {e})"),
            (None, Some(e)) if !e.contains('@') => format!("{url} (endpoint {e})"),
            _ => format!(
                "{url} (AWS region {})",
                b.get_config_value(&AmazonS3ConfigKey::Region)
                    .unwrap_or_else(|| "us-east-1".into())
            ),
        };
        let s3 = Arc::new(b.build().map_err(|e| {
            bad(
                "endpoint",
                o.endpoint.as_deref().unwrap_or(""),
                format!("{url}: {}", scrub(&error_chain(&e), &secrets)),
            )
        })?);
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            s3.clone()
        } else {
            Arc::new(PrefixStore::new(s3.clone(), prefix))
        };
        Ok(S3Backend {
            store,
            s3,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            describe,
            secrets,
            budget: RetryBudget {
                max_retries: o.max_retries,
                retry_timeout: o.retry_timeout,
            },
            create_by_head: o.conditional_create == ConditionalCreate::HeadThenPut,
        })
    }

    /// A listing's failures are all "generic" in object_store: the status and the S3 error code
    /// are only in the text.
    fn is_no_such_bucket(e: &object_store::Error) -> bool {
        error_chain(e).contains("NoSuchBucket")
    }

    fn is_denied(e: &object_store::Error) -> bool {
        use object_store::Error as E;
        matches!(e, E::PermissionDenied { .. } | E::Unauthenticated { .. }) || {
            let text = error_chain(e);
            text.contains("status code: 403") || text.contains("status code: 401")
        }
    }
}

impl Backend for S3Backend {
    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn check_root(&self, io: &Io) -> Result<()> {
        let opts = PaginatedListOptions {
            max_keys: Some(1),
            ..Default::default()
        };
        let prefix = (!self.prefix.is_empty()).then(|| format!("{}/", self.prefix));
        io.block_on(self.s3.list_paginated(prefix.as_deref(), opts))
            .map(|_| ())
            .map_err(|e| self.map_error("(a listing of the repository)", &e))
    }

    fn stamp(&self, key: &RepoKey, io: &Io) -> Option<ObjectStamp> {
        let meta = io
            .block_on(self.store.head(&ObjPath::from(key.as_str())))
            .ok()?;
        Some(ObjectStamp(Stamp::ETag {
            e_tag: meta.e_tag?,
            size: meta.size,
        }))
    }

    fn is_staging_name(&self, _key: &str) -> bool {
        false
    }

    fn remove_empty_prefix(&self, _prefix: &RepoKey) -> Result<()> {
        Ok(())
    }

    fn local_root(&self) -> Option<&Path> {
        None
    }

    fn create_by_head(&self) -> bool {
        self.create_by_head
    }

    fn retry_budget(&self) -> Option<RetryBudget> {
        Some(self.budget)
    }

    fn is_absent(&self, e: &object_store::Error) -> bool {
        matches!(e, object_store::Error::NotFound { .. }) && !Self::is_no_such_bucket(e)
    }

    fn map_error(&self, key: &str, e: &object_store::Error) -> Error {
        if Self::is_no_such_bucket(e) {
            Error::BucketMissing {
                repo: self.describe(),
                bucket: self.bucket.clone(),
                detail: self.detail(e),
            }
        } else if Self::is_denied(e) {
            Error::StorageDenied {
                repo: self.describe(),
                key: key.to_string(),
                detail: self.detail(e),
            }
        } else {
            Error::Storage {
                repo: self.describe(),
                key: key.to_string(),
                detail: self.detail(e),
            }
        }
    }
}

impl S3Backend {
    /// The failure in one line, without secrets and without the bulk of an XML error body.
    fn detail(&self, e: &object_store::Error) -> String {
        scrub(&error_chain(e), &self.secrets)
    }
}

/// Cuts every XML error body to "Code: Message" and blanks out the secrets.
fn scrub(text: &str, secrets: &[String]) -> String {
    let tag = |body: &str, name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].to_string())
    };
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<?xml").or_else(|| rest.find("<Error>")) {
        out.push_str(&rest[..start]);
        let body = &rest[start..];
        let end = body
            .find("</Error>")
            .map_or(body.len(), |i| i + "</Error>".len());
        let code = tag(&body[..end], "Code").unwrap_or_else(|| "error".into());
        match tag(&body[..end], "Message") {
            Some(m) => out.push_str(&format!("{code}: {m}")),
            None => out.push_str(&code),
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    for s in secrets {
        out = out.replace(s.as_str(), "(hidden)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_cuts_error_bodies_and_blanks_secrets() {
        let text = "Generic S3 error: Error performing GET http://h/b/k in 2ms - Server returned \
                    non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>\
                    SignatureDoesNotMatch</Code><Message>The signature does not match</Message>\
                    <AWSAccessKeyId>AKIDSECRETKEY</AWSAccessKeyId><StringToSign>x</StringToSign>\
                    </Error> (key AKIDSECRETKEY)";
        let s = scrub(text, &["AKIDSECRETKEY".to_string()]);
        assert_eq!(
            s,
            "Generic S3 error: Error performing GET http://h/b/k in 2ms - Server returned non-2xx \
             status code: 403 Forbidden: SignatureDoesNotMatch: The signature does not match \
             (key (hidden))"
        );
    }
}
