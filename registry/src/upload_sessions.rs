//! Upload sessions: dedup-aware, resumable pushes (`/v1/uploads…`).
//!
//! The client chunks its archive with the registry's chunking parameters and opens a session
//! declaring the archive's size, checksum and ordered chunk list. The registry leases every
//! declared chunk it already stores and answers with the ones it lacks; the client sends only
//! those, each checked against its hash on arrival and stored with a lease like a streamed
//! upload's. The commit reads the chunks back in order through the same validator, limits and
//! manifest checks as a streamed upload (same 400s and 413s), compares the checksum, and
//! publishes through the same commit transaction.
//!
//! A session is an `uploads` row (the lease holder) plus an `upload_sessions` row, and nothing in
//! memory: it survives the client's connection, and every request on it renews the lease. A
//! session that is neither committed nor touched for the upload lease is reaped by GC with its
//! leases (ON DELETE CASCADE), exactly like a crashed streamed upload, so the GC invariant holds
//! unchanged. Opening a session again with the same key, target and chunk list resumes the open
//! one, so a push that was killed sends only what is still missing.
//!
//! Hostile input: the declared list is bounded before anything is stored (every chunk but the
//! last within the chunking bounds, sizes adding up to the declared size, which is within the
//! upload limit), a chunk must be declared and match its hash and size, and only the key that
//! opened a session may use it.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

use entity::{chunk, upload, upload_chunk, upload_session};

use super::archive_checksum::ArchiveChecksum;
use super::chunk_store::{StoredChunk, UploadLease, is_chunk_hash, sha256_hex};
use super::permissions::{PackagePermit, Push};
use super::upload::{UploadTarget, UploadedVersion, check_manifest_matches, too_large};
use super::{Registry, blocking, now};
use crate::archive::{ArchiveLimits, ArchiveValidator};
use crate::chunking::ChunkingSettings;
use crate::error::{Error, Result};
use crate::names::{Arch, Version};

/// Rows per `IN (…)` query when loading a session's chunks.
const CHUNK_IDS_PER_QUERY: usize = 500;

/// Open sessions one key may hold: each is a row and leases until it expires, and unlike a
/// streamed upload it holds no connection, so the upload slots do not bound them.
pub const MAX_OPEN_SESSIONS_PER_KEY: usize = 16;

/// One declared chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredChunk {
    pub hash: String,
    pub size: u64,
}

/// What a client declares when it opens a session.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    pub version: Version,
    pub arch: Arch,
    pub size: u64,
    pub checksum: String,
    pub chunks: Vec<DeclaredChunk>,
}

/// A session's state as the client sees it.
#[derive(Debug, Clone)]
pub struct SessionStatus {
    pub id: i64,
    /// Declared chunks the registry still lacks, each once, in archive order.
    pub missing: Vec<String>,
    pub expires_at: chrono::NaiveDateTime,
}

/// What a client needs before it chunks: the deployment's parameters.
#[derive(Debug, Clone, Copy)]
pub struct UploadParameters {
    pub chunking: ChunkingSettings,
    pub max_upload_bytes: u64,
}

impl Registry {
    pub fn upload_parameters(&self) -> UploadParameters {
        UploadParameters {
            chunking: self.settings.chunking,
            max_upload_bytes: self.settings.max_upload_bytes,
        }
    }

    /// Opens a session for `request` on the permit's package, or resumes the one `key_id`
    /// already has open for the same target and chunk list.
    pub async fn open_upload_session(
        &self,
        permit: &PackagePermit<Push>,
        key_id: i64,
        request: SessionRequest,
    ) -> Result<SessionStatus> {
        self.check_declaration(&request)?;
        let target = UploadTarget {
            package: permit.package().clone(),
            version: request.version.clone(),
            arch: request.arch.clone(),
        };
        self.ensure_version_absent(&target).await?;
        let encoded = encode_chunks(&request.chunks);

        let resumable = upload_session::Entity::find()
            .filter(upload_session::Column::KeyId.eq(key_id))
            .filter(upload_session::Column::Checksum.eq(request.checksum.as_str()))
            .all(&self.db)
            .await?;
        for session in resumable {
            if session.chunks != encoded || session.size != request.size as i64 {
                continue;
            }
            let Some(row) = upload::Entity::find_by_id(session.upload_id)
                .one(&self.db)
                .await?
            else {
                continue;
            };
            if row.package_name == target.package.as_str()
                && row.version == target.version.as_str()
                && row.arch == target.arch.as_str()
                && let Ok(expires_at) = self.renew_session(row.id).await
            {
                let missing = self.lease_declared(row.id, &request.chunks).await?;
                return Ok(SessionStatus {
                    id: row.id,
                    missing,
                    expires_at,
                });
            }
        }

        self.check_open_sessions(key_id).await?;
        let lease = self
            .begin_upload(
                target.package.as_str(),
                target.version.as_str(),
                target.arch.as_str(),
            )
            .await?;
        upload_session::ActiveModel {
            upload_id: Set(lease.id),
            key_id: Set(key_id),
            size: Set(request.size as i64),
            checksum: Set(request.checksum.clone()),
            chunks: Set(encoded),
        }
        .insert(&self.db)
        .await?;
        let missing = self.lease_declared(lease.id, &request.chunks).await?;
        let expires_at = self.renew_session(lease.id).await?;
        Ok(SessionStatus {
            id: lease.id,
            missing,
            expires_at,
        })
    }

    /// The package a session uploads to, for authorising a request on it (404 for a session
    /// that does not exist, has expired or belongs to another key).
    pub async fn upload_session_package(&self, id: i64, key_id: i64) -> Result<String> {
        let (row, _) = self.load_session(id, key_id).await?;
        Ok(row.package_name)
    }

    /// Stores one declared chunk for the session, after checking it against its hash and size.
    pub async fn put_session_chunk(
        &self,
        permit: &PackagePermit<Push>,
        key_id: i64,
        id: i64,
        hash: &str,
        data: Bytes,
    ) -> Result<StoredChunk> {
        let (row, session) = self.load_session(id, key_id).await?;
        check_permit(permit, &row)?;
        if !is_chunk_hash(hash) {
            return Err(Error::Invalid(
                "a chunk hash is 64 lowercase hexadecimal characters".into(),
            ));
        }
        let declared = decode_chunks(&session.chunks)?;
        let Some(expected) = declared.iter().find(|chunk| chunk.hash == hash) else {
            return Err(Error::Invalid(format!(
                "chunk {hash} is not in this upload session"
            )));
        };
        if data.len() as u64 != expected.size {
            return Err(Error::Invalid(format!(
                "chunk {hash} was declared with {} bytes, not {}",
                expected.size,
                data.len()
            )));
        }
        let hashed = data.clone();
        let actual = blocking(move || sha256_hex(&hashed)).await?;
        if actual != hash {
            return Err(Error::Invalid(format!(
                "the body's sha256 is {actual}, not {hash}"
            )));
        }
        self.renew_session(id).await?;
        self.store_chunk_with_hash(id, actual, data).await
    }

    /// Validates the declared archive from its stored chunks and publishes it.
    pub async fn commit_upload_session(
        &self,
        permit: &PackagePermit<Push>,
        key_id: i64,
        id: i64,
    ) -> Result<UploadedVersion> {
        let (row, session) = self.load_session(id, key_id).await?;
        check_permit(permit, &row)?;
        let target = UploadTarget {
            package: permit.package().clone(),
            // Validated when the session was opened.
            version: Version::parse(&row.version)?,
            arch: Arch::parse(&row.arch)?,
        };
        self.ensure_version_absent(&target).await?;
        let declared = decode_chunks(&session.chunks)?;
        let leased = self.leased_chunks(id).await?;
        let missing = declared
            .iter()
            .filter(|chunk| !leased.contains_key(&chunk.hash))
            .count();
        if missing > 0 {
            return Err(Error::Conflict(format!(
                "{missing} declared chunks have not been uploaded yet"
            )));
        }
        self.renew_session(id).await?;

        // The same checks as a streamed upload, on the bytes a download will serve.
        let mut validator =
            ArchiveValidator::with_budget(ArchiveLimits::default(), &self.decompression_budget);
        let mut checksum = ArchiveChecksum::new();
        let mut total = 0u64;
        let mut stored = Vec::with_capacity(declared.len());
        let mut lease = UploadLease {
            id,
            last_renewed: std::time::Instant::now(),
        };
        for declared_chunk in &declared {
            let model = &leased[&declared_chunk.hash];
            let bytes = self.read_chunk(model).await?;
            if bytes.len() as u64 != declared_chunk.size || model.size as u64 != declared_chunk.size
            {
                return Err(Error::internal(format!(
                    "chunk {} read back with {} bytes, declared {}",
                    declared_chunk.hash,
                    bytes.len(),
                    declared_chunk.size
                )));
            }
            total += bytes.len() as u64;
            if total > self.settings.max_upload_bytes {
                return Err(too_large(self.settings.max_upload_bytes));
            }
            validator.push(&bytes)?;
            // Hashed on the blocking pool while the next chunk is read and validated.
            checksum.update(bytes).await?;
            stored.push(StoredChunk {
                chunk_id: model.id,
                hash: declared_chunk.hash.clone(),
                size: declared_chunk.size,
                newly_stored: false,
            });
            // A large archive takes a while to read back: the lease must outlive it.
            self.renew_upload(&mut lease).await?;
        }
        let manifest = validator.finish()?.manifest;
        check_manifest_matches(&manifest, &target)?;
        let checksum = checksum.finish().await?;
        if checksum != session.checksum {
            return Err(Error::Invalid(format!(
                "the chunks assemble to sha256 {checksum}, not the declared {}",
                session.checksum
            )));
        }
        self.commit_version(
            permit.namespace(),
            &target,
            id,
            &manifest,
            total,
            &checksum,
            &stored,
        )
        .await?;
        Ok(UploadedVersion {
            name: target.package.to_string(),
            version: target.version.into_string(),
            arch: target.arch.into_string(),
            size: total,
            checksum,
            new_chunks: 0,
            reused_chunks: stored.len(),
        })
    }

    /// Abandons a session: its leases go at once, its new chunks become orphans for GC.
    pub async fn abort_upload_session(
        &self,
        permit: &PackagePermit<Push>,
        key_id: i64,
        id: i64,
    ) -> Result<()> {
        let (row, _) = self.load_session(id, key_id).await?;
        check_permit(permit, &row)?;
        self.release_upload(id).await
    }

    /// Refuses a new session when the key holds [`MAX_OPEN_SESSIONS_PER_KEY`] live ones
    /// (sessions past their lease but not yet reaped do not count). Two concurrent opens may
    /// both pass: the bound is on what a client accumulates, not exact.
    async fn check_open_sessions(&self, key_id: i64) -> Result<()> {
        let ids: Vec<i64> = upload_session::Entity::find()
            .filter(upload_session::Column::KeyId.eq(key_id))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|session| session.upload_id)
            .collect();
        let mut live = 0;
        for batch in ids.chunks(CHUNK_IDS_PER_QUERY) {
            live += upload::Entity::find()
                .filter(upload::Column::Id.is_in(batch.iter().copied()))
                .filter(upload::Column::ExpiresAt.gt(now()))
                .all(&self.db)
                .await?
                .len();
        }
        if live >= MAX_OPEN_SESSIONS_PER_KEY {
            return Err(Error::LimitReached {
                message: format!(
                    "this key has {live} open upload sessions; commit or abort one (DELETE \
                     /v1/uploads/{{id}}), or wait for them to expire"
                ),
                retry_after_secs: self.settings.upload_lease.as_secs().max(1),
            });
        }
        Ok(())
    }

    fn check_declaration(&self, request: &SessionRequest) -> Result<()> {
        let max_bytes = self.settings.max_upload_bytes;
        if request.size > max_bytes {
            return Err(too_large(max_bytes));
        }
        if request.size == 0 || request.chunks.is_empty() {
            return Err(Error::Invalid("the upload is empty".into()));
        }
        if !is_chunk_hash(&request.checksum) {
            return Err(Error::Invalid(
                "checksum must be a sha256 in lowercase hexadecimal".into(),
            ));
        }
        let chunking = self.settings.chunking;
        let last = request.chunks.len() - 1;
        let mut sum = 0u64;
        for (index, declared) in request.chunks.iter().enumerate() {
            if !is_chunk_hash(&declared.hash) {
                return Err(Error::Invalid(format!(
                    "chunk {index}: a chunk hash is 64 lowercase hexadecimal characters"
                )));
            }
            let below_minimum = index != last && declared.size < u64::from(chunking.min_size);
            if declared.size == 0 || below_minimum || declared.size > u64::from(chunking.max_size) {
                return Err(Error::Invalid(format!(
                    "chunk {index} has {} bytes; chunks are {}..={} bytes (the last may be \
                     smaller); chunk with GET /v1/uploads's parameters",
                    declared.size, chunking.min_size, chunking.max_size
                )));
            }
            sum += declared.size;
            if sum > request.size {
                break;
            }
        }
        if sum != request.size {
            return Err(Error::Invalid(format!(
                "the chunks add up to {sum} bytes, not the declared size {}",
                request.size
            )));
        }
        Ok(())
    }

    async fn load_session(
        &self,
        id: i64,
        key_id: i64,
    ) -> Result<(upload::Model, upload_session::Model)> {
        let not_found = || Error::not_found(format!("upload session {id}"));
        let session = upload_session::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .filter(|session| session.key_id == key_id)
            .ok_or_else(not_found)?;
        let row = upload::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .filter(|row| row.expires_at > now())
            .ok_or_else(not_found)?;
        Ok((row, session))
    }

    /// Extends the session's lease now; fails once GC has reaped it.
    async fn renew_session(&self, id: i64) -> Result<chrono::NaiveDateTime> {
        let lease = chrono::Duration::from_std(self.settings.upload_lease)
            .unwrap_or(chrono::Duration::minutes(15));
        let expires_at = now() + lease;
        let renewed = upload::Entity::update_many()
            .col_expr(upload::Column::ExpiresAt, Expr::value(expires_at))
            .filter(upload::Column::Id.eq(id))
            .exec(&self.db)
            .await?
            .rows_affected;
        if renewed == 0 {
            return Err(Error::not_found(format!(
                "upload session {id} (it expired)"
            )));
        }
        Ok(expires_at)
    }

    /// The chunk rows this session holds leases on, by hash.
    async fn leased_chunks(&self, id: i64) -> Result<HashMap<String, chunk::Model>> {
        let ids: Vec<i64> = upload_chunk::Entity::find()
            .filter(upload_chunk::Column::UploadId.eq(id))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|lease| lease.chunk_id)
            .collect();
        let mut chunks = HashMap::with_capacity(ids.len());
        for batch in ids.chunks(CHUNK_IDS_PER_QUERY) {
            for model in chunk::Entity::find()
                .filter(chunk::Column::Id.is_in(batch.iter().copied()))
                .all(&self.db)
                .await?
            {
                chunks.insert(model.hash.clone(), model);
            }
        }
        Ok(chunks)
    }

    /// Leases every declared chunk the registry stores and the session does not hold yet;
    /// returns those still missing. The lookups and leases go [`CHUNK_IDS_PER_QUERY`] hashes at
    /// a time (a 256 MiB archive declares about 1,000 chunks), each batch with the same per-row
    /// conditions as a streamed upload's.
    async fn lease_declared(&self, id: i64, declared: &[DeclaredChunk]) -> Result<Vec<String>> {
        let leased = self.leased_chunks(id).await?;
        let mut seen = HashSet::new();
        let wanted: Vec<&str> = declared
            .iter()
            .map(|chunk| chunk.hash.as_str())
            .filter(|hash| !leased.contains_key(*hash) && seen.insert(*hash))
            .collect();
        let mut missing = Vec::new();
        for batch in wanted.chunks(CHUNK_IDS_PER_QUERY) {
            let found = self.lease_existing_chunks(id, batch).await?;
            missing.extend(
                batch
                    .iter()
                    .filter(|hash| !found.contains_key(**hash))
                    .map(|hash| (*hash).to_owned()),
            );
        }
        Ok(missing)
    }
}

fn check_permit(permit: &PackagePermit<Push>, row: &upload::Model) -> Result<()> {
    if permit.package().as_str() != row.package_name {
        return Err(Error::Forbidden(
            "the permit is for another package than the session".into(),
        ));
    }
    Ok(())
}

fn encode_chunks(chunks: &[DeclaredChunk]) -> String {
    let pairs: Vec<(&str, u64)> = chunks
        .iter()
        .map(|chunk| (chunk.hash.as_str(), chunk.size))
        .collect();
    serde_json::to_string(&pairs).expect("pairs serialise")
}

fn decode_chunks(text: &str) -> Result<Vec<DeclaredChunk>> {
    let pairs: Vec<(String, u64)> = serde_json::from_str(text)
        .map_err(|error| Error::internal(format!("a stored upload session is corrupt: {error}")))?;
    Ok(pairs
        .into_iter()
        .map(|(hash, size)| DeclaredChunk { hash, size })
        .collect())
}
