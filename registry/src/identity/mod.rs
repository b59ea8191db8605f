//! Keyless access (issue 14): a workload presents an identity token (a projected Kubernetes
//! ServiceAccount token, a CI job's OIDC token) and gets a short-lived API key whose scope is
//! what the grants give that identity.
//!
//! - `oidc.rs` verifies a token offline against its issuer's discovery document and JWKS;
//! - `token_review.rs` asks a Kubernetes API server instead (for clusters whose issuer cannot
//!   be reached);
//! - `grants.rs` keeps the grants (owned by whoever mirrors them, e.g. the operator) and decides
//!   what an identity may do;
//! - `exchange.rs` mints the key.
//!
//! Every refusal is an `Error::Unauthenticated` (the token is not acceptable) or
//! `Error::Forbidden` (it is, but nothing is granted), whose message names the failed check and
//! never contains the token.

pub mod exchange;
pub mod grants;
pub mod oidc;
pub mod token;
pub mod token_review;

pub use exchange::{MintedFor, MintedKey};
pub use grants::{GrantSpec, IdentityGrant, ReplacedGrants};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveDateTime;

use crate::error::{Error, Result};

/// The longest identity token accepted, in bytes. Kubernetes ServiceAccount tokens are about
/// 1 KiB and CI providers' a few KiB; the bound keeps a hostile body from costing base64 and JSON
/// work (the JSON body limit bounds it too, but is configurable).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The audience identity tokens must carry by default.
pub const DEFAULT_AUDIENCE: &str = "niso";

/// Where a pod finds its own ServiceAccount token, CA bundle and the API server.
pub const IN_CLUSTER_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const IN_CLUSTER_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
pub const IN_CLUSTER_TOKEN_REVIEW_URL: &str =
    "https://kubernetes.default.svc/apis/authentication.k8s.io/v1/tokenreviews";
/// The issuer of a cluster's ServiceAccount tokens unless `--service-account-issuer` says
/// otherwise; the issuer TokenReview-verified identities carry by default.
pub const DEFAULT_KUBERNETES_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Keyless access settings (`NISO_OIDC_*`, see `config.rs`). With no issuer and no
/// TokenReview, the exchange endpoint refuses every token.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Issuers verified offline by discovery + JWKS (`NISO_OIDC_ISSUERS`, comma-separated URLs,
    /// each compared exactly with a token's `iss`).
    pub issuers: Vec<String>,
    /// The audience a token must carry (`NISO_OIDC_AUDIENCE`).
    pub audience: String,
    /// Verification by TokenReview (`NISO_OIDC_TOKEN_REVIEW_URL`).
    pub token_review: Option<TokenReviewSettings>,
    /// Lifetime of a minted key (`NISO_OIDC_KEY_LIFETIME_SECS`); never past the token's `exp`.
    pub key_lifetime: Duration,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (`NISO_OIDC_CLOCK_SKEW_SECS`).
    pub clock_skew: Duration,
    /// Least time between two fetches of an issuer's keys caused by an unknown `kid`
    /// (`NISO_OIDC_JWKS_REFRESH_SECS`): tokens naming made-up keys cannot make us hammer the
    /// issuer.
    pub jwks_refresh_interval: Duration,
    /// Timeout of each request to an issuer or the API server.
    pub fetch_timeout: Duration,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            issuers: Vec::new(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            token_review: None,
            key_lifetime: Duration::from_secs(900),
            clock_skew: Duration::from_secs(60),
            jwks_refresh_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

/// Where and how to post TokenReviews.
#[derive(Debug, Clone)]
pub struct TokenReviewSettings {
    /// `NISO_OIDC_TOKEN_REVIEW_URL` (`in-cluster` for [`IN_CLUSTER_TOKEN_REVIEW_URL`]).
    pub url: String,
    /// The registry's own bearer token, re-read on every review (it is rotated by the kubelet)
    /// (`NISO_OIDC_TOKEN_REVIEW_TOKEN_FILE`, default [`IN_CLUSTER_TOKEN_FILE`]).
    pub bearer_token_file: Option<PathBuf>,
    /// Extra CA bundle for the API server (`NISO_OIDC_TOKEN_REVIEW_CA_FILE`, default
    /// [`IN_CLUSTER_CA_FILE`] when the URL is `in-cluster`).
    pub ca_file: Option<PathBuf>,
    /// The token `iss` that is sent to the API server, and the issuer the verified identity
    /// carries for grants (`NISO_OIDC_TOKEN_REVIEW_ISSUER`, default
    /// [`DEFAULT_KUBERNETES_ISSUER`]).
    pub issuer: String,
}

/// A verified identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    /// For a Kubernetes ServiceAccount (`sub` = `system:serviceaccount:NS:SA`).
    pub kubernetes: Option<KubernetesAccount>,
    /// The token's top-level claims whose values are strings, for claim-matching grants.
    pub claims: BTreeMap<String, String>,
    /// The token's `exp`: a minted key never outlives it.
    pub expires_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesAccount {
    pub namespace: String,
    pub service_account: String,
}

impl KubernetesAccount {
    /// `system:serviceaccount:NS:SA`, the subject (or TokenReview username) of a ServiceAccount.
    pub fn from_subject(subject: &str) -> Option<KubernetesAccount> {
        let rest = subject.strip_prefix("system:serviceaccount:")?;
        let (namespace, service_account) = rest.split_once(':')?;
        if namespace.is_empty() || service_account.is_empty() || service_account.contains(':') {
            return None;
        }
        Some(KubernetesAccount {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }
}

/// A refusal of the token itself (HTTP 401).
pub(crate) fn refused(message: impl Into<String>) -> Error {
    Error::Unauthenticated(message.into())
}

/// The verifiers the settings call for; lives as long as the registry (it holds the key cache).
pub struct IdentityVerifier {
    settings: IdentitySettings,
    oidc: oidc::OidcVerifier,
    token_review: Option<token_review::TokenReviewer>,
}

impl IdentityVerifier {
    pub fn new(settings: IdentitySettings) -> IdentityVerifier {
        let oidc = oidc::OidcVerifier::new(&settings);
        let token_review = settings
            .token_review
            .clone()
            .map(|review| token_review::TokenReviewer::new(review, &settings));
        IdentityVerifier {
            settings,
            oidc,
            token_review,
        }
    }

    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }

    /// Verifies `token` by the way its (unverified) issuer calls for.
    pub async fn verify(&self, token: &str) -> Result<Identity> {
        let unverified = token::UnverifiedToken::parse(token)?;
        if self.settings.issuers.contains(&unverified.issuer) {
            return self.oidc.verify(&unverified).await;
        }
        if let Some(reviewer) = &self.token_review
            && reviewer.issuer() == unverified.issuer
        {
            return reviewer.verify(&unverified).await;
        }
        Err(refused(
            "the identity token's issuer is not trusted by this registry",
        ))
    }
}
