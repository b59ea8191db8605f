//! The domain's settings and their production defaults, in one place: `config.rs` reads each
//! from its `NISO_*` variable (or the TOML file) and falls back to the value here; tests start
//! from `RegistrySettings::default()` and change what they exercise.

use std::time::Duration;

use crate::chunking::ChunkingSettings;
use crate::proxies::{ForwardedHeader, TrustedProxies};

/// A client on a slow link still delivers some bytes every second or two; one that sends
/// nothing for 30 s is gone or stalling on purpose. Only time spent waiting for the client
/// counts (not our own backpressure), so a busy server never times out a healthy upload.
pub const DEFAULT_BODY_IDLE_TIMEOUT_SECS: u64 = 30;
/// hyper's own default: a request head is at most 64 KiB (the connection buffer).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 30;
/// Per replica. With the push-based archive validator an upload costs no thread; what it holds
/// is its chunker buffer (1.125 × the maximum chunk size, touched only as data arrives), the
/// decoder state and an `uploads` row, so 256 active uploads stay within a few hundred MiB.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 256;
/// Enough for a CI job pushing every arch of a release at once; a fraction of the server-wide
/// limit so one account cannot take it all.
pub const DEFAULT_MAX_UPLOADS_PER_PRINCIPAL: usize = 16;

/// The knobs of the domain layer (and of the HTTP layer's limits, which the server reads from
/// here). The variable each comes from is named beside it.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Largest archive (`NISO_MAX_UPLOAD_BYTES`, 413 beyond it).
    pub max_upload_bytes: u64,
    /// `NISO_CHUNK_{MIN,AVG,MAX}_SIZE`; fixed per deployment, changing them ruins dedup.
    pub chunking: ChunkingSettings,
    /// How long an upload's chunk leases last without renewal (`NISO_UPLOAD_LEASE_SECS`).
    pub upload_lease: Duration,
    /// Failed logins per user or address per window (`NISO_LOGIN_MAX_FAILURES`,
    /// `NISO_LOGIN_WINDOW_SECS`).
    pub login_max_failures: u32,
    pub login_window: Duration,
    /// Chunk bytes waiting to be stored across all uploads (`NISO_CHUNK_BUDGET_BYTES`, see
    /// `chunk_pipeline.rs`).
    pub chunk_budget_bytes: usize,
    /// Chunk bytes read ahead across all downloads (`NISO_READ_AHEAD_BUDGET_BYTES`, see
    /// `download.rs`).
    pub read_ahead_budget_bytes: usize,
    /// Small chunks kept in memory for downloads, in bytes; 0 disables
    /// (`NISO_SMALL_CHUNK_CACHE_BYTES`, see `chunk_cache.rs`).
    pub small_chunk_cache_bytes: usize,
    /// zstd decoder memory of all uploads together (see `archive::DecompressionBudget`).
    pub decompression_budget_bytes: u64,
    /// Largest JSON request body (`NISO_JSON_BODY_LIMIT_BYTES`, 413 beyond it).
    pub json_body_limit_bytes: usize,
    /// How long a client has to send a whole JSON body (`NISO_JSON_BODY_TIMEOUT_SECS`, 408).
    pub json_body_timeout: Duration,
    /// Peers whose forwarding header names the client (`NISO_TRUSTED_PROXIES`).
    pub trusted_proxies: TrustedProxies,
    /// The header those proxies write (`NISO_TRUSTED_PROXY_HEADER`).
    pub trusted_proxy_header: ForwardedHeader,
    /// Password hashes and verifications computed at once, each holding ~19 MiB
    /// (`NISO_PASSWORD_HASH_CONCURRENCY`).
    pub password_hash_concurrency: usize,
    /// How long a registration or login waits for a hashing slot before a 503
    /// (`NISO_PASSWORD_HASH_WAIT_SECS`).
    pub password_hash_wait: Duration,
    /// Registrations one client address may make per window
    /// (`NISO_REGISTRATION_MAX_PER_ADDRESS`, `NISO_REGISTRATION_WINDOW_SECS`).
    pub registration_max_per_address: u32,
    pub registration_window: Duration,
    /// A request body that sends nothing for this long while the server waits for it is
    /// aborted with 408 (`NISO_BODY_IDLE_TIMEOUT_SECS`; applied by `http::serve`).
    pub body_idle_timeout: Duration,
    /// How long a client may take to send a request's head; also bounds an idle keep-alive
    /// connection (`NISO_HEADER_READ_TIMEOUT_SECS`; applied by `http::serve`).
    pub header_read_timeout: Duration,
    /// Uploads in progress at once on this replica (`NISO_MAX_CONCURRENT_UPLOADS`, 503 beyond;
    /// see `upload_limits.rs`).
    pub max_concurrent_uploads: usize,
    /// Uploads in progress at once per user (all its keys together), or per key not linked to
    /// a user (`NISO_MAX_UPLOADS_PER_PRINCIPAL`, 429 beyond).
    pub max_uploads_per_principal: usize,
    /// Keyless access: trusted identity issuers, audience, minted keys' lifetime
    /// (`NISO_OIDC_*`, see `identity/mod.rs`).
    pub identity: crate::identity::IdentitySettings,
}

impl Default for RegistrySettings {
    /// The production defaults.
    fn default() -> Self {
        RegistrySettings {
            max_upload_bytes: 2 * 1024 * 1024 * 1024,
            chunking: ChunkingSettings::default(),
            upload_lease: Duration::from_secs(900),
            login_max_failures: 10,
            login_window: Duration::from_secs(300),
            chunk_budget_bytes: crate::chunk_pipeline::DEFAULT_BUDGET_BYTES,
            read_ahead_budget_bytes: crate::download::DEFAULT_READ_AHEAD_BUDGET_BYTES,
            small_chunk_cache_bytes: crate::chunk_cache::DEFAULT_SMALL_CHUNK_CACHE_BYTES,
            decompression_budget_bytes: crate::archive::DEFAULT_DECOMPRESSION_BUDGET_BYTES,
            json_body_limit_bytes: 64 * 1024,
            json_body_timeout: Duration::from_secs(15),
            trusted_proxies: TrustedProxies::none(),
            trusted_proxy_header: ForwardedHeader::default(),
            // Each argon2 computation holds 19 MiB and a core for tens of milliseconds: more
            // at once than there are cores only adds memory, not throughput.
            password_hash_concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            password_hash_wait: Duration::from_secs(10),
            registration_max_per_address: 20,
            registration_window: Duration::from_secs(3600),
            body_idle_timeout: Duration::from_secs(DEFAULT_BODY_IDLE_TIMEOUT_SECS),
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
            max_uploads_per_principal: DEFAULT_MAX_UPLOADS_PER_PRINCIPAL,
            identity: crate::identity::IdentitySettings::default(),
        }
    }
}
