//! Authentication primitives: API key material, password hashing, scopes, and the `Principal`
//! a request acts as once its key has been checked.

pub mod api_key;
pub mod password;
pub mod scope;

use scope::ScopeSet;

use crate::error::{Error, Result};

/// Who a request acts as: an API key, possibly linked to a user.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: i64,
    pub user: Option<PrincipalUser>,
    pub scope: ScopeSet,
}

#[derive(Debug, Clone)]
pub struct PrincipalUser {
    pub id: i64,
    pub username: String,
}

impl Principal {
    /// The user of a user-linked key; `user-key` endpoints answer 403 to other keys.
    pub fn require_user(&self) -> Result<&PrincipalUser> {
        self.user.as_ref().ok_or_else(|| {
            Error::Forbidden("this endpoint needs an API key linked to a user".into())
        })
    }
}
