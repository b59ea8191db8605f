//! Authorisation of package operations: a key's scope restricts, namespace membership grants
//! (DESIGN.md §5). Keys not linked to a user are authorised by their scope alone.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use entity::{namespace, namespace_member};

use super::Registry;
use crate::auth::Principal;
use crate::auth::scope::Action;
use crate::error::{Error, Result};
use crate::names::PackageName;

/// Member roles, from least to most privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

impl Registry {
    pub(crate) async fn find_namespace(&self, name: &str) -> Result<Option<namespace::Model>> {
        Ok(namespace::Entity::find()
            .filter(namespace::Column::Name.eq(name))
            .one(&self.db)
            .await?)
    }

    pub(crate) async fn role_in(&self, namespace_id: i64, user_id: i64) -> Result<Option<Role>> {
        let member = namespace_member::Entity::find_by_id((namespace_id, user_id))
            .one(&self.db)
            .await?;
        Ok(member.and_then(|m| Role::parse(&m.role)))
    }

    /// Checks that `principal` may perform `action` on `package`, and returns the package's
    /// namespace. 404 when the namespace does not exist, 403 when the scope or the membership
    /// does not allow it.
    pub async fn authorize_package(
        &self,
        principal: &Principal,
        action: Action,
        package: &PackageName,
    ) -> Result<namespace::Model> {
        if !principal.scope.allows(action, package.as_str()) {
            return Err(Error::Forbidden(format!(
                "this API key's scope does not allow {} on {package}",
                action_name(action)
            )));
        }
        let namespace = self
            .find_namespace(package.namespace())
            .await?
            .ok_or_else(|| Error::not_found(format!("namespace {}", package.namespace())))?;
        if let Some(user) = &principal.user {
            let role = self.role_in(namespace.id, user.id).await?.ok_or_else(|| {
                Error::Forbidden(format!(
                    "{} is not a member of {}",
                    user.username, namespace.name
                ))
            })?;
            let needed = match action {
                Action::Delete | Action::Admin => Role::Admin,
                Action::Pull | Action::Push => Role::Member,
            };
            if role < needed {
                return Err(Error::Forbidden(format!(
                    "{} needs the admin or owner role in {} to {}",
                    user.username,
                    namespace.name,
                    action_name(action)
                )));
            }
        }
        Ok(namespace)
    }
}

pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Pull => "pull",
        Action::Push => "push",
        Action::Delete => "delete",
        Action::Admin => "admin",
    }
}
