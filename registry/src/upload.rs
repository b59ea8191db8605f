//! The streaming upload pipeline.
//!
//! The caller takes an upload slot (`upload_limits.rs`) before the body is read, and the body
//! comes with an idle timeout (`http::serve`): a client that stops sending ends its upload.
//! The body is read piece by piece: each piece is pushed through the archive validator (inline:
//! it holds no thread, so a stalled upload costs only its memory), handed to the content-defined
//! chunker, and hashed into the archive checksum on the blocking pool (`archive_checksum.rs`);
//! finished chunks are hashed on the blocking pool too and stored in batches
//! (`chunk_pipeline.rs`), so an upload keeps two cores busy. Nothing holds more than a handful of
//! chunks, so memory per upload is bounded whatever the archive size. The version becomes visible only in the final commit transaction;
//! until then every chunk the upload stored or reused is leased (see `chunk_store.rs`).

use std::pin::pin;

use bytes::Bytes;
use futures::stream::StreamExt;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    QueryFilter, QuerySelect, Set, TransactionTrait,
};

use entity::{namespace, package, package_version, upload, upload_chunk, version_chunk};

use super::archive_checksum::ArchiveChecksum;
use super::chunk_pipeline::ChunkPipeline;
use super::chunk_store::{StoredChunk, UploadLease, release_upload_row};
use super::chunking::StreamChunker;
use super::permissions::{PackagePermit, Push};
use super::{Registry, is_unique_violation, now};
use crate::archive::{ArchiveLimits, ArchiveValidator, Manifest};
use crate::error::{Error, Result};
use crate::names::{Arch, PackageName, Version};

/// Rows per INSERT of a version's chunk list (well under SQLite's bound-parameter limit).
const CHUNK_ROWS_PER_INSERT: usize = 500;

#[derive(Debug, Clone)]
pub struct UploadTarget {
    pub package: PackageName,
    pub version: Version,
    pub arch: Arch,
}

#[derive(Debug, Clone)]
pub struct UploadedVersion {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub size: u64,
    pub checksum: String,
    pub new_chunks: usize,
    pub reused_chunks: usize,
}

/// Releases the upload's leases if the upload ends any other way than a commit, including the
/// handler's future being dropped because the client went away.
struct LeaseGuard {
    db: DatabaseConnection,
    upload_id: i64,
    armed: bool,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let db = self.db.clone();
        let upload_id = self.upload_id;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = release_upload_row(&db, upload_id).await {
                    // GC reaps it when the lease expires.
                    tracing::warn!(upload_id, %error, "could not release an abandoned upload");
                }
            });
        }
    }
}

impl Registry {
    /// 409 if the version+arch exists already (checked again at commit, where it is decisive).
    pub async fn ensure_version_absent(&self, target: &UploadTarget) -> Result<()> {
        let Some(package) = self.find_package(target.package.as_str()).await? else {
            return Ok(());
        };
        // The id only: the row's manifest can be 1 MiB.
        let existing: Option<i64> = package_version::Entity::find()
            .filter(package_version::Column::PackageId.eq(package.id))
            .filter(package_version::Column::Version.eq(target.version.as_str()))
            .filter(package_version::Column::Arch.eq(target.arch.as_str()))
            .select_only()
            .column(package_version::Column::Id)
            .into_tuple()
            .one(&self.db)
            .await?;
        match existing {
            Some(_) => Err(version_exists(target)),
            None => Ok(()),
        }
    }

    /// Streams `body` into the registry as `version` for `arch` of the permit's package (the
    /// permit is the proof that the push was authorised, and holds the namespace it resolved).
    pub async fn upload_version<S, E>(
        &self,
        permit: &PackagePermit<Push>,
        version: Version,
        arch: Arch,
        body: S,
        content_length: Option<u64>,
    ) -> Result<UploadedVersion>
    where
        S: futures::Stream<Item = Result<Bytes, E>>,
        E: Into<Error>,
    {
        let namespace = permit.namespace();
        let target = UploadTarget {
            package: permit.package().clone(),
            version,
            arch,
        };
        let max_bytes = self.settings.max_upload_bytes;
        if content_length.is_some_and(|length| length > max_bytes) {
            return Err(too_large(max_bytes));
        }
        self.ensure_version_absent(&target).await?;

        let mut lease = self
            .begin_upload(
                target.package.as_str(),
                target.version.as_str(),
                target.arch.as_str(),
            )
            .await?;
        let mut guard = LeaseGuard {
            db: self.db.clone(),
            upload_id: lease.id,
            armed: true,
        };
        let mut pipeline = ChunkPipeline::new(self, lease.id);
        let received = self
            .receive_body(body, &mut pipeline, &mut lease, max_bytes)
            .await;
        let (manifest, total, checksum) = match received {
            Ok(received) => received,
            Err(error) => {
                // Let the batches in flight finish, so their objects get rows (which the guard's
                // release leaves to GC) instead of waiting an hour for the orphan sweep.
                pipeline.abandon().await;
                return Err(error);
            }
        };
        let stored = pipeline.finish(&mut lease).await?;
        check_manifest_matches(&manifest, &target)?;
        if total == 0 {
            return Err(Error::Invalid("the upload is empty".into()));
        }

        let new_chunks = stored.iter().filter(|c| c.newly_stored).count();
        let uploaded = UploadedVersion {
            name: target.package.to_string(),
            version: target.version.to_string(),
            arch: target.arch.to_string(),
            size: total,
            checksum: checksum.clone(),
            new_chunks,
            reused_chunks: stored.len() - new_chunks,
        };
        self.commit_version(
            namespace, &target, lease.id, &manifest, total, &checksum, &stored,
        )
        .await?;
        guard.armed = false;
        Ok(uploaded)
    }

    /// Reads the body: validates it, hashes it and hands its chunks to `pipeline`. Returns the
    /// manifest, the size and the checksum once the body has ended and every chunk is submitted.
    async fn receive_body<S, E>(
        &self,
        body: S,
        pipeline: &mut ChunkPipeline<'_>,
        lease: &mut UploadLease,
        max_bytes: u64,
    ) -> Result<(Manifest, u64, String)>
    where
        S: futures::Stream<Item = Result<Bytes, E>>,
        E: Into<Error>,
    {
        let mut validator =
            ArchiveValidator::with_budget(ArchiveLimits::default(), &self.decompression_budget);
        let mut chunker = StreamChunker::new(self.settings.chunking);
        let mut checksum = ArchiveChecksum::new();
        let mut total: u64 = 0;
        let mut body = pin!(body);

        loop {
            // The chunks in flight keep being stored while the next piece of the body is
            // awaited (see `ChunkPipeline::next_stored`).
            let next = tokio::select! {
                next = body.next() => next,
                Some(result) = pipeline.next_stored(), if !pipeline.is_idle() => {
                    pipeline.record(result, lease).await?;
                    continue;
                }
            };
            let Some(piece) = next else { break };
            // The caller's error says why the body ended: the client went away, or it sent
            // nothing for the idle timeout (408, see `http::serve`), which ends the upload
            // and releases its leases (the guard) like any other failure.
            let piece = piece.map_err(Into::into)?;
            total += piece.len() as u64;
            if total > max_bytes {
                return Err(too_large(max_bytes));
            }
            self.metrics.upload_bytes.inc_by(piece.len() as u64);
            // A problem in the archive stops the upload here; the lease guard releases it.
            validator.push(&piece)?;
            for chunk in chunker.push(&piece) {
                pipeline.submit(chunk, lease).await?;
            }
            // Hashed on the blocking pool while the next pieces are validated and chunked.
            checksum.update(piece).await?;
        }
        let manifest = validator.finish()?.manifest;
        for chunk in chunker.finish() {
            pipeline.submit(chunk, lease).await?;
        }
        Ok((manifest, total, checksum.finish().await?))
    }

    /// Makes the version visible, atomically: converts the upload's leases into the version's
    /// chunk references and retires the upload row. Deleting the upload row first is what
    /// serialises commit against GC reaping an expired upload: only one of them deletes it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn commit_version(
        &self,
        namespace: &namespace::Model,
        target: &UploadTarget,
        upload_id: i64,
        manifest: &Manifest,
        size: u64,
        checksum: &str,
        chunks: &[StoredChunk],
    ) -> Result<()> {
        let transaction = self.db.begin().await?;
        let retired = upload::Entity::delete_by_id(upload_id)
            .exec(&transaction)
            .await?
            .rows_affected;
        if retired == 0 {
            return Err(Error::Unavailable(
                "the upload's lease expired before it finished; retry the upload".into(),
            ));
        }
        upload_chunk::Entity::delete_many()
            .filter(upload_chunk::Column::UploadId.eq(upload_id))
            .exec(&transaction)
            .await?;
        let package = self
            .lock_or_create_package(&transaction, namespace, &target.package)
            .await?;
        let inserted = package_version::ActiveModel {
            package_id: Set(package.id),
            version: Set(target.version.to_string()),
            arch: Set(target.arch.to_string()),
            size: Set(size as i64),
            checksum: Set(checksum.to_owned()),
            manifest: Set(manifest.raw.clone()),
            description: Set(manifest.description.clone()),
            license: Set(manifest.license.clone()),
            uploaded_at: Set(now()),
            download_count: Set(0),
            ..Default::default()
        }
        .insert(&transaction)
        .await;
        let version = match inserted {
            Ok(version) => version,
            Err(error) if is_unique_violation(&error) => return Err(version_exists(target)),
            Err(error) => return Err(error.into()),
        };
        let mut offset: i64 = 0;
        let mut rows = Vec::with_capacity(chunks.len());
        for (position, chunk) in chunks.iter().enumerate() {
            rows.push(version_chunk::ActiveModel {
                version_id: Set(version.id),
                position: Set(position as i32),
                chunk_id: Set(chunk.chunk_id),
                byte_offset: Set(offset),
                size: Set(chunk.size as i64),
            });
            offset += chunk.size as i64;
        }
        for batch in rows.chunks(CHUNK_ROWS_PER_INSERT) {
            version_chunk::Entity::insert_many(batch.to_vec())
                .exec_without_returning(&transaction)
                .await?;
        }
        self.refresh_package_summary(&transaction, package.id)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The package row, created on first upload, locked for the rest of the transaction so
    /// concurrent commits to one package recompute its summary one after the other.
    async fn lock_or_create_package(
        &self,
        transaction: &DatabaseTransaction,
        namespace: &namespace::Model,
        name: &PackageName,
    ) -> Result<package::Model> {
        use sea_orm::sea_query::OnConflict;
        package::Entity::insert(package::ActiveModel {
            namespace_id: Set(namespace.id),
            name: Set(name.to_string()),
            latest_version: Set(None),
            description: Set(None),
            updated_at: Set(None),
            download_count: Set(0),
            created_at: Set(now()),
            ..Default::default()
        })
        .on_conflict(
            OnConflict::column(package::Column::Name)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(transaction)
        .await?;
        self.lock_package(transaction, name.as_str()).await
    }
}

pub(crate) fn check_manifest_matches(manifest: &Manifest, target: &UploadTarget) -> Result<()> {
    if manifest.name != target.package.as_str() {
        return Err(Error::Invalid(format!(
            "manifest.toml names package {:?} but the upload is for {}",
            manifest.name, target.package
        )));
    }
    if manifest.version != target.version.as_str() {
        return Err(Error::Invalid(format!(
            "manifest.toml has version {:?} but the upload is for {}",
            manifest.version, target.version
        )));
    }
    if let Some(arch) = &manifest.arch
        && arch != target.arch.as_str()
    {
        return Err(Error::Invalid(format!(
            "manifest.toml has arch {arch:?} but the upload is for {}",
            target.arch
        )));
    }
    Ok(())
}

fn version_exists(target: &UploadTarget) -> Error {
    Error::Conflict(format!(
        "{}@{} for {} already exists; versions are immutable",
        target.package, target.version, target.arch
    ))
}

pub(crate) fn too_large(max_bytes: u64) -> Error {
    Error::TooLarge(format!("the upload exceeds the limit of {max_bytes} bytes"))
}
