//! The demo in a real browser: headless Chromium driven through chromedriver walks the pages
//! on `http://localhost` (first visit, counter, login with rotation, a second browser signed
//! in as the same user, "sign out everywhere", logout) and checks the cookie as the browser
//! stored it. On a failure both browsers' screenshots are saved and their paths printed.
//!
//! Finds `chromedriver` and `chromium` (or `google-chrome`) on `PATH`, or at `CHROMEDRIVER`
//! and `CHROME`; without them the tests skip visibly, and fail under
//! `SESSION_REQUIRE_SERVICES=1`.

use std::net::TcpStream;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt as _;
use session_core::conformance::skip_test;
use session_demo::app;
use session_kit::StoreUrl;

/// A program from `var`, else the first of `names` found on `PATH`.
fn program(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// chromedriver on a loopback port of its own choosing, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// Starts chromedriver with `--port=0` and reads the port it bound from its banner. (A
    /// port picked here and handed to it could be taken by another test's server before
    /// chromedriver bound it: a run on a cold machine once talked to such a port, which was
    /// gone by the time the second browser opened.)
    fn start(chromedriver: &Path) -> Self {
        let mut child = Command::new(chromedriver)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let stdout = child.stdout.take().expect("chromedriver's stdout is piped");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        // Reads the banner, then drains the pipe so chromedriver never blocks writing to it.
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut port_tx = Some(port_tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let port = line
                    .strip_prefix("ChromeDriver was started successfully on port ")
                    .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok());
                if let Some(port) = port
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(port);
                }
            }
        });
        let mut driver = Self {
            child,
            url: String::new(),
        };
        let port = port_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("chromedriver did not say which port it bound"));
        driver.url = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return driver;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("chromedriver did not listen on port {port}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser of its own (a fresh profile, so its own cookie jar). The profile directory must
/// outlive the session.
async fn browser(driver: &Driver, chrome: &Path, profile: &Path) -> Client {
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "binary": chrome,
            // As root in a closed network: no sandbox, and nothing that phones home.
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
            ],
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object literal")
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("open a Chromium session")
}

/// The demo on a free port, reached as `http://localhost:PORT`.
async fn demo(secure_cookie: bool) -> String {
    let store = StoreUrl::Memory.open().await.expect("store");
    let router = app(store, secure_cookie).expect("app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    format!("http://localhost:{port}/")
}

async fn text(client: &Client, id: &str) -> String {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id} on the page: {e}"))
        .text()
        .await
        .expect("element text")
}

async fn visits(client: &Client) -> u64 {
    text(client, "visits").await.parse().expect("a count")
}

async fn signed_in_as(client: &Client) -> Option<String> {
    match client.find(Locator::Id("user")).await {
        Ok(user) => Some(user.text().await.expect("user text")),
        Err(_) => None,
    }
}

/// Clicks a form button and waits until the browser has left the page: every button of the
/// demo posts a form and is answered with a redirect, and reading the page before the new one
/// replaced it would see the old state (a flake seen on a loaded machine).
async fn click(client: &Client, id: &str) {
    let page = client
        .find(Locator::Css("body"))
        .await
        .expect("the page has a body");
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id} on the page: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click #{id}: {e}"));
    // The old body goes stale once the next page is loaded.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while page.tag_name().await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "clicking #{id} did not load a new page within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn log_in(client: &Client, name: &str) {
    client
        .find(Locator::Id("name"))
        .await
        .expect("the login form")
        .send_keys(name)
        .await
        .expect("type the name");
    click(client, "login").await;
}

/// Seconds until the deadline the page shows, from "in 0h 29m 59s".
async fn page_expiry_secs(client: &Client) -> u64 {
    let shown = text(client, "expires").await;
    let parts: Vec<u64> = shown
        .trim_start_matches("in ")
        .split_whitespace()
        .map(|part| {
            part.trim_end_matches(['h', 'm', 's'])
                .parse()
                .unwrap_or_else(|_| panic!("an expiry like `in 0h 29m 59s`: {shown}"))
        })
        .collect();
    assert_eq!(parts.len(), 3, "{shown}");
    parts[0] * 3600 + parts[1] * 60 + parts[2]
}

/// The session cookie as the browser stored it, checked against the rules its name and the
/// demo's configuration impose; returns its value.
async fn session_cookie(client: &Client, secure: bool) -> String {
    let cookies = client
        .get_all_cookies()
        .await
        .expect("the browser's cookies");
    assert_eq!(cookies.len(), 1, "one cookie, the session's: {cookies:?}");
    let cookie = &cookies[0];
    let name = cookie.name();
    assert!(
        cookie.http_only() == Some(true),
        "HttpOnly, so page scripts cannot read it: {cookie:?}"
    );
    let from_script = client
        .execute("return document.cookie", vec![])
        .await
        .expect("run a script");
    assert_eq!(
        from_script,
        serde_json::json!(""),
        "the page's scripts see no cookie"
    );
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Lax"),
        "SameSite=Lax: {cookie:?}"
    );
    assert_eq!(
        cookie.secure(),
        Some(secure),
        "Secure as configured: {cookie:?}"
    );
    if name.starts_with("__Host-") {
        assert_eq!(cookie.secure(), Some(true), "__Host- needs Secure");
        assert_eq!(cookie.path(), Some("/"), "__Host- needs Path=/");
        assert!(
            cookie.domain().is_none_or(|d| !d.starts_with('.')),
            "__Host- is host-only: {cookie:?}"
        );
    } else if name.starts_with("__Secure-") {
        assert_eq!(cookie.secure(), Some(true), "__Secure- needs Secure");
    }
    // Persistent: the browser keeps it at least as long as the session lives (the idle
    // deadline the page shows) and no longer than the demo's 24 h absolute lifetime. (The
    // layer sends the absolute deadline, not the idle one; the server ends the session.)
    let expires = cookie
        .expires_datetime()
        .unwrap_or_else(|| panic!("a persistent cookie: {cookie:?}"))
        .unix_timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let session_ends = i64::try_from(now + page_expiry_secs(client).await).expect("a time");
    let lifetime_ends = i64::try_from(now + 24 * 3600).expect("a time");
    assert!(
        session_ends - 5 <= expires && expires <= lifetime_ends + 5,
        "the cookie lasts from the session's end ({session_ends}) to at most the lifetime's ({lifetime_ends}): {expires}"
    );
    cookie.value().to_owned()
}

async fn walk(base: &str, first: &Client, second: &Client, secure: bool) {
    first.goto(base).await.expect("first visit");
    assert_eq!(visits(first).await, 1);
    let anonymous = session_cookie(first, secure).await;

    first.refresh().await.expect("reload");
    assert_eq!(visits(first).await, 2, "the counter counts");
    assert_eq!(
        session_cookie(first, secure).await,
        anonymous,
        "same session, same id"
    );

    log_in(first, "ann").await;
    assert_eq!(signed_in_as(first).await.as_deref(), Some("ann"));
    assert_eq!(visits(first).await, 3, "the data survives the login");
    let signed_in = session_cookie(first, secure).await;
    assert_ne!(signed_in, anonymous, "the id rotates at login");

    second.goto(base).await.expect("second browser's visit");
    assert_eq!(visits(second).await, 1, "a browser of its own");
    log_in(second, "ann").await;
    assert_eq!(signed_in_as(second).await.as_deref(), Some("ann"));
    let second_id = session_cookie(second, secure).await;
    assert_ne!(second_id, signed_in, "two sessions for one user");

    click(first, "everywhere").await;
    assert_eq!(signed_in_as(first).await, None, "signed out here");
    second.refresh().await.expect("reload the second browser");
    assert_eq!(
        signed_in_as(second).await,
        None,
        "and in the other browser too"
    );
    assert_eq!(visits(second).await, 1, "its session was ended, not kept");

    log_in(second, "ann").await;
    assert_eq!(signed_in_as(second).await.as_deref(), Some("ann"));
    let before_logout = session_cookie(second, secure).await;
    click(second, "logout").await;
    assert_eq!(signed_in_as(second).await, None, "logged out");
    assert_eq!(visits(second).await, 1, "a fresh session after logout");
    assert_ne!(
        session_cookie(second, secure).await,
        before_logout,
        "the old id is not reused"
    );
}

/// Saves each browser's screenshot and returns the paths.
async fn screenshots(test: &str, browsers: &[&Client]) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-failures");
    let _ = std::fs::create_dir_all(&dir);
    let mut saved = Vec::new();
    for (n, client) in browsers.iter().enumerate() {
        if let Ok(png) = client.screenshot().await {
            let path = dir.join(format!("{test}-browser{}.png", n + 1));
            if std::fs::write(&path, png).is_ok() {
                saved.push(path);
            }
        }
    }
    saved
}

async fn run(test: &str, secure: bool) {
    let chromedriver = program("CHROMEDRIVER", &["chromedriver"]);
    let chrome = program("CHROME", &["chromium", "google-chrome", "chromium-browser"]);
    let (Some(chromedriver), Some(chrome)) = (chromedriver, chrome) else {
        skip_test(
            "no headless browser: chromedriver and chromium are not on PATH (Debian: apt-get install chromium chromium-driver)",
        );
        return;
    };
    let driver = Driver::start(&chromedriver);
    let profiles = [
        tempfile::tempdir().expect("profile dir"),
        tempfile::tempdir().expect("profile dir"),
    ];
    let first = browser(&driver, &chrome, profiles[0].path()).await;
    let second = browser(&driver, &chrome, profiles[1].path()).await;
    let base = demo(secure).await;
    let outcome = AssertUnwindSafe(walk(&base, &first, &second, secure))
        .catch_unwind()
        .await;
    if let Err(panic) = outcome {
        let saved = screenshots(test, &[&first, &second]).await;
        eprintln!("screenshots of the failure: {saved:?}");
        let _ = first.close().await;
        let _ = second.close().await;
        std::panic::resume_unwind(panic);
    }
    first.close().await.expect("close the first browser");
    second.close().await.expect("close the second browser");
}

/// The demo as `cargo run -p session-demo` serves it (`SESSION_SECURE_COOKIE` unset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_walks_the_demo_as_served_by_default() {
    run("default", false).await;
}

/// The demo as served behind HTTPS (`SESSION_SECURE_COOKIE=1`); Chromium keeps `Secure`
/// cookies from `http://localhost`, which it treats as a secure origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_walks_the_demo_with_a_secure_cookie() {
    run("secure", true).await;
}
