//! What the Kubernetes operator needs beyond the API's operations: namespaces managed by a
//! `RegistryNamespace` resource (claimed by the resource's uid, marked managed, members
//! converged to a spec in one transaction, removal when empty) and keys it owns (state by id,
//! revocation by name).
//!
//! Claims keep two resources naming the same namespace from fighting: the first to claim it
//! records its uid, and every later change (members, release, deletion) checks that uid, so a
//! second claimant can neither change nor delete what the first manages.
//!
//! The operator is the root of trust: every operation here that changes something, or shows
//! a key, takes its `SystemAuthority` instead of checking a principal.

use std::collections::{BTreeMap, HashMap};

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set, TransactionTrait,
};

use entity::{api_key, namespace, namespace_member, package, package_version, user};

use super::permissions::{Role, SystemAuthority};
use super::{Registry, is_foreign_key_violation, now};
use crate::error::{Error, Result};
use crate::names::validate_namespace;

/// What `converge_members` changed, by username.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberChanges {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
}

impl MemberChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty()
    }
}

/// The outcome of [`Registry::claim_namespace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The namespace is now (or was already) claimed by the caller.
    Claimed { adopted: bool },
    /// Another resource claims it; its uid.
    ClaimedByOther(String),
    /// No resource claims it and the caller did not ask to adopt it.
    AdoptionRequired,
}

/// A key as the operator sees it (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedKey {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub prefix: String,
    pub user_id: Option<i64>,
    /// The username of `user_id`.
    pub username: Option<String>,
    pub expires_at: Option<chrono::NaiveDateTime>,
    pub last_used_at: Option<chrono::NaiveDateTime>,
    pub created_at: chrono::NaiveDateTime,
    pub revoked: bool,
}

impl Registry {
    /// The usernames among `usernames` that have no account, in the order given.
    pub async fn missing_users(&self, usernames: &[&str]) -> Result<Vec<String>> {
        let found: Vec<String> = user::Entity::find()
            .filter(user::Column::Username.is_in(usernames.iter().copied()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|user| user.username)
            .collect();
        let mut missing: Vec<String> = Vec::new();
        for name in usernames {
            if !found.iter().any(|f| f == name) && !missing.iter().any(|m| m == name) {
                missing.push((*name).to_owned());
            }
        }
        Ok(missing)
    }

    /// Marks `name` as managed (the API then refuses member changes with 409) or gives it back
    /// to the API. Returns whether anything changed; 404 when the namespace does not exist.
    pub async fn set_namespace_managed(
        &self,
        _authority: &SystemAuthority,
        name: &str,
        managed: bool,
    ) -> Result<bool> {
        validate_namespace(name)?;
        let namespace = self
            .find_namespace(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("namespace {name}")))?;
        if namespace.managed == managed {
            return Ok(false);
        }
        let changed = namespace::Entity::update_many()
            .col_expr(namespace::Column::Managed, Expr::value(managed))
            .filter(namespace::Column::Id.eq(namespace.id))
            .filter(namespace::Column::Managed.eq(!managed))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(changed == 1)
    }

    /// Claims org namespace `name` for the resource `claimant` (its uid). A namespace claimed
    /// by nobody is taken only when `adopt` is set, or when it is marked managed already (by
    /// an operator that predates claims). Atomic: of two claimants racing, one wins. 404 when
    /// the namespace does not exist; 409 for a user's namespace.
    pub async fn claim_namespace(
        &self,
        _authority: &SystemAuthority,
        name: &str,
        claimant: &str,
        adopt: bool,
    ) -> Result<Claim> {
        validate_namespace(name)?;
        let namespace = self
            .find_namespace(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("namespace {name}")))?;
        if namespace.ns_type != "org" {
            return Err(Error::Conflict(format!(
                "{name} is a user's own namespace, not an organisation"
            )));
        }
        match namespace.managed_by.as_deref() {
            Some(current) if current == claimant => return Ok(Claim::Claimed { adopted: false }),
            Some(current) => return Ok(Claim::ClaimedByOther(current.to_owned())),
            None if !adopt && !namespace.managed => return Ok(Claim::AdoptionRequired),
            None => {}
        }
        let taken = namespace::Entity::update_many()
            .col_expr(namespace::Column::ManagedBy, Expr::value(claimant))
            .filter(namespace::Column::Id.eq(namespace.id))
            .filter(namespace::Column::ManagedBy.is_null())
            .exec(&self.db)
            .await?
            .rows_affected;
        if taken == 1 {
            return Ok(Claim::Claimed { adopted: true });
        }
        // Someone claimed it in between: report who.
        match self.namespace_claimant(name).await? {
            Some(current) if current == claimant => Ok(Claim::Claimed { adopted: false }),
            Some(current) => Ok(Claim::ClaimedByOther(current)),
            None => Err(Error::Conflict(format!(
                "{name} changed while being claimed; retrying"
            ))),
        }
    }

    /// The uid of the resource that claims `name`, if any (None also when it does not exist).
    pub async fn namespace_claimant(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .find_namespace(name)
            .await?
            .and_then(|namespace| namespace.managed_by))
    }

    /// Gives `name` back to the API if `claimant` claims it: no longer managed, no claimant.
    /// Returns false (changing nothing) when it does not exist or another resource claims it.
    pub async fn release_namespace(
        &self,
        _authority: &SystemAuthority,
        name: &str,
        claimant: &str,
    ) -> Result<bool> {
        validate_namespace(name)?;
        let released = namespace::Entity::update_many()
            .col_expr(namespace::Column::Managed, Expr::value(false))
            .col_expr(
                namespace::Column::ManagedBy,
                Expr::value(Option::<String>::None),
            )
            .filter(namespace::Column::Name.eq(name))
            .filter(namespace::Column::ManagedBy.eq(claimant))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(released == 1)
    }

    /// Makes the members of org namespace `name` (besides its owner) exactly `desired` when
    /// `exact`, else adds those of `desired` that are missing and gives them their role while
    /// keeping everyone else; in one transaction: all of it or none of it. Every user must exist (404 naming the missing ones,
    /// nothing changed); the owner cannot appear in `desired` and `owner` is not a role that can
    /// be given (400).
    pub async fn converge_members(
        &self,
        _authority: &SystemAuthority,
        name: &str,
        desired: &[(String, Role)],
        exact: bool,
    ) -> Result<MemberChanges> {
        validate_namespace(name)?;
        let mut wanted: BTreeMap<&str, Role> = BTreeMap::new();
        for (username, role) in desired {
            if *role == Role::Owner {
                return Err(Error::Invalid(
                    "the owner role is set at creation and cannot be given".into(),
                ));
            }
            if wanted.insert(username.as_str(), *role).is_some() {
                return Err(Error::Invalid(format!(
                    "{username} is listed more than once"
                )));
            }
        }
        let transaction = self.db.begin().await?;
        let namespace = namespace::Entity::find()
            .filter(namespace::Column::Name.eq(name))
            .one(&transaction)
            .await?
            .ok_or_else(|| Error::not_found(format!("namespace {name}")))?;
        if namespace.ns_type != "org" {
            return Err(Error::Invalid(format!(
                "{name} is a user namespace; it has no members besides its user"
            )));
        }
        let users: HashMap<String, user::Model> = user::Entity::find()
            .filter(user::Column::Username.is_in(wanted.keys().copied()))
            .all(&transaction)
            .await?
            .into_iter()
            .map(|user| (user.username.clone(), user))
            .collect();
        let missing: Vec<&str> = wanted
            .keys()
            .copied()
            .filter(|username| !users.contains_key(*username))
            .collect();
        if !missing.is_empty() {
            return Err(Error::NotFound(format!(
                "user {} not found",
                missing.join(", ")
            )));
        }
        if let Some(owner) = users.values().find(|user| user.id == namespace.owner_id) {
            return Err(Error::Invalid(format!(
                "{} owns {name}; the owner cannot also be listed as a member",
                owner.username
            )));
        }
        let current = namespace_member::Entity::find()
            .filter(namespace_member::Column::NamespaceId.eq(namespace.id))
            .all(&transaction)
            .await?;
        let current_users: HashMap<i64, String> = user::Entity::find()
            .filter(user::Column::Id.is_in(current.iter().map(|member| member.user_id)))
            .all(&transaction)
            .await?
            .into_iter()
            .map(|user| (user.id, user.username))
            .collect();
        let mut changes = MemberChanges::default();
        let created_at = now();
        for member in &current {
            if member.user_id == namespace.owner_id {
                continue;
            }
            let username = current_users
                .get(&member.user_id)
                .cloned()
                .unwrap_or_default();
            match wanted.get(username.as_str()) {
                None if !exact => {}
                None => {
                    namespace_member::Entity::delete_by_id((namespace.id, member.user_id))
                        .exec(&transaction)
                        .await?;
                    changes.removed.push(username);
                }
                Some(role) if role.as_str() != member.role => {
                    let mut active: namespace_member::ActiveModel = member.clone().into();
                    active.role = Set(role.as_str().into());
                    active.update(&transaction).await?;
                    changes.updated.push(username);
                }
                Some(_) => {}
            }
        }
        for (username, role) in &wanted {
            let user = &users[*username];
            if current.iter().any(|member| member.user_id == user.id) {
                continue;
            }
            namespace_member::ActiveModel {
                namespace_id: Set(namespace.id),
                user_id: Set(user.id),
                role: Set(role.as_str().into()),
                created_at: Set(created_at),
            }
            .insert(&transaction)
            .await?;
            changes.added.push((*username).to_owned());
        }
        transaction.commit().await?;
        changes.removed.sort();
        changes.updated.sort();
        Ok(changes)
    }

    /// Removes org namespace `name` if it has no package with a version (hidden, version-less
    /// packages go with it) and `claimant` (a resource's uid) claims it. Returns false when it
    /// did not exist, or another resource (or none) claims it: then nothing changes. 409 when it
    /// still has packages or is a user namespace.
    pub async fn delete_empty_namespace(
        &self,
        _authority: &SystemAuthority,
        name: &str,
        claimant: &str,
    ) -> Result<bool> {
        validate_namespace(name)?;
        let transaction = self.db.begin().await?;
        let Some(namespace) = namespace::Entity::find()
            .filter(namespace::Column::Name.eq(name))
            .one(&transaction)
            .await?
        else {
            return Ok(false);
        };
        if namespace.ns_type != "org" {
            return Err(Error::Conflict(format!(
                "{name} is a user namespace and goes only with its user"
            )));
        }
        if namespace.managed_by.as_deref() != Some(claimant) {
            return Ok(false);
        }
        let package_ids: Vec<i64> = package::Entity::find()
            .filter(package::Column::NamespaceId.eq(namespace.id))
            .all(&transaction)
            .await?
            .into_iter()
            .map(|package| package.id)
            .collect();
        let versions = package_version::Entity::find()
            .filter(package_version::Column::PackageId.is_in(package_ids.iter().copied()))
            .count(&transaction)
            .await?;
        if versions > 0 {
            return Err(Error::Conflict(format!(
                "{name} still has packages; delete them first"
            )));
        }
        let conflict = |error: sea_orm::DbErr| {
            // An upload committed a version in between: the foreign keys refuse the delete.
            if is_foreign_key_violation(&error) {
                Error::Conflict(format!("{name} still has packages; delete them first"))
            } else {
                error.into()
            }
        };
        package::Entity::delete_many()
            .filter(package::Column::NamespaceId.eq(namespace.id))
            .exec(&transaction)
            .await
            .map_err(conflict)?;
        namespace::Entity::delete_by_id(namespace.id)
            .exec(&transaction)
            .await
            .map_err(conflict)?;
        transaction.commit().await.map_err(conflict)?;
        Ok(true)
    }

    /// A key by id, revoked or not; None if there never was one.
    pub async fn managed_key(
        &self,
        _authority: &SystemAuthority,
        key_id: i64,
    ) -> Result<Option<ManagedKey>> {
        let Some(key) = api_key::Entity::find_by_id(key_id).one(&self.db).await? else {
            return Ok(None);
        };
        let username = match key.user_id {
            Some(id) => user::Entity::find_by_id(id)
                .one(&self.db)
                .await?
                .map(|user| user.username),
            None => None,
        };
        Ok(Some(ManagedKey {
            id: key.id,
            name: key.name,
            scope: key.scope,
            prefix: key.prefix,
            user_id: key.user_id,
            username,
            expires_at: key.expires_at,
            last_used_at: key.last_used_at,
            created_at: key.created_at,
            revoked: key.revoked_at.is_some(),
        }))
    }

    /// Revokes every live key named `name` except `keep` (the operator names its keys after
    /// their resource, so this also catches keys orphaned by a crash mid-rotation). Returns how
    /// many were revoked.
    pub async fn revoke_keys_named(
        &self,
        _authority: &SystemAuthority,
        name: &str,
        keep: Option<i64>,
    ) -> Result<u64> {
        let mut update = api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(now()))
            .filter(api_key::Column::Name.eq(name))
            .filter(api_key::Column::RevokedAt.is_null());
        if let Some(keep) = keep {
            update = update.filter(api_key::Column::Id.ne(keep));
        }
        Ok(update.exec(&self.db).await?.rows_affected)
    }
}
