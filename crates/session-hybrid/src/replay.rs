//! Reading a directory back: the newest valid snapshot, then the log segments after it, cut at
//! the first torn or corrupt entry.
//!
//! Layout: `snap-N.snap` holds every live session as of the moment the log moved on to
//! segment `log-N.log`; replay is that snapshot followed by segments `N, N+1, …` in order.
//! Changes made while a snapshot was being written may be in both the snapshot and segment `N`:
//! replaying them again is harmless because a put or a move carries the whole record, a
//! delete needs nothing, and a touch applies only to the record (version and creation time)
//! it was made on.

use std::fs;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use session_memory::MemoryStore;

use crate::apply::Appliers;
use crate::format::{self, Entry, FrameReader, Next};
use crate::fsio::{self, is_symlink_error, sync_dir};

pub(crate) fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("log-{n:020}.log"))
}

pub(crate) fn snapshot_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snap-{n:020}.snap"))
}

pub(crate) fn snapshot_tmp_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snap-{n:020}.tmp"))
}

/// The files of a store directory, by kind.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) snapshots: Vec<u64>,
    pub(crate) segments: Vec<u64>,
    pub(crate) temps: Vec<PathBuf>,
}

fn number(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn list(dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = number(name, "snap-", ".snap") {
            listing.snapshots.push(n);
        } else if let Some(n) = number(name, "log-", ".log") {
            listing.segments.push(n);
        } else if number(name, "snap-", ".tmp").is_some() {
            listing.temps.push(entry.path());
        }
    }
    listing.snapshots.sort_unstable();
    listing.segments.sort_unstable();
    Ok(listing)
}

/// What replay found, and where the log continues. The sessions themselves went straight
/// into the memory store.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub(crate) report: ReplayReport,
    /// The segment new changes are appended to, and its length.
    pub(crate) segment: u64,
    pub(crate) segment_len: u64,
    /// The snapshot replay started from and its size.
    pub(crate) base: Option<u64>,
    pub(crate) base_bytes: u64,
    /// Log bytes kept after that snapshot.
    pub(crate) log_since_base: u64,
}

/// Reads snapshot `n` whole into `memory`; returns its record count and size, or `None`
/// when any check fails (the caller empties `memory` and sets the file aside). Records above
/// the size limit count toward the record count but are not loaded; `oversized` counts them.
fn load_snapshot(
    path: &Path,
    n: u64,
    out: &mut Appliers<'_>,
    max_payload: u32,
    oversized: &mut u64,
) -> io::Result<Option<(u64, u64)>> {
    let file = match fsio::open_read(path) {
        Ok(file) => file,
        // A link planted at a snapshot's name is not followed: it is set aside like a
        // snapshot that fails its checks.
        Err(e) if is_symlink_error(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut reader = FrameReader::new(BufReader::with_capacity(1 << 20, file), len, max_payload);
    if !matches!(reader.next_frame()?, Next::Frame)
        || format::decode_snapshot_header(&reader.payload) != Some(n)
    {
        return Ok(None);
    }
    let mut loaded = 0u64;
    loop {
        match reader.next_frame()? {
            Next::Frame => {}
            Next::Oversized => {
                if !matches!(format::oversized_keys(&reader.payload), Some((_, None))) {
                    return Ok(None);
                }
                *oversized += 1;
                loaded += 1;
                continue;
            }
            _ => return Ok(None),
        }
        if let Some(count) = format::decode_snapshot_end(&reader.payload) {
            let complete = count == loaded && matches!(reader.next_frame()?, Next::End);
            return Ok(complete.then_some((loaded, len)));
        }
        match format::decode_entry(&reader.payload) {
            Some(entry @ Entry::Put(_)) => {
                out.push(&reader.payload, entry);
                loaded += 1;
            }
            _ => return Ok(None),
        }
    }
}

/// How replaying one segment ended.
enum SegmentEnd {
    Clean {
        len: u64,
    },
    Cut {
        good: u64,
        len: u64,
    },
    /// The name held a symlink, which is never followed.
    Link,
}

fn replay_segment(
    path: &Path,
    out: &mut Appliers<'_>,
    report: &mut ReplayReport,
    max_payload: u32,
) -> io::Result<SegmentEnd> {
    let file = match fsio::open_read(path) {
        Ok(file) => file,
        Err(e) if is_symlink_error(&e) => return Ok(SegmentEnd::Link),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut reader = FrameReader::new(BufReader::with_capacity(1 << 20, file), len, max_payload);
    loop {
        match reader.next_frame()? {
            Next::Frame => match format::decode_entry(&reader.payload) {
                Some(entry) => {
                    out.push(&reader.payload, entry);
                    report.entries_applied += 1;
                }
                None => {
                    // A valid checksum over an undecodable payload: treat it like damage, and
                    // cut before it.
                    report.corrupt_entry = true;
                    return Ok(SegmentEnd::Cut {
                        good: reader.start,
                        len,
                    });
                }
            },
            // Written under a larger size limit: the session it sets is dropped, not loaded.
            Next::Oversized => match format::oversized_keys(&reader.payload) {
                Some((key, moved_to)) => {
                    out.remove(&key);
                    if let Some(new) = moved_to {
                        out.remove(&new);
                    }
                    report.oversized_dropped += 1;
                }
                None => {
                    report.corrupt_entry = true;
                    return Ok(SegmentEnd::Cut {
                        good: reader.start,
                        len,
                    });
                }
            },
            Next::End => return Ok(SegmentEnd::Clean { len }),
            Next::Torn => {
                report.torn_tail = true;
                return Ok(SegmentEnd::Cut {
                    good: reader.good,
                    len,
                });
            }
            Next::Corrupt => {
                report.corrupt_entry = true;
                return Ok(SegmentEnd::Cut {
                    good: reader.good,
                    len,
                });
            }
        }
    }
}

/// Replays `dir` into `memory`, repairing it on the way: temp files removed, bad snapshots
/// renamed aside, the log cut at its first bad entry and later segments removed. Only I/O
/// failures are errors; damage is reported. Sessions found expired at the end are dropped.
/// Entries are applied by `threads` threads (see [`Appliers`]).
pub(crate) fn replay(
    dir: &Path,
    memory: &MemoryStore,
    max_payload: u32,
    threads: usize,
) -> io::Result<Replayed> {
    std::thread::scope(|scope| replay_in(scope, dir, memory, max_payload, threads))
}

fn replay_in<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    dir: &Path,
    memory: &'scope MemoryStore,
    max_payload: u32,
    threads: usize,
) -> io::Result<Replayed> {
    let listing = list(dir)?;
    for temp in &listing.temps {
        fs::remove_file(temp)?;
    }
    let mut report = ReplayReport::default();
    let mut base = None;
    let mut base_bytes = 0;
    for &n in listing.snapshots.iter().rev() {
        let path = snapshot_path(dir, n);
        let mut oversized = 0;
        let mut out = Appliers::new(scope, memory, threads)?;
        let loaded = load_snapshot(&path, n, &mut out, max_payload, &mut oversized);
        out.finish();
        match loaded? {
            Some((loaded, bytes)) => {
                report.oversized_dropped += oversized;
                report.snapshot = Some(n);
                report.snapshot_records = loaded;
                base = Some(n);
                base_bytes = bytes;
                break;
            }
            None => {
                memory.restore_clear();
                tracing::warn!(path = %path.display(), "session snapshot failed its checks; set aside as .corrupt");
                fs::rename(&path, path.with_extension("corrupt"))?;
                report.snapshots_rejected += 1;
            }
        }
    }
    let segments: Vec<u64> = listing
        .segments
        .iter()
        .copied()
        .filter(|&k| base.is_none_or(|b| k >= b))
        .collect();
    let mut expected = base.or(segments.first().copied()).unwrap_or(0);
    let mut current = None;
    let mut log_since_base = 0;
    let mut cut = false;
    let mut out = Appliers::new(scope, memory, threads)?;
    for &k in &segments {
        let path = segment_path(dir, k);
        if cut || k != expected {
            // After a bad entry, or past a missing segment, later entries would be replayed
            // over a state they were not made on.
            report.bytes_dropped += fs::symlink_metadata(&path)?.len();
            report.segments_dropped += 1;
            fs::remove_file(&path)?;
            cut = true;
            continue;
        }
        let kept = match replay_segment(&path, &mut out, &mut report, max_payload)? {
            SegmentEnd::Clean { len } => len,
            SegmentEnd::Cut { good, len } => {
                tracing::warn!(path = %path.display(), dropped = len - good, "session log cut at its first torn or corrupt entry");
                report.bytes_dropped += len - good;
                let file = fsio::open_write(&path)?;
                file.set_len(good)?;
                file.sync_all()?;
                cut = true;
                good
            }
            SegmentEnd::Link => {
                // Like a missing segment: what follows it cannot be replayed. Removing the
                // link removes only the link.
                tracing::warn!(path = %path.display(), "a symlink sat at a session log segment's name; removed, not followed");
                report.segments_dropped += 1;
                report.corrupt_entry = true;
                fs::remove_file(&path)?;
                cut = true;
                continue;
            }
        };
        report.segments_replayed += 1;
        log_since_base += kept;
        current = Some((k, kept));
        expected = k + 1;
    }
    if report.segments_dropped > 0 || !listing.temps.is_empty() || report.snapshots_rejected > 0 {
        sync_dir(dir)?;
    }
    let (segment, segment_len) = current.unwrap_or((expected, 0));
    out.finish();
    report.expired_skipped = memory.restore_sweep(session_core::Timestamp::now());
    report.sessions_loaded = memory.len() as u64;
    Ok(Replayed {
        report,
        segment,
        segment_len,
        base,
        base_bytes,
        log_since_base,
    })
}

/// What opening a directory found and did: how much was replayed and how much was dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The number of the snapshot loaded (the first log segment it does not cover), if any.
    pub snapshot: Option<u64>,
    /// Records read from that snapshot.
    pub snapshot_records: u64,
    /// Snapshots that failed their checks and were set aside (renamed to `*.corrupt`).
    pub snapshots_rejected: u64,
    /// Log segments replayed (wholly or up to their first bad entry).
    pub segments_replayed: u64,
    /// Log entries replayed.
    pub entries_applied: u64,
    /// Log bytes cut off: the rest of the segment after the first bad entry, plus every later
    /// segment.
    pub bytes_dropped: u64,
    /// Whole segments removed because they came after a bad entry or a missing segment.
    pub segments_dropped: u64,
    /// Whether the log ended inside an entry (a write cut short by a crash).
    pub torn_tail: bool,
    /// Whether a complete entry failed its checksum or could not be decoded (damage, not a
    /// crash).
    pub corrupt_entry: bool,
    /// Entries not loaded because they are larger than
    /// [`max_data_len`](crate::HybridStoreBuilder::max_data_len) allows (written under a larger
    /// limit): the sessions they set are dropped. Their checksums are verified without reading
    /// them into memory whole.
    pub oversized_dropped: u64,
    /// Sessions live after replay, now in memory.
    pub sessions_loaded: u64,
    /// Sessions found expired on replay and not loaded.
    pub expired_skipped: u64,
}

impl ReplayReport {
    /// Whether anything was dropped: a rejected snapshot, a cut log, removed segments, or
    /// sessions above the size limit.
    pub fn lost_anything(&self) -> bool {
        self.snapshots_rejected > 0
            || self.bytes_dropped > 0
            || self.segments_dropped > 0
            || self.oversized_dropped > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_strictly() {
        assert_eq!(
            number("log-00000000000000000042.log", "log-", ".log"),
            Some(42)
        );
        assert_eq!(number("log-42.log", "log-", ".log"), None);
        assert_eq!(number("log-0000000000000000004x.log", "log-", ".log"), None);
        assert_eq!(
            number("snap-00000000000000000007.corrupt", "snap-", ".snap"),
            None
        );
        let dir = Path::new("/d");
        assert_eq!(
            snapshot_path(dir, 7).with_extension("corrupt"),
            dir.join("snap-00000000000000000007.corrupt")
        );
    }
}
