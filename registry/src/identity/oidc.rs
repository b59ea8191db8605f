//! Offline verification of an identity token: the issuer's discovery document names its JWKS,
//! whose keys are cached per issuer and fetched again when a token names a key we do not have —
//! at most once per `jwks_refresh_interval`, so tokens with made-up `kid`s cost the issuer
//! nothing. The algorithm is the key's, never only the token's: `none` and HMAC are refused
//! before any key is looked at, and a token whose `alg` differs from its key's is refused.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::token::{UnverifiedToken, identity_from_claims};
use super::{Identity, IdentitySettings, refused};
use crate::error::{Error, Result};

/// The signature algorithms accepted: asymmetric only.
pub const ACCEPTED_ALGORITHMS: [&str; 8] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
];

/// Discovery documents and JWKS larger than this are refused (a real JWKS is a few KiB).
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

type KeySet = HashMap<String, Jwk>;

struct IssuerKeys {
    /// The last keys fetched; replaced whole on each fetch.
    keys: Mutex<Arc<KeySet>>,
    /// Held while fetching, so concurrent tokens with an unknown `kid` wait for one fetch;
    /// holds when the last fetch started.
    fetch: tokio::sync::Mutex<Option<Instant>>,
}

pub struct OidcVerifier {
    http: reqwest::Client,
    issuers: HashMap<String, IssuerKeys>,
    audience: String,
    clock_skew: Duration,
    refresh_interval: Duration,
}

impl OidcVerifier {
    pub fn new(settings: &IdentitySettings) -> OidcVerifier {
        let http = reqwest::Client::builder()
            .timeout(settings.fetch_timeout)
            // The issuer's documents are fetched from where the configuration says, not from
            // wherever a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client for identity issuers");
        let issuers = settings
            .issuers
            .iter()
            .map(|issuer| {
                (
                    issuer.clone(),
                    IssuerKeys {
                        keys: Mutex::new(Arc::new(KeySet::new())),
                        fetch: tokio::sync::Mutex::new(None),
                    },
                )
            })
            .collect();
        OidcVerifier {
            http,
            issuers,
            audience: settings.audience.clone(),
            clock_skew: settings.clock_skew,
            refresh_interval: settings.jwks_refresh_interval,
        }
    }

    pub async fn verify(&self, token: &UnverifiedToken<'_>) -> Result<Identity> {
        let algorithm = accepted_algorithm(&token.algorithm)?;
        let key_id = token
            .key_id
            .as_deref()
            .ok_or_else(|| refused("the identity token names no signing key (kid)"))?;
        let jwk = self.key(&token.issuer, key_id).await?;
        let key = decoding_key(&jwk, algorithm)?;

        let mut validation = Validation::new(algorithm);
        validation.leeway = self.clock_skew.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&token.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let verified = jsonwebtoken::decode::<Map<String, Value>>(token.text, &key, &validation)
            .map_err(|error| self.refusal(error.into_kind()))?;
        check_issued_at(&verified.claims, self.clock_skew)?;
        identity_from_claims(token.issuer.clone(), &verified.claims)
    }

    fn refusal(&self, kind: ErrorKind) -> Error {
        match kind {
            ErrorKind::InvalidSignature => refused("the identity token's signature is not valid"),
            ErrorKind::ExpiredSignature => refused("the identity token has expired"),
            ErrorKind::ImmatureSignature => refused("the identity token is not yet valid (nbf)"),
            ErrorKind::InvalidAudience => refused(format!(
                "the identity token has the wrong audience: expected {}",
                self.audience
            )),
            ErrorKind::InvalidIssuer => {
                refused("the identity token's issuer is not trusted by this registry")
            }
            ErrorKind::MissingRequiredClaim(claim) => {
                refused(format!("the identity token has no {claim} claim"))
            }
            ErrorKind::InvalidAlgorithm => {
                refused("the identity token's signing algorithm does not match its issuer's key")
            }
            _ => refused("the identity token is not a well-formed JWT"),
        }
    }

    /// The issuer's key `key_id`, fetching the issuer's keys when it is not cached and the
    /// last fetch is old enough.
    async fn key(&self, issuer: &str, key_id: &str) -> Result<Jwk> {
        let state = self.issuers.get(issuer).ok_or_else(|| {
            refused("the identity token's issuer is not trusted by this registry")
        })?;
        if let Some(jwk) = cached(state, key_id) {
            return Ok(jwk);
        }
        let mut last_fetch = state.fetch.lock().await;
        // Another request may have fetched while this one waited for the lock.
        if let Some(jwk) = cached(state, key_id) {
            return Ok(jwk);
        }
        if last_fetch.is_some_and(|at| at.elapsed() < self.refresh_interval) {
            return Err(unknown_key());
        }
        *last_fetch = Some(Instant::now());
        let keys = self.fetch_keys(issuer).await.map_err(|reason| {
            tracing::warn!(issuer, %reason, "cannot fetch the identity issuer's keys");
            Error::Unavailable(format!(
                "the identity token's issuer could not be reached to verify it: {reason}"
            ))
        })?;
        *state.keys.lock().expect("issuer keys lock") = Arc::new(keys);
        cached(state, key_id).ok_or_else(unknown_key)
    }

    async fn fetch_keys(&self, issuer: &str) -> std::result::Result<KeySet, String> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        #[derive(Deserialize)]
        struct KeyDocument {
            keys: Vec<Value>,
        }
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.fetch_json(&discovery_url).await?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
        if discovery.issuer != issuer {
            return Err("its discovery document names another issuer".to_owned());
        }
        let document: KeyDocument = self.fetch_json(&discovery.jwks_uri).await?;
        // Keys of kinds we do not know are skipped, not fatal: the set may hold them beside the
        // ones our tokens are signed with.
        Ok(document
            .keys
            .into_iter()
            .filter_map(|key| serde_json::from_value::<Jwk>(key).ok())
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, jwk)))
            .collect())
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> std::result::Result<T, String> {
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|error| format!("GET {url}: {error}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| format!("GET {url}: {error}"))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|error| format!("GET {url}: {error}"))
    }
}

fn cached(state: &IssuerKeys, key_id: &str) -> Option<Jwk> {
    let keys = state.keys.lock().expect("issuer keys lock").clone();
    keys.get(key_id).cloned()
}

fn unknown_key() -> Error {
    refused("the identity token is signed with a key its issuer does not publish (unknown kid)")
}

fn accepted_algorithm(name: &str) -> Result<Algorithm> {
    if !ACCEPTED_ALGORITHMS.contains(&name) {
        return Err(refused(format!(
            "the identity token's signing algorithm is not accepted: expected one of {}",
            ACCEPTED_ALGORITHMS.join(", ")
        )));
    }
    Algorithm::from_str(name).map_err(|_| refused("the identity token is not a well-formed JWT"))
}

/// The key for `algorithm`, refusing a key that says it is for another algorithm, is not for
/// signatures, or is of another kind (an RSA key for ES256, an HMAC secret for anything).
fn decoding_key(jwk: &Jwk, algorithm: Algorithm) -> Result<DecodingKey> {
    let mismatch =
        || refused("the identity token's signing algorithm does not match its issuer's key");
    if let Some(key_algorithm) = &jwk.common.key_algorithm
        && key_algorithm.to_string() != format!("{algorithm:?}")
    {
        return Err(mismatch());
    }
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|usage| *usage != PublicKeyUse::Signature)
    {
        return Err(mismatch());
    }
    let fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            algorithm,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        AlgorithmParameters::EllipticCurve(parameters) => matches!(
            (algorithm, &parameters.curve),
            (Algorithm::ES256, EllipticCurve::P256) | (Algorithm::ES384, EllipticCurve::P384)
        ),
        _ => false,
    };
    if !fits {
        return Err(mismatch());
    }
    DecodingKey::from_jwk(jwk).map_err(|_| mismatch())
}

/// `iat` in the future (beyond the skew) means a clock is wrong or the token is forged ahead.
fn check_issued_at(claims: &Map<String, Value>, skew: Duration) -> Result<()> {
    let Some(issued_at) = claims.get("iat") else {
        return Ok(());
    };
    let issued_at = issued_at
        .as_i64()
        .ok_or_else(|| refused("the identity token's iat claim is not a number"))?;
    let now = chrono::Utc::now().timestamp();
    if issued_at > now + skew.as_secs() as i64 {
        return Err(refused("the identity token is issued in the future (iat)"));
    }
    Ok(())
}
