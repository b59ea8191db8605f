//! niso-registry: the registry domain — accounts, keys, scopes, namespaces, packages, tags,
//! uploads (streamed and in resumable sessions), the chunk store and GC, keyless identity — with
//! what it stands on: authentication, object storage, the database, configuration, its error
//! type and its metrics. Written once and used by the server's HTTP handlers and CLI and by the
//! operator; nothing else in the workspace talks SQL or S3.
//!
//! It speaks no HTTP: errors say what went wrong in domain terms (`error.rs`) and the server
//! maps them to statuses.

pub mod accounts;
mod archive_checksum;
pub mod auth;
pub mod chunk_cache;
pub mod chunk_pipeline;
pub mod chunk_store;
pub mod config;
pub mod db;
pub mod download;
pub mod download_counter;
pub mod error;
pub mod gc;
pub mod identity;
pub mod keys;
pub mod managed;
pub mod memory_budget;
pub mod metrics;
pub mod namespaces;
pub mod packages;
pub mod permissions;
pub mod proxies;
pub mod rate_limit;
pub mod settings;
pub mod storage;
pub mod tags;
pub mod upload;
pub mod upload_limits;
pub mod upload_sessions;

use std::sync::Arc;

use chrono::{NaiveDateTime, Utc};
use sea_orm::DatabaseConnection;

use crate::auth::password::PasswordHashing;
use crate::config::Config;

use crate::metrics::Metrics;
use crate::storage::ObjectStore;
use crate::storage::local::LocalStore;
use crate::storage::s3::S3Store;

pub use niso_core::{archive, chunking, names};

pub use download_counter::DownloadCounter;
pub use error::{Error, Result};
pub use memory_budget::MemoryBudget;
pub use settings::RegistrySettings;

/// The registry: the database, the object store and the settings, shared by every request.
pub struct Registry {
    pub(crate) db: DatabaseConnection,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) settings: RegistrySettings,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) download_counter: DownloadCounter,
    /// Chunk bytes uploads hold until stored (`chunk_pipeline.rs`).
    pub(crate) chunk_budget: MemoryBudget,
    /// Chunk bytes downloads hold ahead of the one they send (`download.rs`).
    pub(crate) read_ahead_budget: MemoryBudget,
    /// Small chunks downloads keep asking for (`chunk_cache.rs`).
    pub(crate) small_chunks: chunk_cache::SmallChunkCache,
    pub(crate) decompression_budget: crate::archive::DecompressionBudget,
    pub(crate) password_hashing: PasswordHashing,
    pub(crate) upload_limits: upload_limits::UploadLimits,
    /// Keyless access: the identity issuers' key cache and the TokenReview client.
    pub(crate) identity: identity::IdentityVerifier,
}

impl Registry {
    pub fn new(
        db: DatabaseConnection,
        store: Arc<dyn ObjectStore>,
        settings: RegistrySettings,
        metrics: Arc<Metrics>,
    ) -> Registry {
        let mut db = db;
        crate::metrics::observe_database(&mut db, &metrics);
        let chunk_budget = MemoryBudget::new(settings.chunk_budget_bytes);
        let read_ahead_budget = MemoryBudget::new(settings.read_ahead_budget_bytes);
        let small_chunks = chunk_cache::SmallChunkCache::new(
            settings.small_chunk_cache_bytes,
            settings.chunking.min_size as usize,
        );
        let decompression_budget =
            crate::archive::DecompressionBudget::new(settings.decompression_budget_bytes);
        let password_hashing = PasswordHashing::new(
            settings.password_hash_concurrency,
            settings.password_hash_wait,
        );
        let upload_limits = upload_limits::UploadLimits::new(
            settings.max_concurrent_uploads,
            settings.max_uploads_per_principal,
        );
        let identity = identity::IdentityVerifier::new(settings.identity.clone());
        Registry {
            identity,
            db,
            store,
            settings,
            metrics,
            download_counter: DownloadCounter::default(),
            chunk_budget,
            read_ahead_budget,
            small_chunks,
            decompression_budget,
            password_hashing,
            upload_limits,
        }
    }

    /// Connects to the configured database and object store and brings the schema up to date.
    pub async fn open(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Registry> {
        if config.database_url.starts_with("sqlite:") || config.s3.is_none() {
            std::fs::create_dir_all(&config.data_dir).map_err(|error| {
                anyhow::anyhow!(
                    "cannot create data directory {}: {error}",
                    config.data_dir.display()
                )
            })?;
        }
        let db = crate::db::connect(&config.database_url, config.database_max_connections)
            .await
            .map_err(|error| anyhow::anyhow!("cannot connect to the database: {error}"))?;
        crate::db::migrate(&db)
            .await
            .map_err(|error| anyhow::anyhow!("database migration failed: {error}"))?;
        let store: Arc<dyn ObjectStore> = match &config.s3 {
            Some(settings) => Arc::new(S3Store::connect(settings.clone()).await?),
            None => Arc::new(LocalStore::open(config.data_dir.join("chunks"))?),
        };
        tracing::info!(storage = %store.describe(), "registry opened");
        Ok(Registry::new(db, store, config.registry.clone(), metrics))
    }

    pub fn database(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn chunk_budget(&self) -> &MemoryBudget {
        &self.chunk_budget
    }

    pub fn read_ahead_budget(&self) -> &MemoryBudget {
        &self.read_ahead_budget
    }

    pub fn password_hashing(&self) -> &PasswordHashing {
        &self.password_hashing
    }

    /// Readiness: the database and the object store both answer.
    pub async fn check_ready(&self) -> Result<()> {
        crate::db::ping(&self.db).await?;
        self.store.check().await?;
        Ok(())
    }
}

/// The current time as stored in the database (UTC, second precision is what clients see).
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// The API's timestamp format: `2026-04-10T12:00:00`.
pub fn format_timestamp(timestamp: &NaiveDateTime) -> String {
    timestamp.format("%Y-%m-%dT%H:%M:%S").to_string()
}

pub(crate) fn is_unique_violation(error: &sea_orm::DbErr) -> bool {
    matches!(
        error.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

pub(crate) fn is_foreign_key_violation(error: &sea_orm::DbErr) -> bool {
    matches!(
        error.sql_err(),
        Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))
    )
}

/// Runs a blocking, CPU-heavy closure (hashing, compression, argon2) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Error::internal(format!("blocking task failed: {error}")))
}
