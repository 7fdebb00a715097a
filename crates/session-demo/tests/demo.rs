//! The demo app through real HTTP, as a browser would use it.

use std::sync::Arc;

use session_demo::{StoreChoice, app};
use session_kit::SessionStore;

async fn start() -> (String, Arc<dyn SessionStore>) {
    let store = StoreChoice::Memory.open().await.expect("store");
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

#[test]
fn store_choice_parses_and_refuses_unknown_values() {
    assert_eq!(
        StoreChoice::parse(None).expect("default"),
        StoreChoice::Memory
    );
    assert_eq!(
        StoreChoice::parse(Some("memory")).expect("memory"),
        StoreChoice::Memory
    );
    assert_eq!(
        StoreChoice::parse(Some("files:/tmp/s")).expect("files"),
        StoreChoice::Files("/tmp/s".into())
    );
    assert_eq!(
        StoreChoice::parse(Some("hybrid:/tmp/h")).expect("hybrid"),
        StoreChoice::Hybrid("/tmp/h".into())
    );
    assert_eq!(
        StoreChoice::parse(Some("sqlite:/tmp/s.db")).expect("sqlite"),
        StoreChoice::Sqlite("/tmp/s.db".into())
    );
    assert_eq!(
        StoreChoice::parse(Some("sqlite://rel/s.db")).expect("sqlite"),
        StoreChoice::Sqlite("rel/s.db".into())
    );
    assert!(matches!(
        StoreChoice::parse(Some("postgres://u@h/db")),
        Ok(StoreChoice::Postgres(_))
    ));
    for url in ["mysql://root@h/db", "mariadb://root@h/db"] {
        assert!(matches!(
            StoreChoice::parse(Some(url)),
            Ok(StoreChoice::MySql(_))
        ));
    }
    assert!(matches!(
        StoreChoice::parse(Some("redis://127.0.0.1")),
        Ok(StoreChoice::Redis(_))
    ));
    for bad in ["mongo://x", "files:", "hybrid:", "sqlite:", "disk"] {
        assert!(StoreChoice::parse(Some(bad)).is_err(), "{bad}");
    }
}

/// The whole flow on each persistent store: files and hybrid on a temp dir, and the
/// server-backed ones where their servers are configured.
#[tokio::test]
async fn the_flow_works_on_every_store() {
    let dir = std::env::temp_dir().join(format!("session-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the test directory");
    let mut choices = vec![
        StoreChoice::Files(dir.join("files")),
        StoreChoice::Hybrid(dir.join("hybrid")),
        StoreChoice::Sqlite(dir.join("sessions.db")),
    ];
    if let Some(url) = session_core::conformance::service_url("DATABASE_URL") {
        choices.push(StoreChoice::Postgres(url));
    }
    if let Some(url) = session_core::conformance::service_url("MYSQL_URL") {
        choices.push(StoreChoice::MySql(url));
    }
    if let Some(url) = session_core::conformance::service_url("REDIS_URL") {
        choices.push(StoreChoice::Redis(url));
    }
    for choice in choices {
        let store = choice
            .open()
            .await
            .unwrap_or_else(|e| panic!("{choice:?}: {e}"));
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
        assert_eq!(between(&page, r#"<b id="visits">"#, "<"), "2", "{choice:?}");
        assert_eq!(
            store.list_by_owner(&owner).await.expect("owner").len(),
            1,
            "{choice:?}"
        );
        let page = b
            .post(format!("{base}/logout"))
            .send()
            .await
            .expect("logout")
            .text()
            .await
            .expect("body");
        assert!(page.contains(r#"id="login""#), "{choice:?}");
        assert!(
            store.list_by_owner(&owner).await.expect("owner").is_empty(),
            "{choice:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
