//! The login rate limit: failed logins counted per username and per client address in the
//! database, so the limit holds across every replica.

use std::net::IpAddr;

use chrono::Duration as ChronoDuration;
use sea_orm::sea_query::ExprTrait;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};

use entity::login_attempt;

use super::{Registry, now};
use crate::error::{Error, Result};

fn buckets(username: &str, client: Option<IpAddr>) -> Vec<String> {
    let mut buckets = vec![format!("user:{username}")];
    if let Some(address) = client {
        buckets.push(format!("addr:{address}"));
    }
    buckets
}

impl Registry {
    /// 429 when either the username or the client address has too many recent failures.
    pub(crate) async fn check_login_allowed(
        &self,
        username: &str,
        client: Option<IpAddr>,
    ) -> Result<()> {
        let window = ChronoDuration::from_std(self.settings.login_window)
            .unwrap_or(ChronoDuration::minutes(5));
        let current = now();
        let attempts = login_attempt::Entity::find()
            .filter(login_attempt::Column::Bucket.is_in(buckets(username, client)))
            .all(&self.db)
            .await?;
        let blocked_until = attempts
            .iter()
            .filter(|attempt| {
                attempt.failures as u32 >= self.settings.login_max_failures
                    && attempt.window_start + window > current
            })
            .map(|attempt| attempt.window_start + window)
            .max();
        match blocked_until {
            Some(until) => Err(Error::RateLimited {
                retry_after_secs: Ord::max((until - current).num_seconds(), 1) as u64,
            }),
            None => Ok(()),
        }
    }

    /// Counts one failure in each bucket, starting a new window when the old one has passed.
    pub(crate) async fn record_login_failure(
        &self,
        username: &str,
        client: Option<IpAddr>,
    ) -> Result<()> {
        let window = ChronoDuration::from_std(self.settings.login_window)
            .unwrap_or(ChronoDuration::minutes(5));
        let current = now();
        for bucket in buckets(username, client) {
            let incremented = login_attempt::Entity::update_many()
                .col_expr(
                    login_attempt::Column::Failures,
                    Expr::col(login_attempt::Column::Failures).add(1),
                )
                .filter(login_attempt::Column::Bucket.eq(bucket.clone()))
                .filter(login_attempt::Column::WindowStart.gt(current - window))
                .exec(&self.db)
                .await?
                .rows_affected;
            if incremented == 0 {
                login_attempt::Entity::insert(login_attempt::ActiveModel {
                    bucket: Set(bucket),
                    window_start: Set(current),
                    failures: Set(1),
                })
                .on_conflict(
                    OnConflict::column(login_attempt::Column::Bucket)
                        .update_columns([
                            login_attempt::Column::WindowStart,
                            login_attempt::Column::Failures,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&self.db)
                .await?;
            }
        }
        Ok(())
    }

    /// A successful login clears the username's counter (not the address's: one good password
    /// must not reset a spray across many accounts from one address).
    pub(crate) async fn clear_login_failures(&self, username: &str) -> Result<()> {
        login_attempt::Entity::delete_many()
            .filter(login_attempt::Column::Bucket.eq(format!("user:{username}")))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
