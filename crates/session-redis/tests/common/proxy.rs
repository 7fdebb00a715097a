//! A TCP proxy between a store and a `redis-server`. It keeps every byte the store sends, so a
//! test can count how often a request was sent (a retry sends it twice), and it can lose a
//! reply: forward a request, wait until the server has answered it (so the command surely
//! ran), throw the answer away and close the store's connection, as a network failure right
//! after the server applied a command would.

#![allow(unreachable_pub, reason = "a test helper module")]

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    /// Everything sent by the store, one buffer per connection.
    sent: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    /// Requests whose reply is to be lost: each entry fires once, on the first request that
    /// contains it.
    traps: Mutex<Vec<Vec<u8>>>,
}

impl Proxy {
    /// A proxy on a free 127.0.0.1 port in front of the server on `upstream_port`. Must be
    /// started inside the Tokio runtime that will serve it.
    pub async fn start(upstream_port: u16) -> Self {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(e) => panic!("proxy bind failed: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("proxy address: {e}"),
        };
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            sent: Mutex::new(Vec::new()),
            traps: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(pipe(Arc::clone(&shared), client));
                }
            }
        });
        Self {
            addr,
            shared,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The next request containing `needle` is applied by the server but its reply is lost
    /// and its connection closed. Call twice to lose two replies.
    pub fn lose_reply_to(&self, needle: &[u8]) {
        self.shared.traps.lock().push(needle.to_vec());
    }

    /// Armed losses that have not fired yet.
    pub fn traps_left(&self) -> usize {
        self.shared.traps.lock().len()
    }

    /// How many times the store sent `needle`, over all its connections.
    pub fn sent_count(&self, needle: &[u8]) -> usize {
        self.shared
            .sent
            .lock()
            .iter()
            .map(|log| occurrences(&log.lock(), needle))
            .sum()
    }

    /// Every byte the store sent, per connection.
    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.shared
            .sent
            .lock()
            .iter()
            .map(|log| log.lock().clone())
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

pub fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() {
        return 0;
    }
    let (mut count, mut at) = (0, 0);
    while let Some(pos) = haystack[at..]
        .windows(needle.len())
        .position(|w| w == needle)
    {
        count += 1;
        at += pos + needle.len();
    }
    count
}

/// Takes the first trap that `log` contains past its first `searched` bytes (a match may
/// begin before them, as a needle may straddle two reads), if any.
fn take_trap(shared: &Shared, log: &[u8], searched: usize) -> bool {
    let mut traps = shared.traps.lock();
    let hit = traps.iter().position(|needle| {
        let start = searched.saturating_sub(needle.len().saturating_sub(1));
        occurrences(&log[start..], needle) > 0
    });
    hit.map(|i| traps.remove(i)).is_some()
}

async fn pipe(shared: Arc<Shared>, mut client: TcpStream) {
    let Ok(mut upstream) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    shared.sent.lock().push(Arc::clone(&log));
    let (mut client_rx, mut client_tx) = client.split();
    let (mut server_rx, mut server_tx) = upstream.split();
    let mut from_client = vec![0u8; 64 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    // How much of the log was searched for traps already.
    let mut searched = 0;
    loop {
        tokio::select! {
            read = client_rx.read(&mut from_client) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let trapped = {
                    let mut log = log.lock();
                    log.extend_from_slice(&from_client[..n]);
                    let hit = take_trap(&shared, &log, searched);
                    searched = log.len();
                    hit
                };
                if server_tx.write_all(&from_client[..n]).await.is_err() {
                    return;
                }
                if trapped {
                    // The reply proves the command ran; dropping it and both sockets is the
                    // lost answer.
                    let _ = server_rx.read(&mut from_server).await;
                    return;
                }
            }
            read = server_rx.read(&mut from_server) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if client_tx.write_all(&from_server[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
