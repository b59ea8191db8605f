//! Verification by the Kubernetes API server: a `TokenReview` (authentication.k8s.io/v1) for
//! clusters whose ServiceAccount issuer cannot be reached from the registry. The API server checks
//! the signature, expiry, audience and that the pod and ServiceAccount still exist; its answer
//! is what we trust. The registry needs `create` on `tokenreviews` (ClusterRole
//! `system:auth-delegator` grants exactly that).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::token::{UnverifiedToken, identity_from_claims};
use super::{Identity, IdentitySettings, KubernetesAccount, TokenReviewSettings, refused};
use crate::error::{Error, Result};

pub struct TokenReviewer {
    settings: TokenReviewSettings,
    audience: String,
    timeout: Duration,
    /// Built on first use: the CA bundle may be mounted after start-up, and a missing one
    /// must fail the exchange loudly, not the registry's start.
    http: tokio::sync::OnceCell<reqwest::Client>,
}

#[derive(Deserialize)]
struct Review {
    status: Option<ReviewStatus>,
}

#[derive(Deserialize)]
struct ReviewStatus {
    #[serde(default)]
    authenticated: bool,
    user: Option<ReviewUser>,
    #[serde(default)]
    audiences: Vec<String>,
}

#[derive(Deserialize)]
struct ReviewUser {
    username: String,
}

impl TokenReviewer {
    pub fn new(settings: TokenReviewSettings, identity: &IdentitySettings) -> TokenReviewer {
        TokenReviewer {
            settings,
            audience: identity.audience.clone(),
            timeout: identity.fetch_timeout,
            http: tokio::sync::OnceCell::new(),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    async fn client(&self) -> Result<&reqwest::Client> {
        self.http
            .get_or_try_init(|| async {
                let mut builder = reqwest::Client::builder()
                    .timeout(self.timeout)
                    .redirect(reqwest::redirect::Policy::none());
                if let Some(ca_file) = &self.settings.ca_file {
                    let pem = tokio::fs::read(ca_file).await.map_err(|error| {
                        Error::internal(format!(
                            "cannot read the TokenReview CA bundle {}: {error}",
                            ca_file.display()
                        ))
                    })?;
                    for certificate in reqwest::Certificate::from_pem_bundle(&pem)
                        .map_err(|error| Error::internal(format!("TokenReview CA: {error}")))?
                    {
                        builder = builder.add_root_certificate(certificate);
                    }
                }
                builder
                    .build()
                    .map_err(|error| Error::internal(format!("TokenReview client: {error}")))
            })
            .await
    }

    pub async fn verify(&self, token: &UnverifiedToken<'_>) -> Result<Identity> {
        let client = self.client().await?;
        let mut request = client.post(&self.settings.url).json(&json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": { "token": token.text, "audiences": [self.audience] },
        }));
        if let Some(file) = &self.settings.bearer_token_file {
            // Re-read each time: the kubelet rotates the projected token.
            let bearer = tokio::fs::read_to_string(file).await.map_err(|error| {
                Error::internal(format!(
                    "cannot read the TokenReview bearer token {}: {error}",
                    file.display()
                ))
            })?;
            request = request.bearer_auth(bearer.trim());
        }
        let unavailable = |reason: String| {
            tracing::warn!(%reason, "TokenReview failed");
            Error::Unavailable("the Kubernetes API server could not review the token".to_owned())
        };
        let response = request
            .send()
            .await
            .map_err(|error| unavailable(error.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("status {}", response.status())));
        }
        let review: Review = response
            .json()
            .await
            .map_err(|error| unavailable(error.to_string()))?;
        let status = review
            .status
            .ok_or_else(|| unavailable("no status in the TokenReview".to_owned()))?;
        if !status.authenticated {
            // The API server's reason (status.error) may quote the token: it is not passed on.
            return Err(refused(
                "the Kubernetes API server did not authenticate the identity token \
                 (invalid, expired, wrong audience, or its pod is gone)",
            ));
        }
        if !status.audiences.contains(&self.audience) {
            return Err(refused(format!(
                "the identity token has the wrong audience: expected {}",
                self.audience
            )));
        }
        let username = status
            .user
            .map(|user| user.username)
            .ok_or_else(|| unavailable("no user in the TokenReview".to_owned()))?;
        let account = KubernetesAccount::from_subject(&username).ok_or_else(|| {
            refused("the identity token is not a Kubernetes ServiceAccount's token")
        })?;
        // The API server vouched for the token, so its claims are the signed ones; the subject
        // is the one it reviewed.
        let mut identity = identity_from_claims(self.settings.issuer.clone(), &token.claims)?;
        identity.subject = username;
        identity.kubernetes = Some(account);
        if identity.expires_at <= crate::now() {
            return Err(refused("the identity token has expired"));
        }
        Ok(identity)
    }
}
