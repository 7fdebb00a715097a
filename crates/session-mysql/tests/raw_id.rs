//! The raw session id never reaches the database: sessions made, filled, owned and rotated
//! through the manager leave rows keyed by the SHA-256 of their ids, and no column of any row
//! holds an id, as text or as its decoded bytes.

mod common;

use base64::Engine as _;
use session_core::{SessionId, SessionStore};
use session_kit::{CommitOutcome, SessionManager};
use session_mysql::sqlx;

/// The forms an id could take at rest, as upper-case hex (how the rows are read back).
fn forms(id: &SessionId) -> Vec<String> {
    let text = id.expose();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("a session id is base64url");
    [text.as_bytes().to_vec(), raw]
        .iter()
        .map(|bytes| bytes.iter().map(|b| format!("{b:02X}")).collect())
        .collect()
}

fn set_cookie(outcome: CommitOutcome) -> SessionId {
    match outcome {
        CommitOutcome::SetCookie { id, .. } => id,
        other => panic!("expected a new cookie, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_row_holds_a_raw_session_id() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let table = common::unique_name("rawid");
    let _guard = common::drop_table(&url, &table);
    let store = common::store(&url, &table).await;
    let manager = SessionManager::builder(store.clone())
        .build()
        .expect("manager");

    let mut ids = Vec::new();
    for i in 0..3 {
        let session = manager.session(None);
        session.insert("n", &i).await.expect("insert");
        let id = set_cookie(session.commit().await.expect("commit"));
        ids.push(id);
    }
    // A login: the owner is set and the id rotated.
    let session = manager.session(Some(ids[0].expose()));
    session.set_owner(Some("ann".into())).await.expect("owner");
    session.rotate().await.expect("rotate");
    let rotated = set_cookie(session.commit().await.expect("commit"));
    ids.push(rotated.clone());

    let rows: Vec<(Vec<u8>, String)> = sqlx::query_as(&format!(
        "SELECT `key`, CONCAT_WS('|', HEX(`key`), HEX(`data`), `created_at`, `expires_at`, `version`, HEX(IFNULL(`owner`, '')))
         FROM `{table}`"
    ))
    .fetch_all(store.pool())
    .await
    .expect("read every row");
    assert_eq!(rows.len(), 3, "three sessions, one of them rotated");
    let mut keys: Vec<Vec<u8>> = rows.iter().map(|(key, _)| key.clone()).collect();
    keys.sort();
    let mut expected: Vec<Vec<u8>> = [&ids[1], &ids[2], &rotated]
        .iter()
        .map(|id| id.key().as_bytes().to_vec())
        .collect();
    expected.sort();
    assert_eq!(
        keys, expected,
        "rows are keyed by the SHA-256 of the live ids"
    );
    for id in &ids {
        for form in forms(id) {
            for (_, row) in &rows {
                assert!(!row.contains(&form), "a row holds a raw session id: {row}");
            }
        }
    }
    assert_eq!(store.count().await.expect("count"), 3);
}
