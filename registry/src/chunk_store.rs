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
//!
//! Chunks are stored in batches ([`Registry::store_hashed_chunks`]): the database cost is a few
//! round trips per batch instead of per chunk, while each row keeps exactly the conditions
//! above (the bump is one `UPDATE … WHERE id IN (…) AND state = 'live' RETURNING id`, and only
//! the rows it returns are leased; a batch's deadline runs from its first put).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use sea_orm::sea_query::ExprTrait;
use sea_orm::sea_query::{Expr, LockType, OnConflict, Order, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Set,
    TransactionTrait,
};
use sha2::{Digest, Sha256};

use entity::{chunk, upload, upload_chunk};

use super::permissions::ChunkUploadPermit;
use super::{Registry, blocking, is_foreign_key_violation, now};
use crate::error::{Error, Result};

pub const STATE_LIVE: &str = "live";
pub const STATE_DELETING: &str = "deleting";
const COMPRESSION_NONE: &str = "none";
const COMPRESSION_ZSTD: &str = "zstd";

/// The predicate of the partial unique index `chunks_live_hash` (one live row per hash).
const LIVE_HASH_INDEX_PREDICATE: &str = "state = 'live'";

/// New objects of one batch written to the store at once. With two batches in flight an upload
/// has at most eight puts open, each a connection to the store with its own buffers.
const PUTS_IN_FLIGHT: usize = 4;

/// A chunk and its sha256, ready to be stored.
#[derive(Debug, Clone)]
pub struct HashedChunk {
    pub hash: String,
    pub data: Bytes,
}

/// An object written for a new chunk, waiting for its row.
struct NewObject {
    hash: String,
    key: String,
    size: i64,
    stored_size: i64,
    compression: &'static str,
}

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
        let mut stored = self.store_chunks(upload_id, vec![data]).await?;
        Ok(stored.pop().expect("one chunk in, one chunk out"))
    }

    /// Stores a batch of an upload's chunks (see [`Registry::store_hashed_chunks`]), hashing
    /// them first off the async workers.
    pub async fn store_chunks(
        &self,
        upload_id: i64,
        chunks: Vec<Bytes>,
    ) -> Result<Vec<StoredChunk>> {
        let hashed = blocking(move || {
            chunks
                .into_iter()
                .map(|data| HashedChunk {
                    hash: sha256_hex(&data),
                    data,
                })
                .collect()
        })
        .await?;
        self.store_hashed_chunks(upload_id, hashed).await
    }

    pub(crate) async fn store_chunk_with_hash(
        &self,
        upload_id: i64,
        hash: String,
        data: Bytes,
    ) -> Result<StoredChunk> {
        let mut stored = self
            .store_hashed_chunks(upload_id, vec![HashedChunk { hash, data }])
            .await?;
        Ok(stored.pop().expect("one chunk in, one chunk out"))
    }

    /// Stores a batch of an upload's chunks, each leased by the upload, and returns their rows in
    /// the batch's order. The database work is per batch, not per chunk: one lookup of the hashes,
    /// one transaction leasing those already stored, and for the others their objects written
    /// concurrently then one transaction inserting their rows with their leases.
    ///
    /// Every row keeps the conditions of the single-chunk protocol (module doc): a reused
    /// chunk's `lease_version` is bumped only where `state = 'live'`, and only the rows actually
    /// bumped are leased; a chunk GC is deleting, or that another upload inserted first, goes
    /// round again (at most three rounds), so it ends leased either way.
    pub async fn store_hashed_chunks(
        &self,
        upload_id: i64,
        chunks: Vec<HashedChunk>,
    ) -> Result<Vec<StoredChunk>> {
        let mut resolved: HashMap<&str, i64> = HashMap::with_capacity(chunks.len());
        let mut newly_stored: HashSet<&str> = HashSet::new();
        let mut seen = HashSet::with_capacity(chunks.len());
        let mut pending: Vec<&HashedChunk> = chunks
            .iter()
            .filter(|chunk| seen.insert(chunk.hash.as_str()))
            .collect();
        for _ in 0..3 {
            if pending.is_empty() {
                break;
            }
            let hashes: Vec<&str> = pending.iter().map(|chunk| chunk.hash.as_str()).collect();
            for (hash, chunk_id) in self.lease_existing_chunks(upload_id, &hashes).await? {
                let hash = pending
                    .iter()
                    .find(|chunk| chunk.hash == hash)
                    .map(|chunk| chunk.hash.as_str())
                    .expect("only asked-for hashes are leased");
                resolved.insert(hash, chunk_id);
            }
            pending.retain(|chunk| !resolved.contains_key(chunk.hash.as_str()));
            if pending.is_empty() {
                break;
            }
            let inserted = self.insert_new_chunks(upload_id, &pending).await?;
            for chunk in &pending {
                if let Some(chunk_id) = inserted.get(chunk.hash.as_str()) {
                    resolved.insert(chunk.hash.as_str(), *chunk_id);
                    newly_stored.insert(chunk.hash.as_str());
                }
            }
            pending.retain(|chunk| !resolved.contains_key(chunk.hash.as_str()));
        }
        if let Some(chunk) = pending.first() {
            return Err(Error::Unavailable(format!(
                "chunk {} kept changing under concurrent uploads",
                chunk.hash
            )));
        }
        // A chunk twice in one batch is stored once: its later copies count as reuse.
        let mut stored = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            let size = chunk.data.len() as u64;
            let newly = newly_stored.remove(chunk.hash.as_str());
            if !newly {
                self.metrics.dedup_hits.inc();
                self.metrics.dedup_bytes_saved.inc_by(size);
            }
            stored.push(StoredChunk {
                chunk_id: resolved[chunk.hash.as_str()],
                hash: chunk.hash.clone(),
                size,
                newly_stored: newly,
            });
        }
        Ok(stored)
    }

    /// Leases the live copies of those of `hashes` that are stored; returns them by hash. One
    /// lookup, then (if anything was found) one transaction: the conditional bump of every
    /// found row, and the leases of exactly the rows it bumped.
    pub(crate) async fn lease_existing_chunks(
        &self,
        upload_id: i64,
        hashes: &[&str],
    ) -> Result<HashMap<String, i64>> {
        if hashes.is_empty() {
            return Ok(HashMap::new());
        }
        let found: Vec<(i64, String)> = chunk::Entity::find()
            .select_only()
            .column(chunk::Column::Id)
            .column(chunk::Column::Hash)
            .filter(chunk::Column::Hash.is_in(hashes.iter().copied()))
            .filter(chunk::Column::State.eq(STATE_LIVE))
            .into_tuple()
            .all(&self.db)
            .await?;
        if found.is_empty() {
            return Ok(HashMap::new());
        }
        let transaction = self.db.begin().await?;
        // Rows are locked in id order before they are bumped: two uploads leasing overlapping
        // sets then wait for each other instead of deadlocking (an UPDATE alone locks rows in
        // whatever order its plan visits them). SQLite, which locks the whole database, has no
        // row locks and ignores the clause.
        let mut in_order = Query::select();
        in_order
            .column(chunk::Column::Id)
            .from(chunk::Entity)
            .and_where(chunk::Column::Id.is_in(found.iter().map(|(id, _)| *id)))
            .and_where(chunk::Column::State.eq(STATE_LIVE))
            .order_by(chunk::Column::Id, Order::Asc)
            .lock(LockType::Update);
        // The conditional bump is what GC's conditional mark conflicts with, row by row; the
        // rows it did not bump (GC marked them meanwhile) get fresh copies instead.
        let mut bump = Query::update();
        bump.table(chunk::Entity)
            .value(
                chunk::Column::LeaseVersion,
                Expr::col(chunk::Column::LeaseVersion).add(1),
            )
            .and_where(Expr::col(chunk::Column::Id).in_subquery(in_order))
            .and_where(chunk::Column::State.eq(STATE_LIVE))
            .returning_col(chunk::Column::Id);
        let mut bumped = Vec::with_capacity(found.len());
        for row in transaction.query_all(&bump).await? {
            bumped.push(row.try_get::<i64>("", "id")?);
        }
        if bumped.is_empty() {
            transaction.rollback().await?;
            return Ok(HashMap::new());
        }
        insert_leases(&transaction, upload_id, &bumped).await?;
        transaction.commit().await?;
        let bumped: HashSet<i64> = bumped.into_iter().collect();
        Ok(found
            .into_iter()
            .filter(|(id, _)| bumped.contains(id))
            .map(|(id, hash)| (hash, id))
            .collect())
    }

    /// Writes the objects of new chunks (a few at once), then inserts their rows with our leases
    /// in one transaction. Returns the chunks whose rows were inserted, by hash; a chunk that
    /// another upload inserted first is left out and our object of it removed again. On any
    /// failure every object this call wrote is removed, so none is left without a row.
    async fn insert_new_chunks(
        &self,
        upload_id: i64,
        chunks: &[&HashedChunk],
    ) -> Result<HashMap<String, i64>> {
        // Taken before the first put, so the deadline covers every object's whole life without
        // a row, however the puts interleave.
        let first_put = std::time::Instant::now();
        // Owned copies (a String and a reference count each): a stream of futures borrowing
        // from the slice would not be provably `Send` to the compiler.
        let owned: Vec<HashedChunk> = chunks.iter().map(|chunk| (*chunk).clone()).collect();
        let written: Vec<Result<NewObject>> = futures::stream::iter(owned)
            .map(|chunk| self.write_object(chunk))
            .buffer_unordered(PUTS_IN_FLIGHT)
            .collect()
            .await;
        let mut objects = Vec::with_capacity(written.len());
        let mut failure = None;
        for result in written {
            match result {
                Ok(object) => objects.push(object),
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failure {
            self.remove_objects(objects.iter().map(|object| object.key.as_str()))
                .await;
            return Err(error);
        }
        match self.insert_chunk_rows(upload_id, &objects, first_put).await {
            Ok(inserted) => {
                let mut lost = Vec::new();
                for object in &objects {
                    if inserted.contains_key(&object.hash) {
                        self.metrics.chunks_stored.inc();
                        self.metrics
                            .chunk_bytes_stored
                            .inc_by(object.stored_size as u64);
                    } else {
                        lost.push(object.key.as_str());
                    }
                }
                // Another upload's row won: no row points at ours, remove it now.
                self.remove_objects(lost.into_iter()).await;
                Ok(inserted)
            }
            Err(error) => {
                // No row points at any of them: remove them now, or only the orphan sweep will.
                self.remove_objects(objects.iter().map(|object| object.key.as_str()))
                    .await;
                Err(error)
            }
        }
    }

    /// Compresses a new chunk if that pays and writes it under a key unique to this copy.
    async fn write_object(&self, chunk: HashedChunk) -> Result<NewObject> {
        let raw = chunk.data.clone();
        let (body, compression) = blocking(move || match maybe_compress(&raw) {
            Some(compressed) => (Bytes::from(compressed), COMPRESSION_ZSTD),
            None => (raw, COMPRESSION_NONE),
        })
        .await?;
        let stored_size = body.len() as i64;
        let key = object_key(&chunk.hash);
        let timer = self
            .metrics
            .chunk_store_seconds
            .with_label_values(&["put"])
            .start_timer();
        self.store.put(&key, body).await?;
        timer.observe_duration();
        Ok(NewObject {
            hash: chunk.hash,
            key,
            size: chunk.data.len() as i64,
            stored_size,
            compression,
        })
    }

    async fn remove_objects(&self, keys: impl Iterator<Item = &str>) {
        for key in keys {
            if let Err(error) = self.store.delete(key).await {
                // The orphan sweep removes it once it is old enough.
                tracing::warn!(%key, %error, "could not remove an unrecorded chunk object");
            }
        }
    }

    /// Inserts the rows of freshly written objects with our leases, in one transaction; a row
    /// whose hash has a live row already (a concurrent upload stored the same chunk) is skipped
    /// by the partial unique index. Rolls back instead of committing past the deadline.
    async fn insert_chunk_rows(
        &self,
        upload_id: i64,
        objects: &[NewObject],
        first_put: std::time::Instant,
    ) -> Result<HashMap<String, i64>> {
        let created_at = now();
        // Rows in hash order: two uploads inserting overlapping sets of new chunks then wait for
        // each other's uncommitted rows in one order, and cannot deadlock.
        let mut objects: Vec<&NewObject> = objects.iter().collect();
        objects.sort_unstable_by(|a, b| a.hash.cmp(&b.hash));
        let mut insert = Query::insert();
        insert.into_table(chunk::Entity).columns([
            chunk::Column::Hash,
            chunk::Column::ObjectKey,
            chunk::Column::Size,
            chunk::Column::StoredSize,
            chunk::Column::Compression,
            chunk::Column::State,
            chunk::Column::LeaseVersion,
            chunk::Column::CreatedAt,
        ]);
        for object in &objects {
            insert.values_panic([
                object.hash.clone().into(),
                object.key.clone().into(),
                object.size.into(),
                object.stored_size.into(),
                object.compression.into(),
                STATE_LIVE.into(),
                1i64.into(),
                created_at.into(),
            ]);
        }
        // The index predicate is spelled literally: PostgreSQL infers a partial index only from
        // a predicate it can read at planning time, not from a bound parameter.
        insert
            .on_conflict(
                OnConflict::column(chunk::Column::Hash)
                    .target_and_where(Expr::cust(LIVE_HASH_INDEX_PREDICATE))
                    .do_nothing()
                    .to_owned(),
            )
            .returning(Query::returning().columns([chunk::Column::Id, chunk::Column::Hash]));
        let transaction = self.db.begin().await?;
        let mut inserted = HashMap::with_capacity(objects.len());
        for row in transaction.query_all(&insert).await? {
            inserted.insert(
                row.try_get::<String>("", "hash")?,
                row.try_get::<i64>("", "id")?,
            );
        }
        let ids: Vec<i64> = inserted.values().copied().collect();
        insert_leases(&transaction, upload_id, &ids).await?;
        if first_put.elapsed() > OBJECT_ROW_DEADLINE {
            // GC may already count the objects as orphans: never give them rows now.
            transaction.rollback().await?;
            return Err(Error::Unavailable(format!(
                "storing {} chunks took longer than {OBJECT_ROW_DEADLINE:?}; retry the upload",
                objects.len()
            )));
        }
        transaction.commit().await?;
        Ok(inserted)
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

    /// [`Registry::read_chunk`] for a download or a chunk fetch: a small chunk read before comes
    /// from the [`SmallChunkCache`](crate::chunk_cache::SmallChunkCache) (content-addressed, so
    /// never stale), and one read now is kept there.
    pub async fn read_chunk_cached(&self, chunk: &chunk::Model) -> Result<Bytes> {
        if let Some(bytes) = self.small_chunks.get(&chunk.hash) {
            self.metrics.chunk_cache_hits.inc();
            return Ok(bytes);
        }
        let bytes = self.read_chunk(chunk).await?;
        self.small_chunks.insert(&chunk.hash, &bytes);
        Ok(bytes)
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

/// Leases `chunk_ids` for the upload in one statement (a lease held already is kept).
async fn insert_leases(
    connection: &impl ConnectionTrait,
    upload_id: i64,
    chunk_ids: &[i64],
) -> Result<()> {
    if chunk_ids.is_empty() {
        return Ok(());
    }
    let rows = chunk_ids.iter().map(|chunk_id| upload_chunk::ActiveModel {
        upload_id: Set(upload_id),
        chunk_id: Set(*chunk_id),
    });
    let inserted = upload_chunk::Entity::insert_many(rows)
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
