//! [`S3Store`]: chunk objects in a bucket of any S3-compatible service (AWS S3, Garage, MinIO,
//! …). Owns the client set-up that keeps a dead or misconfigured store from hanging the registry:
//! credentials, endpoint, region, retries with backoff and timeouts, and the mapping of S3 errors
//! onto [`StorageError`]. Listing is ListObjectsV2, one page per request, each page under the same
//! retries and time limits as every other call.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::s3_http::S3HttpClient;
use super::{ListedObject, ListingPages, ObjectStore, StorageError, clamp_page_size, validate_key};

/// Used when neither the settings nor the AWS chain name a region. S3-compatible servers mostly
/// ignore it, but SigV4 needs one.
const DEFAULT_REGION: &str = "us-east-1";
/// Standard retry mode with exponential backoff and jitter: rides out a restarting server or a
/// throttling burst without hammering it.
const MAX_ATTEMPTS: u32 = 5;
/// The most a GET allocates up front for the length the server announces: the default largest
/// chunk (a chunk is stored compressed only when that makes it smaller). A larger object, or a
/// server announcing more than it sends, only grows the buffer as bytes actually arrive, so a
/// lying length costs at most this much per GET in flight.
const MAX_PREALLOCATION: i64 = 1024 * 1024;

/// Where and how to reach the bucket (from `NISO_S3_*`).
#[derive(Clone, Default)]
pub struct S3Settings {
    pub bucket: String,
    /// Custom endpoint (`http://garage:3900`); `None` means AWS S3 itself.
    pub endpoint: Option<String>,
    /// `None`: the AWS chain's region (`AWS_REGION`, profile, …), else `us-east-1`.
    pub region: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`), which most self-hosted servers need.
    pub force_path_style: bool,
    /// Static `(access key id, secret access key)`. `None` (production) uses the standard AWS
    /// credential chain; `Some` lets tests and embedders pass keys without touching process env.
    pub credentials: Option<(String, String)>,
}

// Hand-written so the secret key can never reach a log through `{:?}`.
impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(id, _)| (id, "** redacted **")),
            )
            .finish()
    }
}

/// Time limits of every S3 call. The defaults suit production; tests shorten them to prove
/// that a server which accepts connections but never answers still yields `Unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S3Timeouts {
    /// TCP (and TLS) connection establishment.
    pub connect: Duration,
    /// One attempt, from sending the request to the response headers.
    pub attempt: Duration,
    /// The whole operation: every attempt, the backoff between them, and reading the body.
    pub operation: Duration,
}

impl Default for S3Timeouts {
    fn default() -> Self {
        S3Timeouts {
            connect: Duration::from_secs(3),
            // Objects are at most a few MiB: 30 s per attempt is generous even on a slow link.
            attempt: Duration::from_secs(30),
            operation: Duration::from_secs(120),
        }
    }
}

/// Chunk objects in an S3 bucket; keys are used verbatim as object keys.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    description: String,
    operation_timeout: Duration,
}

// Hand-written: the client's own Debug dumps its whole configuration, which has no place in logs.
impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.description)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds the client with [`S3Timeouts::default`]. Sends nothing to the store (only the
    /// AWS region lookup may go out, when no region is set): a store that is down at start-up
    /// shows in [`ObjectStore::check`] (`/ready`) instead of crash-looping the pod.
    pub async fn connect(settings: S3Settings) -> Result<S3Store, StorageError> {
        Self::connect_with_timeouts(settings, S3Timeouts::default()).await
    }

    /// [`S3Store::connect`] with explicit time limits.
    pub async fn connect_with_timeouts(
        settings: S3Settings,
        timeouts: S3Timeouts,
    ) -> Result<S3Store, StorageError> {
        if settings.bucket.trim().is_empty() {
            return Err(StorageError::Config("the S3 bucket name is empty".into()));
        }
        let endpoint = settings.endpoint.filter(|e| !e.trim().is_empty());
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(StorageError::Config(format!(
                "the S3 endpoint {e:?} is not an http:// or https:// URL"
            )));
        }

        let region = RegionProviderChain::first_try(
            settings
                .region
                .filter(|r| !r.trim().is_empty())
                .map(Region::new),
        )
        .or_default_provider()
        .or_else(Region::from_static(DEFAULT_REGION));

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(S3HttpClient::with_system_roots())
            .region(region)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeouts.connect)
                    .operation_attempt_timeout(timeouts.attempt)
                    .operation_timeout(timeouts.operation)
                    .build(),
            );
        if let Some((access_key_id, secret_access_key)) = settings.credentials {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "niso-settings",
            ));
        }
        let sdk_config = loader.load().await;

        let mut s3_config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(settings.force_path_style);
        if let Some(e) = &endpoint {
            s3_config = s3_config.endpoint_url(e);
        }
        let client = Client::from_conf(s3_config.build());

        let location = match (&endpoint, sdk_config.region()) {
            (Some(e), _) => e.clone(),
            (None, Some(r)) => format!("aws/{r}"),
            (None, None) => "aws".to_owned(),
        };
        Ok(S3Store {
            client,
            description: format!("s3://{}@{location}", settings.bucket),
            bucket: settings.bucket,
            operation_timeout: timeouts.operation,
        })
    }

    /// The SDK's operation timeout stops at the response headers; this also bounds reading the
    /// body, so no call can outlive the operation budget whatever the server does.
    async fn bounded<T>(
        &self,
        what: impl FnOnce() -> String,
        fut: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        match tokio::time::timeout(self.operation_timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(StorageError::Unavailable(format!(
                "{} timed out after {:?}",
                what(),
                self.operation_timeout
            ))),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    /// The body is not signed (`UNSIGNED-PAYLOAD`): signing would hash it with sha256 on both
    /// sides. The SDK's default checksum (CRC32, computed here, checked by the server) still
    /// refuses a body damaged on the way. Measured on Garage: with the chunk's sha256 as the
    /// checksum instead, Garage spent 12.0 s of CPU per GiB stored against 9.7 with CRC32, and
    /// uploads ran at 103 MB/s against 126, the two sharing two cores.
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StorageError> {
        validate_key(key)?;
        let len = body.len() as i64;
        self.bounded(|| format!("put {key}"), async {
            // A PUT replaces the object atomically and is durable once acknowledged.
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(len)
                .body(ByteStream::from(body))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| unavailable("put", key, &e))?;
            Ok(())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        validate_key(key)?;
        self.bounded(|| format!("get {key}"), async {
            let output = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(output) => output,
                Err(e) if object_missing(&e) => {
                    return Err(StorageError::NotFound(key.to_owned()));
                }
                Err(e) => return Err(unavailable("get", key, &e)),
            };
            // Copied piece by piece into one buffer of the announced size: each piece read
            // from the connection is released at once, where collecting the pieces kept every
            // read buffer they came from (up to ~400 KiB each) until the object was complete.
            let announced = output
                .content_length()
                .unwrap_or(0)
                .clamp(0, MAX_PREALLOCATION);
            let mut body = BytesMut::with_capacity(announced as usize);
            let mut pieces = output.body;
            while let Some(piece) = pieces.next().await {
                let piece = piece.map_err(|e| {
                    StorageError::Unavailable(format!(
                        "get {key}: reading the body: {}",
                        DisplayErrorContext(&e)
                    ))
                })?;
                body.extend_from_slice(&piece);
            }
            Ok(body.freeze())
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        self.bounded(|| format!("delete {key}"), async {
            match self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                // S3 answers 204 for a missing key, but some compatible servers say 404.
                Err(e) if object_missing(&e) => Ok(()),
                Err(e) => Err(unavailable("delete", key, &e)),
            }
        })
        .await
    }

    fn list<'a>(&'a self, prefix: &'a str, page_size: usize) -> ListingPages<'a> {
        let page_size = clamp_page_size(page_size) as i32;
        // State: the continuation token of the next page; `None` once the last page was sent.
        let first: Option<Option<String>> = Some(None);
        futures::stream::try_unfold(first, move |state| async move {
            let Some(token) = state else {
                return Ok(None);
            };
            let (objects, next) = self.list_page(prefix, page_size, token.clone()).await?;
            if next.is_some() && next == token {
                // A server repeating its token would have us list the same page forever.
                return Err(StorageError::Unavailable(format!(
                    "list {prefix}: the listing does not advance"
                )));
            }
            Ok(Some((objects, next.map(Some))))
        })
        .boxed()
    }

    async fn check(&self) -> Result<(), StorageError> {
        // HeadBucket is the cheapest signed round-trip: it proves reachability, valid
        // credentials and an existing bucket at once.
        self.bounded(|| "check".to_owned(), async {
            self.client
                .head_bucket()
                .bucket(&self.bucket)
                .send()
                .await
                .map_err(|e| unavailable("head bucket", &self.bucket, &e))?;
            Ok(())
        })
        .await
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn read_ahead(&self) -> usize {
        // A GET is a round trip to another server, so a download is bound by latency, not by
        // bandwidth, and sent in order, so one slow GET holds up every chunk behind it. On
        // Garage a tenth of GETs took 40–50 ms instead of 6 (measured inside niso): a download
        // of 256 MiB reached 100 MB/s with 8 ahead, 145 with 16, 225 with 32 and 340 with 64,
        // where a direct GET of the same objects, 8 in flight in any order, reached 275.
        // Memory is bounded by the server-wide read-ahead budget, not by this depth.
        32
    }
}

impl S3Store {
    /// One ListObjectsV2 page and the continuation token of the next, if any.
    async fn list_page(
        &self,
        prefix: &str,
        page_size: i32,
        token: Option<String>,
    ) -> Result<(Vec<ListedObject>, Option<String>), StorageError> {
        self.bounded(|| format!("list {prefix}"), async {
            let output = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .max_keys(page_size)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| unavailable("list", &format!("{}/{prefix}", self.bucket), &e))?;
            let objects = output
                .contents()
                .iter()
                .filter_map(|object| {
                    Some(ListedObject {
                        key: object.key()?.to_owned(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                        // An object without a date counts as written just now: whoever
                        // judges its age must err on the side of keeping it.
                        last_modified: object
                            .last_modified()
                            .and_then(|time| SystemTime::try_from(*time).ok())
                            .unwrap_or_else(SystemTime::now),
                    })
                })
                .collect();
            // Guard against a server that says "truncated" without a token: that would
            // restart the listing from the top forever.
            let next = match output.next_continuation_token() {
                Some(next) if output.is_truncated() == Some(true) => Some(next.to_owned()),
                _ => None,
            };
            Ok((objects, next))
        })
        .await
    }
}

/// The key does not exist (as opposed to the bucket, the credentials or the server failing).
fn object_missing<E>(e: &SdkError<E>) -> bool
where
    E: ProvideErrorMetadata,
{
    let Some(service_error) = e.as_service_error() else {
        return false;
    };
    match service_error.code() {
        Some("NoSuchKey") => true,
        // A missing bucket is a misconfiguration, i.e. unavailable, never "no such object".
        Some("NoSuchBucket") => false,
        // Some servers answer 404 without an error code (and HEAD never has a body).
        _ => e.raw_response().is_some_and(|r| status_of(r) == 404),
    }
}

fn status_of(response: &HttpResponse) -> u16 {
    response.status().as_u16()
}

/// The full cause chain (dispatch failure, timeout, HTTP status, S3 error code): it goes to logs,
/// and contains neither credentials nor signatures.
fn unavailable<E>(op: &str, target: &str, e: &SdkError<E>) -> StorageError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let status = e
        .raw_response()
        .map(|r| format!(" (HTTP {})", status_of(r)))
        .unwrap_or_default();
    StorageError::Unavailable(format!("{op} {target}{status}: {}", DisplayErrorContext(e)))
}
