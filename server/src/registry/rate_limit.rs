//! The login rate limit: login attempts counted per username and per client address in the
//! database, so the limit holds across every replica.
//!
//! An attempt is counted *before* its password is checked, and only the attempts whose count
//! stays within the limit go on to the check. Counting afterwards would let a burst of
//! concurrent guesses all pass the "too many failures?" test before any of them is recorded.
//! A successful login then gives its attempt back (and clears the username's counter).

use std::net::IpAddr;

use chrono::Duration as ChronoDuration;
use sea_orm::sea_query::ExprTrait;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};

use entity::login_attempt;

use super::{Registry, now};
use crate::error::{Error, Result};
use crate::names::validate_username;

fn user_bucket(username: &str) -> String {
    format!("user:{username}")
}

fn address_bucket(address: IpAddr) -> String {
    format!("addr:{address}")
}

fn buckets(username: &str, client: Option<IpAddr>) -> Vec<String> {
    let mut buckets = Vec::with_capacity(2);
    // Only a well-formed username can belong to an account. Anything else never logs in, and
    // may be megabytes long or hold characters the database refuses (NUL), so it gets no
    // bucket of its own; the address's bucket still counts the attempt.
    if validate_username(username).is_ok() {
        buckets.push(user_bucket(username));
    }
    if let Some(address) = client {
        buckets.push(address_bucket(address));
    }
    buckets
}

/// How many times counting an attempt retries when concurrent requests keep changing the row.
const COUNT_RETRIES: usize = 8;

impl Registry {
    fn login_window(&self) -> ChronoDuration {
        ChronoDuration::from_std(self.settings.login_window).unwrap_or(ChronoDuration::minutes(5))
    }

    /// 429 when a bucket of this attempt holds more than `allowed` attempts in its window.
    async fn check_buckets(
        &self,
        username: &str,
        client: Option<IpAddr>,
        allowed: u32,
    ) -> Result<()> {
        let window = self.login_window();
        let current = now();
        let attempts = login_attempt::Entity::find()
            .filter(login_attempt::Column::Bucket.is_in(buckets(username, client)))
            .all(&self.db)
            .await?;
        let blocked_until = attempts
            .iter()
            .filter(|attempt| {
                Ord::max(attempt.failures, 0) as u32 > allowed
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

    /// 429 when either the username or the client address has used up its attempts; cheap,
    /// and counts nothing.
    pub(crate) async fn check_login_allowed(
        &self,
        username: &str,
        client: Option<IpAddr>,
    ) -> Result<()> {
        let allowed = self.settings.login_max_failures.saturating_sub(1);
        self.check_buckets(username, client, allowed).await
    }

    /// Counts this attempt in each bucket, then answers 429 if that took a bucket over the
    /// limit. Every concurrent attempt gets a distinct count, so at most `login_max_failures`
    /// of them per window go on to check a password.
    pub(crate) async fn count_login_attempt(
        &self,
        username: &str,
        client: Option<IpAddr>,
    ) -> Result<()> {
        for bucket in buckets(username, client) {
            self.count_in_bucket(bucket).await?;
        }
        self.check_buckets(username, client, self.settings.login_max_failures)
            .await
    }

    /// One more attempt in `bucket`, starting a new window when the old one has passed.
    async fn count_in_bucket(&self, bucket: String) -> Result<()> {
        let current = now();
        let window_cutoff = current - self.login_window();
        for _ in 0..COUNT_RETRIES {
            // Within the current window: one more.
            let incremented = login_attempt::Entity::update_many()
                .col_expr(
                    login_attempt::Column::Failures,
                    Expr::col(login_attempt::Column::Failures).add(1),
                )
                .filter(login_attempt::Column::Bucket.eq(bucket.clone()))
                .filter(login_attempt::Column::WindowStart.gt(window_cutoff))
                .exec(&self.db)
                .await?
                .rows_affected;
            if incremented > 0 {
                return Ok(());
            }
            // No row yet: the first attempt. A concurrent first attempt makes this a no-op,
            // and the next round increments the row it inserted.
            let inserted = login_attempt::Entity::insert(login_attempt::ActiveModel {
                bucket: Set(bucket.clone()),
                window_start: Set(current),
                failures: Set(1),
            })
            .on_conflict(
                OnConflict::column(login_attempt::Column::Bucket)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
            if inserted > 0 {
                return Ok(());
            }
            // A row from a window that has passed: restart it, unless a concurrent attempt
            // just did (then the next round increments it).
            let restarted = login_attempt::Entity::update_many()
                .col_expr(login_attempt::Column::WindowStart, Expr::value(current))
                .col_expr(login_attempt::Column::Failures, Expr::value(1))
                .filter(login_attempt::Column::Bucket.eq(bucket.clone()))
                .filter(login_attempt::Column::WindowStart.lte(window_cutoff))
                .exec(&self.db)
                .await?
                .rows_affected;
            if restarted > 0 {
                return Ok(());
            }
        }
        Err(Error::Unavailable(format!(
            "could not count a login attempt in {bucket} under contention"
        )))
    }

    /// A successful login clears the username's counter and gives its attempt back to the
    /// address (whose other failures stay: one good password must not reset a spray across
    /// many accounts from one address).
    pub(crate) async fn login_succeeded(
        &self,
        username: &str,
        client: Option<IpAddr>,
    ) -> Result<()> {
        login_attempt::Entity::delete_many()
            .filter(login_attempt::Column::Bucket.eq(user_bucket(username)))
            .exec(&self.db)
            .await?;
        if let Some(address) = client {
            login_attempt::Entity::update_many()
                .col_expr(
                    login_attempt::Column::Failures,
                    Expr::col(login_attempt::Column::Failures).sub(1),
                )
                .filter(login_attempt::Column::Bucket.eq(address_bucket(address)))
                .filter(login_attempt::Column::Failures.gt(0))
                .exec(&self.db)
                .await?;
        }
        Ok(())
    }
}
