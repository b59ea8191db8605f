//! Accounts: registration (which creates the user's own namespace and first key), login with
//! argon2id and a shared rate limit, the profile, and what an e-mail address must look like.

use std::net::IpAddr;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};

use entity::{namespace, namespace_member, user};

use super::keys::{CreatedKey, USER_KEY_SCOPE};
use super::permissions::{Role, UserPermit};
use super::{Registry, is_unique_violation, now};
use crate::auth::password::validate_password;
use crate::auth::password::{hash_password, verify_password, verify_unknown_user};
use crate::error::{Error, Result};
use crate::names::{NameError, validate_username};

pub struct NewAccount {
    pub username: String,
    pub email: String,
    pub password: String,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub display_name: Option<String>,
    pub created_at: chrono::NaiveDateTime,
    pub verified: bool,
    pub namespaces: Vec<String>,
}

const BAD_CREDENTIALS: &str = "invalid username or password";

impl Registry {
    /// Creates the user, the `@username` namespace (type `user`, the user as owner) and the
    /// first key, all or nothing. `client` is where the request came from: each address may
    /// register `registration_max_per_address` accounts per window (429 beyond).
    pub async fn register(
        &self,
        account: NewAccount,
        client: Option<IpAddr>,
    ) -> Result<(user::Model, CreatedKey)> {
        validate_username(&account.username)?;
        validate_email(&account.email)?;
        validate_password(&account.password)?;
        let display_name = validate_display_name(account.display_name)?;
        let namespace_name = format!("@{}", account.username);
        if self.find_namespace(&namespace_name).await?.is_some() {
            return Err(name_taken(&account.username));
        }
        // Counted before the (expensive) hash, like login attempts: a burst cannot all pass.
        if let Some(client) = client {
            self.count_registration(client).await?;
        }
        let password = account.password;
        let password_hash = self
            .password_hashing
            .run(move || hash_password(&password))
            .await?;

        let transaction = self.db.begin().await?;
        let created_at = now();
        let inserted = user::ActiveModel {
            username: Set(account.username.clone()),
            email: Set(account.email),
            display_name: Set(display_name),
            password_hash: Set(password_hash),
            verified: Set(false),
            created_at: Set(created_at),
            ..Default::default()
        }
        .insert(&transaction)
        .await;
        let user = match inserted {
            Ok(user) => user,
            Err(error) if is_unique_violation(&error) => return Err(name_taken(&account.username)),
            Err(error) => return Err(error.into()),
        };
        let namespace = namespace::ActiveModel {
            name: Set(namespace_name),
            ns_type: Set("user".into()),
            owner_id: Set(user.id),
            managed: Set(false),
            created_at: Set(created_at),
            ..Default::default()
        }
        .insert(&transaction)
        .await
        .map_err(|error| {
            if is_unique_violation(&error) {
                name_taken(&account.username)
            } else {
                error.into()
            }
        })?;
        namespace_member::ActiveModel {
            namespace_id: Set(namespace.id),
            user_id: Set(user.id),
            role: Set(Role::Owner.as_str().into()),
            created_at: Set(created_at),
        }
        .insert(&transaction)
        .await?;
        let key = self
            .insert_key(
                &transaction,
                Some(user.id),
                "default",
                &USER_KEY_SCOPE.parse()?,
                None,
            )
            .await?;
        transaction.commit().await?;
        Ok((user, key))
    }

    /// Exchanges a username and password for a new user-linked key. Unknown users and wrong
    /// passwords get the same answer after the same amount of work.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<CreatedKey> {
        self.check_login_allowed(username, client).await?;
        // Counted before the password is checked, so a burst of concurrent guesses cannot
        // get past the limit (see rate_limit.rs).
        self.count_login_attempt(username, client).await?;
        // A malformed name has no account; it is not looked up (it may be huge, or hold
        // characters the database refuses), but it costs the same verification.
        let user = if validate_username(username).is_ok() {
            user::Entity::find()
                .filter(user::Column::Username.eq(username))
                .one(&self.db)
                .await?
        } else {
            None
        };
        let password = password.to_owned();
        let verified = match &user {
            Some(user) => {
                let hash = user.password_hash.clone();
                self.password_hashing
                    .run(move || verify_password(&password, &hash))
                    .await?
            }
            None => {
                self.password_hashing
                    .run(move || verify_unknown_user(&password))
                    .await?;
                false
            }
        };
        let Some(user) = user.filter(|_| verified) else {
            // The attempt was counted as it began.
            return Err(Error::Unauthenticated(BAD_CREDENTIALS.into()));
        };
        self.login_succeeded(username, client).await?;
        self.insert_key(
            &self.db,
            Some(user.id),
            "login",
            &USER_KEY_SCOPE.parse()?,
            None,
        )
        .await
    }

    /// The permit's user's profile and namespaces.
    pub async fn profile(&self, permit: &UserPermit) -> Result<Profile> {
        self.profile_of(permit.user_id()).await
    }

    async fn profile_of(&self, user_id: i64) -> Result<Profile> {
        let user = user::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::not_found("user"))?;
        let memberships = namespace_member::Entity::find()
            .filter(namespace_member::Column::UserId.eq(user_id))
            .all(&self.db)
            .await?;
        let namespace_ids: Vec<i64> = memberships.iter().map(|m| m.namespace_id).collect();
        let namespaces = namespace::Entity::find()
            .filter(namespace::Column::Id.is_in(namespace_ids))
            .order_by_asc(namespace::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|namespace| namespace.name)
            .collect();
        Ok(Profile {
            id: user.id,
            username: user.username,
            email: user.email,
            display_name: user.display_name,
            created_at: user.created_at,
            verified: user.verified,
            namespaces,
        })
    }

    pub async fn update_profile(
        &self,
        permit: &UserPermit,
        display_name: Option<String>,
        email: Option<String>,
    ) -> Result<Profile> {
        let user_id = permit.user_id();
        let user = user::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::not_found("user"))?;
        let mut active: user::ActiveModel = user.into();
        if let Some(email) = email {
            validate_email(&email)?;
            active.email = Set(email);
            // A new address has not been verified.
            active.verified = Set(false);
        }
        if let Some(display_name) = display_name {
            active.display_name = Set(validate_display_name(Some(display_name))?);
        }
        active.update(&self.db).await?;
        self.profile_of(user_id).await
    }

    pub async fn find_user_by_name(&self, username: &str) -> Result<Option<user::Model>> {
        Ok(user::Entity::find()
            .filter(user::Column::Username.eq(username))
            .one(&self.db)
            .await?)
    }
}

fn name_taken(username: &str) -> Error {
    Error::Conflict(format!("the name {username} is already taken"))
}

fn validate_display_name(display_name: Option<String>) -> Result<Option<String>> {
    match display_name.map(|name| name.trim().to_owned()) {
        Some(name) if name.chars().count() > 128 || name.chars().any(char::is_control) => Err(
            Error::Invalid("display_name must be at most 128 printable characters".into()),
        ),
        Some(name) if name.is_empty() => Ok(None),
        other => Ok(other),
    }
}

pub const MAX_EMAIL_LEN: usize = 254;

/// A pragmatic e-mail check: at most 254 characters, no whitespace or control characters,
/// exactly one `@`, a non-empty local part and a dotted domain without empty labels.
/// Deliverability is not our business; catching obvious typos is.
pub fn validate_email(s: &str) -> Result<(), NameError> {
    // The address itself is not echoed: it is personal data and error messages may get logged.
    let problem = if s.is_empty() {
        Some("it is empty")
    } else if s.chars().count() > MAX_EMAIL_LEN {
        Some("it is longer than 254 characters")
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or control characters")
    } else {
        match s.split_once('@') {
            None => Some("it has no '@'"),
            Some((_, domain)) if domain.contains('@') => Some("it has more than one '@'"),
            Some(("", _)) => Some("the part before '@' is empty"),
            Some((_, domain)) if !domain.contains('.') || domain.split('.').any(str::is_empty) => {
                Some("the domain must have dot-separated, non-empty parts, e.g. example.com")
            }
            Some(_) => None,
        }
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(NameError::Invalid(format!("invalid email address: {why}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_of(r: Result<(), NameError>) -> String {
        match r {
            Err(NameError::Invalid(m)) => m,
            Ok(()) => panic!("expected an error"),
        }
    }

    #[test]
    fn emails() {
        for ok in [
            "a@b.co",
            "alice+niso@example.com",
            "x.y@sub.example.org",
            "ü@exämple.de",
        ] {
            assert!(validate_email(ok).is_ok(), "{ok}");
        }
        let too_long = format!("{}@example.com", "a".repeat(243));
        assert_eq!(too_long.len(), 255);
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@localhost",
            "a@b@c.com",
            "alice@example.",
            "alice@.example.com",
            "alice@example..com",
            "al ice@example.com",
            "alice@example.com\n",
            &too_long,
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
        assert!(validate_email(&too_long[1..]).is_ok());
        let m = message_of(validate_email("secret-person"));
        assert!(!m.contains("secret-person"), "{m}");
    }
}
