//! Packages and versions: listings, manifests, version resolution (exact, tag, `latest`) and
//! deletion, plus the denormalised package summary kept current on every change.
//!
//! A version's manifest (and description) can be up to 1 MiB each, so queries over several
//! versions select only the small columns ([`VersionInfo`], or less), and a manifest is read
//! only for the one version whose manifest is returned ([`Registry::version_manifest`]).
//! Loading whole rows made `latest` cost every version's manifest per request.

mod search;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DerivePartialModel, EntityTrait,
    FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    TransactionTrait,
};

use entity::{package, package_version, tag, version_chunk};

use super::Registry;
use super::permissions::{Delete, PackagePermit};
use crate::error::{Error, Result};
use crate::names::{Arch, PackageName, Reference, Version, latest_version};
use search::NameSearch;

/// A version+arch without its manifest, description and license: what listings, resolution
/// and downloads use.
#[derive(Debug, Clone, DerivePartialModel)]
#[sea_orm(entity = "package_version::Entity")]
pub struct VersionInfo {
    pub id: i64,
    pub package_id: i64,
    pub version: String,
    pub arch: String,
    pub size: i64,
    pub checksum: String,
    pub uploaded_at: chrono::NaiveDateTime,
    pub download_count: i64,
}

/// The columns that decide which version is the latest.
#[derive(Debug, Clone, DerivePartialModel)]
#[sea_orm(entity = "package_version::Entity")]
struct VersionKey {
    id: i64,
    version: String,
    uploaded_at: chrono::NaiveDateTime,
}

/// The columns a package listing answers with.
#[derive(Debug, Clone, DerivePartialModel)]
#[sea_orm(entity = "package::Entity")]
struct PackageListing {
    name: String,
    latest_version: Option<String>,
    description: Option<String>,
    updated_at: Option<chrono::NaiveDateTime>,
    download_count: i64,
}

/// A version resolved together with its package, in one query.
#[derive(Debug, Clone, DerivePartialModel)]
#[sea_orm(entity = "package_version::Entity")]
struct ResolvedVersion {
    #[sea_orm(nested(prefix = "package_"))]
    package: package::Model,
    #[sea_orm(nested(prefix = "version_"))]
    version: VersionInfo,
}

#[derive(Debug, Clone)]
pub struct PackageSummary {
    pub name: String,
    pub latest_version: String,
    pub description: Option<String>,
    pub updated_at: chrono::NaiveDateTime,
    pub download_count: i64,
}

impl Registry {
    pub(crate) async fn find_package(&self, name: &str) -> Result<Option<package::Model>> {
        Ok(package::Entity::find()
            .filter(package::Column::Name.eq(name))
            .one(&self.db)
            .await?)
    }

    /// A package that has at least one version (404 otherwise).
    pub async fn visible_package(&self, name: &PackageName) -> Result<package::Model> {
        self.find_package(name.as_str())
            .await?
            .filter(|package| package.latest_version.is_some())
            .ok_or_else(|| Error::not_found(format!("package {name}")))
    }

    /// Locks the package row for the rest of `transaction` (a no-op write takes the row lock on
    /// PostgreSQL; SQLite serialises writers anyway).
    pub(super) async fn lock_package(
        &self,
        transaction: &DatabaseTransaction,
        name: &str,
    ) -> Result<package::Model> {
        package::Entity::update_many()
            .col_expr(package::Column::Id, Expr::col(package::Column::Id))
            .filter(package::Column::Name.eq(name))
            .exec(transaction)
            .await?;
        package::Entity::find()
            .filter(package::Column::Name.eq(name))
            .one(transaction)
            .await?
            .ok_or_else(|| Error::not_found(format!("package {name}")))
    }

    /// Recomputes `latest_version`, `description` and `updated_at` from the versions.
    pub(super) async fn refresh_package_summary(
        &self,
        connection: &impl ConnectionTrait,
        package_id: i64,
    ) -> Result<()> {
        let versions = package_version::Entity::find()
            .filter(package_version::Column::PackageId.eq(package_id))
            .into_partial_model::<VersionKey>()
            .all(connection)
            .await?;
        let latest = latest_version_text(versions.iter().map(|v| v.version.as_str()));
        // The description of the latest version's most recent upload, read for that row only.
        let described = latest.as_ref().and_then(|latest| {
            versions
                .iter()
                .filter(|v| &v.version == latest)
                .max_by_key(|v| (v.uploaded_at, v.id))
                .map(|v| v.id)
        });
        let description = match described {
            Some(id) => package_version::Entity::find_by_id(id)
                .select_only()
                .column(package_version::Column::Description)
                .into_tuple::<Option<String>>()
                .one(connection)
                .await?
                .flatten(),
            None => None,
        };
        let updated_at = versions.iter().map(|v| v.uploaded_at).max();
        package::Entity::update_many()
            .col_expr(package::Column::LatestVersion, Expr::value(latest))
            .col_expr(package::Column::Description, Expr::value(description))
            .col_expr(package::Column::UpdatedAt, Expr::value(updated_at))
            .filter(package::Column::Id.eq(package_id))
            .exec(connection)
            .await?;
        Ok(())
    }

    /// `GET /v1/packages?q=`: packages with at least one version, by name; `q` keeps those
    /// whose name contains it, ignoring case (LIKE's wildcards in it are literal characters:
    /// package names contain `_`).
    ///
    /// A query of three characters or more is a `LIKE` served by the trigram index of
    /// `m20261130_000005_package_search`: on PostgreSQL the planner uses it for that `LIKE`
    /// itself, on SQLite the FTS5 table narrows the rows by `MATCH` and the `LIKE` decides. Its
    /// cost follows the number of names that share the query's trigrams, not the registry's
    /// size. A shorter query (1–2 characters) cannot use either index: it walks the names in
    /// order and stops at the end of the page, which is quick when it matches many names
    /// (short queries usually do) and costs a scan of the names (as every search did before
    /// the index) when it matches few.
    pub async fn list_packages(
        &self,
        query: Option<&str>,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<PackageSummary>> {
        let mut select = package::Entity::find()
            .filter(package::Column::LatestVersion.is_not_null())
            .order_by_asc(package::Column::Name)
            .limit(limit)
            .offset(offset);
        if let Some(query) = query.map(str::trim).filter(|q| !q.is_empty()) {
            let Some(search) = NameSearch::new(query) else {
                return Ok(Vec::new());
            };
            let backend = self.db.get_database_backend();
            select = match search.trigram_phrase() {
                Some(_) if backend == DbBackend::Postgres => {
                    return self
                        .search_packages_postgres(&search, limit, offset)
                        .await
                        .map(summaries);
                }
                Some(phrase) => select
                    .filter(package::Column::Name.like(search.like_pattern()))
                    .filter(Expr::cust_with_values(
                        r#""packages"."id" IN (SELECT rowid FROM package_search WHERE package_search MATCH ?)"#,
                        [phrase],
                    )),
                // Too short for the index. Not the `LIKE` either, on purpose: PostgreSQL
                // switches a prepared statement to one generic plan after a few runs, and a
                // generic plan shared with long queries is the trigram index, which for a
                // pattern without a trigram reads all of it. A statement of its own is
                // planned for short queries: names in order, stopping at the page's end.
                None => select.filter(Expr::cust_with_values(
                    if backend == DbBackend::Postgres {
                        r#"strpos("packages"."name", $1) > 0"#
                    } else {
                        r#"instr("packages"."name", ?) > 0"#
                    },
                    [search.as_str().to_owned()],
                )),
            };
        }
        Ok(summaries(
            select
                .into_partial_model::<PackageListing>()
                .all(&self.db)
                .await?,
        ))
    }

    /// A search of three characters or more on PostgreSQL: the matches first (through the
    /// trigram index), then their page in name order. Written as a materialized CTE because
    /// the statement is prepared: after a few runs PostgreSQL may plan it once for any
    /// parameters, and with `LIMIT $2` unknown that generic plan walked the whole name index
    /// in order, filtering each name (measured: 1.4 ms at 10,000 packages instead of 0.2 ms,
    /// growing with the registry). The CTE leaves no ordered walk to choose.
    async fn search_packages_postgres(
        &self,
        search: &NameSearch,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<PackageListing>> {
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            r#"WITH matches AS MATERIALIZED (
                SELECT "name", "latest_version", "description", "updated_at", "download_count"
                FROM "packages"
                WHERE "latest_version" IS NOT NULL AND "name" LIKE $1 ESCAPE '\'
            )
            SELECT * FROM matches ORDER BY "name" LIMIT $2 OFFSET $3"#,
            [
                search.like_text().into(),
                // In range: `Limit` and `Offset` bound what the API accepts.
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
                i64::try_from(offset).unwrap_or(i64::MAX).into(),
            ],
        );
        Ok(PackageListing::find_by_statement(statement)
            .all(&self.db)
            .await?)
    }

    /// Every version+arch of a package, oldest upload first.
    pub async fn list_versions(
        &self,
        name: &PackageName,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<VersionInfo>> {
        // One query through the package join in the common case: on SQLite every query is a
        // round trip to a worker thread, which dominated this endpoint's cost.
        let versions = package_version::Entity::find()
            .inner_join(package::Entity)
            .filter(package::Column::Name.eq(name.as_str()))
            .filter(package::Column::LatestVersion.is_not_null())
            .order_by_asc(package_version::Column::Id)
            .limit(limit)
            .offset(offset)
            .into_partial_model::<VersionInfo>()
            .all(&self.db)
            .await?;
        if versions.is_empty() {
            // An unknown package is a 404; a page past the end of a known one is empty.
            self.visible_package(name).await?;
        }
        Ok(versions)
    }

    /// Resolves a version reference: an exact version, `latest`, or a tag. `latest` for an arch
    /// is the latest version that has that arch.
    pub async fn resolve_version(
        &self,
        name: &PackageName,
        reference: &Reference,
        arch: Option<&Arch>,
    ) -> Result<(package::Model, VersionInfo)> {
        // The common cases in one query joining the package row: an exact version, and
        // `latest` when the package's latest version has the arch (it always does without
        // one). Every query on SQLite is a round trip to a worker thread and on PostgreSQL one
        // over the network, and the three this took before dominated downloads of small
        // archives and manifests.
        let joined = match reference {
            Reference::Version(version) => {
                Some(package_version::Column::Version.eq(version.as_str()))
            }
            Reference::Latest => Some(
                Expr::col((package_version::Entity, package_version::Column::Version))
                    .equals((package::Entity, package::Column::LatestVersion)),
            ),
            Reference::Tag(_) => None,
        };
        if let Some(condition) = joined {
            let mut select = package_version::Entity::find()
                .inner_join(package::Entity)
                .filter(package::Column::Name.eq(name.as_str()))
                .filter(package::Column::LatestVersion.is_not_null())
                .filter(condition);
            if let Some(arch) = arch {
                select = select.filter(package_version::Column::Arch.eq(arch.as_str()));
            }
            // The first upload of that version (for the manifest when no arch is given).
            let found = select
                .order_by_asc(package_version::Column::Id)
                .into_partial_model::<ResolvedVersion>()
                .one(&self.db)
                .await?;
            if let Some(found) = found {
                return Ok((found.package, found.version));
            }
            if let Reference::Version(_) = reference {
                // 404 for the package if it is the package that is missing.
                self.visible_package(name).await?;
                return Err(not_found_version(name, reference, arch));
            }
        }
        // A tag, or `latest` for an arch the latest version does not have.
        let package = self.visible_package(name).await?;
        let mut versions = package_version::Entity::find()
            .filter(package_version::Column::PackageId.eq(package.id));
        if let Some(arch) = arch {
            versions = versions.filter(package_version::Column::Arch.eq(arch.as_str()));
        }
        let version = if let Reference::Latest = reference {
            // Every candidate's version text (small), then the one row chosen: the latest
            // version's first upload.
            let candidates: Vec<(i64, String)> = versions
                .select_only()
                .column(package_version::Column::Id)
                .column(package_version::Column::Version)
                .into_tuple()
                .all(&self.db)
                .await?;
            let latest = latest_version_text(candidates.iter().map(|(_, v)| v.as_str()))
                .ok_or_else(|| not_found_version(name, reference, arch))?;
            let chosen = candidates
                .into_iter()
                .filter(|(_, v)| *v == latest)
                .map(|(id, _)| id)
                .min();
            match chosen {
                Some(id) => {
                    package_version::Entity::find_by_id(id)
                        .into_partial_model::<VersionInfo>()
                        .one(&self.db)
                        .await?
                }
                None => None,
            }
        } else {
            let version_text = match reference {
                Reference::Tag(tag) => tag::Entity::find_by_id((package.id, tag.to_string()))
                    .one(&self.db)
                    .await?
                    .map(|tag| tag.version)
                    .ok_or_else(|| not_found_version(name, reference, arch))?,
                Reference::Version(version) => version.as_str().to_owned(),
                Reference::Latest => unreachable!("resolved above"),
            };
            versions
                .filter(package_version::Column::Version.eq(version_text))
                .order_by_asc(package_version::Column::Id)
                .into_partial_model::<VersionInfo>()
                .one(&self.db)
                .await?
        };
        let version = version.ok_or_else(|| not_found_version(name, reference, arch))?;
        Ok((package, version))
    }

    /// The manifest of one version (`GET …/{version}/manifest`): the only query that reads it.
    pub async fn version_manifest(&self, version: &VersionInfo) -> Result<String> {
        package_version::Entity::find_by_id(version.id)
            .select_only()
            .column(package_version::Column::Manifest)
            .into_tuple::<String>()
            .one(&self.db)
            .await?
            // Deleted since it was resolved.
            .ok_or_else(|| Error::not_found(format!("version {}", version.version)))
    }

    /// Deletes one version+arch of the permit's package. Tags pointing at a version with no
    /// arch left go with it; the chunks become unreferenced and GC reclaims those no other
    /// version uses.
    pub async fn delete_version(
        &self,
        permit: &PackagePermit<Delete>,
        version: &Version,
        arch: &Arch,
    ) -> Result<()> {
        let name = permit.package();
        let transaction = self.db.begin().await?;
        let package = match self.lock_package(&transaction, name.as_str()).await {
            Ok(package) => package,
            Err(Error::NotFound(_)) => return Err(not_found_version(name, version, Some(arch))),
            Err(error) => return Err(error),
        };
        let target: i64 = package_version::Entity::find()
            .filter(package_version::Column::PackageId.eq(package.id))
            .filter(package_version::Column::Version.eq(version.as_str()))
            .filter(package_version::Column::Arch.eq(arch.as_str()))
            .select_only()
            .column(package_version::Column::Id)
            .into_tuple()
            .one(&transaction)
            .await?
            .ok_or_else(|| not_found_version(name, version, Some(arch)))?;
        version_chunk::Entity::delete_many()
            .filter(version_chunk::Column::VersionId.eq(target))
            .exec(&transaction)
            .await?;
        package_version::Entity::delete_by_id(target)
            .exec(&transaction)
            .await?;
        let other_arches = package_version::Entity::find()
            .filter(package_version::Column::PackageId.eq(package.id))
            .filter(package_version::Column::Version.eq(version.as_str()))
            .count(&transaction)
            .await?;
        if other_arches == 0 {
            tag::Entity::delete_many()
                .filter(tag::Column::PackageId.eq(package.id))
                .filter(tag::Column::Version.eq(version.as_str()))
                .exec(&transaction)
                .await?;
        }
        self.refresh_package_summary(&transaction, package.id)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The version's chunk list in order.
    pub async fn version_chunks(
        &self,
        version_id: i64,
    ) -> Result<Vec<(version_chunk::Model, entity::chunk::Model)>> {
        version_chunk::Entity::find()
            .find_also_related(entity::chunk::Entity)
            .filter(version_chunk::Column::VersionId.eq(version_id))
            .order_by_asc(version_chunk::Column::Position)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|(reference, chunk)| {
                let chunk = chunk.ok_or_else(|| {
                    Error::internal(format!(
                        "chunk {} of a version is missing",
                        reference.chunk_id
                    ))
                })?;
                Ok((reference, chunk))
            })
            .collect()
    }
}

/// Listing rows as summaries (every row has a version: the queries select only those).
fn summaries(rows: Vec<PackageListing>) -> Vec<PackageSummary> {
    rows.into_iter()
        .filter_map(|package| {
            Some(PackageSummary {
                name: package.name,
                latest_version: package.latest_version?,
                description: package.description,
                updated_at: package.updated_at?,
                download_count: package.download_count,
            })
        })
        .collect()
}

/// The text of the latest of these versions (see `names::latest_version`), as stored.
fn latest_version_text<'a>(versions: impl Iterator<Item = &'a str>) -> Option<String> {
    let parsed: Vec<Version> = versions.filter_map(|v| Version::parse(v).ok()).collect();
    latest_version(parsed.iter()).map(|v| v.to_string())
}

fn not_found_version(
    name: &PackageName,
    reference: impl std::fmt::Display,
    arch: Option<&Arch>,
) -> Error {
    match arch {
        Some(arch) => Error::not_found(format!("{name}@{reference} for {arch}")),
        None => Error::not_found(format!("{name}@{reference}")),
    }
}
