//! The tower layer and axum extractor (feature `axum`): sessions in the HTTP cycle.
//!
//! ```
//! use axum::{Router, routing::get};
//! use session_kit::{Session, SessionLayer, SessionManager};
//! use session_kit::memory::MemoryStore;
//!
//! async fn visits(session: Session) -> String {
//!     match session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await {
//!         Ok(n) => format!("visit number {n}"),
//!         Err(e) => format!("error: {e}"),
//!     }
//! }
//!
//! # fn main() -> session_kit::Result<()> {
//! let manager = SessionManager::builder(MemoryStore::new()).build()?;
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionLayer::builder(manager).build()?);
//! # Ok(())
//! # }
//! ```
//!
//! The cookie rules and the commit are the framework-neutral ones of every adapter (see
//! [`SessionBuilder`]): lazy load, one commit once the inner service has produced the
//! response head, nothing written when nothing changed, nothing committed for a 5xx
//! response, `Vary: Cookie` on every response whose session was used, and a failed commit
//! answered by the error handler's status (default [`Error::http_status`]) without a cookie.
//!
//! [`Error::http_status`]: session_core::Error::http_status

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{COOKIE, HeaderName, VARY};
use http::{HeaderValue, Request, Response, StatusCode};

use crate::codec::{Codec, MessagePack};
use crate::cookie::{HeaderText, SessionBuilder, Settings, varies_on_cookie};
use crate::manager::{Session, SessionManager};
use session_core::Result;

pub use crate::cookie::{CookieSameSite, DEFAULT_COOKIE_NAME, SigningKey};

/// Configures a [`SessionLayer`]; `build` refuses unsafe cookie settings.
pub type SessionLayerBuilder<C = MessagePack> = SessionBuilder<SessionLayer<C>, C>;

/// Adds sessions to a tower service (an axum router). Build it with [`SessionLayer::builder`].
#[derive(Clone, Debug)]
pub struct SessionLayer<C: Codec = MessagePack> {
    settings: Arc<Settings<C>>,
}

impl<C: Codec> SessionLayer<C> {
    /// Starts configuring a layer over `manager`, with the defaults of [`SessionBuilder`].
    pub fn builder(manager: SessionManager<C>) -> SessionLayerBuilder<C> {
        SessionBuilder::new(manager)
    }
}

impl<C: Codec> SessionBuilder<SessionLayer<C>, C> {
    /// Checks the cookie settings and builds the layer.
    ///
    /// # Errors
    /// [`Error::Config`](session_core::Error::Config) for unsafe or unencodable cookie
    /// settings, the same for every framework: an empty or invalid cookie name, a `__Host-`
    /// cookie that is not `Secure`, has a `Domain` or a `Path` other than `/`, a `__Secure-`,
    /// `SameSite=None` or `Partitioned` cookie that is not `Secure`, a path not starting with
    /// `/` or holding `;` or control characters, a domain that is empty, not ASCII, or holds
    /// spaces, `;`, `,` or control characters.
    pub fn build(self) -> Result<SessionLayer<C>> {
        Ok(SessionLayer {
            settings: self.validated()?,
        })
    }
}

impl<S, C: Codec> tower_layer::Layer<S> for SessionLayer<C> {
    type Service = SessionService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`SessionLayer`].
#[derive(Clone, Debug)]
pub struct SessionService<S, C: Codec = MessagePack> {
    inner: S,
    layer: SessionLayer<C>,
}

impl<S, C, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for SessionService<S, C>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    C: Codec,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let settings = Arc::clone(&self.layer.settings);
        let cookies = req.headers().get_all(COOKIE).iter();
        let session = settings.session(cookies.map(HeaderValue::as_bytes));
        req.extensions_mut().insert(session.clone());
        // The service that was polled ready handles this request; the clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(req).await?;
            // Boxed: inline, the commit's future makes this one just over 1 KB, which glibc
            // serves from its large bins (consolidating its fast bins first) on every request.
            let finish = Box::pin(settings.finish(&session, response.status().as_u16())).await;
            if let Some(status) = finish.failed {
                response = Response::new(ResBody::default());
                *response.status_mut() =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            }
            let headers = response.headers_mut();
            let varies =
                || varies_on_cookie(headers.get_all(VARY).iter().map(HeaderValue::as_bytes));
            for (name, value) in finish.headers(&varies) {
                let value = match value {
                    HeaderText::Constant(value) => Ok(HeaderValue::from_static(value)),
                    HeaderText::Made(value) => HeaderValue::from_str(value),
                };
                match value {
                    Ok(value) => {
                        headers.append(HeaderName::from_static(name), value);
                    }
                    Err(_) => {
                        tracing::error!(header = name, "a session header could not be encoded")
                    }
                }
            }
            Ok(response)
        })
    }
}

/// Why the [`Session`] extractor failed: the [`SessionLayer`] is not installed on the route.
#[derive(Debug, Clone, Copy)]
pub struct MissingSessionLayer;

impl axum_core::response::IntoResponse for MissingSessionLayer {
    fn into_response(self) -> axum_core::response::Response {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the session layer is not installed on this route",
        )
            .into_response()
    }
}

impl<S: Send + Sync, C: Codec> axum_core::extract::FromRequestParts<S> for Session<C> {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session<C>>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

impl<S: Send + Sync, C: Codec> axum_core::extract::OptionalFromRequestParts<S> for Session<C> {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Session<C>>().cloned())
    }
}
