//! The token exchange: a verified identity gets a short-lived key not linked to a user, whose
//! scope is the intersection of what it asks for (everything granted by default) and what its
//! grants give. The key expires with the shorter of the configured lifetime and the token's own;
//! it is recorded against the grants it came from, which revoke it when they go.

use std::collections::{BTreeSet, HashMap};

use chrono::{Duration as ChronoDuration, NaiveDateTime};
use sea_orm::TransactionTrait;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};

use entity::{identity_grant, minted_key};

use super::grants::IdentityGrant;
use super::{Identity, IdentityVerifier, refused};
use crate::auth::scope::{Action, Grant, Pattern, ScopeSet};
use crate::error::{Error, Result};
use crate::keys::MAX_SCOPE_BYTES;
use crate::{Registry, now};

/// A key minted from an identity token; `plaintext` is shown once.
#[derive(Debug, Clone)]
pub struct MintedKey {
    pub id: i64,
    pub plaintext: String,
    pub scope: String,
    pub expires_at: NaiveDateTime,
    pub issuer: String,
    pub subject: String,
}

/// Where a minted key came from, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedFor {
    pub issuer: String,
    pub subject: String,
}

impl Registry {
    /// The origin of those of `key_ids` that were minted from identity tokens.
    pub(crate) async fn minted_for(&self, key_ids: Vec<i64>) -> Result<HashMap<i64, MintedFor>> {
        if key_ids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(minted_key::Entity::find()
            .filter(minted_key::Column::KeyId.is_in(key_ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                (
                    row.key_id,
                    MintedFor {
                        issuer: row.issuer,
                        subject: row.subject,
                    },
                )
            })
            .collect())
    }

    pub fn identity_verifier(&self) -> &IdentityVerifier {
        &self.identity
    }

    /// `POST /v1/auth/token`: 400 for a bad scope, 401 for a token that fails a check, 403 when
    /// nothing (of what is asked) is granted to the identity.
    pub async fn exchange_identity_token(
        &self,
        token: &str,
        requested_scope: Option<&str>,
    ) -> Result<MintedKey> {
        let settings = self.identity.settings();
        if settings.issuers.is_empty() && settings.token_review.is_none() {
            return Err(refused(
                "keyless access is not configured on this registry (no trusted issuer)",
            ));
        }
        let requested = match requested_scope {
            Some(scope) if scope.len() > MAX_SCOPE_BYTES => {
                return Err(Error::Invalid(format!(
                    "the scope is longer than {MAX_SCOPE_BYTES} bytes"
                )));
            }
            Some(scope) => Some(scope.parse::<ScopeSet>()?),
            None => None,
        };
        let identity = self.identity.verify(token).await?;
        let grants = self.grants_matching(&identity).await?;
        if grants.is_empty() {
            return Err(Error::Forbidden(format!(
                "no grant for this identity (issuer {}, subject {})",
                identity.issuer, identity.subject
            )));
        }
        let (items, used) = intersect(requested.as_ref(), &grants);
        let scope = ScopeSet::from_grants(items).map_err(|_| {
            Error::Forbidden(format!(
                "the requested scope is not granted to this identity (granted: {})",
                granted_scope(&grants)
            ))
        })?;

        let current = now();
        let lifetime = ChronoDuration::from_std(settings.key_lifetime)
            .map_err(|error| Error::internal(error.to_string()))?;
        let expires_at = (current + lifetime).min(identity.expires_at);
        if expires_at <= current {
            return Err(refused("the identity token has expired"));
        }
        let minted = self
            .record_minted_key(&identity, &scope, expires_at, &used)
            .await?;
        // The grants are recorded; now check they were not removed meanwhile (see grants.rs).
        let still_there = identity_grant::Entity::find()
            .filter(identity_grant::Column::Id.is_in(used.iter().copied()))
            .count(&self.db)
            .await?;
        if still_there < used.len() as u64 {
            self.revoke_keys_minted_from(&used.into_iter().collect::<Vec<_>>())
                .await?;
            return Err(Error::Forbidden(
                "the grant for this identity was removed while the key was being minted".into(),
            ));
        }
        Ok(minted)
    }

    async fn record_minted_key(
        &self,
        identity: &Identity,
        scope: &ScopeSet,
        expires_at: NaiveDateTime,
        grant_ids: &BTreeSet<i64>,
    ) -> Result<MintedKey> {
        let name: String = format!("oidc {}", identity.subject)
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        let transaction = self.db.begin().await?;
        let created = self
            .insert_key(&transaction, None, &name, scope, Some(expires_at))
            .await?;
        for grant_id in grant_ids {
            minted_key::ActiveModel {
                key_id: Set(created.id),
                grant_id: Set(*grant_id),
                issuer: Set(identity.issuer.clone()),
                subject: Set(identity.subject.clone()),
            }
            .insert(&transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(MintedKey {
            id: created.id,
            plaintext: created.plaintext,
            scope: created.scope,
            expires_at,
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
        })
    }
}

/// What the grants give, as scope items: `action:@ns/*`.
fn granted_items(grant: &IdentityGrant) -> Vec<Grant> {
    grant
        .spec
        .actions
        .iter()
        .map(|action| Grant {
            action: *action,
            pattern: Pattern::Prefix(format!("{}/", grant.spec.registry_namespace)),
        })
        .collect()
}

fn granted_scope(grants: &[IdentityGrant]) -> String {
    grants
        .iter()
        .flat_map(granted_items)
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The items both `requested` (all when `None`) and the grants allow, and the grants they
/// came from.
pub fn intersect(
    requested: Option<&ScopeSet>,
    grants: &[IdentityGrant],
) -> (Vec<Grant>, BTreeSet<i64>) {
    let mut items = Vec::new();
    let mut used = BTreeSet::new();
    for grant in grants {
        for granted in granted_items(grant) {
            let Some(requested) = requested else {
                items.push(granted);
                used.insert(grant.id);
                continue;
            };
            for asked in requested.grants() {
                // `admin` asked for is read as "whatever is granted there"; admin itself is
                // never granted.
                if asked.action != granted.action && asked.action != Action::Admin {
                    continue;
                }
                if let Some(pattern) = intersect_patterns(&asked.pattern, &granted.pattern) {
                    items.push(Grant {
                        action: granted.action,
                        pattern,
                    });
                    used.insert(grant.id);
                }
            }
        }
    }
    (items, used)
}

/// The packages both patterns match, as a pattern (`None` when there are none).
fn intersect_patterns(a: &Pattern, b: &Pattern) -> Option<Pattern> {
    match (a, b) {
        (Pattern::Any, other) | (other, Pattern::Any) => Some(other.clone()),
        (Pattern::Prefix(x), Pattern::Prefix(y)) => {
            if x.starts_with(y.as_str()) {
                Some(a.clone())
            } else if y.starts_with(x.as_str()) {
                Some(b.clone())
            } else {
                None
            }
        }
        (Pattern::Prefix(prefix), Pattern::Exact(name))
        | (Pattern::Exact(name), Pattern::Prefix(prefix)) => name
            .starts_with(prefix.as_str())
            .then(|| Pattern::Exact(name.clone())),
        (Pattern::Exact(x), Pattern::Exact(y)) => (x == y).then(|| a.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_intersect_to_the_narrower() {
        let p = |s: &str| s.parse::<Pattern>().unwrap();
        assert_eq!(intersect_patterns(&p("*"), &p("@a/*")), Some(p("@a/*")));
        assert_eq!(
            intersect_patterns(&p("@a/x*"), &p("@a/*")),
            Some(p("@a/x*"))
        );
        assert_eq!(
            intersect_patterns(&p("@a/*"), &p("@a/x*")),
            Some(p("@a/x*"))
        );
        assert_eq!(intersect_patterns(&p("@a/b"), &p("@a/*")), Some(p("@a/b")));
        assert_eq!(intersect_patterns(&p("@b/*"), &p("@a/*")), None);
        assert_eq!(intersect_patterns(&p("@ab/*"), &p("@a/*")), None);
        assert_eq!(intersect_patterns(&p("@a/b"), &p("@a/c")), None);
    }
}
