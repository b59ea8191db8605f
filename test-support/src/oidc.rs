//! A throwaway OIDC issuer for keyless-access tests: a discovery document and JWKS served over
//! HTTP on 127.0.0.1, signing keys made once with `openssl genpkey` (fixtures/keyless; they
//! sign nothing but test tokens), and the claims of a projected ServiceAccount token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const RSA_A: &[u8] = include_bytes!("../fixtures/keyless/rsa-a.pem");
pub const RSA_B: &[u8] = include_bytes!("../fixtures/keyless/rsa-b.pem");
pub const EC_P256: &[u8] = include_bytes!("../fixtures/keyless/ec-p256.pem");

/// An in-test OIDC issuer: discovery document and JWKS over HTTP on 127.0.0.1.
pub struct Issuer {
    pub url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    key_fetches: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct IssuerState {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    key_fetches: Arc<AtomicUsize>,
}

impl Issuer {
    pub async fn start() -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = IssuerState {
            url: url.clone(),
            keys: Arc::new(Mutex::new(Vec::new())),
            key_fetches: Arc::new(AtomicUsize::new(0)),
        };
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(state): State<IssuerState>| async move {
                    axum::Json(json!({
                        "issuer": state.url,
                        "jwks_uri": format!("{}/keys", state.url),
                    }))
                }),
            )
            .route(
                "/keys",
                get(|State(state): State<IssuerState>| async move {
                    state.key_fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = state.keys.lock().unwrap().clone();
                    axum::Json(json!({ "keys": keys }))
                }),
            )
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Issuer {
            url,
            keys: state.keys,
            key_fetches: state.key_fetches,
        }
    }

    /// Withdraws every published key (a rotation, or an issuer that lost its keys).
    pub fn unpublish_all(&self) {
        self.keys.lock().unwrap().clear();
    }

    pub fn publish(&self, signer: &Signer) {
        self.keys.lock().unwrap().push(signer.jwk());
    }

    pub fn fetches(&self) -> usize {
        self.key_fetches.load(Ordering::SeqCst)
    }
}

/// A throwaway signing key with its `kid`.
pub struct Signer {
    key: EncodingKey,
    algorithm: Algorithm,
    kid: String,
}

impl Signer {
    pub fn rsa(pem: &[u8], kid: &str) -> Signer {
        Signer {
            key: EncodingKey::from_rsa_pem(pem).unwrap(),
            algorithm: Algorithm::RS256,
            kid: kid.to_owned(),
        }
    }

    pub fn ec(pem: &[u8], kid: &str) -> Signer {
        Signer {
            key: EncodingKey::from_ec_pem(pem).unwrap(),
            algorithm: Algorithm::ES256,
            kid: kid.to_owned(),
        }
    }

    pub fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.algorithm).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        serde_json::to_value(jwk).unwrap()
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a projected ServiceAccount token for `namespace`/`account`.
pub fn service_account_claims(issuer: &str, namespace: &str, account: &str) -> Value {
    json!({
        "iss": issuer,
        "aud": ["niso"],
        "sub": format!("system:serviceaccount:{namespace}:{account}"),
        "iat": now(),
        "nbf": now(),
        "exp": now() + 600,
        "kubernetes.io": { "namespace": namespace, "serviceaccount": { "name": account } },
    })
}
