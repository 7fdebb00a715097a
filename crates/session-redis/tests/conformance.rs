//! The shared conformance suite against the Redis at `REDIS_URL` (or in a container), each case under its own
//! random prefix, removed when the case ends: once with a pooled connection per operation
//! (the default), once on shared multiplexed connections (`multiplexed`).

use session_core::SessionId;
use session_core::conformance::{Fixture, Server, server_url};
use session_redis::RedisStore;
use session_redis::redis::{self, Commands};

fn store(url: &str, prefix: &str, multiplexed: usize) -> RedisStore {
    let built = RedisStore::builder()
        .url(url)
        .prefix(prefix)
        .max_data_len(Some(4096))
        .multiplexed(multiplexed)
        .build();
    match built {
        Ok(store) => store,
        Err(e) => panic!("building the store failed: {e}"),
    }
}

/// Deletes every key under the prefix when the case ends (on a thread of its own, since the
/// case's runtime is gone by then).
struct Cleanup {
    url: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<Vec<u8>> = match conn.scan_match(&pattern) {
            Ok(iter) => iter.collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<u64> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

async fn fixture(multiplexed: usize) -> Fixture {
    let Some(url) = server_url(Server::Redis) else {
        return Fixture::skipped("no Redis server");
    };
    // Hex of a random session key: unique per case and free of glob metacharacters.
    let prefix = format!(
        "conformance:{}:",
        &SessionId::generate().key().to_hex()[..16]
    );
    let reopen_url = url.clone();
    let reopen_prefix = prefix.clone();
    Fixture::new(store(&url, &prefix, multiplexed))
        .reopen(move || {
            let store = store(&reopen_url, &reopen_prefix, multiplexed);
            async move { store }
        })
        .guard(Cleanup { url, prefix })
}

async fn fresh_fixture() -> Fixture {
    fixture(0).await
}

session_core::conformance_tests!(fresh_fixture, durable);

mod multiplexed {
    use session_core::conformance::Fixture;

    async fn fresh_fixture() -> Fixture {
        super::fixture(2).await
    }

    session_core::conformance_tests!(fresh_fixture, durable);
}
