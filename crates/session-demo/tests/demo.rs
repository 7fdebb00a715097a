//! The demo app through real HTTP, as a browser would use it.

use std::sync::Arc;

use session_demo::app;
use session_kit::{SessionStore, StoreUrl};

async fn start() -> (String, Arc<dyn SessionStore>) {
    let store = StoreUrl::Memory.open().await.expect("store");
    let router = app(Arc::clone(&store), false).expect("app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    (base, store)
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client")
}

fn between<'a>(page: &'a str, start: &str, end: &str) -> &'a str {
    let from = page.find(start).map(|i| i + start.len()).expect("marker");
    let to = page[from..].find(end).expect("end marker") + from;
    &page[from..to]
}

#[tokio::test]
async fn count_login_rotate_logout() {
    let (base, store) = start().await;
    let b = browser();
    let page = b
        .get(&base)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert_eq!(between(&page, r#"<b id="visits">"#, "<"), "1");
    assert!(page.contains("(new: issued with this response)"));
    let page = b
        .get(&base)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert_eq!(between(&page, r#"<b id="visits">"#, "<"), "2");
    let before_login = between(&page, r#"<code id="sid">"#, "<").to_owned();
    assert!(
        before_login.ends_with('…') && before_login.chars().count() == 5,
        "the id is masked: {before_login}"
    );

    let page = b
        .post(format!("{base}/login"))
        .form(&[("name", "<ann>")])
        .send()
        .await
        .expect("login")
        .text()
        .await
        .expect("body");
    assert_eq!(
        between(&page, r#"<b id="user">"#, "<"),
        "&lt;ann&gt;",
        "names are escaped"
    );
    assert_eq!(
        between(&page, r#"<b id="visits">"#, "<"),
        "3",
        "data survives rotation"
    );
    assert_ne!(
        between(&page, r#"<code id="sid">"#, "<"),
        before_login,
        "login rotates the id"
    );
    assert_eq!(store.list_by_owner("<ann>").await.expect("owner").len(), 1);

    let page = b
        .post(format!("{base}/logout"))
        .send()
        .await
        .expect("logout")
        .text()
        .await
        .expect("body");
    assert!(page.contains(r#"id="login""#), "logged out");
    assert_eq!(
        between(&page, r#"<b id="visits">"#, "<"),
        "1",
        "a fresh session after logout"
    );
    assert!(
        store
            .list_by_owner("<ann>")
            .await
            .expect("owner")
            .is_empty()
    );
}

#[tokio::test]
async fn sign_out_everywhere_ends_other_devices() {
    let (base, store) = start().await;
    let (laptop, phone) = (browser(), browser());
    for b in [&laptop, &phone] {
        b.post(format!("{base}/login"))
            .form(&[("name", "bob")])
            .send()
            .await
            .expect("login");
    }
    assert_eq!(store.list_by_owner("bob").await.expect("list").len(), 2);
    laptop
        .post(format!("{base}/everywhere"))
        .send()
        .await
        .expect("everywhere");
    assert!(store.list_by_owner("bob").await.expect("list").is_empty());
    let page = phone
        .get(&base)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains(r#"id="login""#),
        "the phone is signed out too"
    );
}

/// The whole flow on each persistent store: files and hybrid on a temp dir, and the
/// server-backed ones where their servers are configured.
#[tokio::test]
async fn the_flow_works_on_every_store() {
    let dir = std::env::temp_dir().join(format!("session-demo-{}", std::process::id()));
    // As `SESSION_STORE` would give them, through the facade's `store_from_url`.
    let mut choices = vec![
        format!("files:{}", dir.join("files").display()),
        format!("hybrid:{}", dir.join("hybrid").display()),
        format!("sqlite:{}", dir.join("sessions.db").display()),
    ];
    choices.extend(session_core::conformance::service_url("DATABASE_URL"));
    choices.extend(session_core::conformance::service_url("MYSQL_URL"));
    choices.extend(session_core::conformance::service_url("REDIS_URL"));
    for choice in choices {
        let store = session_kit::store_from_url(&choice)
            .await
            .unwrap_or_else(|e| panic!("{choice}: {e}"));
        let router = app(Arc::clone(&store), false).expect("app");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
        let b = browser();
        b.get(&base).send().await.expect("get");
        let owner = format!("demo-{}", std::process::id());
        let page = b
            .post(format!("{base}/login"))
            .form(&[("name", owner.as_str())])
            .send()
            .await
            .expect("login")
            .text()
            .await
            .expect("body");
        assert_eq!(between(&page, r#"<b id="visits">"#, "<"), "2", "{choice}");
        assert_eq!(
            store.list_by_owner(&owner).await.expect("owner").len(),
            1,
            "{choice}"
        );
        let page = b
            .post(format!("{base}/logout"))
            .send()
            .await
            .expect("logout")
            .text()
            .await
            .expect("body");
        assert!(page.contains(r#"id="login""#), "{choice}");
        assert!(
            store.list_by_owner(&owner).await.expect("owner").is_empty(),
            "{choice}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
