//! Download counters, batched in memory and flushed to the database every few seconds and at
//! shutdown, so a popular package never turns every download into a write on one hot row.

use std::collections::HashMap;
use std::sync::Mutex;

use sea_orm::sea_query::Expr;
use sea_orm::sea_query::ExprTrait;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, TransactionTrait};

use entity::{package, package_version};

use super::Registry;
use crate::error::Result;

#[derive(Default)]
pub struct DownloadCounter {
    /// (package id, version id) → downloads not yet written.
    pending: Mutex<HashMap<(i64, i64), i64>>,
}

impl DownloadCounter {
    pub fn record(&self, package_id: i64, version_id: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *pending.entry((package_id, version_id)).or_insert(0) += 1;
    }

    fn take(&self) -> HashMap<(i64, i64), i64> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts counts back after a failed flush so no download is lost to a database hiccup.
    fn restore(&self, counts: HashMap<(i64, i64), i64>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (key, count) in counts {
            *pending.entry(key).or_insert(0) += count;
        }
    }
}

impl Registry {
    /// Writes the pending download counts: one increment per version and per package.
    pub async fn flush_download_counts(&self) -> Result<()> {
        let counts = self.download_counter.take();
        if counts.is_empty() {
            return Ok(());
        }
        match self.write_download_counts(&counts).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.download_counter.restore(counts);
                Err(error)
            }
        }
    }

    async fn write_download_counts(&self, counts: &HashMap<(i64, i64), i64>) -> Result<()> {
        let mut per_package: HashMap<i64, i64> = HashMap::new();
        for ((package_id, _), count) in counts {
            *per_package.entry(*package_id).or_insert(0) += count;
        }
        let transaction = self.db.begin().await?;
        for ((_, version_id), count) in counts {
            increment(
                &transaction,
                package_version::Entity::update_many()
                    .col_expr(
                        package_version::Column::DownloadCount,
                        Expr::col(package_version::Column::DownloadCount).add(*count),
                    )
                    .filter(package_version::Column::Id.eq(*version_id)),
            )
            .await?;
        }
        for (package_id, count) in per_package {
            increment(
                &transaction,
                package::Entity::update_many()
                    .col_expr(
                        package::Column::DownloadCount,
                        Expr::col(package::Column::DownloadCount).add(count),
                    )
                    .filter(package::Column::Id.eq(package_id)),
            )
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}

async fn increment<E: EntityTrait>(
    connection: &impl ConnectionTrait,
    update: sea_orm::UpdateMany<E>,
) -> Result<()> {
    update.exec(connection).await?;
    Ok(())
}
