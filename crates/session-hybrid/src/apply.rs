//! Applying replayed entries to the memory store on several threads.
//!
//! Reopening a million sessions after millions of saves is mostly hash-map and allocator
//! work: the insert or in-place update of each entry, the copy of its data, and freeing the
//! data it replaces. So the thread that reads and checksums frames only checks each entry's
//! structure (without allocating) and copies its payload into a batch for the applier of its
//! key's part; the applier decodes and applies it. Every entry touches one key (a move is a
//! removal of the old key, sent to the old key's part, and a put of the new), and each key
//! belongs to one part, applied in order by one thread: the order of one key's changes is
//! kept, which is all replay needs. A session's data is allocated and freed by the same
//! thread, which keeps the allocator out of cross-thread frees.

use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use session_core::SessionKey;
use session_memory::MemoryStore;

use crate::format::{self, Entry};

/// Payload bytes handed over at once: large enough that the channel costs nothing per entry.
const BATCH_BYTES: usize = 256 << 10;
/// Batches queued per applier before the reader waits: bounds the memory in flight.
const QUEUED: usize = 4;

/// Applies one entry. A move only puts the moved record: its old key is removed by a delete
/// sent on its own (see [`Appliers::push`]).
fn apply(memory: &MemoryStore, entry: Entry<'_>) {
    match entry {
        Entry::Put(record) | Entry::Move { record, .. } => memory.restore(record.to_record()),
        Entry::Touch {
            key,
            expires_at,
            version,
            created_at,
        } => memory.restore_touch(&key, expires_at, version, created_at),
        Entry::Delete(key) => {
            memory.restore_remove(&key);
        }
    }
}

struct Part<'scope> {
    tx: SyncSender<Vec<u8>>,
    /// Emptied batches coming back, so the buffers are reused rather than reallocated.
    spare: Receiver<Vec<u8>>,
    /// Length-prefixed payloads not yet sent.
    pending: Vec<u8>,
    handle: ScopedJoinHandle<'scope, ()>,
}

/// Routes entries to applier threads by key, or applies them at once with one thread.
pub(crate) struct Appliers<'scope> {
    memory: &'scope MemoryStore,
    parts: Vec<Part<'scope>>,
}

impl<'scope> Appliers<'scope> {
    /// Starts `threads` appliers (none for one thread: entries are applied by the caller).
    pub(crate) fn new<'env>(
        scope: &'scope Scope<'scope, 'env>,
        memory: &'scope MemoryStore,
        threads: usize,
    ) -> std::io::Result<Self> {
        let mut parts = Vec::new();
        if threads > 1 {
            for n in 0..threads {
                let (tx, rx) = sync_channel::<Vec<u8>>(QUEUED);
                let (back_tx, back_rx) = channel::<Vec<u8>>();
                let handle = std::thread::Builder::new()
                    .name(format!("session-hybrid-replay-{n}"))
                    .spawn_scoped(scope, move || drain(memory, &rx, &back_tx))?;
                parts.push(Part {
                    tx,
                    spare: back_rx,
                    pending: Vec::with_capacity(BATCH_BYTES),
                    handle,
                });
            }
        }
        Ok(Self { memory, parts })
    }

    /// Applies the entry `payload` holds (already decoded as `entry`).
    pub(crate) fn push(&mut self, payload: &[u8], entry: Entry<'_>) {
        if let Entry::Move { old, .. } = entry {
            self.remove(&old);
        }
        if self.parts.is_empty() {
            apply(self.memory, entry);
            return;
        }
        let key = match entry {
            Entry::Put(record) | Entry::Move { record, .. } => record.key,
            Entry::Touch { key, .. } | Entry::Delete(key) => key,
        };
        self.send(&key, payload);
    }

    /// Removes `key`.
    pub(crate) fn remove(&mut self, key: &SessionKey) {
        if self.parts.is_empty() {
            self.memory.restore_remove(key);
            return;
        }
        self.send(key, &format::delete_payload(key));
    }

    fn send(&mut self, key: &SessionKey, payload: &[u8]) {
        let n = self.parts.len();
        // Byte 16: neither among the bytes the store's key hasher reads nor its shard byte
        // (31), so each applier spreads over every shard and two rarely meet on a lock.
        let part = &mut self.parts[usize::from(key.as_bytes()[16]) % n];
        // Payloads are bounded by the frame reader's limit, far below 4 GiB.
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        part.pending.extend_from_slice(&len.to_le_bytes());
        part.pending.extend_from_slice(payload);
        if part.pending.len() >= BATCH_BYTES {
            let fresh = part
                .spare
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(BATCH_BYTES));
            let batch = std::mem::replace(&mut part.pending, fresh);
            // An applier is only gone after a panic, which `finish` re-raises.
            let _ = part.tx.send(batch);
        }
    }

    /// Hands over what is left and waits until every entry pushed so far is applied.
    pub(crate) fn finish(self) {
        let mut handles = Vec::with_capacity(self.parts.len());
        for part in self.parts {
            if !part.pending.is_empty() {
                let _ = part.tx.send(part.pending);
            }
            drop(part.tx);
            handles.push(part.handle);
        }
        for handle in handles {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

fn drain(memory: &MemoryStore, rx: &Receiver<Vec<u8>>, back: &Sender<Vec<u8>>) {
    while let Ok(mut batch) = rx.recv() {
        let mut rest = batch.as_slice();
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = u32::from_le_bytes(*len) as usize;
            let Some((payload, tail)) = tail.split_at_checked(len) else {
                break;
            };
            // The reader decoded it before sending: this cannot fail.
            if let Some(entry) = format::decode_entry(payload) {
                apply(memory, entry);
            }
            rest = tail;
        }
        batch.clear();
        let _ = back.send(batch);
    }
}
