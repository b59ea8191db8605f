//! Rate limits kept in the database, so they hold across every replica: login attempts per
//! username and per client address, and registrations per client address.
//!
//! An attempt is counted *before* its password is checked (or hashed), and only the attempts
//! whose count stays within the limit go on. Counting afterwards would let a burst of
//! concurrent guesses all pass the "too many failures?" test before any of them is recorded.
//! A successful login then gives its attempt back (and clears the username's counter).
//!
//! Client addresses come from `http::client_address` (the forwarded client behind a trusted
//! proxy). An IPv6 client is counted by its /64: one host usually holds a whole /64, and
//! keying on the full address would give it 2^64 fresh buckets.

use std::net::{IpAddr, Ipv6Addr};

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

/// The address a client is counted by: IPv4 as is, IPv6 by its /64.
fn client_key(address: IpAddr) -> String {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", Ipv6Addr::from(network))
        }
    }
}

fn address_bucket(address: IpAddr) -> String {
    format!("addr:{}", client_key(address))
}

fn registration_bucket(address: IpAddr) -> String {
    format!("register:{}", client_key(address))
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

fn chrono_window(window: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(window).unwrap_or(ChronoDuration::minutes(5))
}

/// How many times counting an attempt retries when concurrent requests keep changing the row.
const COUNT_RETRIES: usize = 8;

impl Registry {
    fn login_window(&self) -> ChronoDuration {
        chrono_window(self.settings.login_window)
    }

    /// Counts a registration from `client`; 429 once the address has used up its
    /// registrations in the window.
    pub(crate) async fn count_registration(&self, client: IpAddr) -> Result<()> {
        let window = chrono_window(self.settings.registration_window);
        let bucket = registration_bucket(client);
        self.count_in_bucket(bucket.clone(), window).await?;
        let current = now();
        let row = login_attempt::Entity::find_by_id(bucket)
            .one(&self.db)
            .await?;
        if let Some(row) = row
            && Ord::max(row.failures, 0) as u32 > self.settings.registration_max_per_address
            && row.window_start + window > current
        {
            return Err(Error::LimitReached {
                message: "too many registrations from this address; retry later".into(),
                retry_after_secs: Ord::max((row.window_start + window - current).num_seconds(), 1)
                    as u64,
            });
        }
        Ok(())
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
            self.count_in_bucket(bucket, self.login_window()).await?;
        }
        self.check_buckets(username, client, self.settings.login_max_failures)
            .await
    }

    /// One more attempt in `bucket`, starting a new window when the old one has passed.
    async fn count_in_bucket(&self, bucket: String, window: ChronoDuration) -> Result<()> {
        let current = now();
        let window_cutoff = current - window;
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
            "could not count an attempt in {bucket} under contention"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_bucket(a), address_bucket(b));
        assert_ne!(address_bucket(a), address_bucket(other));
        assert_eq!(address_bucket(a), "addr:2001:db8:1:2::/64");
        // An IPv4-mapped address is its IPv4 address.
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_bucket(mapped), "addr:192.0.2.7");
        assert_eq!(registration_bucket(mapped), "register:192.0.2.7");
    }
}
