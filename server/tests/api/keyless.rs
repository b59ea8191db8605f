//! `POST /v1/auth/token` (keyless access, issue 14): identity tokens signed with throwaway keys
//! (fixtures/keyless) whose issuer is an in-test discovery + JWKS server, and a scripted
//! Kubernetes TokenReview endpoint for the other mode.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use niso_registry::RegistrySettings;
use niso_registry::auth::scope::Action;
use niso_registry::identity::grants::GrantSpec;
use niso_registry::identity::{DEFAULT_KUBERNETES_ISSUER, IdentitySettings, TokenReviewSettings};
use niso_test_support::for_each_backend;
use niso_test_support::oidc::{EC_P256, Issuer, RSA_A, RSA_B, Signer, now, service_account_claims};
use niso_test_support::{Backend, TestApp, assert_error, test_authority, test_settings};

for_each_backend!(
    exchanged_key_pushes_within_its_grant,
    minted_scope_is_the_intersection,
    claim_grants_match_external_issuers,
    refusals_name_the_failed_check,
    unknown_kid_refetches_the_keys_but_not_on_every_token,
    minted_key_expires_with_the_identity_token,
    replacing_grants_revokes_minted_keys,
    a_grant_removed_during_exchanges_leaves_no_live_key,
    token_review_mode,
);

fn settings_for(issuer: &Issuer) -> RegistrySettings {
    RegistrySettings {
        identity: IdentitySettings {
            issuers: vec![issuer.url.clone()],
            // Tests that need a refetch set their own.
            jwks_refresh_interval: Duration::from_secs(3600),
            ..IdentitySettings::default()
        },
        ..test_settings()
    }
}

fn grant(issuer: &str, namespace: &str, account: Option<&str>, actions: &[Action]) -> GrantSpec {
    GrantSpec {
        issuer: issuer.to_owned(),
        kubernetes_namespace: Some(namespace.to_owned()),
        service_account: account.map(str::to_owned),
        claims: BTreeMap::new(),
        registry_namespace: "@team".to_owned(),
        actions: actions.iter().copied().collect::<BTreeSet<_>>(),
    }
}

async fn give(app: &TestApp, owner: &str, grants: Vec<GrantSpec>) {
    app.registry
        .replace_identity_grants(&test_authority(), owner, grants)
        .await
        .unwrap();
}

/// A registry with the `@team` namespace and the in-test issuer trusted.
async fn start(backend: Backend, settings: RegistrySettings) -> TestApp {
    let app = TestApp::with_settings(backend, settings).await;
    let owner = app.register("owner").await;
    let (status, body) = app
        .post("/v1/namespaces", Some(&owner), json!({ "name": "@team" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app
}

async fn exchange(app: &TestApp, token: &str, scope: Option<&str>) -> (StatusCode, Value) {
    let mut body = json!({ "token": token });
    if let Some(scope) = scope {
        body["scope"] = json!(scope);
    }
    app.post("/v1/auth/token", None, body).await
}

async fn exchange_ok(app: &TestApp, token: &str, scope: Option<&str>) -> Value {
    let (status, body) = exchange(app, token, scope).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn exchanged_key_pushes_within_its_grant(backend: Backend) {
    let issuer = Issuer::start().await;
    let rsa = Signer::rsa(RSA_A, "rsa-a");
    let ec = Signer::ec(EC_P256, "ec-1");
    issuer.publish(&rsa);
    issuer.publish(&ec);
    let app = start(backend, settings_for(&issuer)).await;
    give(
        &app,
        "uid-1",
        vec![grant(
            &issuer.url,
            "ci",
            Some("builder"),
            &[Action::Pull, Action::Push],
        )],
    )
    .await;

    let token = rsa.sign(&service_account_claims(&issuer.url, "ci", "builder"));
    let body = exchange_ok(&app, &token, None).await;
    assert_eq!(body["scope"], "pull:@team/*,push:@team/*");
    niso_test_support::assert_timestamp(&body["expires_at"]);
    let key = body["api_key"].as_str().unwrap();
    app.publish(key, "@team/tool", "1.0.0", "x86_64-linux")
        .await;
    let (status, _) = app
        .upload(key, "@owner/tool", "1.0.0", "x86_64-linux", Vec::new())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // ES256 too, and the same identity may exchange again.
    let token = ec.sign(&service_account_claims(&issuer.url, "ci", "builder"));
    let body = exchange_ok(&app, &token, Some("pull:@team/*")).await;
    assert_eq!(body["scope"], "pull:@team/*");

    // Minted keys are shown as such to the registry's admins.
    let admin = app.admin_key().await;
    let (status, listing) = app.get_with("/v1/auth/keys", &admin).await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    let minted: Vec<&Value> = listing
        .as_array()
        .unwrap()
        .iter()
        .filter(|key| key["origin"] == "oidc")
        .collect();
    assert_eq!(minted.len(), 2, "{listing}");
    for key in minted {
        assert_eq!(key["subject"], "system:serviceaccount:ci:builder");
        assert_eq!(key["issuer"], issuer.url.as_str());
        niso_test_support::assert_timestamp(&key["expires_at"]);
    }
}

async fn minted_scope_is_the_intersection(backend: Backend) {
    let issuer = Issuer::start().await;
    let rsa = Signer::rsa(RSA_A, "rsa-a");
    issuer.publish(&rsa);
    let app = start(backend, settings_for(&issuer)).await;
    give(
        &app,
        "uid-1",
        vec![grant(
            &issuer.url,
            "ci",
            None,
            &[Action::Pull, Action::Push],
        )],
    )
    .await;
    let token = rsa.sign(&service_account_claims(&issuer.url, "ci", "any-account"));

    let body = exchange_ok(&app, &token, Some("push:@team/tool,pull:*,delete:*")).await;
    assert_eq!(body["scope"], "pull:@team/*,push:@team/tool");
    let key = body["api_key"].as_str().unwrap();
    app.publish(key, "@team/tool", "1.0.0", "x86_64-linux")
        .await;
    let (status, _) = app
        .upload(key, "@team/other", "1.0.0", "x86_64-linux", Vec::new())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "push beyond the asked scope");

    // `admin` asked for is whatever is granted there, never admin itself.
    let body = exchange_ok(&app, &token, Some("admin:@team/*")).await;
    assert_eq!(body["scope"], "pull:@team/*,push:@team/*");

    let message = assert_error(
        exchange(&app, &token, Some("push:@owner/*,delete:@team/*")).await,
        StatusCode::FORBIDDEN,
    );
    assert!(message.contains("not granted"), "{message}");
    let message = assert_error(
        exchange(&app, &token, Some("push:nonsense")).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(message.contains("scope"), "{message}");
}

async fn claim_grants_match_external_issuers(backend: Backend) {
    let issuer = Issuer::start().await;
    let rsa = Signer::rsa(RSA_A, "rsa-a");
    issuer.publish(&rsa);
    let app = start(backend, settings_for(&issuer)).await;
    let claims_grant = GrantSpec {
        issuer: issuer.url.clone(),
        kubernetes_namespace: None,
        service_account: None,
        claims: BTreeMap::from([
            ("repository".to_owned(), "team/tool".to_owned()),
            ("ref".to_owned(), "refs/heads/main".to_owned()),
        ]),
        registry_namespace: "@team".to_owned(),
        actions: BTreeSet::from([Action::Push]),
    };
    give(&app, "ci-grant", vec![claims_grant]).await;
    let ci_claims = |repository: &str, reference: &str| {
        json!({
            "iss": issuer.url, "aud": "niso", "exp": now() + 300, "iat": now(),
            "sub": format!("repo:{repository}:ref:{reference}"),
            "repository": repository, "ref": reference,
        })
    };
    let body = exchange_ok(
        &app,
        &rsa.sign(&ci_claims("team/tool", "refs/heads/main")),
        None,
    )
    .await;
    assert_eq!(body["scope"], "push:@team/*");
    for (repository, reference) in [
        ("team/tool", "refs/heads/feature"),
        ("team/other", "refs/heads/main"),
    ] {
        let message = assert_error(
            exchange(&app, &rsa.sign(&ci_claims(repository, reference)), None).await,
            StatusCode::FORBIDDEN,
        );
        assert!(message.contains("no grant"), "{message}");
    }
    // A grant without any matcher would give every token of the issuer access.
    let mut open = grant(&issuer.url, "ci", None, &[Action::Pull]);
    open.kubernetes_namespace = None;
    let error = app
        .registry
        .replace_identity_grants(&test_authority(), "bad", vec![open])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("at least one claim"), "{error}");
}

async fn refusals_name_the_failed_check(backend: Backend) {
    let issuer = Issuer::start().await;
    let rsa = Signer::rsa(RSA_A, "rsa-a");
    issuer.publish(&rsa);
    let app = start(backend, settings_for(&issuer)).await;
    give(
        &app,
        "uid-1",
        vec![grant(&issuer.url, "ci", None, &[Action::Pull])],
    )
    .await;
    let good = service_account_claims(&issuer.url, "ci", "builder");
    let with = |name: &str, value: Value| {
        let mut claims = good.clone();
        claims[name] = value;
        claims
    };
    // The same key pair's public half, as an attacker would use it for an HMAC secret.
    let public_key = serde_json::to_string(&rsa.jwk()).unwrap();
    let hmac = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-a".to_owned());
        jsonwebtoken::encode(
            &header,
            &good,
            &EncodingKey::from_secret(public_key.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"rsa-a"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let forged = {
        // Signed by another key under the published key's kid.
        Signer::rsa(RSA_B, "rsa-a").sign(&good)
    };
    let tampered = {
        let token = rsa.sign(&good);
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD
            .encode(with("sub", json!("system:serviceaccount:ci:admin")).to_string());
        parts.join(".")
    };
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "wrong issuer",
            rsa.sign(&with("iss", json!("https://elsewhere.example"))),
            StatusCode::UNAUTHORIZED,
            "issuer is not trusted",
        ),
        (
            "wrong audience",
            rsa.sign(&with("aud", json!(["other"]))),
            StatusCode::UNAUTHORIZED,
            "wrong audience",
        ),
        (
            "no audience",
            rsa.sign(&{
                let mut claims = good.clone();
                claims.as_object_mut().unwrap().remove("aud");
                claims
            }),
            StatusCode::UNAUTHORIZED,
            "no aud claim",
        ),
        (
            "expired",
            rsa.sign(&with("exp", json!(now() - 3600))),
            StatusCode::UNAUTHORIZED,
            "expired",
        ),
        (
            "not yet valid",
            rsa.sign(&with("nbf", json!(now() + 3600))),
            StatusCode::UNAUTHORIZED,
            "not yet valid",
        ),
        (
            "issued in the future",
            rsa.sign(&with("iat", json!(now() + 3600))),
            StatusCode::UNAUTHORIZED,
            "issued in the future",
        ),
        (
            "bad signature",
            forged,
            StatusCode::UNAUTHORIZED,
            "signature is not valid",
        ),
        (
            "tampered claims",
            tampered,
            StatusCode::UNAUTHORIZED,
            "signature is not valid",
        ),
        (
            "alg none",
            unsigned,
            StatusCode::UNAUTHORIZED,
            "algorithm is not accepted",
        ),
        (
            "HS256 with the public key",
            hmac,
            StatusCode::UNAUTHORIZED,
            "algorithm is not accepted",
        ),
        (
            "ES256 header on an RSA key",
            {
                let token = rsa.sign(&good);
                let rest = token.split_once('.').unwrap().1;
                format!(
                    "{}.{rest}",
                    URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"rsa-a"}"#)
                )
            },
            StatusCode::UNAUTHORIZED,
            "does not match",
        ),
        (
            "not a JWT",
            "not-a-token".to_owned(),
            StatusCode::UNAUTHORIZED,
            "not a well-formed JWT",
        ),
        (
            "oversized",
            format!("{}.{}.x", "a".repeat(10_000), "b".repeat(10_000)),
            StatusCode::UNAUTHORIZED,
            "longer than",
        ),
        (
            "no grant",
            rsa.sign(&service_account_claims(
                &issuer.url,
                "other-team",
                "builder",
            )),
            StatusCode::FORBIDDEN,
            "no grant for this identity",
        ),
    ];
    for (case, token, status, expected) in cases {
        let answer = exchange(&app, &token, None).await;
        let message = assert_error(&answer, status);
        assert!(message.contains(expected), "{case}: {message}");
        assert!(!message.contains(&token), "{case}: the token is echoed");
    }
    // None of them got a key.
    let admin = app.admin_key().await;
    let (_, listing) = app.get_with("/v1/auth/keys", &admin).await;
    assert!(
        listing
            .as_array()
            .unwrap()
            .iter()
            .all(|key| key["origin"] != "oidc"),
        "{listing}"
    );
}

async fn unknown_kid_refetches_the_keys_but_not_on_every_token(backend: Backend) {
    let issuer = Issuer::start().await;
    let first = Signer::rsa(RSA_A, "first");
    let rotated = Signer::rsa(RSA_B, "rotated");
    issuer.publish(&first);
    // A refetch interval no test outlasts: only a key seen in the first fetch can be found.
    let app = start(backend, settings_for(&issuer)).await;
    give(
        &app,
        "uid-1",
        vec![grant(&issuer.url, "ci", None, &[Action::Pull])],
    )
    .await;
    let claims = service_account_claims(&issuer.url, "ci", "builder");

    exchange_ok(&app, &first.sign(&claims), None).await;
    assert_eq!(issuer.fetches(), 1);
    issuer.publish(&rotated);
    for attempt in 0..20 {
        let bogus = Signer::rsa(RSA_B, &format!("made-up-{attempt}"));
        let message = assert_error(
            exchange(&app, &bogus.sign(&claims), None).await,
            StatusCode::UNAUTHORIZED,
        );
        assert!(message.contains("unknown kid"), "{message}");
    }
    assert_eq!(
        issuer.fetches(),
        1,
        "tokens with unknown kids refetched the keys"
    );
    let message = assert_error(
        exchange(&app, &rotated.sign(&claims), None).await,
        StatusCode::UNAUTHORIZED,
    );
    assert!(message.contains("unknown kid"), "{message}");

    // With refetching allowed, an unknown kid fetches the keys again and finds the new one.
    let settings = RegistrySettings {
        identity: IdentitySettings {
            jwks_refresh_interval: Duration::ZERO,
            ..settings_for(&issuer).identity
        },
        ..test_settings()
    };
    let replica = TestApp::on_storage(app.storage.clone(), settings).await;
    issuer.unpublish_all();
    issuer.publish(&first);
    let before = issuer.fetches();
    exchange_ok(&replica, &first.sign(&claims), None).await;
    exchange_ok(&replica, &first.sign(&claims), None).await;
    assert_eq!(
        issuer.fetches(),
        before + 1,
        "a known kid is served from the cache"
    );
    issuer.publish(&rotated);
    exchange_ok(&replica, &rotated.sign(&claims), None).await;
    assert_eq!(issuer.fetches(), before + 2);
}

async fn minted_key_expires_with_the_identity_token(backend: Backend) {
    let issuer = Issuer::start().await;
    let rsa = Signer::rsa(RSA_A, "rsa-a");
    issuer.publish(&rsa);
    let mut settings = settings_for(&issuer);
    // Verification allows no skew here, so the key's expiry is the token's to the second.
    settings.identity.clock_skew = Duration::ZERO;
    let app = start(backend, settings).await;
    give(
        &app,
        "uid-1",
        vec![grant(&issuer.url, "ci", None, &[Action::Pull])],
    )
    .await;
    let expires = now() + 3;
    let mut claims = service_account_claims(&issuer.url, "ci", "builder");
    claims["exp"] = json!(expires);
    let body = exchange_ok(&app, &rsa.sign(&claims), None).await;
    let expected = chrono::DateTime::from_timestamp(expires, 0)
        .unwrap()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    assert_eq!(
        body["expires_at"],
        expected.as_str(),
        "the key outlives the token"
    );
    let key = body["api_key"].as_str().unwrap();
    let (status, _) = app.get_with("/v1/auth/keys", key).await;
    assert_eq!(status, StatusCode::OK);
    // Poll until the key is refused (bounded so a key that never expires fails the test).
    let mut refused = false;
    for _ in 0..300 {
        let (status, _) = app.get_with("/v1/auth/keys", key).await;
        if status == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the minted key still works long after its expiry");
}

async fn replacing_grants_revokes_minted_keys(backend: Backend) {
    let issuer = Issuer::start().await;
    let rsa = Signer::rsa(RSA_A, "rsa-a");
    issuer.publish(&rsa);
    let app = start(backend, settings_for(&issuer)).await;
    let pull_push = grant(&issuer.url, "ci", None, &[Action::Pull, Action::Push]);
    let other = grant(&issuer.url, "web", None, &[Action::Pull]);
    give(&app, "uid-1", vec![pull_push.clone()]).await;
    give(&app, "uid-2", vec![other.clone()]).await;
    let ci = rsa.sign(&service_account_claims(&issuer.url, "ci", "builder"));
    let web = rsa.sign(&service_account_claims(&issuer.url, "web", "frontend"));
    let ci_key = exchange_ok(&app, &ci, None).await["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let web_key = exchange_ok(&app, &web, None).await["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let works = |key: String| {
        let app = &app;
        async move { app.get_with("/v1/auth/keys", &key).await.0 == StatusCode::OK }
    };

    // The same grants again: nothing changes.
    let outcome = app
        .registry
        .replace_identity_grants(&test_authority(), "uid-1", vec![pull_push.clone()])
        .await
        .unwrap();
    assert_eq!(
        (outcome.kept, outcome.removed, outcome.revoked_keys),
        (1, 0, 0)
    );
    assert!(works(ci_key.clone()).await);

    // Narrowed: the key minted from the removed grant goes; another owner's keys stay.
    let pull_only = grant(&issuer.url, "ci", None, &[Action::Pull]);
    let outcome = app
        .registry
        .replace_identity_grants(&test_authority(), "uid-1", vec![pull_only.clone()])
        .await
        .unwrap();
    assert_eq!(
        (outcome.added, outcome.removed, outcome.revoked_keys),
        (1, 1, 1)
    );
    assert!(!works(ci_key).await, "a key of a removed grant still works");
    assert!(works(web_key.clone()).await);
    assert_eq!(exchange_ok(&app, &ci, None).await["scope"], "pull:@team/*");

    let listed = app
        .registry
        .identity_grants(&test_authority(), Some("uid-1"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].spec, pull_only);

    // No grants: the identity gets nothing.
    give(&app, "uid-2", Vec::new()).await;
    assert!(!works(web_key).await);
    let message = assert_error(exchange(&app, &web, None).await, StatusCode::FORBIDDEN);
    assert!(message.contains("no grant"), "{message}");
}

/// Exchanges racing the removal of their grant: whichever order the database sees them in,
/// no key minted from the removed grant works afterwards (see identity/grants.rs).
async fn a_grant_removed_during_exchanges_leaves_no_live_key(backend: Backend) {
    let issuer = Issuer::start().await;
    let rsa = Signer::rsa(RSA_A, "rsa-a");
    issuer.publish(&rsa);
    let app = start(backend, settings_for(&issuer)).await;
    let token = rsa.sign(&service_account_claims(&issuer.url, "ci", "builder"));
    for round in 0..3 {
        give(
            &app,
            "uid-1",
            vec![grant(&issuer.url, "ci", None, &[Action::Pull])],
        )
        .await;
        // Warm the key cache so the exchanges reach the database at once.
        exchange_ok(&app, &token, None).await;
        let exchanges = futures::future::join_all((0..12).map(|_| exchange(&app, &token, None)));
        let removal = async {
            app.registry
                .replace_identity_grants(&test_authority(), "uid-1", Vec::new())
                .await
                .unwrap()
        };
        let (answers, _) = tokio::join!(exchanges, removal);
        for (status, body) in answers {
            if status == StatusCode::OK {
                let key = body["api_key"].as_str().unwrap();
                let (status, _) = app.get_with("/v1/auth/keys", key).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "round {round}: a key minted from the removed grant still works"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "round {round}: {body}");
            }
        }
    }
}

/// A scripted API server: the review says yes to `accepted` only, for the `niso` audience,
/// and only to a caller presenting `bearer`.
#[derive(Clone)]
struct ApiServer {
    accepted: String,
    bearer: String,
    reviews: Arc<Mutex<Vec<Value>>>,
}

async fn token_review(
    State(server): State<ApiServer>,
    headers: HeaderMap,
    axum::Json(review): axum::Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let authorization = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    if authorization != Some(&format!("Bearer {}", server.bearer)) {
        return (axum::http::StatusCode::UNAUTHORIZED, "no").into_response();
    }
    server.reviews.lock().unwrap().push(review.clone());
    let status = if review["spec"]["token"] == server.accepted.as_str() {
        json!({
            "authenticated": true,
            "user": { "username": "system:serviceaccount:ci:builder", "uid": "1" },
            "audiences": review["spec"]["audiences"],
        })
    } else {
        json!({ "authenticated": false, "error": "token is invalid" })
    };
    axum::Json(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "status": status,
    }))
    .into_response()
}

async fn token_review_mode(backend: Backend) {
    let unsigned = |claims: Value| {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"cluster"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    };
    let accepted = unsigned(service_account_claims(
        DEFAULT_KUBERNETES_ISSUER,
        "ci",
        "builder",
    ));
    let rejected = unsigned(service_account_claims(
        DEFAULT_KUBERNETES_ISSUER,
        "ci",
        "intruder",
    ));
    let server = ApiServer {
        accepted: accepted.clone(),
        bearer: "registry-sa-token".to_owned(),
        reviews: Arc::new(Mutex::new(Vec::new())),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let router = axum::Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(token_review),
        )
        .with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let bearer_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bearer_file.path(), "registry-sa-token\n").unwrap();

    let settings = RegistrySettings {
        identity: IdentitySettings {
            token_review: Some(TokenReviewSettings {
                url: format!("http://{address}/apis/authentication.k8s.io/v1/tokenreviews"),
                bearer_token_file: Some(bearer_file.path().to_owned()),
                ca_file: None,
                issuer: DEFAULT_KUBERNETES_ISSUER.to_owned(),
            }),
            ..IdentitySettings::default()
        },
        ..test_settings()
    };
    let app = start(backend, settings).await;
    give(
        &app,
        "uid-1",
        vec![grant(
            DEFAULT_KUBERNETES_ISSUER,
            "ci",
            Some("builder"),
            &[Action::Push],
        )],
    )
    .await;

    let body = exchange_ok(&app, &accepted, None).await;
    assert_eq!(body["scope"], "push:@team/*");
    app.publish(
        body["api_key"].as_str().unwrap(),
        "@team/tool",
        "1.0.0",
        "x86_64-linux",
    )
    .await;
    let message = assert_error(
        exchange(&app, &rejected, None).await,
        StatusCode::UNAUTHORIZED,
    );
    assert!(message.contains("did not authenticate"), "{message}");
    assert!(
        !message.contains("token is invalid"),
        "the API server's reason leaks: {message}"
    );
    let reviews = server.reviews.lock().unwrap().clone();
    assert_eq!(reviews.len(), 2);
    assert_eq!(reviews[0]["kind"], "TokenReview");
    assert_eq!(reviews[0]["spec"]["audiences"], json!(["niso"]));
}
