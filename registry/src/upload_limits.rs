//! Limits on concurrent uploads (archives and chunks): server-wide, so a flood of uploads
//! cannot exhaust the server (503 with `Retry-After`), and per principal, so one client cannot
//! take all of the server-wide slots (429 with `Retry-After`).
//!
//! A slot is taken before the body is read and given back when the [`UploadSlot`] is dropped,
//! which happens however the request ends: success, error, or the handler's future dropped
//! because the client went away.
//!
//! The principal is the user for a key linked to one — a user can mint keys, so counting per
//! key would let one account multiply its share — and the key itself for an unlinked key
//! (those are made by an administrator, not by clients).
//!
//! The counts are per replica, in memory: N replicas admit N times the configured uploads in
//! total. That is what the limit protects (each replica's memory, connections and threads); a
//! shared count would need a database round trip per upload, and a crashed replica would leak
//! its slots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Registry;
use crate::auth::Principal;
use crate::error::{Error, Result};

/// Suggested wait before retrying a refused upload: long enough for a small upload to finish,
/// short enough that a CI job does not stall for long.
const RETRY_AFTER_SECS: u64 = 5;

/// Whose uploads are counted together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Uploader {
    User(i64),
    Key(i64),
}

impl Uploader {
    fn of(principal: &Principal) -> Uploader {
        match &principal.user {
            Some(user) => Uploader::User(user.id),
            None => Uploader::Key(principal.key_id),
        }
    }
}

/// The server's upload slots.
pub struct UploadLimits {
    server_wide: Arc<Semaphore>,
    per_principal: usize,
    /// Uploads in progress per uploader; an uploader with none has no entry, so the map holds
    /// at most as many entries as uploads in progress.
    active: Arc<Mutex<HashMap<Uploader, usize>>>,
}

impl UploadLimits {
    pub fn new(server_wide: usize, per_principal: usize) -> UploadLimits {
        UploadLimits {
            server_wide: Arc::new(Semaphore::new(server_wide.clamp(1, Semaphore::MAX_PERMITS))),
            per_principal: per_principal.max(1),
            active: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for one upload by `principal`, or 429 (this principal is at its limit) or 503
    /// (the server is). The principal's own limit is checked first: a client over its share
    /// learns that it is the one to slow down, whatever the server's load.
    pub fn try_acquire(&self, principal: &Principal) -> Result<UploadSlot> {
        let uploader = Uploader::of(principal);
        {
            let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
            let count = active.entry(uploader).or_insert(0);
            if *count >= self.per_principal {
                return Err(Error::LimitReached {
                    message: format!(
                        "too many uploads in progress for this {}: at most {} at once",
                        match uploader {
                            Uploader::User(_) => "user",
                            Uploader::Key(_) => "key",
                        },
                        self.per_principal
                    ),
                    retry_after_secs: RETRY_AFTER_SECS,
                });
            }
            *count += 1;
        }
        // From here on the count is ours: the slot gives it back, including on the 503 below.
        let mut slot = UploadSlot {
            _server_wide: None,
            uploader,
            active: Arc::clone(&self.active),
        };
        match Arc::clone(&self.server_wide).try_acquire_owned() {
            Ok(permit) => {
                slot._server_wide = Some(permit);
                Ok(slot)
            }
            Err(_) => Err(Error::Overloaded {
                message: "the server has too many uploads in progress; retry shortly".into(),
                retry_after_secs: RETRY_AFTER_SECS,
            }),
        }
    }

    /// Uploads in progress on this replica.
    pub fn in_progress(&self) -> usize {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

/// One upload's place within the limits, released on drop.
pub struct UploadSlot {
    _server_wide: Option<OwnedSemaphorePermit>,
    uploader: Uploader,
    active: Arc<Mutex<HashMap<Uploader, usize>>>,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = active.get_mut(&self.uploader) {
            *count -= 1;
            if *count == 0 {
                active.remove(&self.uploader);
            }
        }
    }
}

impl Registry {
    /// Takes an upload slot for `principal` (see the module doc); hold it until the upload ends.
    pub fn upload_slot(&self, principal: &Principal) -> Result<UploadSlot> {
        self.upload_limits.try_acquire(principal)
    }

    pub fn upload_limits(&self) -> &UploadLimits {
        &self.upload_limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PrincipalUser;
    use crate::auth::scope::ScopeSet;

    fn principal(key_id: i64, user: Option<i64>) -> Principal {
        Principal::authenticated(
            key_id,
            user.map(|id| PrincipalUser {
                id,
                username: format!("user{id}"),
            }),
            "admin:*".parse::<ScopeSet>().expect("scope"),
        )
    }

    #[test]
    fn per_principal_then_server_wide_and_released_on_drop() {
        let limits = UploadLimits::new(3, 2);
        let first_key = principal(1, Some(10));
        let second_key = principal(2, Some(10));
        let a = limits.try_acquire(&first_key).expect("first");
        let b = limits.try_acquire(&second_key).expect("second");
        // Two keys of one user share the user's limit.
        let refused = limits
            .try_acquire(&first_key)
            .err()
            .expect("over the user's limit");
        assert!(matches!(refused, Error::LimitReached { .. }), "{refused:?}");
        let unlinked = principal(3, None);
        let c = limits.try_acquire(&unlinked).expect("another principal");
        let refused = limits
            .try_acquire(&principal(4, None))
            .err()
            .expect("over the server's limit");
        assert!(matches!(refused, Error::Overloaded { .. }), "{refused:?}");
        // A refusal by the server-wide limit gives the principal's count back.
        assert_eq!(limits.in_progress(), 3);
        drop(a);
        assert_eq!(limits.in_progress(), 2);
        let d = limits
            .try_acquire(&second_key)
            .expect("a slot is free again");
        drop((b, c, d));
        assert_eq!(limits.in_progress(), 0);
        assert!(
            limits.active.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }
}
