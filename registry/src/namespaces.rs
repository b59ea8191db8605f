//! Namespaces: organisation creation, metadata with members, and member management by owners
//! and admins (the checks, including the 409 for namespaces managed by a RegistryNamespace
//! resource, are `permissions.rs`'s: these operations take their permits).

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};

use entity::{namespace, namespace_member, user};

use super::permissions::{NamespacePermit, Role, UserPermit};
use super::{Registry, is_unique_violation, now};
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
    /// The namespace row named `name` (a user's or an organisation's), if any.
    pub(crate) async fn find_namespace(&self, name: &str) -> Result<Option<namespace::Model>> {
        Ok(namespace::Entity::find()
            .filter(namespace::Column::Name.eq(name))
            .one(&self.db)
            .await?)
    }

    /// `POST /v1/namespaces`: an org namespace owned by the permit's user (the caller, or
    /// the user a RegistryNamespace resource names).
    pub async fn create_org(&self, owner: &UserPermit, name: &str) -> Result<NamespaceView> {
        let owner_id = owner.user_id();
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

    /// Adds `username` with `role` (`admin` or `member`) to the permit's namespace; 409 when
    /// they are a member already or own it.
    pub async fn add_member(
        &self,
        permit: &NamespacePermit,
        username: &str,
        role: &str,
    ) -> Result<NamespaceView> {
        let role = parse_member_role(role)?;
        let namespace = permit.namespace();
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
        let already = || {
            Error::Conflict(format!(
                "{username} is already a member of {}",
                namespace.name
            ))
        };
        if namespace_member::Entity::find_by_id((namespace.id, user.id))
            .one(&self.db)
            .await?
            .is_some()
        {
            return Err(already());
        }
        let inserted = namespace_member::ActiveModel {
            namespace_id: Set(namespace.id),
            user_id: Set(user.id),
            role: Set(role.as_str().into()),
            created_at: Set(now()),
        }
        .insert(&self.db)
        .await;
        match inserted {
            Ok(_) => self.namespace_view(&namespace.name).await,
            // Added concurrently: the (namespace, user) key refuses the second.
            Err(error) if is_unique_violation(&error) => Err(already()),
            Err(error) => Err(error.into()),
        }
    }

    /// Removes `username` from the permit's namespace; 409 for its owner.
    pub async fn remove_member(&self, permit: &NamespacePermit, username: &str) -> Result<()> {
        let namespace = permit.namespace();
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
        Some(Role::Owner) => Err(Error::Invalid(
            "the owner role is set at creation and cannot be given".into(),
        )),
        Some(role) => Ok(role),
        None => Err(Error::Invalid(format!(
            "invalid role {role:?}: expected \"admin\" or \"member\""
        ))),
    }
}
