//! Configuration: an optional TOML file overlaid by `NISO_*` environment variables (env wins).
//!
//! Every value is validated at start-up; a bad one is an error naming the variable, so a typo in
//! a Helm value fails the rollout instead of misbehaving later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use niso_core::chunking::ChunkingSettings;

use crate::settings::RegistrySettings;
use crate::storage::s3::S3Settings;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; defaults to SQLite in `data_dir`.
    pub database_url: String,
    pub database_max_connections: u32,
    /// Object storage is S3 when set, else `data_dir/chunks`.
    pub s3: Option<S3Settings>,
    pub download_count_flush_interval: Duration,
    pub gc_grace_period: Duration,
    /// The domain's settings (`settings.rs` has their defaults).
    pub registry: RegistrySettings,
}

/// The TOML file: the same settings, named like the variables without the `NISO_` prefix.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    metrics_listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    database_max_connections: Option<u32>,
    s3_bucket: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_force_path_style: Option<bool>,
    max_upload_bytes: Option<u64>,
    chunk_min_size: Option<u32>,
    chunk_avg_size: Option<u32>,
    chunk_max_size: Option<u32>,
    upload_lease_secs: Option<u64>,
    download_count_flush_secs: Option<u64>,
    login_max_failures: Option<u32>,
    login_window_secs: Option<u64>,
    gc_grace_secs: Option<u64>,
    json_body_limit_bytes: Option<usize>,
    json_body_timeout_secs: Option<u64>,
    trusted_proxies: Option<String>,
    trusted_proxy_header: Option<String>,
    password_hash_concurrency: Option<usize>,
    password_hash_wait_secs: Option<u64>,
    registration_max_per_address: Option<u32>,
    registration_window_secs: Option<u64>,
    body_idle_timeout_secs: Option<u64>,
    header_read_timeout_secs: Option<u64>,
    max_concurrent_uploads: Option<usize>,
    max_uploads_per_principal: Option<usize>,
    chunk_budget_bytes: Option<usize>,
    read_ahead_budget_bytes: Option<usize>,
    small_chunk_cache_bytes: Option<usize>,
    oidc_issuers: Option<String>,
    oidc_audience: Option<String>,
    oidc_key_lifetime_secs: Option<u64>,
    oidc_clock_skew_secs: Option<u64>,
    oidc_jwks_refresh_secs: Option<u64>,
    oidc_token_review_url: Option<String>,
    oidc_token_review_issuer: Option<String>,
    oidc_token_review_token_file: Option<PathBuf>,
    oidc_token_review_ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {name}={value:?}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
}

impl Config {
    /// Reads the optional TOML file, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::from_sources(file, |name| std::env::var(name).ok())
    }

    /// Same as `load` but with an explicit environment (tests use it instead of mutating the
    /// process environment).
    pub fn from_sources(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file_config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::File {
                    path: path.display().to_string(),
                    reason: error.to_string(),
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|error| ConfigError::File {
                    path: path.display().to_string(),
                    reason: error.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let source = Source {
            env: &env,
            file: file_config,
        };
        source.build()
    }
}

struct Source<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: FileConfig,
}

impl Source<'_> {
    /// The env value if set and non-empty, else the file's (already typed) value rendered back,
    /// so both go through the same parser and error message.
    fn raw(&self, name: &'static str, file_value: Option<String>) -> Option<String> {
        (self.env)(name)
            .filter(|value| !value.trim().is_empty())
            .or(file_value)
    }

    fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        file_value: Option<String>,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.raw(name, file_value) {
            None => Ok(default),
            Some(value) => value
                .trim()
                .parse()
                .map_err(|error: T::Err| ConfigError::Invalid {
                    name,
                    value: value.clone(),
                    reason: error.to_string(),
                }),
        }
    }

    fn seconds(
        &self,
        name: &'static str,
        file_value: Option<u64>,
        default_secs: u64,
    ) -> Result<Duration, ConfigError> {
        self.parse(name, file_value.map(|v| v.to_string()), default_secs)
            .map(Duration::from_secs)
    }

    fn build(self) -> Result<Config, ConfigError> {
        let file = &self.file;
        let listen = self.parse("NISO_LISTEN", file.listen.clone(), default_addr(8080))?;
        let metrics_listen = self.parse(
            "NISO_METRICS_LISTEN",
            file.metrics_listen.clone(),
            default_addr(9090),
        )?;
        let data_dir: PathBuf = self
            .raw(
                "NISO_DATA_DIR",
                file.data_dir.as_ref().map(|p| p.display().to_string()),
            )
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("./niso-data"));
        let database_url = self
            .raw("NISO_DATABASE_URL", file.database_url.clone())
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join("niso.db").display()));
        if !(database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
            || database_url.starts_with("sqlite:"))
        {
            return Err(ConfigError::Invalid {
                name: "NISO_DATABASE_URL",
                value: redact_url(&database_url),
                reason: "expected a postgres:// or sqlite:// URL".into(),
            });
        }
        // SQLite takes one writer at a time and each connection is a thread with its own page
        // cache (up to 2 MiB), so a small pool serves as fast and uses less memory (the memory
        // benchmark's peak fell by ~25 MiB going from 16 to 4).
        let default_connections = if database_url.starts_with("sqlite:") {
            4u32
        } else {
            16u32
        };
        let database_max_connections = self.parse(
            "NISO_DATABASE_MAX_CONNECTIONS",
            file.database_max_connections.map(|v| v.to_string()),
            default_connections,
        )?;
        let s3 = match self.raw("NISO_S3_BUCKET", file.s3_bucket.clone()) {
            None => None,
            Some(bucket) => Some(S3Settings {
                bucket,
                endpoint: self.raw("NISO_S3_ENDPOINT", file.s3_endpoint.clone()),
                region: self.raw("NISO_S3_REGION", file.s3_region.clone()),
                force_path_style: self.parse(
                    "NISO_S3_FORCE_PATH_STYLE",
                    file.s3_force_path_style.map(|v| v.to_string()),
                    false,
                )?,
                credentials: None,
            }),
        };
        let defaults = RegistrySettings::default();
        let max_upload_bytes: u64 = self.parse(
            "NISO_MAX_UPLOAD_BYTES",
            file.max_upload_bytes.map(|v| v.to_string()),
            defaults.max_upload_bytes,
        )?;
        if max_upload_bytes == 0 {
            return Err(invalid("NISO_MAX_UPLOAD_BYTES", "0", "must be positive"));
        }
        let chunking = ChunkingSettings {
            min_size: self.parse(
                "NISO_CHUNK_MIN_SIZE",
                file.chunk_min_size.map(|v| v.to_string()),
                defaults.chunking.min_size,
            )?,
            avg_size: self.parse(
                "NISO_CHUNK_AVG_SIZE",
                file.chunk_avg_size.map(|v| v.to_string()),
                defaults.chunking.avg_size,
            )?,
            max_size: self.parse(
                "NISO_CHUNK_MAX_SIZE",
                file.chunk_max_size.map(|v| v.to_string()),
                defaults.chunking.max_size,
            )?,
        };
        // fastcdc's own bounds (v2020): min 64..=1 MiB, avg 256..=4 MiB, max 1 KiB..=16 MiB.
        if !(64..=1_048_576).contains(&chunking.min_size)
            || !(256..=4_194_304).contains(&chunking.avg_size)
            || !(1024..=16_777_216).contains(&chunking.max_size)
            || chunking.min_size > chunking.avg_size
            || chunking.avg_size > chunking.max_size
        {
            return Err(invalid(
                "NISO_CHUNK_AVG_SIZE",
                &format!("{chunking:?}"),
                "need 64 ≤ min ≤ avg ≤ max, avg ≥ 256, max ≤ 16 MiB",
            ));
        }
        let json_body_limit_bytes: usize = self.parse(
            "NISO_JSON_BODY_LIMIT_BYTES",
            file.json_body_limit_bytes.map(|v| v.to_string()),
            defaults.json_body_limit_bytes,
        )?;
        if !(1024..=16 * 1024 * 1024).contains(&json_body_limit_bytes) {
            return Err(invalid(
                "NISO_JSON_BODY_LIMIT_BYTES",
                &json_body_limit_bytes.to_string(),
                "must be from 1024 to 16777216",
            ));
        }
        let json_body_timeout = self.seconds(
            "NISO_JSON_BODY_TIMEOUT_SECS",
            file.json_body_timeout_secs,
            defaults.json_body_timeout.as_secs(),
        )?;
        if json_body_timeout.is_zero() {
            return Err(invalid(
                "NISO_JSON_BODY_TIMEOUT_SECS",
                "0",
                "must be positive",
            ));
        }
        let trusted_proxies = self.parse(
            "NISO_TRUSTED_PROXIES",
            file.trusted_proxies.clone(),
            defaults.trusted_proxies.clone(),
        )?;
        let trusted_proxy_header = self.parse(
            "NISO_TRUSTED_PROXY_HEADER",
            file.trusted_proxy_header.clone(),
            defaults.trusted_proxy_header,
        )?;
        let password_hash_concurrency: usize = self.parse(
            "NISO_PASSWORD_HASH_CONCURRENCY",
            file.password_hash_concurrency.map(|v| v.to_string()),
            defaults.password_hash_concurrency,
        )?;
        if !(1..=1024).contains(&password_hash_concurrency) {
            return Err(invalid(
                "NISO_PASSWORD_HASH_CONCURRENCY",
                &password_hash_concurrency.to_string(),
                "must be from 1 to 1024",
            ));
        }
        let registration_max_per_address: u32 = self.parse(
            "NISO_REGISTRATION_MAX_PER_ADDRESS",
            file.registration_max_per_address.map(|v| v.to_string()),
            defaults.registration_max_per_address,
        )?;
        if registration_max_per_address == 0 {
            return Err(invalid(
                "NISO_REGISTRATION_MAX_PER_ADDRESS",
                "0",
                "must be positive",
            ));
        }
        let registry = RegistrySettings {
            max_upload_bytes,
            chunking,
            upload_lease: self.seconds(
                "NISO_UPLOAD_LEASE_SECS",
                file.upload_lease_secs,
                defaults.upload_lease.as_secs(),
            )?,
            login_max_failures: self.parse(
                "NISO_LOGIN_MAX_FAILURES",
                file.login_max_failures.map(|v| v.to_string()),
                defaults.login_max_failures,
            )?,
            login_window: self.seconds(
                "NISO_LOGIN_WINDOW_SECS",
                file.login_window_secs,
                defaults.login_window.as_secs(),
            )?,
            json_body_limit_bytes,
            json_body_timeout,
            trusted_proxies,
            trusted_proxy_header,
            password_hash_concurrency,
            password_hash_wait: self.seconds(
                "NISO_PASSWORD_HASH_WAIT_SECS",
                file.password_hash_wait_secs,
                defaults.password_hash_wait.as_secs(),
            )?,
            registration_max_per_address,
            registration_window: self.seconds(
                "NISO_REGISTRATION_WINDOW_SECS",
                file.registration_window_secs,
                defaults.registration_window.as_secs(),
            )?,
            body_idle_timeout: self.positive_seconds(
                "NISO_BODY_IDLE_TIMEOUT_SECS",
                file.body_idle_timeout_secs,
                defaults.body_idle_timeout.as_secs(),
            )?,
            header_read_timeout: self.positive_seconds(
                "NISO_HEADER_READ_TIMEOUT_SECS",
                file.header_read_timeout_secs,
                defaults.header_read_timeout.as_secs(),
            )?,
            max_concurrent_uploads: self.positive_count(
                "NISO_MAX_CONCURRENT_UPLOADS",
                file.max_concurrent_uploads,
                defaults.max_concurrent_uploads,
            )?,
            max_uploads_per_principal: self.positive_count(
                "NISO_MAX_UPLOADS_PER_PRINCIPAL",
                file.max_uploads_per_principal,
                defaults.max_uploads_per_principal,
            )?,
            chunk_budget_bytes: self.bytes_within(
                "NISO_CHUNK_BUDGET_BYTES",
                file.chunk_budget_bytes,
                defaults.chunk_budget_bytes,
                MIB..=GIB,
            )?,
            read_ahead_budget_bytes: self.bytes_within(
                "NISO_READ_AHEAD_BUDGET_BYTES",
                file.read_ahead_budget_bytes,
                defaults.read_ahead_budget_bytes,
                0..=GIB,
            )?,
            small_chunk_cache_bytes: self.bytes_within(
                "NISO_SMALL_CHUNK_CACHE_BYTES",
                file.small_chunk_cache_bytes,
                defaults.small_chunk_cache_bytes,
                0..=GIB,
            )?,
            identity: self.identity()?,
            ..defaults
        };
        Ok(Config {
            listen,
            metrics_listen,
            data_dir,
            database_url,
            database_max_connections,
            s3,
            download_count_flush_interval: self.seconds(
                "NISO_DOWNLOAD_COUNT_FLUSH_SECS",
                file.download_count_flush_secs,
                5,
            )?,
            gc_grace_period: self.seconds("NISO_GC_GRACE_SECS", file.gc_grace_secs, 3600)?,
            registry,
        })
    }

    /// Keyless access (`NISO_OIDC_*`; defaults in `identity::IdentitySettings`).
    fn identity(&self) -> Result<crate::identity::IdentitySettings, ConfigError> {
        use crate::identity::{
            DEFAULT_KUBERNETES_ISSUER, IN_CLUSTER_CA_FILE, IN_CLUSTER_TOKEN_FILE,
            IN_CLUSTER_TOKEN_REVIEW_URL, IdentitySettings, TokenReviewSettings,
        };
        let file = &self.file;
        let defaults = IdentitySettings::default();
        let issuers: Vec<String> = self
            .raw("NISO_OIDC_ISSUERS", file.oidc_issuers.clone())
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|issuer| !issuer.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for issuer in &issuers {
            check_issuer_url("NISO_OIDC_ISSUERS", issuer)?;
        }
        let audience = self
            .raw("NISO_OIDC_AUDIENCE", file.oidc_audience.clone())
            .map(|audience| audience.trim().to_owned())
            .unwrap_or(defaults.audience);
        let key_lifetime = self.positive_seconds(
            "NISO_OIDC_KEY_LIFETIME_SECS",
            file.oidc_key_lifetime_secs,
            defaults.key_lifetime.as_secs(),
        )?;
        let clock_skew = self.seconds(
            "NISO_OIDC_CLOCK_SKEW_SECS",
            file.oidc_clock_skew_secs,
            defaults.clock_skew.as_secs(),
        )?;
        let jwks_refresh_interval = self.seconds(
            "NISO_OIDC_JWKS_REFRESH_SECS",
            file.oidc_jwks_refresh_secs,
            defaults.jwks_refresh_interval.as_secs(),
        )?;
        let token_review = match self.raw(
            "NISO_OIDC_TOKEN_REVIEW_URL",
            file.oidc_token_review_url.clone(),
        ) {
            None => None,
            Some(url) => {
                let url = url.trim();
                let in_cluster = url == "in-cluster";
                let url = if in_cluster {
                    IN_CLUSTER_TOKEN_REVIEW_URL.to_owned()
                } else {
                    check_issuer_url("NISO_OIDC_TOKEN_REVIEW_URL", url)?;
                    url.to_owned()
                };
                let path = |name: &'static str, value: &Option<PathBuf>, default: Option<&str>| {
                    self.raw(name, value.as_ref().map(|p| p.display().to_string()))
                        .or(default.map(str::to_owned))
                        .map(PathBuf::from)
                };
                Some(TokenReviewSettings {
                    url,
                    bearer_token_file: path(
                        "NISO_OIDC_TOKEN_REVIEW_TOKEN_FILE",
                        &file.oidc_token_review_token_file,
                        in_cluster.then_some(IN_CLUSTER_TOKEN_FILE),
                    ),
                    ca_file: path(
                        "NISO_OIDC_TOKEN_REVIEW_CA_FILE",
                        &file.oidc_token_review_ca_file,
                        in_cluster.then_some(IN_CLUSTER_CA_FILE),
                    ),
                    issuer: self
                        .raw(
                            "NISO_OIDC_TOKEN_REVIEW_ISSUER",
                            file.oidc_token_review_issuer.clone(),
                        )
                        .map(|issuer| issuer.trim().to_owned())
                        .unwrap_or_else(|| DEFAULT_KUBERNETES_ISSUER.to_owned()),
                })
            }
        };
        Ok(IdentitySettings {
            issuers,
            audience,
            token_review,
            key_lifetime,
            clock_skew,
            jwks_refresh_interval,
            ..defaults
        })
    }

    /// Seconds that must not be zero (a zero timeout would refuse every client).
    fn positive_seconds(
        &self,
        name: &'static str,
        file_value: Option<u64>,
        default_secs: u64,
    ) -> Result<Duration, ConfigError> {
        let duration = self.seconds(name, file_value, default_secs)?;
        if duration.is_zero() {
            return Err(invalid(name, "0", "must be at least 1 second"));
        }
        Ok(duration)
    }

    /// A memory budget or cache size in bytes, within `range`: a budget is what a replica may
    /// hold at once, so a typo of a few zeros must not pass for one.
    fn bytes_within(
        &self,
        name: &'static str,
        file_value: Option<usize>,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, ConfigError> {
        let bytes = self.parse(name, file_value.map(|v| v.to_string()), default)?;
        if !range.contains(&bytes) {
            return Err(invalid(
                name,
                &bytes.to_string(),
                &format!("must be from {} to {}", range.start(), range.end()),
            ));
        }
        Ok(bytes)
    }

    /// A limit that must not be zero (a zero limit would refuse every upload).
    fn positive_count(
        &self,
        name: &'static str,
        file_value: Option<usize>,
        default: usize,
    ) -> Result<usize, ConfigError> {
        let count = self.parse(name, file_value.map(|v| v.to_string()), default)?;
        if count == 0 {
            return Err(invalid(name, "0", "must be at least 1"));
        }
        Ok(count)
    }
}

const MIB: usize = 1024 * 1024;
const GIB: usize = 1024 * MIB;

fn default_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

/// Identity issuers and the API server are reached over HTTPS; plain HTTP only on loopback
/// (a sidecar, tests), where nobody can alter the keys in transit.
fn check_issuer_url(name: &'static str, url: &str) -> Result<(), ConfigError> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|prefix| {
            url.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    if url.starts_with("https://") || loopback {
        Ok(())
    } else {
        Err(invalid(
            name,
            url,
            "expected an https:// URL (http:// only on loopback)",
        ))
    }
}

fn invalid(name: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Hides a password in a database URL before it goes into an error message or a log.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Parses durations like `1h`, `30m`, `45s`, `0` or a bare number of seconds (CLI `--grace`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(index) => text.split_at(index),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 1h, 30m, 45s"))?;
    let multiplier = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?}: use s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(value * multiplier))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxies::ForwardedHeader;
    use std::collections::HashMap;

    fn config_from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_sources(None, move |name| map.get(name).cloned())
    }

    #[test]
    fn keyless_access_settings() {
        let config = config_from(&[]).unwrap();
        assert!(config.registry.identity.issuers.is_empty());
        assert_eq!(config.registry.identity.audience, "niso");
        assert_eq!(
            config.registry.identity.key_lifetime,
            Duration::from_secs(900)
        );
        let config = config_from(&[
            (
                "NISO_OIDC_ISSUERS",
                "https://a.example, https://b.example/x",
            ),
            ("NISO_OIDC_AUDIENCE", "registry"),
            ("NISO_OIDC_KEY_LIFETIME_SECS", "60"),
            ("NISO_OIDC_TOKEN_REVIEW_URL", "in-cluster"),
        ])
        .unwrap();
        let identity = &config.registry.identity;
        assert_eq!(
            identity.issuers,
            ["https://a.example", "https://b.example/x"]
        );
        assert_eq!(identity.audience, "registry");
        assert_eq!(identity.key_lifetime, Duration::from_secs(60));
        let review = identity.token_review.as_ref().unwrap();
        assert_eq!(review.url, crate::identity::IN_CLUSTER_TOKEN_REVIEW_URL);
        assert_eq!(review.issuer, crate::identity::DEFAULT_KUBERNETES_ISSUER);
        assert!(review.ca_file.is_some() && review.bearer_token_file.is_some());
        let error = config_from(&[("NISO_OIDC_ISSUERS", "http://issuer.example")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("NISO_OIDC_ISSUERS"), "{error}");
        assert!(config_from(&[("NISO_OIDC_ISSUERS", "http://127.0.0.1:8000")]).is_ok());
        assert!(config_from(&[("NISO_OIDC_ISSUERS", "http://127.0.0.1.evil.example")]).is_err());
        let error = config_from(&[("NISO_OIDC_KEY_LIFETIME_SECS", "0")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("NISO_OIDC_KEY_LIFETIME_SECS"), "{error}");
    }

    #[test]
    fn defaults_are_the_embedded_registry() {
        let config = config_from(&[]).unwrap();
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.metrics_listen.port(), 9090);
        assert!(config.database_url.starts_with("sqlite://"));
        assert!(config.database_url.contains("niso-data"));
        assert!(config.s3.is_none());
        assert_eq!(config.registry.max_upload_bytes, 2 << 30);
    }

    #[test]
    fn memory_budgets_are_settable_within_bounds() {
        let defaults = config_from(&[]).unwrap().registry;
        assert_eq!(defaults.chunk_budget_bytes, 8 * MIB);
        assert_eq!(defaults.read_ahead_budget_bytes, 8 * MIB);
        assert_eq!(defaults.small_chunk_cache_bytes, 4 * MIB);
        let set = config_from(&[
            ("NISO_CHUNK_BUDGET_BYTES", "16777216"),
            ("NISO_READ_AHEAD_BUDGET_BYTES", "0"),
            ("NISO_SMALL_CHUNK_CACHE_BYTES", "0"),
        ])
        .unwrap()
        .registry;
        assert_eq!(set.chunk_budget_bytes, 16 * MIB);
        assert_eq!(set.read_ahead_budget_bytes, 0);
        assert_eq!(set.small_chunk_cache_bytes, 0);
        for (name, value) in [
            ("NISO_CHUNK_BUDGET_BYTES", "0"),
            ("NISO_CHUNK_BUDGET_BYTES", "80000000000"),
            ("NISO_READ_AHEAD_BUDGET_BYTES", "2000000000"),
            ("NISO_SMALL_CHUNK_CACHE_BYTES", "-1"),
        ] {
            let error = config_from(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(name), "{error}");
        }
    }

    #[test]
    fn a_bad_value_names_the_variable() {
        let error = config_from(&[("NISO_MAX_UPLOAD_BYTES", "lots")]).unwrap_err();
        assert!(
            error.to_string().contains("NISO_MAX_UPLOAD_BYTES"),
            "{error}"
        );
        let error = config_from(&[("NISO_LISTEN", "nowhere")]).unwrap_err();
        assert!(error.to_string().contains("NISO_LISTEN"), "{error}");
        let error = config_from(&[("NISO_DATABASE_URL", "mysql://u:secret@h/db")]).unwrap_err();
        assert!(error.to_string().contains("NISO_DATABASE_URL"));
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn limits_have_production_defaults_and_named_errors() {
        let config = config_from(&[]).unwrap();
        assert_eq!(config.registry.json_body_limit_bytes, 64 * 1024);
        assert!(config.registry.trusted_proxies.is_empty());
        assert!(config.registry.password_hash_concurrency >= 1);
        let config = config_from(&[
            ("NISO_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8"),
            ("NISO_TRUSTED_PROXY_HEADER", "Forwarded"),
        ])
        .unwrap();
        assert!(
            config
                .registry
                .trusted_proxies
                .contains("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            config.registry.trusted_proxy_header,
            ForwardedHeader::Forwarded
        );
        for (name, value) in [
            ("NISO_TRUSTED_PROXIES", "10.0.0.0/8,ingress"),
            ("NISO_TRUSTED_PROXY_HEADER", "x-real-ip"),
            ("NISO_JSON_BODY_LIMIT_BYTES", "12"),
            ("NISO_JSON_BODY_TIMEOUT_SECS", "0"),
            ("NISO_PASSWORD_HASH_CONCURRENCY", "0"),
            ("NISO_REGISTRATION_MAX_PER_ADDRESS", "-1"),
        ] {
            let error = config_from(&[(name, value)]).unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn env_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("niso.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\ns3_bucket = \"from-file\"\n",
        )
        .unwrap();
        let config = Config::from_sources(Some(&path), |name| {
            (name == "NISO_LISTEN").then(|| "127.0.0.1:7001".to_string())
        })
        .unwrap();
        assert_eq!(config.listen.port(), 7001);
        assert_eq!(config.s3.unwrap().bucket, "from-file");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("niso.toml");
        std::fs::write(&path, "lsiten = \"127.0.0.1:7000\"\n").unwrap();
        assert!(Config::from_sources(Some(&path), |_| None).is_err());
    }

    #[test]
    fn upload_governance_settings() {
        let config = config_from(&[]).unwrap();
        assert_eq!(config.registry.body_idle_timeout, Duration::from_secs(30));
        assert_eq!(config.registry.header_read_timeout, Duration::from_secs(30));
        assert_eq!(config.registry.max_concurrent_uploads, 256);
        assert_eq!(config.registry.max_uploads_per_principal, 16);
        let config = config_from(&[
            ("NISO_BODY_IDLE_TIMEOUT_SECS", "5"),
            ("NISO_HEADER_READ_TIMEOUT_SECS", "7"),
            ("NISO_MAX_CONCURRENT_UPLOADS", "3"),
            ("NISO_MAX_UPLOADS_PER_PRINCIPAL", "2"),
        ])
        .unwrap();
        assert_eq!(config.registry.body_idle_timeout, Duration::from_secs(5));
        assert_eq!(config.registry.header_read_timeout, Duration::from_secs(7));
        assert_eq!(config.registry.max_concurrent_uploads, 3);
        assert_eq!(config.registry.max_uploads_per_principal, 2);
        for name in [
            "NISO_BODY_IDLE_TIMEOUT_SECS",
            "NISO_HEADER_READ_TIMEOUT_SECS",
            "NISO_MAX_CONCURRENT_UPLOADS",
            "NISO_MAX_UPLOADS_PER_PRINCIPAL",
        ] {
            for bad in ["0", "soon", "-1"] {
                let error = config_from(&[(name, bad)]).unwrap_err();
                assert!(error.to_string().contains(name), "{name}={bad}: {error}");
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://niso:hunter2@db:5432/niso"),
            "postgres://niso:***@db:5432/niso"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
