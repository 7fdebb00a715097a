//! The demo app through real HTTP, as a browser would use it.

use std::sync::Arc;

use session_demo::{actix_server, app};
use session_kit::{SessionStore, StoreUrl};

/// The web frameworks the demo runs on; every flow test runs on each.
const FRAMEWORKS: [Framework; 2] = [Framework::Axum, Framework::Actix];

#[derive(Debug, Clone, Copy)]
enum Framework {
    Axum,
    Actix,
}

/// Serves the demo over `store` on 127.0.0.1:0; returns its base URL.
fn serve(framework: Framework, store: Arc<dyn SessionStore>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    match framework {
        Framework::Axum => {
            let router = app(store, false).expect("app");
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
        }
        Framework::Actix => {
            let server = actix_server(store, false, listener).expect("actix app");
            // actix-web runs on its own system; the thread lives as long as the test binary.
            std::thread::spawn(move || actix_web::rt::System::new().block_on(server));
        }
    }
    base
}

async fn start(framework: Framework) -> (String, Arc<dyn SessionStore>) {
    let store = StoreUrl::Memory.open().await.expect("store");
    (serve(framework, Arc::clone(&store)), store)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_login_rotate_logout() {
    for framework in FRAMEWORKS {
        count_login_rotate_logout_on(framework).await;
    }
}

async fn count_login_rotate_logout_on(framework: Framework) {
    let (base, store) = start(framework).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_everywhere_ends_other_devices() {
    for framework in FRAMEWORKS {
        sign_out_everywhere_ends_other_devices_on(framework).await;
    }
}

async fn sign_out_everywhere_ends_other_devices_on(framework: Framework) {
    let (base, store) = start(framework).await;
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
        "{framework:?}: the phone is signed out too"
    );
}

/// The whole flow on each persistent store, on each framework: files and hybrid on a temp
/// dir, and the server-backed ones where their servers are configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    let mut runs = Vec::new();
    for choice in choices {
        // One open store per choice (a directory takes one open store), served by each
        // framework in turn.
        let store = session_kit::store_from_url(&choice)
            .await
            .unwrap_or_else(|e| panic!("{choice}: {e}"));
        for framework in FRAMEWORKS {
            runs.push((choice.clone(), framework, Arc::clone(&store)));
        }
    }
    for (choice, framework, store) in runs {
        let base = serve(framework, Arc::clone(&store));
        let choice = format!("{choice} on {framework:?}");
        let b = browser();
        b.get(&base).send().await.expect("get");
        let owner = format!("demo-{}-{framework:?}", std::process::id());
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
