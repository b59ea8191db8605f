//! Request extractors that answer bad input the registry's way: `{"error": …}` with 400/401
//! instead of axum's plain-text 422s.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AppState;
use niso_registry::auth::Principal;
use niso_registry::error::Error;

use crate::http::error::ApiError;

/// A JSON body; malformed JSON, a wrong content type or unknown fields are a 400. The body is
/// read whole, so it is small: at most `json_body_limit_bytes` (413, early when declared) and
/// received within `json_body_timeout` (408).
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(request.headers()) {
            return Err(Error::Invalid("expected Content-Type: application/json".into()).into());
        }
        let settings = state.registry.settings();
        let (parts, body) = request.into_parts();
        let bytes = super::body::read_limited(
            &parts.headers,
            body,
            settings.json_body_limit_bytes,
            settings.json_body_timeout,
        )
        .await?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection).into()),
        }
    }
}

/// `application/json` or `application/…+json`, as axum's own extractor accepts.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

fn json_rejection(rejection: JsonRejection) -> Error {
    match rejection {
        JsonRejection::JsonDataError(error) => {
            Error::Invalid(format!("invalid request body: {}", error.body_text()))
        }
        JsonRejection::JsonSyntaxError(_) => {
            Error::Invalid("invalid request body: malformed JSON".into())
        }
        JsonRejection::MissingJsonContentType(_) => {
            Error::Invalid("expected Content-Type: application/json".into())
        }
        JsonRejection::BytesRejection(error) => {
            if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::TooLarge("request body too large".into())
            } else {
                Error::Invalid(format!("cannot read request body: {}", error.body_text()))
            }
        }
        other => Error::Invalid(other.body_text()),
    }
}

/// A query string; unparsable values are a 400.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(error)) => {
                let text = error.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                Err(Error::Invalid(format!("invalid query string: {detail}")).into())
            }
            Err(other) => Err(Error::Invalid(other.body_text()).into()),
        }
    }
}

/// Path parameters, deserialized into their types (`PackageName`, `Reference`, `Arch`, …);
/// a value that breaks its rule is a 400 with the rule's own message.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => {
                let message = match error.kind() {
                    // A name type's own message (`invalid arch "X": …`).
                    ErrorKind::Message(message) => message.clone(),
                    _ => error.body_text(),
                };
                Err(Error::Invalid(message).into())
            }
            Err(PathRejection::MissingPathParams(error)) => {
                Err(Error::internal(error.body_text()).into())
            }
            Err(other) => Err(Error::Invalid(other.body_text()).into()),
        }
    }
}

/// `limit` and `offset` of list endpoints. Each is parsed into a type whose range the
/// database can take, so no query value reaches the driver out of range (an offset past
/// `i64::MAX` used to panic inside it and drop the connection).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Pagination {
    pub limit: Option<Limit>,
    pub offset: Option<Offset>,
}

impl Pagination {
    pub fn limit(&self) -> u64 {
        self.limit.unwrap_or_default().get()
    }

    pub fn offset(&self) -> u64 {
        self.offset.unwrap_or_default().get()
    }
}

/// How many rows a list returns: 1 to 1000, default 100. Larger values are clamped to 1000
/// (DESIGN.md: "max 1000"); zero, negative and non-numeric values are a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u64);

impl Limit {
    pub const DEFAULT: u64 = 100;
    pub const MAX: u64 = 1000;

    pub fn get(self) -> u64 {
        self.0
    }
}

impl Default for Limit {
    fn default() -> Self {
        Limit(Limit::DEFAULT)
    }
}

impl std::str::FromStr for Limit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const MESSAGE: &str = "limit must be a whole number from 1 to 1000";
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(MESSAGE.into());
        }
        // All digits: a parse failure can only be an overflow, which is "more than 1000".
        match text.parse::<u64>() {
            Ok(0) => Err(MESSAGE.into()),
            Ok(limit) => Ok(Limit(limit.min(Limit::MAX))),
            Err(_) => Ok(Limit(Limit::MAX)),
        }
    }
}

/// How many rows a list skips: 0 to `Offset::MAX`. The bound keeps the value inside the
/// database's signed 64-bit range with room to spare; no listing is that long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offset(u64);

impl Offset {
    pub const MAX: u64 = 1_000_000_000;

    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for Offset {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse::<u64>()
            .ok()
            .filter(|offset| *offset <= Offset::MAX)
            .filter(|_| text.bytes().all(|byte| byte.is_ascii_digit()))
            .map(Offset)
            .ok_or_else(|| format!("offset must be a whole number from 0 to {}", Offset::MAX))
    }
}

/// Deserializes a query value through its `FromStr`, so the type's own message reaches the
/// client instead of serde's.
macro_rules! deserialize_from_str {
    ($type:ty) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
deserialize_from_str!(Limit);
deserialize_from_str!(Offset);

/// The authenticated caller (401 without a valid key).
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Auth(authenticate(state, &parts.headers).await?))
    }
}

pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, Error> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            Error::Unauthenticated("missing API key: send Authorization: Bearer niso_…".into())
        })?
        .to_str()
        .map_err(|_| Error::Unauthenticated("malformed Authorization header".into()))?;
    // The scheme is case-insensitive (RFC 9110 §11.1): `Bearer`, `bearer` and `BEARER` alike.
    let key = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key)
        .ok_or_else(|| {
            Error::Unauthenticated("malformed Authorization header: expected Bearer niso_…".into())
        })?;
    state.registry.authenticate(key.trim()).await
}

/// The bounds `Limit` and `Offset` enforce, for the OpenAPI document.
fn integer_schema(
    minimum: u64,
    maximum: u64,
    default: Option<u64>,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .default(default.map(serde_json::Value::from))
        .description(Some(description))
        .into()
}

impl utoipa::PartialSchema for Limit {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        integer_schema(
            1,
            Limit::MAX,
            Some(Limit::DEFAULT),
            "how many rows to return; larger values are clamped to 1000",
        )
    }
}

impl utoipa::ToSchema for Limit {}

impl utoipa::PartialSchema for Offset {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        integer_schema(0, Offset::MAX, Some(0), "how many rows to skip")
    }
}

impl utoipa::ToSchema for Offset {}
