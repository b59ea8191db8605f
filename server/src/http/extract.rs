//! Request extractors that answer bad input the registry's way: `{"error": …}` with 400/401
//! instead of axum's plain-text 422s.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::auth::Principal;
use crate::error::Error;

/// A JSON body; malformed JSON, a wrong content type or unknown fields are a 400.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> Error {
    match rejection {
        JsonRejection::JsonDataError(error) => {
            Error::BadRequest(format!("invalid request body: {}", error.body_text()))
        }
        JsonRejection::JsonSyntaxError(_) => {
            Error::BadRequest("invalid request body: malformed JSON".into())
        }
        JsonRejection::MissingJsonContentType(_) => {
            Error::BadRequest("expected Content-Type: application/json".into())
        }
        JsonRejection::BytesRejection(error) => {
            if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge("request body too large".into())
            } else {
                Error::BadRequest(format!("cannot read request body: {}", error.body_text()))
            }
        }
        other => Error::BadRequest(other.body_text()),
    }
}

/// A query string; unparsable values are a 400.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(error)) => Err(Error::BadRequest(
                format!("invalid query string: {}", error.body_text()),
            )),
            Err(other) => Err(Error::BadRequest(other.body_text())),
        }
    }
}

/// `limit` (default 100, at most 1000) and `offset` of list endpoints.
#[derive(Debug, Deserialize)]
pub struct Pagination {
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

impl Pagination {
    pub fn limit(&self) -> Result<u64, Error> {
        match self.limit {
            Some(0) => Err(Error::BadRequest("limit must be at least 1".into())),
            Some(limit) => Ok(limit.min(1000)),
            None => Ok(100),
        }
    }

    pub fn offset(&self) -> u64 {
        self.offset.unwrap_or(0)
    }
}

/// The authenticated caller (401 without a valid key).
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        authenticate(state, &parts.headers).await.map(Auth)
    }
}

pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, Error> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            Error::Unauthorized("missing API key: send Authorization: Bearer niso_…".into())
        })?
        .to_str()
        .map_err(|_| Error::Unauthorized("malformed Authorization header".into()))?;
    // The scheme is case-insensitive (RFC 9110 §11.1): `Bearer`, `bearer` and `BEARER` alike.
    let key = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key)
        .ok_or_else(|| {
            Error::Unauthorized("malformed Authorization header: expected Bearer niso_…".into())
        })?;
    state.registry.authenticate(key.trim()).await
}
