//! The one error type of the session layer.

use crate::id::InvalidId;

/// A boxed error kept as the source of an [`Error`], so nothing is lost to a string.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with the session layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the session layer, by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A session id from outside failed strict parsing. Start a fresh session.
    #[error("invalid session id: {0}")]
    InvalidId(#[from] InvalidId),

    /// `create` or `rotate` found the key taken. The manager retries with a fresh id.
    #[error("a session with this key already exists")]
    AlreadyExists,

    /// The session does not exist (never did, expired, deleted, or moved by `rotate`).
    /// A save or touch that meets this must not bring the session back.
    #[error("session not found")]
    NotFound,

    /// A conditional save found another version than the one the caller loaded: someone else
    /// saved in between. Reload and re-apply, or give up.
    #[error("session was changed concurrently (version conflict)")]
    Conflict,

    /// The encoded session is larger than the store or manager allows. Nothing was written.
    #[error("session data is {size} bytes, above the limit of {limit}")]
    TooLarge {
        /// Size of the refused data, in bytes.
        size: usize,
        /// The configured limit, in bytes.
        limit: usize,
    },

    /// Stored data failed an integrity check or could not be decoded. It is treated as absent.
    #[error("session data is corrupt")]
    Corrupt(#[source] BoxError),

    /// A session value is well-formed but is not the type it was read as (read as `u64` after
    /// being stored as a string, or a struct whose shape changed between releases). A bug or a
    /// schema change in the application, not damaged data: the value is left in place.
    #[error("session value `{key}` is not a `{expected}`")]
    WrongType {
        /// The key the value is stored under.
        key: String,
        /// The type it was read as (`std::any::type_name`).
        expected: &'static str,
        /// What the codec said.
        #[source]
        source: BoxError,
    },

    /// A value could not be encoded by the codec (a bug in the value's `Serialize`, or a type
    /// the format cannot express). Nothing was written.
    #[error("session value could not be encoded")]
    Encode(#[source] BoxError),

    /// The backend did not answer: connection refused or lost, pool exhausted, timed out.
    /// Usually transient; retrying later may succeed.
    #[error("session store `{store}` is unavailable")]
    Unavailable {
        /// Which backend (e.g. `"postgres"`).
        store: &'static str,
        /// What the driver said.
        #[source]
        source: BoxError,
    },

    /// The backend answered with an error that retrying will not fix (a full disk, a
    /// permission problem, a schema mismatch).
    #[error("session store `{store}` failed")]
    Backend {
        /// Which backend (e.g. `"files"`).
        store: &'static str,
        /// What the driver or the operating system said.
        #[source]
        source: BoxError,
    },

    /// A configuration was refused when it was built. Fix the configuration.
    #[error("invalid configuration: {0}")]
    Config(std::borrow::Cow<'static, str>),
}

impl Error {
    /// Wraps a driver error for a backend that did not answer.
    pub fn unavailable(store: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            store,
            source: source.into(),
        }
    }

    /// Wraps a driver error that retrying will not fix.
    pub fn backend(store: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            store,
            source: source.into(),
        }
    }

    /// Wraps a description of corrupt data.
    pub fn corrupt(source: impl Into<BoxError>) -> Self {
        Self::Corrupt(source.into())
    }

    /// Whether trying the same call again later might succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Conflict)
    }
}

impl Error {
    /// The HTTP status, as a number, that answers a request this error ended: 413 for
    /// [`TooLarge`](Self::TooLarge), 503 for [`Unavailable`](Self::Unavailable) (worth
    /// retrying later), 500 for everything else ([`WrongType`](Self::WrongType) included: the
    /// server's code read a value as the wrong type, the client did nothing wrong).
    /// Framework-neutral: each web framework's
    /// integration (axum, actix-web) turns it into its own status type.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::TooLarge { .. } => 413,
            Self::Unavailable { .. } => 503,
            _ => 500,
        }
    }

    /// Logs this error as the answer to a request: at `error` for a 5xx status, `warn`
    /// otherwise. The message and sources name the store and carry driver messages, so they
    /// go to the log, never to the client.
    #[cfg(any(feature = "axum", feature = "actix"))]
    fn log_as_response(&self) {
        let status = self.http_status();
        let error: &(dyn std::error::Error + 'static) = self;
        if status >= 500 {
            tracing::error!(error, status, "session error");
        } else {
            tracing::warn!(error, status, "session error");
        }
    }
}

#[cfg(feature = "axum")]
impl Error {
    /// [`http_status`](Self::http_status) as an `http` 1 status code. Feature `axum`.
    pub fn status_code(&self) -> http::StatusCode {
        http::StatusCode::from_u16(self.http_status())
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Lets handlers return session errors with `?`. Feature `axum`.
///
/// The response is [`Error::status_code`] with its reason phrase as the body ("Service
/// Unavailable"), nothing more: the error's message and sources name the store and carry
/// driver messages, so they go to the log (`tracing`, at `error` for 5xx and `warn`
/// otherwise), not to the client.
#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Error {
    fn into_response(self) -> axum_core::response::Response {
        self.log_as_response();
        let status = self.status_code();
        (status, status.canonical_reason().unwrap_or_default()).into_response()
    }
}

/// Lets actix-web handlers return session errors with `?`. Feature `actix`.
///
/// The same answer as axum's: [`Error::http_status`] with its reason phrase as the body, the
/// error itself only in the log.
#[cfg(feature = "actix")]
impl actix_web::ResponseError for Error {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::from_u16(self.http_status())
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        self.log_as_response();
        let status = actix_web::ResponseError::status_code(self);
        actix_web::HttpResponse::build(status).body(status.canonical_reason().unwrap_or_default())
    }
}
