//! Namespaces: organisation creation, metadata with members, and member management by owners
//! and admins. Namespaces managed by a RegistryNamespace resource refuse member changes through
//! the API (409): the custom resource is their source of truth.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};

use entity::{namespace, namespace_member, user};

use super::permissions::Role;
use super::{Registry, is_unique_violation, now};
use crate::auth::Principal;
use crate::auth::scope::{Action, Pattern};
use crate::error::{Error, Result};
use crate::names::validate_namespace;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub username: String,
    pub role: String,
}

#[derive(Debug, Clone)]
pub struct NamespaceView {
    pub name: String,
    pub owner_id: i64,
    pub ns_type: String,
    pub managed: bool,
    pub created_at: chrono::NaiveDateTime,
    /// The owner first, then the others by name.
    pub members: Vec<Member>,
}

impl Registry {
    /// `POST /v1/namespaces`: an org namespace owned by the caller.
    pub async fn create_org(&self, principal: &Principal, name: &str) -> Result<NamespaceView> {
        let user = principal.require_user()?;
        self.create_org_for_user(user.id, name).await
    }

    /// Creates an org namespace owned by `owner_id` (the API and the operator both use it).
    pub async fn create_org_for_user(&self, owner_id: i64, name: &str) -> Result<NamespaceView> {
        validate_namespace(name)?;
        // Users and orgs share one name space: `@bob` is taken once user bob exists.
        let bare = &name[1..];
        if self.find_user_by_name(bare).await?.is_some()
            || self.find_namespace(name).await?.is_some()
        {
            return Err(Error::Conflict(format!("the name {name} is already taken")));
        }
        let transaction = self.db.begin().await?;
        let created_at = now();
        let namespace = namespace::ActiveModel {
            name: Set(name.to_owned()),
            ns_type: Set("org".into()),
            owner_id: Set(owner_id),
            managed: Set(false),
            created_at: Set(created_at),
            ..Default::default()
        }
        .insert(&transaction)
        .await
        .map_err(|error| {
            if is_unique_violation(&error) {
                Error::Conflict(format!("the name {name} is already taken"))
            } else {
                error.into()
            }
        })?;
        namespace_member::ActiveModel {
            namespace_id: Set(namespace.id),
            user_id: Set(owner_id),
            role: Set(Role::Owner.as_str().into()),
            created_at: Set(created_at),
        }
        .insert(&transaction)
        .await?;
        transaction.commit().await?;
        self.namespace_view(name).await
    }

    pub async fn namespace_view(&self, name: &str) -> Result<NamespaceView> {
        validate_namespace(name)?;
        let namespace = self
            .find_namespace(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("namespace {name}")))?;
        let mut members: Vec<(Role, Member)> = self
            .member_users(namespace.id)
            .await?
            .into_iter()
            .map(|(user, role)| {
                (
                    role,
                    Member {
                        username: user.username,
                        role: role.as_str().to_owned(),
                    },
                )
            })
            .collect();
        members.sort_by(|(role_a, a), (role_b, b)| {
            (*role_a != Role::Owner, &a.username).cmp(&(*role_b != Role::Owner, &b.username))
        });
        Ok(NamespaceView {
            name: namespace.name,
            owner_id: namespace.owner_id,
            ns_type: namespace.ns_type,
            managed: namespace.managed,
            created_at: namespace.created_at,
            members: members.into_iter().map(|(_, member)| member).collect(),
        })
    }

    /// Checks that the caller may manage `name`'s members: a user-linked key of an owner or admin
    /// whose scope grants push and delete on `@ns/*`. Returns the namespace.
    async fn authorize_namespace_management(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<namespace::Model> {
        let user = principal.require_user()?;
        validate_namespace(name)?;
        let namespace = self
            .find_namespace(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("namespace {name}")))?;
        let everything = Pattern::Prefix(format!("{name}/"));
        if !principal.scope.covers_pattern(Action::Push, &everything)
            || !principal.scope.covers_pattern(Action::Delete, &everything)
        {
            return Err(Error::Forbidden(format!(
                "managing {name} needs a key whose scope grants push and delete on {name}/*"
            )));
        }
        match self.role_in(namespace.id, user.id).await? {
            Some(Role::Owner | Role::Admin) => {}
            _ => {
                return Err(Error::Forbidden(format!(
                    "only an owner or admin of {name} may manage its members"
                )));
            }
        }
        if namespace.ns_type == "user" {
            return Err(Error::BadRequest(format!(
                "{name} is a user namespace; it has no members besides its user"
            )));
        }
        if namespace.managed {
            return Err(Error::Conflict(format!(
                "{name} is managed by a RegistryNamespace resource; change its members there"
            )));
        }
        Ok(namespace)
    }

    pub async fn add_member(
        &self,
        principal: &Principal,
        name: &str,
        username: &str,
        role: &str,
    ) -> Result<NamespaceView> {
        let role = parse_member_role(role)?;
        let namespace = self.authorize_namespace_management(principal, name).await?;
        self.put_member(&namespace, username, role, false).await?;
        self.namespace_view(name).await
    }

    pub async fn remove_member(
        &self,
        principal: &Principal,
        name: &str,
        username: &str,
    ) -> Result<()> {
        let namespace = self.authorize_namespace_management(principal, name).await?;
        self.delete_member(&namespace, username).await
    }

    /// Adds `username` with `role`; with `replace_role`, changes the role of an existing member
    /// (the operator converging to a spec) instead of answering 409.
    pub(crate) async fn put_member(
        &self,
        namespace: &namespace::Model,
        username: &str,
        role: Role,
        replace_role: bool,
    ) -> Result<()> {
        let user = self
            .find_user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        if user.id == namespace.owner_id {
            return Err(Error::Conflict(format!(
                "{username} owns {}; the owner's role cannot change",
                namespace.name
            )));
        }
        match namespace_member::Entity::find_by_id((namespace.id, user.id))
            .one(&self.db)
            .await?
        {
            Some(existing) if existing.role == role.as_str() => {
                if replace_role {
                    Ok(())
                } else {
                    Err(Error::Conflict(format!(
                        "{username} is already a member of {}",
                        namespace.name
                    )))
                }
            }
            Some(existing) => {
                if !replace_role {
                    return Err(Error::Conflict(format!(
                        "{username} is already a member of {}",
                        namespace.name
                    )));
                }
                let mut active: namespace_member::ActiveModel = existing.into();
                active.role = Set(role.as_str().into());
                active.update(&self.db).await?;
                Ok(())
            }
            None => {
                let inserted = namespace_member::ActiveModel {
                    namespace_id: Set(namespace.id),
                    user_id: Set(user.id),
                    role: Set(role.as_str().into()),
                    created_at: Set(now()),
                }
                .insert(&self.db)
                .await;
                match inserted {
                    Ok(_) => Ok(()),
                    Err(error) if is_unique_violation(&error) => Err(Error::Conflict(format!(
                        "{username} is already a member of {}",
                        namespace.name
                    ))),
                    Err(error) => Err(error.into()),
                }
            }
        }
    }

    pub(crate) async fn delete_member(
        &self,
        namespace: &namespace::Model,
        username: &str,
    ) -> Result<()> {
        let user = self
            .find_user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        if user.id == namespace.owner_id {
            return Err(Error::Conflict(format!(
                "{username} owns {} and cannot be removed",
                namespace.name
            )));
        }
        let removed = namespace_member::Entity::delete_by_id((namespace.id, user.id))
            .exec(&self.db)
            .await?
            .rows_affected;
        if removed == 0 {
            return Err(Error::not_found(format!(
                "member {username} of {}",
                namespace.name
            )));
        }
        Ok(())
    }

    /// Users of `namespace` in name order (for the operator's convergence).
    pub async fn member_users(&self, namespace_id: i64) -> Result<Vec<(user::Model, Role)>> {
        let members = namespace_member::Entity::find()
            .filter(namespace_member::Column::NamespaceId.eq(namespace_id))
            .all(&self.db)
            .await?;
        let users = user::Entity::find()
            .filter(user::Column::Id.is_in(members.iter().map(|m| m.user_id)))
            .order_by_asc(user::Column::Username)
            .all(&self.db)
            .await?;
        Ok(users
            .into_iter()
            .filter_map(|user| {
                let member = members.iter().find(|m| m.user_id == user.id)?;
                Some((user, Role::parse(&member.role)?))
            })
            .collect())
    }
}

fn parse_member_role(role: &str) -> Result<Role> {
    match Role::parse(role) {
        Some(Role::Owner) => Err(Error::BadRequest(
            "the owner role is set at creation and cannot be given".into(),
        )),
        Some(role) => Ok(role),
        None => Err(Error::BadRequest(format!(
            "invalid role {role:?}: expected \"admin\" or \"member\""
        ))),
    }
}
