//! Password hashing: Argon2id with (at least) OWASP's parameters, PHC strings, run off the async runtime
//! with a bound on how many hashes run at once.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

use crate::error::Error;

/// Memory cost in KiB (OWASP: 19 MiB).
pub const M_COST_KIB: u32 = 19_456;
/// Iterations.
pub const T_COST: u32 = 2;
/// Parallelism.
pub const P_COST: u32 = 1;

fn argon2() -> Result<Argon2<'static>, Error> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|e| Error::Password(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The PHC string of `password` with a fresh random salt, e.g. `$argon2id$v=19$m=19456,t=2,p=1$...`.
/// CPU- and memory-heavy: call it from a blocking thread ([`Hasher`] does).
pub fn hash(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Password(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (whose own parameters are used). A malformed hash is an
/// error, not a mismatch.
pub fn verify(password: &str, phc: &str) -> Result<bool, Error> {
    let parsed = PasswordHash::new(phc).map_err(|e| Error::Password(format!("stored hash: {e}")))?;
    match argon2()?.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(Error::Password(e.to_string())),
    }
}

/// Runs hashing and verification on blocking threads, at most a few at a time (each needs 19 MiB and a core
/// for tens of milliseconds, so unbounded concurrency would let a burst of logins exhaust the machine).
/// Also holds a dummy hash so that a login for an unknown email costs as much as one with a wrong password.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    dummy: Arc<str>,
}

impl Hasher {
    /// A hasher allowing as many concurrent hashes as the machine has cores.
    pub async fn new() -> Result<Self, Error> {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
        let dummy = tokio::task::spawn_blocking(|| hash("not the password of anyone")).await??;
        Ok(Self { permits: Arc::new(Semaphore::new(cores)), dummy: dummy.into() })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        // The semaphore is never closed, so acquiring only fails if it were; treat that as a task error.
        let _permit = self.permits.acquire().await.map_err(|e| Error::Password(e.to_string()))?;
        tokio::task::spawn_blocking(work).await?
    }

    /// Hashes `password` (see [`hash`]).
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        self.blocking(move || hash(&password)).await
    }

    /// Verifies `password` against `phc`, or against the dummy hash when there is no account (always false
    /// then, in the same time).
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, Error> {
        let exists = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.to_string());
        let matches = self.blocking(move || verify(&password, &phc)).await?;
        Ok(exists && matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters() {
        let phc = hash("correct horse battery staple").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse battery staple", &phc).expect("verify"));
        assert!(!verify("wrong", &phc).expect("verify"));
        assert_ne!(phc, hash("correct horse battery staple").expect("hash"), "salts must differ");
        assert!(verify("x", "not a phc string").is_err());
    }

    #[tokio::test]
    async fn unknown_accounts_never_match() {
        let hasher = Hasher::new().await.expect("hasher");
        assert!(!hasher.verify("not the password of anyone".into(), None).await.expect("verify"));
        let phc = hasher.hash("s3cret-pass".into()).await.expect("hash");
        assert!(hasher.verify("s3cret-pass".into(), Some(phc)).await.expect("verify"));
    }
}
