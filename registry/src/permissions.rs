//! Authorisation (DESIGN.md §5) as proofs the compiler checks.
//!
//! Every domain operation that changes state, or reads someone's private data, requires a
//! *permit*: a value with private fields that only the checks in this module construct. A
//! handler cannot call such an operation without having run its check, and a future endpoint
//! cannot skip it: without a permit, the call does not compile. A permit carries what its check
//! resolved (the namespace, the user, the scope asked for), so the operation acts on exactly
//! what was checked, and its type names the action: a `PackagePermit<Push>` does not open
//! `delete_version`, which wants a `PackagePermit<Delete>`.
//!
//! Permits come from two sources only:
//! - a request's [`Principal`], through the `Registry::authorize_*` checks below: a key's scope
//!   restricts, namespace membership grants; keys not linked to a user are authorised by their
//!   scope alone;
//! - the [`SystemAuthority`]: the registry operator's root of trust, used by the binary's
//!   `keys create` subcommand and by the Kubernetes operator. It passes the checks by design,
//!   the way whoever runs the registry can edit its database; nothing reachable over HTTP
//!   holds one.
//!
//! Pulls, downloads and listings of packages and namespaces are public, so they need no permit.

use std::marker::PhantomData;

use sea_orm::{ColumnTrait, EntityTrait};

use entity::{api_key, namespace, namespace_member};

use super::Registry;
use crate::auth::Principal;
use crate::auth::scope::{Action, Pattern, ScopeSet};
use crate::error::{Error, Result};
use crate::names::{PackageName, validate_namespace};

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

/// Whom a permit was granted to, for the operation's logs and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    /// A request's API key, linked to a user or not.
    Key { key_id: i64, user_id: Option<i64> },
    /// The registry operator ([`SystemAuthority`]), by the name it gave.
    System(&'static str),
}

impl Grantee {
    fn of(principal: &Principal) -> Grantee {
        Grantee::Key {
            key_id: principal.key_id,
            user_id: principal.user.as_ref().map(|user| user.id),
        }
    }
}

/// The registry operator's authority: the root of trust, which passes every permission check.
///
/// Taken only by code that whoever runs the registry runs themselves: the binary's subcommands
/// (`niso-server keys create --user U` may mint any key, as DESIGN.md §5 says) and the
/// Kubernetes operator, whose custom resources are the source of truth for managed namespaces
/// and keys. Never take it in an HTTP handler: requests act as their `Principal`.
/// `grep -rn root_of_trust` lists every place that does.
#[derive(Debug, Clone)]
pub struct SystemAuthority {
    name: &'static str,
}

impl SystemAuthority {
    /// Assumes the registry operator's authority. `name` says who acts (for the logs), e.g.
    /// `"niso-operator"` or `"niso-server keys create"`.
    pub fn root_of_trust(name: &'static str) -> SystemAuthority {
        SystemAuthority { name }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn grantee(&self) -> Grantee {
        Grantee::System(self.name)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Push {}
    impl Sealed for super::Delete {}
}

/// An action on a package that needs a permit. Sealed: the set of actions is this module's.
pub trait PackageAction: sealed::Sealed {
    const ACTION: Action;
    /// The least namespace role a user-linked key's user needs for it.
    const ROLE: Role;
}

/// Upload a version, set a tag: any role in the namespace.
#[derive(Debug)]
pub enum Push {}

/// Delete a version: `admin` or `owner` of the namespace.
#[derive(Debug)]
pub enum Delete {}

impl PackageAction for Push {
    const ACTION: Action = Action::Push;
    const ROLE: Role = Role::Member;
}

impl PackageAction for Delete {
    const ACTION: Action = Action::Delete;
    const ROLE: Role = Role::Admin;
}

/// Proof that the grantee may perform `A` on `package`, whose namespace exists.
///
/// Only the checks in this module make one; elsewhere, the struct cannot be written:
///
/// ```compile_fail,E0451
/// # use niso_registry::permissions::{PackagePermit, Delete};
/// fn forge(namespace: entity::namespace::Model, package: niso_registry::names::PackageName)
///     -> PackagePermit<Delete> {
///     PackagePermit { namespace, package, grantee: todo!(), action: Default::default() }
/// }
/// ```
///
/// and a permit for one action does not open another's operation:
///
/// ```compile_fail,E0308
/// # use niso_registry::{Registry, permissions::{PackagePermit, Push}};
/// # use niso_registry::names::{Arch, Version};
/// async fn delete(registry: &Registry, permit: &PackagePermit<Push>, version: &Version, arch: &Arch) {
///     registry.delete_version(permit, version, arch).await.unwrap();
/// }
/// ```
#[derive(Debug)]
pub struct PackagePermit<A: PackageAction> {
    namespace: namespace::Model,
    package: PackageName,
    grantee: Grantee,
    action: PhantomData<fn() -> A>,
}

impl<A: PackageAction> PackagePermit<A> {
    /// The package's namespace, as the check found it.
    pub fn namespace(&self) -> &namespace::Model {
        &self.namespace
    }

    pub fn package(&self) -> &PackageName {
        &self.package
    }

    pub fn grantee(&self) -> &Grantee {
        &self.grantee
    }
}

/// Proof of acting as one user on that user's own account: the profile, namespaces it will
/// own.
#[derive(Debug)]
pub struct UserPermit {
    user_id: i64,
    username: String,
    grantee: Grantee,
}

impl UserPermit {
    pub fn user_id(&self) -> i64 {
        self.user_id
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn grantee(&self) -> &Grantee {
        &self.grantee
    }
}

/// Proof that the grantee may manage the members of `namespace` through the API: an org
/// namespace not managed by a RegistryNamespace resource.
#[derive(Debug)]
pub struct NamespacePermit {
    namespace: namespace::Model,
    grantee: Grantee,
}

impl NamespacePermit {
    pub fn namespace(&self) -> &namespace::Model {
        &self.namespace
    }

    pub fn grantee(&self) -> &Grantee {
        &self.grantee
    }
}

/// Proof that the grantee may upload single chunks: `admin` on every package.
#[derive(Debug)]
pub struct ChunkUploadPermit {
    grantee: Grantee,
}

impl ChunkUploadPermit {
    pub fn grantee(&self) -> &Grantee {
        &self.grantee
    }
}

/// Proof that a key with `scope`, linked to `user_id` (or to no user), may be issued.
#[derive(Debug)]
pub struct KeyPermit {
    user_id: Option<i64>,
    scope: ScopeSet,
    grantee: Grantee,
}

impl KeyPermit {
    pub fn user_id(&self) -> Option<i64> {
        self.user_id
    }

    pub fn scope(&self) -> &ScopeSet {
        &self.scope
    }

    pub fn grantee(&self) -> &Grantee {
        &self.grantee
    }
}

/// The keys a principal may list and revoke: its own (DESIGN.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnKeys {
    /// A user-linked key: every key of its user.
    OfUser(i64),
    /// An unlinked key whose scope grants `admin` on every pattern (`admin:*`): every key not
    /// linked to a user.
    EveryUnlinkedKey,
    /// Any other unlinked key, including one that is `admin` of some namespaces only: itself.
    OnlyItself(i64),
}

impl OwnKeys {
    pub fn of(principal: &Principal) -> OwnKeys {
        match &principal.user {
            Some(user) => OwnKeys::OfUser(user.id),
            None if principal.scope.allows_everywhere(Action::Admin) => OwnKeys::EveryUnlinkedKey,
            None => OwnKeys::OnlyItself(principal.key_id),
        }
    }

    pub fn includes(self, key: &api_key::Model) -> bool {
        match self {
            OwnKeys::OfUser(user_id) => key.user_id == Some(user_id),
            OwnKeys::EveryUnlinkedKey => key.user_id.is_none(),
            OwnKeys::OnlyItself(key_id) => key.id == key_id,
        }
    }

    /// The same rule as a query condition.
    pub(super) fn condition(self) -> sea_orm::Condition {
        let condition = sea_orm::Condition::all();
        match self {
            OwnKeys::OfUser(user_id) => condition.add(api_key::Column::UserId.eq(user_id)),
            OwnKeys::EveryUnlinkedKey => condition.add(api_key::Column::UserId.is_null()),
            OwnKeys::OnlyItself(key_id) => condition.add(api_key::Column::Id.eq(key_id)),
        }
    }
}

impl Registry {
    pub(crate) async fn role_in(&self, namespace_id: i64, user_id: i64) -> Result<Option<Role>> {
        let member = namespace_member::Entity::find_by_id((namespace_id, user_id))
            .one(&self.db)
            .await?;
        Ok(member.and_then(|m| Role::parse(&m.role)))
    }

    /// Checks that `principal` may perform `A` on `package`. 404 when the namespace does not
    /// exist, 403 when the scope or the membership does not allow it.
    pub async fn authorize_package<A: PackageAction>(
        &self,
        principal: &Principal,
        package: &PackageName,
    ) -> Result<PackagePermit<A>> {
        let action = A::ACTION;
        if !principal.scope.allows(action, package.as_str()) {
            return Err(Error::Forbidden(format!(
                "this API key's scope does not allow {action} on {package}"
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
            if role < A::ROLE {
                return Err(Error::Forbidden(format!(
                    "{} needs the admin or owner role in {} to {action}",
                    user.username, namespace.name
                )));
            }
        }
        Ok(PackagePermit {
            namespace,
            package: package.clone(),
            grantee: Grantee::of(principal),
            action: PhantomData,
        })
    }

    /// `user-key` endpoints: the principal's own user; 403 for keys not linked to a user.
    pub fn authorize_user(&self, principal: &Principal) -> Result<UserPermit> {
        let user = principal.user.as_ref().ok_or_else(|| {
            Error::Forbidden("this endpoint needs an API key linked to a user".into())
        })?;
        Ok(UserPermit {
            user_id: user.id,
            username: user.username.clone(),
            grantee: Grantee::of(principal),
        })
    }

    /// Acts as `username` with the registry operator's authority (404 when there is no such
    /// user): the Kubernetes operator creating a namespace its resource says that user owns.
    pub async fn user_permit_by_authority(
        &self,
        authority: &SystemAuthority,
        username: &str,
    ) -> Result<UserPermit> {
        let user = self
            .find_user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username}")))?;
        Ok(UserPermit {
            user_id: user.id,
            username: user.username,
            grantee: authority.grantee(),
        })
    }

    /// Checks that the caller may manage `name`'s members: a user-linked key of an owner or
    /// admin whose scope grants push and delete on `@ns/*`. 400 for a user namespace, 409 for
    /// one managed by a RegistryNamespace resource (its members are changed there).
    pub async fn authorize_member_management(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<NamespacePermit> {
        let user = self.authorize_user(principal)?;
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
        match self.role_in(namespace.id, user.user_id).await? {
            Some(Role::Owner | Role::Admin) => {}
            _ => {
                return Err(Error::Forbidden(format!(
                    "only an owner or admin of {name} may manage its members"
                )));
            }
        }
        if namespace.ns_type == "user" {
            return Err(Error::Invalid(format!(
                "{name} is a user namespace; it has no members besides its user"
            )));
        }
        if namespace.managed {
            return Err(Error::Conflict(format!(
                "{name} is managed by a RegistryNamespace resource; change its members there"
            )));
        }
        Ok(NamespacePermit {
            namespace,
            grantee: user.grantee,
        })
    }

    /// Chunk upload needs `admin` on every package (`admin:*`).
    pub fn authorize_chunk_upload(&self, principal: &Principal) -> Result<ChunkUploadPermit> {
        if !principal.scope.allows_everywhere(Action::Admin) {
            return Err(Error::Forbidden(
                "uploading chunks needs a key with the admin:* scope".into(),
            ));
        }
        Ok(ChunkUploadPermit {
            grantee: Grantee::of(principal),
        })
    }

    /// `POST /v1/auth/keys`: a user-linked caller mints keys linked to the same user; an
    /// unlinked caller holding `admin` mints unlinked keys. The new scope must be covered by
    /// the caller's, and a user-linked key never mints `admin`.
    pub fn authorize_new_key(
        &self,
        principal: &Principal,
        requested: ScopeSet,
    ) -> Result<KeyPermit> {
        if principal.user.is_some() && requested.has_admin() {
            return Err(Error::Forbidden(
                "a key linked to a user cannot create keys with the admin action".into(),
            ));
        }
        if principal.user.is_none() && !principal.scope.has_admin() {
            return Err(Error::Forbidden(
                "only an admin key may create keys not linked to a user".into(),
            ));
        }
        if !principal.scope.covers(&requested) {
            return Err(Error::Forbidden(format!(
                "the requested scope {requested} is wider than this key's scope {}",
                principal.scope
            )));
        }
        Ok(KeyPermit {
            user_id: principal.user.as_ref().map(|user| user.id),
            scope: requested,
            grantee: Grantee::of(principal),
        })
    }

    /// A key with any scope, linked to `username` if given (404 when there is no such user):
    /// the registry operator is the root of trust.
    pub async fn key_permit_by_authority(
        &self,
        authority: &SystemAuthority,
        username: Option<&str>,
        scope: ScopeSet,
    ) -> Result<KeyPermit> {
        let user_id = match username {
            Some(username) => Some(
                self.user_permit_by_authority(authority, username)
                    .await?
                    .user_id,
            ),
            None => None,
        };
        Ok(KeyPermit {
            user_id,
            scope,
            grantee: authority.grantee(),
        })
    }
}
