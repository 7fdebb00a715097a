//! The tower layer and axum extractor (feature `axum`): sessions in the HTTP cycle.
//!
//! ```
//! use axum::{Router, routing::get};
//! use session_core::{Session, SessionManager};
//! use session_core::layer::SessionLayer;
//! use session_memory::MemoryStore;
//!
//! async fn visits(session: Session) -> String {
//!     match session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await {
//!         Ok(n) => format!("visit number {n}"),
//!         Err(e) => format!("error: {e}"),
//!     }
//! }
//!
//! # fn main() -> session_core::Result<()> {
//! let manager = SessionManager::builder(MemoryStore::new()).build()?;
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionLayer::builder(manager).build()?);
//! # Ok(())
//! # }
//! ```
//!
//! Per request the layer:
//! - reads the session cookie; a malformed, oversized, badly signed or unknown value starts a
//!   fresh session: it never reaches the store, is never adopted as an id, and never panics;
//! - puts a lazy [`Session`] handle in the request extensions (the axum extractor takes it
//!   from there), so a request that never touches its session does no store I/O;
//! - once the inner service has produced the response head, commits the session exactly once
//!   and writes `Set-Cookie` only when the id is new or rotated, or the session ended (then an
//!   expired removal cookie with the same attributes). A persistent cookie carries the
//!   session's absolute deadline, which never moves; the idle timeout is enforced on the
//!   server, so a busy session does not re-send its cookie on every request;
//! - marks responses that set a cookie `Vary: Cookie` and `Cache-Control:
//!   no-cache="Set-Cookie"`, so no shared cache hands one user's cookie to another;
//! - on a store error, calls the error handler (default: log with the masked id, answer 500)
//!   and sends no cookie, so a response never carries a stale one.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cookie::{Cookie, CookieJar, Key, SameSite};
use http::header::{CACHE_CONTROL, COOKIE, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};

use crate::codec::{Codec, MessagePack};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::manager::{CommitOutcome, Session, SessionManager};
use crate::time::Timestamp;

pub use cookie::Key as SigningKey;
pub use cookie::SameSite as CookieSameSite;

/// Longest cookie value looked at; anything longer is ignored unread.
const MAX_COOKIE_VALUE: usize = 256;

type ErrorHandler = Arc<dyn Fn(&Error, Option<&SessionId>) -> StatusCode + Send + Sync>;

struct Settings<C: Codec> {
    manager: SessionManager<C>,
    name: Cow<'static, str>,
    domain: Option<String>,
    path: String,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    partitioned: bool,
    persistent: bool,
    keys: Vec<Key>,
    on_error: ErrorHandler,
}

/// Adds sessions to a tower service. Build it with [`SessionLayer::builder`].
pub struct SessionLayer<C: Codec = MessagePack> {
    settings: Arc<Settings<C>>,
}

impl<C: Codec> Clone for SessionLayer<C> {
    fn clone(&self) -> Self {
        Self {
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<C: Codec> fmt::Debug for SessionLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("SessionLayer")
            .field("manager", &s.manager)
            .field("cookie", &s.name)
            .field("domain", &s.domain)
            .field("path", &s.path)
            .field("secure", &s.secure)
            .field("http_only", &s.http_only)
            .field("same_site", &s.same_site)
            .field("partitioned", &s.partitioned)
            .field("persistent", &s.persistent)
            .field("signing_keys", &s.keys.len())
            .finish_non_exhaustive()
    }
}

/// Configures a [`SessionLayer`]; [`build`](Self::build) refuses unsafe cookie settings.
#[must_use]
pub struct SessionLayerBuilder<C: Codec> {
    settings: Settings<C>,
}

impl<C: Codec> fmt::Debug for SessionLayerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayerBuilder")
            .field("cookie", &self.settings.name)
            .finish_non_exhaustive()
    }
}

fn default_error_handler(error: &Error, id: Option<&SessionId>) -> StatusCode {
    tracing::error!(session = ?id, %error, "session commit failed");
    StatusCode::INTERNAL_SERVER_ERROR
}

impl<C: Codec> SessionLayer<C> {
    /// Starts configuring a layer over `manager`. Defaults: cookie `session`, `Path=/`,
    /// `Secure`, `HttpOnly`, `SameSite=Lax`, persistent (carries the session's deadline),
    /// unsigned.
    pub fn builder(manager: SessionManager<C>) -> SessionLayerBuilder<C> {
        SessionLayerBuilder {
            settings: Settings {
                manager,
                name: Cow::Borrowed("session"),
                domain: None,
                path: "/".into(),
                secure: true,
                http_only: true,
                same_site: SameSite::Lax,
                partitioned: false,
                persistent: true,
                keys: Vec::new(),
                on_error: Arc::new(default_error_handler),
            },
        }
    }
}

impl<C: Codec> SessionLayerBuilder<C> {
    /// The cookie's name. A `__Host-` name forces `Secure`, `Path=/` and no `Domain`; a
    /// `__Secure-` name forces `Secure` ([`build`](Self::build) refuses anything else).
    pub fn cookie_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// The cookie's `Domain` (default: none, so only the exact host gets it).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.settings.domain = Some(domain.into());
        self
    }

    /// The cookie's `Path` (default `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.settings.path = path.into();
        self
    }

    /// Whether the cookie is `Secure` (HTTPS only; default true).
    pub fn secure(mut self, secure: bool) -> Self {
        self.settings.secure = secure;
        self
    }

    /// Whether the cookie is `HttpOnly` (hidden from scripts; default true).
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.settings.http_only = http_only;
        self
    }

    /// The cookie's `SameSite` (default `Lax`). `None` requires `Secure`.
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.settings.same_site = same_site;
        self
    }

    /// Whether the cookie is `Partitioned` (CHIPS; requires `Secure`; default false).
    pub fn partitioned(mut self, partitioned: bool) -> Self {
        self.settings.partitioned = partitioned;
        self
    }

    /// Persistent cookies carry the session's absolute deadline (`Max-Age`, `Expires`);
    /// browser-session cookies (false) vanish when the browser closes. Default true.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.settings.persistent = persistent;
        self
    }

    /// Signs cookies with HMAC-SHA256. The first key signs; every key is accepted when
    /// verifying, so a new key can be put first while old cookies stay valid, and the old
    /// key dropped once they have expired.
    pub fn signed(mut self, keys: Vec<Key>) -> Self {
        self.settings.keys = keys;
        self
    }

    /// Decides the response status when committing the session fails. It gets the error and
    /// the masked id; the default logs both and answers 500.
    pub fn error_handler(
        mut self,
        handler: impl Fn(&Error, Option<&SessionId>) -> StatusCode + Send + Sync + 'static,
    ) -> Self {
        self.settings.on_error = Arc::new(handler);
        self
    }

    /// Checks the cookie settings and builds the layer.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty or invalid cookie name, a `__Host-` cookie that is not
    /// `Secure`, has a `Domain` or a `Path` other than `/`, a `__Secure-`, `SameSite=None` or
    /// `Partitioned` cookie that is not `Secure`, or a path not starting with `/`.
    pub fn build(self) -> Result<SessionLayer<C>> {
        let s = &self.settings;
        let bad = |why: &'static str| Err(Error::Config(why.into()));
        let valid_name = !s.name.is_empty()
            && s.name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !valid_name {
            return bad("the cookie name must be a non-empty token (no separators or spaces)");
        }
        if !s.path.starts_with('/') || s.path.contains(';') {
            return bad("the cookie path must start with `/` and hold no `;`");
        }
        if s.name.starts_with("__Host-") {
            if !s.secure {
                return bad("a `__Host-` cookie must be Secure");
            }
            if s.domain.is_some() {
                return bad("a `__Host-` cookie must not have a Domain");
            }
            if s.path != "/" {
                return bad("a `__Host-` cookie must have Path=/");
            }
        }
        if s.name.starts_with("__Secure-") && !s.secure {
            return bad("a `__Secure-` cookie must be Secure");
        }
        if s.same_site == SameSite::None && !s.secure {
            return bad("a SameSite=None cookie must be Secure");
        }
        if s.partitioned && !s.secure {
            return bad("a Partitioned cookie must be Secure");
        }
        Ok(SessionLayer {
            settings: Arc::new(self.settings),
        })
    }
}

impl<C: Codec> Settings<C> {
    /// The session id the request carries, if one is well formed (and correctly signed).
    fn incoming(&self, headers: &HeaderMap) -> Option<SessionId> {
        for header in headers.get_all(COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            for cookie in Cookie::split_parse(text).flatten() {
                if cookie.name() != self.name || cookie.value().len() > MAX_COOKIE_VALUE {
                    continue;
                }
                let value = if self.keys.is_empty() {
                    Some(cookie.value().to_owned())
                } else {
                    self.verify(cookie.into_owned())
                };
                if let Some(id) = value.and_then(|v| v.parse::<SessionId>().ok()) {
                    return Some(id);
                }
            }
        }
        None
    }

    fn verify(&self, cookie: Cookie<'static>) -> Option<String> {
        let mut jar = CookieJar::new();
        jar.add_original(cookie);
        self.keys
            .iter()
            .find_map(|key| jar.signed(key).get(&self.name))
            .map(|c| c.value().to_owned())
    }

    fn base_cookie(&self, value: String) -> Cookie<'static> {
        let mut cookie = Cookie::build((self.name.to_string(), value))
            .path(self.path.clone())
            .secure(self.secure)
            .http_only(self.http_only)
            .same_site(self.same_site)
            .partitioned(self.partitioned)
            .build();
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.clone());
        }
        cookie
    }

    fn set_cookie(&self, id: &SessionId, expires_at: Timestamp) -> Cookie<'static> {
        let mut cookie = self.base_cookie(id.expose().to_owned());
        if self.persistent {
            // Round up: a deadline 800 ms away must not become `Max-Age=0`, which deletes.
            let millis = Timestamp::now().until(expires_at).as_millis();
            let seconds = i64::try_from(millis.div_ceil(1000)).unwrap_or(i64::MAX);
            cookie.set_max_age(cookie::time::Duration::seconds(seconds));
            let at = cookie::time::OffsetDateTime::from_unix_timestamp(
                expires_at.unix_millis().div_euclid(1000) + 1,
            );
            if let Ok(at) = at {
                cookie.set_expires(at);
            }
        }
        match self.keys.first() {
            Some(key) => {
                let mut jar = CookieJar::new();
                jar.signed_mut(key).add(cookie);
                jar.delta()
                    .next()
                    .cloned()
                    .unwrap_or_else(|| self.base_cookie(String::new()))
            }
            None => cookie,
        }
    }

    fn removal_cookie(&self) -> Cookie<'static> {
        let mut cookie = self.base_cookie(String::new());
        cookie.make_removal();
        cookie
    }

    fn write(&self, outcome: &CommitOutcome, headers: &mut HeaderMap) {
        let cookie = match outcome {
            CommitOutcome::SetCookie { id, expires_at } => self.set_cookie(id, *expires_at),
            CommitOutcome::RemoveCookie => self.removal_cookie(),
            _ => return,
        };
        let Ok(value) = HeaderValue::from_str(&cookie.to_string()) else {
            return;
        };
        headers.append(SET_COOKIE, value);
        headers.append(VARY, HeaderValue::from_static("Cookie"));
        headers.append(
            CACHE_CONTROL,
            HeaderValue::from_static("no-cache=\"Set-Cookie\""),
        );
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
pub struct SessionService<S, C: Codec = MessagePack> {
    inner: S,
    layer: SessionLayer<C>,
}

impl<S: Clone, C: Codec> Clone for SessionService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, C: Codec> fmt::Debug for SessionService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
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
        let session = settings
            .manager
            .session_for(settings.incoming(req.headers()));
        req.extensions_mut().insert(session.clone());
        // The service that was polled ready handles this request; the clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(req).await?;
            match session.commit().await {
                Ok(outcome) => settings.write(&outcome, response.headers_mut()),
                Err(error) => {
                    let status = (settings.on_error)(&error, session.incoming_id());
                    let mut failed = Response::new(ResBody::default());
                    *failed.status_mut() = status;
                    return Ok(failed);
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
