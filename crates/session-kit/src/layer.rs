//! The tower layer and axum extractor (feature `axum`): sessions in the HTTP cycle.
//!
//! ```
//! use axum::{Router, routing::get};
//! use session_kit::{Session, SessionManager};
//! use session_kit::SessionLayer;
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
//! Per request the layer:
//! - reads the session cookie from the `Cookie` header as bytes, so a cookie elsewhere in
//!   the header with non-ASCII bytes does not hide it. A malformed, oversized, badly signed
//!   or unknown value starts a fresh session: it never reaches the store as a query, is never
//!   adopted as an id, and never panics. When the header holds the session cookie's name more
//!   than once (a cookie tossed from a subdomain, a stale one with a longer `Path`), each
//!   well-formed, correctly signed value is tried in order, up to
//!   [`MAX_INCOMING_IDS`], and the first live one is the session;
//! - puts a lazy [`Session`] handle in the request extensions (the axum extractor takes it
//!   from there), so a request that never touches its session does no store I/O;
//! - once the inner service has produced the response head, commits the session exactly once
//!   and writes `Set-Cookie` only when the id is new or rotated, or the session ended (then an
//!   expired removal cookie with the same attributes). A persistent cookie carries the
//!   session's absolute deadline, which never moves; the idle timeout is enforced on the
//!   server, so a busy session does not re-send its cookie on every request;
//! - for a response with a 5xx status, commits nothing (unless
//!   [`commit_on_server_error`](SessionLayerBuilder::commit_on_server_error) is set): a
//!   handler that failed half-way must not persist half its changes. What `destroy` and
//!   `rotate` already did stands, and the cookie follows it;
//! - marks every response whose session was used `Vary: Cookie`, and those that set a cookie
//!   also `Cache-Control: no-cache="Set-Cookie"`, so no shared cache hands one user's page or
//!   cookie to another;
//! - on a commit error, calls the error handler (default: log with the masked id, answer
//!   [`Error::status_code`]: 413, 503 or 500) and sends no cookie: the stored session is as
//!   it was before the request, and the client keeps the cookie it has.

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
use crate::manager::{CommitOutcome, MAX_INCOMING_IDS, Session, SessionManager};
use session_core::SessionId;
use session_core::Timestamp;
use session_core::{Error, Result};

pub use cookie::Key as SigningKey;
pub use cookie::SameSite as CookieSameSite;

/// Longest cookie value looked at; anything longer is ignored unread.
const MAX_COOKIE_VALUE: usize = 256;

/// The cookie name [`SessionLayer::builder`] starts with. The `__Host-` prefix makes browsers
/// refuse the cookie unless it is `Secure`, has `Path=/` and no `Domain`, so a sibling
/// subdomain or a plain-HTTP page cannot plant one (OWASP ASVS 3.3.1). Browsers treat
/// `http://localhost` as secure, so it works in development too.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-session";

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
    commit_on_server_error: bool,
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
            .field("commit_on_server_error", &s.commit_on_server_error)
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
    let source: &(dyn std::error::Error + 'static) = error;
    tracing::error!(session = ?id, error = source, "session commit failed");
    error.status_code()
}

/// Whether `name` starts with `prefix`, ignoring ASCII case, as browsers match cookie prefixes.
fn has_prefix(name: &str, prefix: &str) -> bool {
    name.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

impl<C: Codec> SessionLayer<C> {
    /// Starts configuring a layer over `manager`. Defaults: cookie [`DEFAULT_COOKIE_NAME`]
    /// (`__Host-session`), `Path=/`, no `Domain`, `Secure`, `HttpOnly`, `SameSite=Lax`,
    /// persistent (carries the session's deadline), unsigned, nothing committed for 5xx
    /// responses.
    pub fn builder(manager: SessionManager<C>) -> SessionLayerBuilder<C> {
        SessionLayerBuilder {
            settings: Settings {
                manager,
                name: Cow::Borrowed(DEFAULT_COOKIE_NAME),
                domain: None,
                path: "/".into(),
                secure: true,
                http_only: true,
                same_site: SameSite::Lax,
                partitioned: false,
                persistent: true,
                keys: Vec::new(),
                on_error: Arc::new(default_error_handler),
                commit_on_server_error: false,
            },
        }
    }
}

impl<C: Codec> SessionLayerBuilder<C> {
    /// The cookie's name (default [`DEFAULT_COOKIE_NAME`]). A `__Host-` name forces `Secure`,
    /// `Path=/` and no `Domain`; a `__Secure-` name forces `Secure` ([`build`](Self::build)
    /// refuses anything else). Prefixes are matched ignoring case, as browsers do. A plain-HTTP
    /// deployment that turns `Secure` off needs a name without a prefix.
    pub fn cookie_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// The cookie's `Domain` (default: none, so only the exact host gets it). Must be ASCII
    /// (punycode for international names) without spaces, `;` or `,`.
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

    /// Whether a response with a 5xx status still commits the session's changes (default
    /// false: a handler that failed half-way persists none of them, as tower-sessions does).
    /// `destroy` and `rotate` act at once either way.
    pub fn commit_on_server_error(mut self, commit: bool) -> Self {
        self.settings.commit_on_server_error = commit;
        self
    }

    /// Decides the response status when committing the session fails. It gets the error and
    /// the masked id; the default logs both and answers [`Error::status_code`].
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
    /// `Partitioned` cookie that is not `Secure`, a path not starting with `/` or holding `;`
    /// or control characters, a domain that is empty, not ASCII, or holds spaces, `;`, `,` or
    /// control characters, or any other cookie that would not fit in a `Set-Cookie` header.
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
        let valid_path = s.path.starts_with('/')
            && s.path
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b';');
        if !valid_path {
            return bad(
                "the cookie path must start with `/` and hold only printable ASCII other than `;`",
            );
        }
        if let Some(domain) = &s.domain {
            let valid_domain = !domain.is_empty()
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b';' && b != b',');
            if !valid_domain {
                return bad(
                    "the cookie domain must be non-empty ASCII (punycode) without spaces, `;` or `,`",
                );
            }
        }
        if has_prefix(&s.name, "__Host-") {
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
        if has_prefix(&s.name, "__Secure-") && !s.secure {
            return bad("a `__Secure-` cookie must be Secure");
        }
        if s.same_site == SameSite::None && !s.secure {
            return bad("a SameSite=None cookie must be Secure");
        }
        if s.partitioned && !s.secure {
            return bad("a Partitioned cookie must be Secure");
        }
        // Only the id and the deadline vary between the cookies written later, and both are
        // plain ASCII, so if these two encode, every later one does.
        let sample = s.set_cookie(&SessionId::generate(), Timestamp::now());
        for cookie in [sample, s.removal_cookie()] {
            if HeaderValue::from_str(&cookie.to_string()).is_err() {
                return bad("the cookie does not fit in a Set-Cookie header");
            }
        }
        Ok(SessionLayer {
            settings: Arc::new(self.settings),
        })
    }
}

impl<C: Codec> Settings<C> {
    /// The well-formed (and, when signing is on, correctly signed) session ids the request
    /// carries, in header order, at most [`MAX_INCOMING_IDS`].
    fn incoming(&self, headers: &HeaderMap) -> Vec<SessionId> {
        let mut ids = Vec::new();
        for value in cookie_values(headers, &self.name) {
            if value.len() > MAX_COOKIE_VALUE {
                continue;
            }
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            let value = if self.keys.is_empty() {
                Some(Cow::Borrowed(value))
            } else {
                self.verify(Cookie::new(self.name.to_string(), value.to_owned()))
                    .map(Cow::Owned)
            };
            if let Some(id) = value.and_then(|v| v.parse::<SessionId>().ok()) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
                if ids.len() == MAX_INCOMING_IDS {
                    break;
                }
            }
        }
        ids
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

    #[expect(
        clippy::expect_used,
        reason = "a jar gives back the cookie just added to it"
    )]
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
                    .expect("the signed cookie just added")
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
            // `build` proved every cookie of these settings encodes; never drop one silently.
            tracing::error!(cookie = %self.name, "the session cookie could not be encoded");
            return;
        };
        headers.append(SET_COOKIE, value);
        add_vary_cookie(headers);
        headers.append(
            CACHE_CONTROL,
            HeaderValue::from_static("no-cache=\"Set-Cookie\""),
        );
    }
}

/// Adds `Vary: Cookie` unless the response already varies on it (or on everything).
fn add_vary_cookie(headers: &mut HeaderMap) {
    let varies = headers.get_all(VARY).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|field| {
            let field = field.trim_ascii();
            field == b"*" || field.eq_ignore_ascii_case(b"cookie")
        })
    });
    if !varies {
        headers.append(VARY, HeaderValue::from_static("Cookie"));
    }
}

/// The values of every cookie called `name` in the request's `Cookie` headers, in order.
///
/// Works on bytes: `HeaderValue::to_str` refuses a whole header for one non-ASCII byte, and a
/// `lang=é` set by a script or a sibling subdomain must not log the user out. Pairs are split
/// at `;`, names and values trimmed of spaces and tabs (RFC 6265, section 5.4 as browsers send
/// it); a pair without `=` is skipped.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|header| header.as_bytes().split(|b| *b == b';'))
        .filter_map(move |pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            let (key, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            (key == name.as_bytes()).then_some(value)
        })
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
            .session_for_ids(settings.incoming(req.headers()));
        req.extensions_mut().insert(session.clone());
        // The service that was polled ready handles this request; the clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(req).await?;
            let outcome = if response.status().is_server_error() && !settings.commit_on_server_error
            {
                Ok(session.discard().await)
            } else {
                session.commit().await
            };
            match outcome {
                Ok(outcome) => settings.write(&outcome, response.headers_mut()),
                Err(error) => {
                    let status = (settings.on_error)(&error, session.incoming_id());
                    let mut failed = Response::new(ResBody::default());
                    *failed.status_mut() = status;
                    response = failed;
                }
            }
            if session.was_used() {
                add_vary_cookie(response.headers_mut());
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
