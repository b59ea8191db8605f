//! Tags: user-set names for versions of a package. `latest` is not stored; it is always the
//! package's latest version and cannot be set by hand.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait};

use entity::{package_version, tag};

use super::permissions::{PackagePermit, Push};
use super::{Registry, now};
use crate::error::{Error, Result};
use crate::names::{LATEST, PackageName, Tag, Version};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagView {
    pub tag: String,
    pub version: String,
}

impl Registry {
    /// The package's tags by name, with the registry-maintained `latest` last.
    pub async fn list_tags(&self, name: &PackageName) -> Result<Vec<TagView>> {
        let package = self.visible_package(name).await?;
        let mut tags: Vec<TagView> = tag::Entity::find()
            .filter(tag::Column::PackageId.eq(package.id))
            .order_by_asc(tag::Column::Tag)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|tag| TagView {
                tag: tag.tag,
                version: tag.version,
            })
            .collect();
        if let Some(latest) = package.latest_version {
            tags.push(TagView {
                tag: LATEST.into(),
                version: latest,
            });
        }
        Ok(tags)
    }

    /// Creates or moves a tag of the permit's package to an existing version.
    pub async fn set_tag(
        &self,
        permit: &PackagePermit<Push>,
        tag_name: &Tag,
        version: &Version,
    ) -> Result<TagView> {
        let name = permit.package();
        let transaction = self.db.begin().await?;
        let package = self.lock_package(&transaction, name.as_str()).await?;
        let exists = package_version::Entity::find()
            .filter(package_version::Column::PackageId.eq(package.id))
            .filter(package_version::Column::Version.eq(version.as_str()))
            .one(&transaction)
            .await?
            .is_some();
        if !exists {
            return Err(Error::not_found(format!("{name}@{version}")));
        }
        tag::Entity::insert(tag::ActiveModel {
            package_id: Set(package.id),
            tag: Set(tag_name.to_string()),
            version: Set(version.to_string()),
            updated_at: Set(now()),
        })
        .on_conflict(
            OnConflict::columns([tag::Column::PackageId, tag::Column::Tag])
                .update_columns([tag::Column::Version, tag::Column::UpdatedAt])
                .to_owned(),
        )
        .exec_without_returning(&transaction)
        .await?;
        transaction.commit().await?;
        Ok(TagView {
            tag: tag_name.to_string(),
            version: version.to_string(),
        })
    }
}
