//! Errors: the crate's [`CloudError`] and the HTTP error bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error of starting or running the service.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// An option is invalid (the CLI maps this to exit 2).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// Binding the address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The data dir or database failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The data dir holds a database this build cannot use (written by a newer version); nothing
    /// was changed. The CLI maps this to exit 2, like a bad option.
    #[error("{0}")]
    UnsupportedData(String),
    /// Any other I/O failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl CloudError {
    /// Whether the error is a usage error (bad option).
    pub fn is_invalid_option(&self) -> bool {
        matches!(self, CloudError::InvalidOption(_))
    }

    /// Whether the error is the user's to fix before anything can run (a bad option or a data
    /// dir this build cannot use): exit 2, nothing changed.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            CloudError::InvalidOption(_) | CloudError::UnsupportedData(_)
        )
    }
}

impl From<crate::store::StoreError> for CloudError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            e @ crate::store::StoreError::NewerSchema { .. } => {
                CloudError::UnsupportedData(e.to_string())
            }
            e => CloudError::Storage(e.to_string()),
        }
    }
}

/// A Graph-style error: `{"error":{"code","message"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Error code.
    pub code: String,
    /// Message (never a secret).
    pub message: String,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
    /// Extra fields inside `error`.
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }
    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
    /// 401 InvalidAuthenticationToken.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        )
    }
    /// 403 Authorization_RequestDenied.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            message,
        )
    }
    /// 404 NotFound.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }
    /// 409 Conflict.
    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            message,
        )
    }
    /// Replaces the error code.
    pub fn with_code(mut self, code: &str) -> Self {
        self.code = code.into();
        self
    }
    /// Adds details.
    pub fn with_details(mut self, d: serde_json::Value) -> Self {
        self.details = Some(d);
        self
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(m) => ApiError::conflict("Conflict", m),
            crate::store::StoreError::Forbidden(m) => ApiError::forbidden(m),
            crate::store::StoreError::HierarchyGone(m) => ApiError::not_found(m),
            crate::store::StoreError::FeatureNotEnabled(m) => {
                ApiError::conflict("FeatureNotEnabled", m)
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                ApiError::internal("storage failure")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(serde_json::Value::Object(d)) = self.details {
            for (k, v) in d {
                err[k] = v;
            }
        }
        let mut r = (self.status, axum::Json(json!({ "error": err }))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cloudattach\", error=\"invalid_token\""),
            );
        }
        r
    }
}

/// An OAuth 2.0 error (RFC 6749 §5.2): `{"error","error_description"}`.
#[derive(Debug, Clone)]
pub struct OAuthError {
    /// HTTP status (400 or 401).
    pub status: StatusCode,
    /// The error code, e.g. `authorization_pending`.
    pub error: &'static str,
    /// Description.
    pub description: String,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
}

impl OAuthError {
    /// A 400 OAuth error.
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
            retry_after: None,
        }
    }
    /// A 401 `invalid_client`.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: description.into(),
            retry_after: None,
        }
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "storage failure");
        OAuthError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "temporarily_unavailable",
            description: "storage failure".into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.error,
            "error_description": self.description,
            "timestamp": crate::util::now_rfc3339(),
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}
