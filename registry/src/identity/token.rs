//! An identity token before any check: bounded in size, split, its header and claims decoded.
//! Nothing read here is trusted until `oidc.rs` (signature) or `token_review.rs` (the API
//! server) has verified the token; the issuer read here only chooses the verifier.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::DateTime;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Identity, KubernetesAccount, MAX_TOKEN_BYTES, refused};
use crate::error::Result;

#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    pub text: &'a str,
    pub algorithm: String,
    pub key_id: Option<String>,
    pub issuer: String,
    pub claims: Map<String, Value>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

const MALFORMED: &str = "the identity token is not a well-formed JWT";

impl<'a> UnverifiedToken<'a> {
    pub fn parse(text: &'a str) -> Result<UnverifiedToken<'a>> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_BYTES {
            return Err(refused(format!(
                "the identity token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let mut parts = text.split('.');
        let (Some(header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refused(MALFORMED));
        };
        let header: Header = decode_part(header)?;
        let claims: Map<String, Value> = decode_part(payload)?;
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| refused("the identity token has no issuer (iss)"))?
            .to_owned();
        Ok(UnverifiedToken {
            text,
            algorithm: header.alg,
            key_id: header.kid,
            issuer,
            claims,
        })
    }
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| refused(MALFORMED))?;
    serde_json::from_slice(&bytes).map_err(|_| refused(MALFORMED))
}

/// The identity that verified `claims` describe, with `issuer` as the grants know it.
pub fn identity_from_claims(issuer: String, claims: &Map<String, Value>) -> Result<Identity> {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|subject| !subject.is_empty())
        .ok_or_else(|| refused("the identity token has no subject (sub)"))?
        .to_owned();
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_i64)
        .and_then(|exp| DateTime::from_timestamp(exp, 0))
        .ok_or_else(|| refused("the identity token has no valid expiry (exp)"))?
        .naive_utc();
    let kubernetes = KubernetesAccount::from_subject(&subject);
    let claims: BTreeMap<String, String> = claims
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_owned())))
        .collect();
    Ok(Identity {
        issuer,
        subject,
        kubernetes,
        claims,
        expires_at,
    })
}
