//! Passwords: the rule a new password must meet, and hashing and verification with argon2id
//! (DESIGN.md §5), including the dummy verification that makes a login for an unknown user
//! cost as much as a wrong password.
//!
//! Every function here burns tens of milliseconds of CPU and 19 MiB of memory by design.
//! Async callers run them through `PasswordHashing`, which bounds how many run at once (48
//! concurrent registrations used to hold 700 MiB of argon2 memory) and runs each on a
//! blocking thread.

use std::hint::black_box;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::names::NameError;

use argon2::{Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier};

/// Upper bounds on the cost parameters a stored hash may ask for. Hashes are our own, but a
/// corrupted or tampered row must not be able to make one login allocate gigabytes (an
/// allocation failure aborts the process, which no `catch_unwind` can stop). The defaults
/// (19 MiB, 2 passes, 1 lane) are far below these.
const MAX_M_COST_KIB: u32 = 256 * 1024;
const MAX_T_COST: u32 = 32;
const MAX_P_COST: u32 = 16;

/// Hashes `password` with argon2id, the crate's default parameters and a fresh 16-byte salt
/// from the operating system's RNG, and returns the PHC string (`$argon2id$v=19$…`).
///
/// # Panics
/// If the operating system's random number generator fails; without a salt there is no safe
/// hash to store.
pub fn hash_password(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 hashing with default parameters fails only if the OS RNG does")
        .to_string()
}

/// Whether `password` matches the PHC string `phc`. A malformed or unsupported hash, or one
/// whose cost parameters are out of bounds, is simply a mismatch: this never panics.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return false;
    }
    // The algorithm, version and parameters come from the hash itself, not from this instance.
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A hash of a password nobody knows, made with the same parameters as real hashes. Computed
/// once per process: computing it per call would make unknown-user logins twice as slow.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password("niso: no such user, this password is never accepted"));

/// Does the work of one real verification against a dummy hash and discards the result, so
/// that "no such user" and "wrong password" take the same time and cannot be told apart.
pub fn verify_unknown_user(password: &str) {
    // black_box keeps the optimiser from reasoning that the result is unused.
    black_box(verify_password(black_box(password), &DUMMY_HASH));
}

/// Computes the dummy hash now. Calling this at start-up keeps the very first unknown-user
/// login from costing a hash *and* a verification.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

/// The server's password-hashing slots: at most `concurrency` argon2 computations at once, each
/// on a blocking thread. A caller that cannot get a slot within `wait` is told to come back
/// (503 with Retry-After) rather than queueing without bound.
pub struct PasswordHashing {
    slots: Arc<Semaphore>,
    wait: Duration,
}

impl PasswordHashing {
    pub fn new(concurrency: usize, wait: Duration) -> PasswordHashing {
        PasswordHashing {
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            wait,
        }
    }

    /// Runs `work` (a hash or a verification) on a blocking thread while holding a slot.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let permit = match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; treat it like a full one all the same.
            Ok(Err(_)) | Err(_) => {
                return Err(Error::Overloaded {
                    message: "too many password checks in progress; retry shortly".into(),
                    retry_after_secs: 2,
                });
            }
        };
        // The permit moves into the blocking task: if the caller goes away, the computation
        // still holds its slot (and its memory) until it ends.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|error| Error::internal(format!("password hashing failed: {error}")))
    }

    /// Slots free right now (for tests and diagnostics).
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A password: at least 8 characters (Unicode scalar values, not bytes) and at most 1024 bytes,
/// the upper bound keeping an attacker from making us hash megabytes.
pub fn validate_password(s: &str) -> Result<(), NameError> {
    // The byte bound is checked first so counting characters is always cheap.
    if s.len() > MAX_PASSWORD_BYTES {
        return Err(NameError::Invalid(format!(
            "invalid password: it must be at most {MAX_PASSWORD_BYTES} bytes long"
        )));
    }
    if s.chars().count() < MIN_PASSWORD_CHARS {
        return Err(NameError::Invalid(format!(
            "invalid password: it must be at least {MIN_PASSWORD_CHARS} characters long"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `$argon2id$v=19$m=…,t=…,p=…` head of a PHC string, i.e. everything but salt and hash.
    fn params_part(phc: &str) -> String {
        phc.split('$').take(4).collect::<Vec<_>>().join("$")
    }

    #[test]
    fn hashes_with_argon2id_and_verifies() {
        let a = hash_password("correct horse battery staple");
        let b = hash_password("correct horse battery staple");
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert!(verify_password("correct horse battery staple", &a));
        assert!(!verify_password("correct horse battery stapler", &a));
        assert!(!verify_password("", &a));
        // Same password, different salts, different hashes.
        let salt = |phc: &str| phc.split('$').nth(4).map(str::to_owned);
        assert_ne!(a, b);
        assert_ne!(salt(&a), salt(&b));
        assert!(salt(&a).is_some());
        assert!(verify_password("correct horse battery staple", &b));
    }

    #[test]
    fn malformed_hashes_are_mismatches() {
        for phc in [
            "",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$!!!",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            "$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$aGFzaA",
        ] {
            assert!(!verify_password("password1", phc), "{phc:?}");
        }
    }

    #[test]
    fn absurd_cost_parameters_are_refused_without_doing_the_work() {
        let real = hash_password("password1");
        // Four GiB of memory would abort the test process if it were attempted.
        let huge = real.replacen("m=19456", "m=4194304", 1);
        assert_ne!(huge, real);
        assert!(!verify_password("password1", &huge));
        let slow = real.replacen("t=2", "t=1000", 1);
        assert!(!verify_password("password1", &slow));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_slots_bound_concurrency_and_refuse_when_saturated() {
        let hashing = Arc::new(PasswordHashing::new(2, Duration::from_millis(200)));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let (hashing, running, peak, released) = (
                hashing.clone(),
                running.clone(),
                peak.clone(),
                released.clone(),
            );
            tasks.push(tokio::spawn(async move {
                hashing
                    .run(move || {
                        let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                        // Held until the test lets go.
                        let _ = released.lock().unwrap().recv();
                        running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    })
                    .await
            }));
        }
        while hashing.available() > 0 {
            tokio::task::yield_now().await;
        }
        // Both slots are held: a third caller waits its bounded time and is told to retry.
        let refused = hashing.run(|| ()).await.unwrap_err();
        assert!(
            matches!(refused, Error::Overloaded { retry_after_secs, .. } if retry_after_secs >= 1),
            "{refused:?}"
        );
        release.send(()).unwrap();
        release.send(()).unwrap();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(hashing.available(), 2);
        // Free again: work runs.
        assert_eq!(hashing.run(|| 7).await.unwrap(), 7);
    }

    #[test]
    fn unknown_user_check_does_a_real_verification() {
        warm_up();
        // Same algorithm and cost parameters as a real hash means the same amount of work.
        assert_eq!(params_part(&DUMMY_HASH), params_part(&hash_password("x")));
        assert!(verify_password(
            "niso: no such user, this password is never accepted",
            &DUMMY_HASH
        ));
        verify_unknown_user("anything at all");
    }

    #[test]
    fn passwords() {
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("").is_err());
        // Eight characters but sixteen bytes: characters count.
        assert!(validate_password("éééééééé").is_ok());
        assert!(validate_password("ééééééé").is_err());
        assert!(validate_password(&"a".repeat(1024)).is_ok());
        assert!(validate_password(&"a".repeat(1025)).is_err());
        // 513 two-byte characters exceed the byte bound.
        assert!(validate_password(&"é".repeat(513)).is_err());
        let m = password_message(validate_password("hunter2"));
        assert!(!m.contains("hunter2"), "{m}");
    }

    fn password_message(r: Result<(), NameError>) -> String {
        match r {
            Err(NameError::Invalid(m)) => m,
            Ok(()) => panic!("expected an error"),
        }
    }
}
