//! Keyless-access grants: which identity (an issuer, plus a Kubernetes namespace and optional
//! ServiceAccount, and/or exact claim matches) may do which actions in which registry namespace.
//! Grants belong to an owner (e.g. the UID of the Kubernetes object the operator mirrors) who
//! replaces them as a whole, with the registry operator's authority.
//!
//! Removing a grant revokes every key minted from it. The race with a concurrent exchange is
//! closed from both sides: `replace_identity_grants` commits the removal *before* it looks for
//! keys to revoke, and the exchange records a key's grants *before* it checks that they still
//! exist (`exchange.rs`); whichever runs second sees the other's write.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};

use entity::{api_key, identity_grant, minted_key};

use super::Identity;
use crate::auth::scope::Action;
use crate::error::{Error, Result};
use crate::names::validate_namespace;
use crate::permissions::SystemAuthority;
use crate::{Registry, now};

/// What a grant says, as its owner writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSpec {
    /// A trusted issuer, exactly as in `NISO_OIDC_ISSUERS` (or the TokenReview issuer).
    pub issuer: String,
    /// The Kubernetes namespace of the ServiceAccount (`sub` = `system:serviceaccount:NS:SA`).
    pub kubernetes_namespace: Option<String>,
    /// The ServiceAccount's name; `None` for every ServiceAccount of the namespace.
    pub service_account: Option<String>,
    /// Claims that must be present with exactly these string values (e.g. `repository`, `ref`).
    pub claims: BTreeMap<String, String>,
    /// The registry namespace, `@team`.
    pub registry_namespace: String,
    /// Some of pull, push and delete (never admin).
    pub actions: BTreeSet<Action>,
}

/// A stored grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityGrant {
    pub id: i64,
    pub owner: String,
    pub spec: GrantSpec,
    pub created_at: chrono::NaiveDateTime,
}

/// What a replacement did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplacedGrants {
    pub kept: usize,
    pub added: usize,
    pub removed: usize,
    /// Keys minted from removed grants, now revoked.
    pub revoked_keys: u64,
}

/// Bounds on what an owner may write: grants are read on every exchange for their issuer.
const MAX_GRANTS_PER_OWNER: usize = 64;
const MAX_CLAIMS: usize = 16;
const MAX_TEXT_BYTES: usize = 512;

impl GrantSpec {
    fn validate(&self) -> Result<()> {
        let text_ok = |text: &str| {
            !text.is_empty() && text.len() <= MAX_TEXT_BYTES && !text.chars().any(char::is_control)
        };
        if !text_ok(&self.issuer) {
            return Err(Error::Invalid(
                "a grant's issuer must be 1 to 512 printable bytes".into(),
            ));
        }
        validate_namespace(&self.registry_namespace)?;
        if self.actions.is_empty() || self.actions.contains(&Action::Admin) {
            return Err(Error::Invalid(
                "a grant's actions are some of pull, push and delete".into(),
            ));
        }
        if self.service_account.is_some() && self.kubernetes_namespace.is_none() {
            return Err(Error::Invalid(
                "a grant naming a ServiceAccount must name its Kubernetes namespace".into(),
            ));
        }
        // A grant without a matcher would give every token of the issuer (every repository of
        // a CI provider) access.
        if self.kubernetes_namespace.is_none() && self.claims.is_empty() {
            return Err(Error::Invalid(
                "a grant must match a Kubernetes namespace or at least one claim".into(),
            ));
        }
        if self.claims.len() > MAX_CLAIMS {
            return Err(Error::Invalid(format!(
                "a grant matches at most {MAX_CLAIMS} claims"
            )));
        }
        let all_text = self
            .kubernetes_namespace
            .iter()
            .chain(&self.service_account)
            .chain(self.claims.keys())
            .chain(self.claims.values());
        for text in all_text {
            if !text_ok(text) {
                return Err(Error::Invalid(
                    "a grant's names and claims must be 1 to 512 printable bytes".into(),
                ));
            }
        }
        Ok(())
    }

    /// Whether `identity` is one this grant is for.
    pub fn matches(&self, identity: &Identity) -> bool {
        if identity.issuer != self.issuer {
            return false;
        }
        if let Some(namespace) = &self.kubernetes_namespace {
            let Some(account) = &identity.kubernetes else {
                return false;
            };
            if account.namespace != *namespace
                || self
                    .service_account
                    .as_ref()
                    .is_some_and(|name| *name != account.service_account)
            {
                return false;
            }
        }
        self.claims
            .iter()
            .all(|(name, value)| identity.claims.get(name) == Some(value))
    }
}

fn actions_text(actions: &BTreeSet<Action>) -> String {
    actions
        .iter()
        .map(|action| action.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn from_model(model: identity_grant::Model) -> Result<IdentityGrant> {
    let corrupt = || Error::internal(format!("stored identity grant {} is invalid", model.id));
    let claims: BTreeMap<String, String> =
        serde_json::from_str(&model.claims).map_err(|_| corrupt())?;
    let actions = model
        .actions
        .split(',')
        .map(|action| action.parse::<Action>().map_err(|_| corrupt()))
        .collect::<Result<BTreeSet<_>>>()?;
    Ok(IdentityGrant {
        id: model.id,
        owner: model.owner,
        spec: GrantSpec {
            issuer: model.issuer,
            kubernetes_namespace: model.kubernetes_namespace,
            service_account: model.service_account,
            claims,
            registry_namespace: model.registry_namespace,
            actions,
        },
        created_at: model.created_at,
    })
}

impl Registry {
    /// Makes `grants` the grants `owner` holds: identical grants are kept (with the keys minted
    /// from them), the others removed — revoking their keys — and new ones added.
    pub async fn replace_identity_grants(
        &self,
        _authority: &SystemAuthority,
        owner: &str,
        grants: Vec<GrantSpec>,
    ) -> Result<ReplacedGrants> {
        if owner.is_empty() || owner.len() > MAX_TEXT_BYTES {
            return Err(Error::Invalid(
                "a grant owner must be 1 to 512 bytes".into(),
            ));
        }
        if grants.len() > MAX_GRANTS_PER_OWNER {
            return Err(Error::Invalid(format!(
                "an owner holds at most {MAX_GRANTS_PER_OWNER} grants"
            )));
        }
        for grant in &grants {
            grant.validate()?;
        }
        let mut wanted: Vec<GrantSpec> = Vec::new();
        for grant in grants {
            if !wanted.contains(&grant) {
                wanted.push(grant);
            }
        }

        let transaction = self.db.begin().await?;
        // Write before reading: on SQLite this takes the write lock now (a transaction that
        // read first and wrote after another writer's commit would fail with SQLITE_BUSY
        // instead of waiting); on PostgreSQL it locks the owner's rows, so two replacements
        // of the same owner's grants apply one after the other.
        identity_grant::Entity::update_many()
            .col_expr(
                identity_grant::Column::Owner,
                Expr::col(identity_grant::Column::Owner),
            )
            .filter(identity_grant::Column::Owner.eq(owner))
            .exec(&transaction)
            .await?;
        let existing = identity_grant::Entity::find()
            .filter(identity_grant::Column::Owner.eq(owner))
            .all(&transaction)
            .await?
            .into_iter()
            .map(from_model)
            .collect::<Result<Vec<_>>>()?;
        let mut outcome = ReplacedGrants::default();
        let mut removed = Vec::new();
        for grant in &existing {
            if let Some(position) = wanted.iter().position(|spec| *spec == grant.spec) {
                wanted.remove(position);
                outcome.kept += 1;
            } else {
                removed.push(grant.id);
            }
        }
        if !removed.is_empty() {
            identity_grant::Entity::delete_many()
                .filter(identity_grant::Column::Id.is_in(removed.clone()))
                .exec(&transaction)
                .await?;
        }
        for spec in &wanted {
            identity_grant::ActiveModel {
                owner: Set(owner.to_owned()),
                issuer: Set(spec.issuer.clone()),
                kubernetes_namespace: Set(spec.kubernetes_namespace.clone()),
                service_account: Set(spec.service_account.clone()),
                claims: Set(serde_json::to_string(&spec.claims)
                    .map_err(|error| Error::internal(error.to_string()))?),
                registry_namespace: Set(spec.registry_namespace.clone()),
                actions: Set(actions_text(&spec.actions)),
                created_at: Set(now()),
                ..Default::default()
            }
            .insert(&transaction)
            .await?;
        }
        transaction.commit().await?;
        outcome.added = wanted.len();
        outcome.removed = removed.len();
        // After the commit, never inside it: see the module documentation.
        outcome.revoked_keys = self.revoke_keys_minted_from(&removed).await?;
        Ok(outcome)
    }

    /// The grants `owner` holds, or every grant; in creation order.
    pub async fn identity_grants(
        &self,
        _authority: &SystemAuthority,
        owner: Option<&str>,
    ) -> Result<Vec<IdentityGrant>> {
        let mut query = identity_grant::Entity::find().order_by_asc(identity_grant::Column::Id);
        if let Some(owner) = owner {
            query = query.filter(identity_grant::Column::Owner.eq(owner));
        }
        query
            .all(&self.db)
            .await?
            .into_iter()
            .map(from_model)
            .collect()
    }

    /// The grants that apply to `identity`.
    pub(crate) async fn grants_matching(&self, identity: &Identity) -> Result<Vec<IdentityGrant>> {
        let models = identity_grant::Entity::find()
            .filter(identity_grant::Column::Issuer.eq(identity.issuer.as_str()))
            .order_by_asc(identity_grant::Column::Id)
            .all(&self.db)
            .await?;
        let mut matching = Vec::new();
        for model in models {
            let grant = from_model(model)?;
            if grant.spec.matches(identity) {
                matching.push(grant);
            }
        }
        Ok(matching)
    }

    /// Revokes the live keys minted from any of `grant_ids`; returns how many.
    pub(crate) async fn revoke_keys_minted_from(&self, grant_ids: &[i64]) -> Result<u64> {
        if grant_ids.is_empty() {
            return Ok(0);
        }
        let minted = Query::select()
            .column(minted_key::Column::KeyId)
            .from(minted_key::Entity)
            .and_where(minted_key::Column::GrantId.is_in(grant_ids.to_vec()))
            .to_owned();
        let result = api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(now()))
            .filter(api_key::Column::RevokedAt.is_null())
            .filter(api_key::Column::Id.in_subquery(minted))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }
}
