//! Authentication primitives: API key material, password hashing, scopes, and the `Principal`
//! a request acts as once its key has been checked.
//!
//! A `Principal` says who is asking, not what they may do: that is decided by the permission
//! checks in `registry::permissions`, whose permits the domain's operations require.

pub mod api_key;
pub mod password;
pub mod scope;

use scope::ScopeSet;

/// Who a request acts as: an API key, possibly linked to a user.
///
/// Only `Registry::authenticate` makes one (the private `_authenticated` field keeps the struct
/// literal out of reach elsewhere), so a principal always stands for a live key:
///
/// ```compile_fail,E0451
/// let forged = niso_registry::auth::Principal {
///     key_id: 1,
///     user: None,
///     scope: "admin:*".parse().unwrap(),
///     _authenticated: todo!(),
/// };
/// ```
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: i64,
    pub user: Option<PrincipalUser>,
    pub scope: ScopeSet,
    _authenticated: Authenticated,
}

#[derive(Debug, Clone, Copy)]
struct Authenticated;

#[derive(Debug, Clone)]
pub struct PrincipalUser {
    pub id: i64,
    pub username: String,
}

impl Principal {
    /// A principal for a key that has just been checked against the database.
    pub(crate) fn authenticated(
        key_id: i64,
        user: Option<PrincipalUser>,
        scope: ScopeSet,
    ) -> Principal {
        Principal {
            key_id,
            user,
            scope,
            _authenticated: Authenticated,
        }
    }
}
