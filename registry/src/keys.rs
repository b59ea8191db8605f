//! API keys: authentication of a presented key, creation without privilege escalation (the
//! checks are `permissions.rs`'s), listing and revocation of the caller's own keys.

use chrono::Duration as ChronoDuration;
use sea_orm::sea_query::Expr;
use sea_orm::sea_query::ExprTrait;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};

use entity::{api_key, user};

use super::permissions::{KeyPermit, OwnKeys, SystemAuthority};
use super::{Registry, now};
use crate::auth::api_key::{generate, hash_key, looks_like_key};
use crate::auth::scope::ScopeSet;
use crate::auth::{Principal, PrincipalUser};
use crate::error::{Error, Result};

/// The scope of the key returned by register and login.
pub const USER_KEY_SCOPE: &str = "pull:*,push:*,delete:*";

/// A freshly created key; `plaintext` is shown to its owner exactly once.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub id: i64,
    pub plaintext: String,
    pub name: String,
    pub scope: String,
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub prefix: String,
    pub created_at: chrono::NaiveDateTime,
    pub last_used_at: Option<chrono::NaiveDateTime>,
    pub expires_at: Option<chrono::NaiveDateTime>,
    /// Set for keys minted from an identity token (`identity/exchange.rs`).
    pub minted_for: Option<crate::identity::MintedFor>,
}

/// `last_used_at` is written on first use, then at most this often per key.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

const INVALID_KEY: &str = "invalid, expired or revoked API key";

impl Registry {
    /// Resolves a presented key. Every call reads the database, so a revocation made through
    /// any replica is refused by every replica on the next request.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal> {
        if !looks_like_key(presented) {
            return Err(Error::Unauthenticated(INVALID_KEY.into()));
        }
        let key = api_key::Entity::find()
            .filter(api_key::Column::KeyHash.eq(hash_key(presented)))
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::Unauthenticated(INVALID_KEY.into()))?;
        let current = now();
        if key.revoked_at.is_some() || key.expires_at.is_some_and(|at| at <= current) {
            return Err(Error::Unauthenticated(INVALID_KEY.into()));
        }
        let scope: ScopeSet = key
            .scope
            .parse()
            .map_err(|_| Error::internal(format!("stored scope of key {} is invalid", key.id)))?;
        let user = match key.user_id {
            Some(user_id) => {
                let user = user::Entity::find_by_id(user_id)
                    .one(&self.db)
                    .await?
                    .ok_or_else(|| Error::Unauthenticated(INVALID_KEY.into()))?;
                Some(PrincipalUser {
                    id: user.id,
                    username: user.username,
                })
            }
            None => None,
        };
        self.touch_key(&key, current).await?;
        Ok(Principal::authenticated(key.id, user, scope))
    }

    /// Records use of a key: at once the first time, then at most once a minute. The condition
    /// is in the UPDATE so replicas racing on the same key write once.
    async fn touch_key(&self, key: &api_key::Model, current: chrono::NaiveDateTime) -> Result<()> {
        let stale_before = current - ChronoDuration::seconds(LAST_USED_RESOLUTION_SECS);
        if key.last_used_at.is_some_and(|at| at > stale_before) {
            return Ok(());
        }
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(current))
            .filter(api_key::Column::Id.eq(key.id))
            .filter(
                api_key::Column::LastUsedAt
                    .is_null()
                    .or(api_key::Column::LastUsedAt.lte(stale_before)),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// `POST /v1/auth/keys`: the key's name and scope are checked (400), then the caller's
    /// right to mint it (403, see `authorize_new_key`).
    pub async fn create_key_for(
        &self,
        principal: &Principal,
        name: &str,
        scope: &str,
    ) -> Result<CreatedKey> {
        let name = validate_key_name(name)?;
        let permit = self.authorize_new_key(principal, parse_new_scope(scope)?)?;
        self.issue_key(&permit, &name, None).await
    }

    /// Creates a key with any scope, linked to `username` if given: the registry operator (the
    /// CLI's `keys create`, the Kubernetes operator) is the root of trust.
    pub async fn create_key_by_authority(
        &self,
        authority: &SystemAuthority,
        username: Option<&str>,
        name: &str,
        scope: &str,
        expires_at: Option<chrono::NaiveDateTime>,
    ) -> Result<CreatedKey> {
        let name = validate_key_name(name)?;
        let permit = self
            .key_permit_by_authority(authority, username, parse_new_scope(scope)?)
            .await?;
        self.issue_key(&permit, &name, expires_at).await
    }

    /// Mints the key a permit allows.
    pub async fn issue_key(
        &self,
        permit: &KeyPermit,
        name: &str,
        expires_at: Option<chrono::NaiveDateTime>,
    ) -> Result<CreatedKey> {
        self.insert_key(&self.db, permit.user_id(), name, permit.scope(), expires_at)
            .await
    }

    /// Inserts a key without a permit: only for the registry's own flows that have just
    /// proven who the user is (registration, login).
    pub(super) async fn insert_key(
        &self,
        connection: &impl ConnectionTrait,
        user_id: Option<i64>,
        name: &str,
        scope: &ScopeSet,
        expires_at: Option<chrono::NaiveDateTime>,
    ) -> Result<CreatedKey> {
        let material = generate();
        // What the caller wrote (validated), in their order: it is what they see again in
        // listings. Checks use the parsed form, which does not depend on the order.
        let scope_text = scope.as_written().to_owned();
        let model = api_key::ActiveModel {
            user_id: Set(user_id),
            name: Set(name.to_owned()),
            scope: Set(scope_text.clone()),
            key_hash: Set(material.hash.clone()),
            prefix: Set(material.prefix.clone()),
            created_at: Set(now()),
            last_used_at: Set(None),
            expires_at: Set(expires_at),
            revoked_at: Set(None),
            ..Default::default()
        }
        .insert(connection)
        .await?;
        Ok(CreatedKey {
            id: model.id,
            plaintext: material.plaintext,
            name: model.name,
            scope: scope_text,
            prefix: model.prefix,
        })
    }

    /// The caller's own live keys (see `OwnKeys`).
    pub async fn list_keys(
        &self,
        principal: &Principal,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<KeyInfo>> {
        use sea_orm::QuerySelect;
        let query = api_key::Entity::find()
            .filter(api_key::Column::RevokedAt.is_null())
            .filter(OwnKeys::of(principal).condition())
            .order_by_asc(api_key::Column::Id)
            .limit(limit)
            .offset(offset);
        let keys = query.all(&self.db).await?;
        let mut minted = self
            .minted_for(keys.iter().map(|key| key.id).collect())
            .await?;
        Ok(keys
            .into_iter()
            .map(|key| KeyInfo {
                minted_for: minted.remove(&key.id),
                id: key.id,
                name: key.name,
                scope: key.scope,
                prefix: key.prefix,
                created_at: key.created_at,
                last_used_at: key.last_used_at,
                expires_at: key.expires_at,
            })
            .collect())
    }

    /// Revokes one of the caller's own keys (anyone else's is a 404, as if it did not exist).
    pub async fn revoke_key_for(&self, principal: &Principal, key_id: i64) -> Result<()> {
        let key = api_key::Entity::find_by_id(key_id)
            .one(&self.db)
            .await?
            .filter(|key| key.revoked_at.is_none())
            .ok_or_else(|| Error::not_found(format!("API key {key_id}")))?;
        let own = OwnKeys::of(principal).includes(&key);
        if !own {
            return Err(Error::not_found(format!("API key {key_id}")));
        }
        self.revoke(key_id).await
    }

    /// Revokes a key by id, whoever owns it, with the registry operator's authority.
    /// Idempotent.
    pub async fn revoke_key_by_authority(
        &self,
        _authority: &SystemAuthority,
        key_id: i64,
    ) -> Result<()> {
        self.revoke(key_id).await
    }

    async fn revoke(&self, key_id: i64) -> Result<()> {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(now()))
            .filter(api_key::Column::Id.eq(key_id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

/// The longest scope a new key may have, in bytes (the same bound as the ApiKey resource's
/// `scope`). The scope is stored as written and every request's checks walk it, so its size
/// is bounded here rather than by whatever body size a route accepts.
pub const MAX_SCOPE_BYTES: usize = 4096;

fn parse_new_scope(scope: &str) -> Result<ScopeSet> {
    if scope.len() > MAX_SCOPE_BYTES {
        return Err(Error::Invalid(format!(
            "the scope is longer than {MAX_SCOPE_BYTES} bytes"
        )));
    }
    Ok(scope.parse()?)
}

fn validate_key_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "key name must be 1 to 128 printable characters".into(),
        ));
    }
    Ok(name.to_owned())
}
