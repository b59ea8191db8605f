//! The chunk store: content-addressed chunks in the object store, indexed in the database, and
//! the leases that keep GC away from chunks an upload is using.
//!
//! Lease protocol (the GC side is in `gc.rs`; ARCHITECTURE.md walks through the interleavings):
//! * every upload owns an `uploads` row; a lease is an `upload_chunks` row pointing at it;
//! * reusing a stored chunk bumps its `lease_version` with `state = 'live'` in the WHERE clause
//!   and inserts the lease in the same transaction. GC marks a chunk `deleting` only with the
//!   `lease_version` it saw, so the two conflict on the chunk row and exactly one wins;
//! * a new chunk's object is written under a key unique to this copy before its row and lease are
//!   inserted together, so GC never sees a new chunk without its lease, and never deletes an
//!   object somebody is still writing;
//! * the row must be committed within [`OBJECT_ROW_DEADLINE`] of the object's put, or the upload
//!   fails: that bound is what lets GC sweep objects a crash left without a row.

use bytes::Bytes;
use rand::Rng;
use sea_orm::sea_query::ExprTrait;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, TransactionTrait,
};
use sha2::{Digest, Sha256};

use entity::{chunk, upload, upload_chunk};

use super::permissions::ChunkUploadPermit;
use super::{Registry, blocking, is_foreign_key_violation, is_unique_violation, now};
use crate::error::{Error, Result};

pub const STATE_LIVE: &str = "live";
pub const STATE_DELETING: &str = "deleting";
const COMPRESSION_NONE: &str = "none";
const COMPRESSION_ZSTD: &str = "zstd";

/// A chunk as recorded for a version: which row, and its content.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub chunk_id: i64,
    pub hash: String,
    pub size: u64,
    /// False when the chunk was already stored (a dedup hit).
    pub newly_stored: bool,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn is_chunk_hash(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Compresses with zstd when it saves at least 10%. A 64 KiB sample is tried first so already
/// compressed data (most archives) costs little.
fn maybe_compress(data: &[u8]) -> Option<Vec<u8>> {
    const SAMPLE: usize = 64 * 1024;
    if data.len() > SAMPLE * 2 {
        let sample = zstd::bulk::compress(&data[..SAMPLE], 1).ok()?;
        if sample.len() * 10 > SAMPLE * 9 {
            return None;
        }
    }
    let compressed = zstd::bulk::compress(data, 1).ok()?;
    (compressed.len() * 10 <= data.len() * 9).then_some(compressed)
}

/// Every chunk object's key starts with this; GC's orphan sweep lists only below it.
pub const OBJECT_KEY_PREFIX: &str = "chunks/";

/// The longest a new chunk's object may exist before its row is committed: past it the upload
/// gives up (removing the object) instead of committing. GC's orphan sweep relies on this bound
/// (`gc::ORPHAN_MIN_AGE` is well above it): an object older than that without a row will never
/// get one, so it is garbage.
pub const OBJECT_ROW_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// `chunks/<first 2 hex of the hash>/<sha256 hex>-<16 hex unique to this copy>`.
fn object_key(hash: &str) -> String {
    let suffix: u64 = rand::rng().random();
    format!("{OBJECT_KEY_PREFIX}{}/{}-{:016x}", &hash[..2], hash, suffix)
}

/// Whether `key` has exactly the shape [`object_key`] produces. Anything else in the bucket is
/// not ours (a shared bucket, an operator's notes, a store's own files) and GC leaves it alone.
pub fn is_object_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(OBJECT_KEY_PREFIX) else {
        return false;
    };
    let Some((shard, name)) = rest.split_once('/') else {
        return false;
    };
    let Some((hash, suffix)) = name.split_once('-') else {
        return false;
    };
    is_chunk_hash(hash)
        && hash.starts_with(shard)
        && shard.len() == 2
        && suffix.len() == 16
        && suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An `uploads` row: the holder of an upload's leases.
pub struct UploadLease {
    pub id: i64,
    pub(crate) last_renewed: std::time::Instant,
}

impl Registry {
    /// Opens a lease holder for an upload of `package@version/arch`.
    pub async fn begin_upload(
        &self,
        package: &str,
        version: &str,
        arch: &str,
    ) -> Result<UploadLease> {
        let started_at = now();
        let lease = chrono::Duration::from_std(self.settings.upload_lease)
            .unwrap_or(chrono::Duration::minutes(15));
        let row = upload::ActiveModel {
            package_name: Set(package.to_owned()),
            version: Set(version.to_owned()),
            arch: Set(arch.to_owned()),
            started_at: Set(started_at),
            expires_at: Set(started_at + lease),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        Ok(UploadLease {
            id: row.id,
            last_renewed: std::time::Instant::now(),
        })
    }

    /// Extends the lease when a quarter of it has passed. Fails when GC already reaped the
    /// upload (it stalled past its lease): the upload must then fail, its chunks may be gone.
    pub async fn renew_upload(&self, lease: &mut UploadLease) -> Result<()> {
        if lease.last_renewed.elapsed() < self.settings.upload_lease / 4 {
            return Ok(());
        }
        let duration = chrono::Duration::from_std(self.settings.upload_lease)
            .unwrap_or(chrono::Duration::minutes(15));
        let renewed = upload::Entity::update_many()
            .col_expr(upload::Column::ExpiresAt, Expr::value(now() + duration))
            .filter(upload::Column::Id.eq(lease.id))
            .exec(&self.db)
            .await?
            .rows_affected;
        if renewed == 0 {
            return Err(upload_expired());
        }
        lease.last_renewed = std::time::Instant::now();
        Ok(())
    }

    /// Drops an upload and its leases (failed or abandoned upload). Its new chunks become
    /// orphans that GC collects after the grace period.
    pub async fn release_upload(&self, upload_id: i64) -> Result<()> {
        Ok(release_upload_row(&self.db, upload_id).await?)
    }

    /// Stores one chunk for an upload (or leases the copy already stored) and returns its row.
    pub async fn store_chunk(&self, upload_id: i64, data: Bytes) -> Result<StoredChunk> {
        let hashed = data.clone();
        let hash = blocking(move || sha256_hex(&hashed)).await?;
        self.store_chunk_with_hash(upload_id, hash, data).await
    }

    pub(crate) async fn store_chunk_with_hash(
        &self,
        upload_id: i64,
        hash: String,
        data: Bytes,
    ) -> Result<StoredChunk> {
        let size = data.len() as u64;
        // Two rounds at most: a lost race against a concurrent insert of the same chunk sends
        // us back to leasing the winner's row.
        for _ in 0..3 {
            if let Some(chunk_id) = self.lease_existing_chunk(upload_id, &hash).await? {
                self.metrics.dedup_hits.inc();
                self.metrics.dedup_bytes_saved.inc_by(size);
                return Ok(StoredChunk {
                    chunk_id,
                    hash,
                    size,
                    newly_stored: false,
                });
            }
            if let Some(chunk_id) = self.insert_new_chunk(upload_id, &hash, &data).await? {
                return Ok(StoredChunk {
                    chunk_id,
                    hash,
                    size,
                    newly_stored: true,
                });
            }
        }
        Err(Error::Unavailable(format!(
            "chunk {hash} kept changing under concurrent uploads"
        )))
    }

    /// Leases the live copy of `hash`, if any.
    pub(crate) async fn lease_existing_chunk(
        &self,
        upload_id: i64,
        hash: &str,
    ) -> Result<Option<i64>> {
        let Some(existing) = chunk::Entity::find()
            .filter(chunk::Column::Hash.eq(hash))
            .filter(chunk::Column::State.eq(STATE_LIVE))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let transaction = self.db.begin().await?;
        // The conditional bump is what GC's conditional mark conflicts with.
        let bumped = chunk::Entity::update_many()
            .col_expr(
                chunk::Column::LeaseVersion,
                Expr::col(chunk::Column::LeaseVersion).add(1),
            )
            .filter(chunk::Column::Id.eq(existing.id))
            .filter(chunk::Column::State.eq(STATE_LIVE))
            .exec(&transaction)
            .await?
            .rows_affected;
        if bumped == 0 {
            // GC is deleting it: store a fresh copy instead.
            transaction.rollback().await?;
            return Ok(None);
        }
        insert_lease(&transaction, upload_id, existing.id).await?;
        transaction.commit().await?;
        Ok(Some(existing.id))
    }

    /// Writes a new object and inserts its row with our lease. None when another upload
    /// inserted the same chunk first (our object is then removed again).
    async fn insert_new_chunk(
        &self,
        upload_id: i64,
        hash: &str,
        data: &Bytes,
    ) -> Result<Option<i64>> {
        let raw = data.clone();
        let compressed = blocking(move || maybe_compress(&raw)).await?;
        let (body, compression) = match compressed {
            Some(compressed) => (Bytes::from(compressed), COMPRESSION_ZSTD),
            None => (data.clone(), COMPRESSION_NONE),
        };
        let stored_size = body.len() as i64;
        let key = object_key(hash);
        // Measured from before the put, so it covers the object's whole life without a row.
        let written = std::time::Instant::now();
        let timer = self
            .metrics
            .chunk_store_seconds
            .with_label_values(&["put"])
            .start_timer();
        self.store.put(&key, body).await?;
        timer.observe_duration();

        match self
            .insert_chunk_row(
                upload_id,
                chunk::ActiveModel {
                    hash: Set(hash.to_owned()),
                    object_key: Set(key.clone()),
                    size: Set(data.len() as i64),
                    stored_size: Set(stored_size),
                    compression: Set(compression.to_owned()),
                    state: Set(STATE_LIVE.to_owned()),
                    lease_version: Set(1),
                    created_at: Set(now()),
                    ..Default::default()
                },
                written,
            )
            .await
        {
            Ok(Some(chunk_id)) => {
                self.metrics.chunks_stored.inc();
                self.metrics.chunk_bytes_stored.inc_by(stored_size as u64);
                Ok(Some(chunk_id))
            }
            other => {
                // No row points at the object: remove it now, or nothing ever will.
                if let Err(error) = self.store.delete(&key).await {
                    tracing::warn!(%key, %error, "could not remove an unrecorded chunk object");
                }
                other
            }
        }
    }

    async fn insert_chunk_row(
        &self,
        upload_id: i64,
        row: chunk::ActiveModel,
        written: std::time::Instant,
    ) -> Result<Option<i64>> {
        let transaction = self.db.begin().await?;
        let inserted = row.insert(&transaction).await;
        let chunk = match inserted {
            Ok(chunk) => chunk,
            Err(error) if is_unique_violation(&error) => {
                transaction.rollback().await?;
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        insert_lease(&transaction, upload_id, chunk.id).await?;
        if written.elapsed() > OBJECT_ROW_DEADLINE {
            // GC may already count the object as an orphan: never give it a row now.
            transaction.rollback().await?;
            return Err(Error::Unavailable(format!(
                "storing chunk {} took longer than {OBJECT_ROW_DEADLINE:?}; retry the upload",
                chunk.hash
            )));
        }
        transaction.commit().await?;
        Ok(Some(chunk.id))
    }

    /// Reads a chunk's bytes (decompressed) by row.
    pub async fn read_chunk(&self, chunk: &chunk::Model) -> Result<Bytes> {
        let timer = self
            .metrics
            .chunk_store_seconds
            .with_label_values(&["get"])
            .start_timer();
        let body = self.store.get(&chunk.object_key).await?;
        timer.observe_duration();
        match chunk.compression.as_str() {
            COMPRESSION_ZSTD => {
                let capacity = chunk.size as usize;
                let key = chunk.object_key.clone();
                blocking(move || zstd::bulk::decompress(&body, capacity))
                    .await?
                    .map(Bytes::from)
                    .map_err(|error| Error::internal(format!("chunk {key} is corrupt: {error}")))
            }
            _ => Ok(body),
        }
    }

    /// The live chunk with this hash (`GET /v1/chunks/{hash}`).
    pub async fn find_chunk(&self, hash: &str) -> Result<chunk::Model> {
        if !is_chunk_hash(hash) {
            return Err(Error::Invalid(
                "a chunk hash is 64 lowercase hexadecimal characters".into(),
            ));
        }
        chunk::Entity::find()
            .filter(chunk::Column::Hash.eq(hash))
            .filter(chunk::Column::State.eq(STATE_LIVE))
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::not_found(format!("chunk {hash}")))
    }

    /// `PUT /v1/chunks/{hash}`: stores a single chunk after checking its hash (the permit is
    /// the proof of `admin:*`). Like any chunk no version references, it is collected after
    /// the grace period unless an upload uses it.
    pub async fn put_chunk(
        &self,
        _permit: &ChunkUploadPermit,
        hash: &str,
        data: Bytes,
    ) -> Result<StoredChunk> {
        if !is_chunk_hash(hash) {
            return Err(Error::Invalid(
                "a chunk hash is 64 lowercase hexadecimal characters".into(),
            ));
        }
        let hashed = data.clone();
        let actual = blocking(move || sha256_hex(&hashed)).await?;
        if actual != hash {
            return Err(Error::Invalid(format!(
                "the body's sha256 is {actual}, not {hash}"
            )));
        }
        let lease = self.begin_upload("(chunk upload)", "-", "-").await?;
        let result = self.store_chunk_with_hash(lease.id, actual, data).await;
        self.release_upload(lease.id).await?;
        result
    }
}

/// Deletes an upload row and its leases in one transaction (also used from a Drop guard, hence
/// a free function on a connection rather than a `Registry` method).
pub(crate) async fn release_upload_row(
    db: &sea_orm::DatabaseConnection,
    upload_id: i64,
) -> Result<(), sea_orm::DbErr> {
    let transaction = db.begin().await?;
    upload_chunk::Entity::delete_many()
        .filter(upload_chunk::Column::UploadId.eq(upload_id))
        .exec(&transaction)
        .await?;
    upload::Entity::delete_by_id(upload_id)
        .exec(&transaction)
        .await?;
    transaction.commit().await
}

async fn insert_lease(
    connection: &impl ConnectionTrait,
    upload_id: i64,
    chunk_id: i64,
) -> Result<()> {
    let inserted = upload_chunk::Entity::insert(upload_chunk::ActiveModel {
        upload_id: Set(upload_id),
        chunk_id: Set(chunk_id),
    })
    .on_conflict(
        OnConflict::columns([
            upload_chunk::Column::UploadId,
            upload_chunk::Column::ChunkId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(connection)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        // The upload row is gone: GC reaped it after its lease expired.
        Err(error) if is_foreign_key_violation(&error) => Err(upload_expired()),
        Err(error) => Err(error.into()),
    }
}

fn upload_expired() -> Error {
    Error::Unavailable("the upload's lease expired before it finished; retry the upload".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_only_when_it_pays() {
        let text = b"hello niso ".repeat(100_000);
        assert!(maybe_compress(&text).unwrap().len() < text.len() / 10);
        let mut random = vec![0u8; 300_000];
        rand::rng().fill(&mut random[..]);
        assert!(maybe_compress(&random).is_none());
    }

    #[test]
    fn object_keys_are_unique_per_copy() {
        let hash = sha256_hex(b"x");
        let (a, b) = (object_key(&hash), object_key(&hash));
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("chunks/{}/{hash}-", &hash[..2])));
        assert!(is_object_key(&a));
    }

    #[test]
    fn only_the_registry_key_shape_is_an_object_key() {
        let hash = sha256_hex(b"x");
        let good = format!("chunks/{}/{hash}-0123456789abcdef", &hash[..2]);
        assert!(is_object_key(&good));
        for foreign in [
            "chunks/readme.txt".to_owned(),
            format!("other/{}/{hash}-0123456789abcdef", &hash[..2]),
            format!("backup/{good}"),
            format!("{good}.bak"),
            format!("{good}/below"),
            format!("chunks/ff/{hash}-0123456789abcdef"), // shard does not match the hash
            format!("chunks/{}/{hash}-0123456789ABCDEF", &hash[..2]),
            format!("chunks/{}/{hash}-0123456789abcde", &hash[..2]),
            format!("chunks/{}/{hash}", &hash[..2]),
            format!("chunks/{}/{}-0123456789abcdef", &hash[..2], &hash[..63]),
            format!("chunks/{}/.niso-tmp-0123456789abcdef", &hash[..2]),
        ] {
            assert!(!is_object_key(&foreign), "{foreign}");
        }
    }

    #[test]
    fn chunk_hash_syntax() {
        assert!(is_chunk_hash(&sha256_hex(b"x")));
        assert!(!is_chunk_hash("ABC"));
        assert!(!is_chunk_hash(&"G".repeat(64)));
    }
}
