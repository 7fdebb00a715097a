//! Running workloads on targets: tasks, rounds and counts.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::keys::Rng;
use crate::target::{BenchTarget, BoxFuture, OpResult, Outcome};

/// Operations a task runs between yields to the scheduler. Yielding lets concurrent tasks
/// interleave on the workers the way request handlers do; yielding after every operation
/// would add the same scheduler cost (a yield defers to the driver) to every target and blur
/// the differences. A lone task never yields: there is no one to interleave with.
const BATCH: u32 = 64;

/// Where keys of sessions created during a run start: far above any pre-populated key.
pub(crate) const FRESH: u64 = 1 << 40;

/// What the tasks of a round do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// Only creates, of new sessions, on an empty store.
    Create,
    /// Only loads of pre-populated sessions.
    Load,
    /// Only saves of pre-populated sessions.
    Save,
    /// Per 100 operations: 90 loads and 8 saves of pre-populated sessions, 1 create of a new
    /// session, and 1 delete of the session this task created 50 operations earlier.
    Mixed,
}

impl Workload {
    pub(crate) const ALL: [Self; 4] = [Self::Create, Self::Load, Self::Save, Self::Mixed];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Load => "load",
            Self::Save => "save",
            Self::Mixed => "mixed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }
}

/// One timed round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundPlan {
    pub(crate) workload: Workload,
    pub(crate) tasks: usize,
    pub(crate) duration: Duration,
    /// Sessions `0..population` exist before the round.
    pub(crate) population: u64,
    /// Distinct per round: seeds the key choice and keeps created keys unique across rounds.
    pub(crate) seed: u64,
}

/// Counts from a round or a fill.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    pub(crate) ops: u64,
    pub(crate) missing: u64,
    pub(crate) conflicts: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
    /// CPU time the whole process used meanwhile (all threads), when the kernel tells.
    pub(crate) cpu: Option<Duration>,
}

impl Tally {
    fn record(&mut self, result: OpResult) {
        self.ops += 1;
        match result {
            Ok(Outcome::Done) => {}
            Ok(Outcome::Missing) => self.missing += 1,
            Ok(Outcome::Conflict) => self.conflicts += 1,
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e.to_string());
                }
            }
        }
    }

    fn merge(&mut self, other: Self) {
        self.ops += other.ops;
        self.missing += other.missing;
        self.conflicts += other.conflicts;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub(crate) fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Operations per second of CPU time: what other processes on the machine cannot skew.
    pub(crate) fn ops_per_cpu_sec(&self) -> Option<f64> {
        self.cpu
            .filter(|c| !c.is_zero())
            .map(|c| self.ops as f64 / c.as_secs_f64())
    }
}

/// CPU time used so far by every thread of this process, from
/// `/proc/self/task/*/schedstat` (nanosecond precision, unlike `getrusage` ticks).
pub(crate) fn process_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread may end between listing and reading; it no longer counts.
        let Ok(stat) = std::fs::read_to_string(path) else {
            continue;
        };
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// A built target, type-erased once per round (the operations inside stay static).
pub(crate) trait Instance: Send + Sync {
    /// Runs one timed round.
    fn round(&self, plan: RoundPlan) -> BoxFuture<'_, Tally>;
    /// Creates sessions `range` from `tasks` tasks, untimed apart from the total.
    fn fill(&self, range: Range<u64>, tasks: usize) -> BoxFuture<'_, Tally>;
    /// Times `plan.logouts` logouts (a delete of a session just created), one after another,
    /// while `plan.background` tasks run the mixed workload.
    fn logouts(&self, plan: LogoutPlan) -> BoxFuture<'_, Result<Vec<Duration>, String>>;
}

/// A logout latency measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogoutPlan {
    pub(crate) logouts: usize,
    /// Tasks running the mixed workload meanwhile (0: the store is otherwise idle).
    pub(crate) background: usize,
    pub(crate) population: u64,
    pub(crate) seed: u64,
}

struct Erased<T>(T);

/// Wraps a target for the registry.
pub(crate) fn instance<T: BenchTarget>(target: T) -> Box<dyn Instance> {
    Box::new(Erased(target))
}

impl<T: BenchTarget> Instance for Erased<T> {
    fn round(&self, plan: RoundPlan) -> BoxFuture<'_, Tally> {
        Box::pin(run_round(self.0.clone(), plan))
    }

    fn fill(&self, range: Range<u64>, tasks: usize) -> BoxFuture<'_, Tally> {
        Box::pin(run_fill(self.0.clone(), range, tasks))
    }

    fn logouts(&self, plan: LogoutPlan) -> BoxFuture<'_, Result<Vec<Duration>, String>> {
        Box::pin(run_logouts(self.0.clone(), plan))
    }
}

/// Where the probe's sessions live: above the keys any round creates.
const PROBE: u64 = 1 << 60;

async fn run_logouts<T: BenchTarget>(target: T, plan: LogoutPlan) -> Result<Vec<Duration>, String> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background: Vec<_> = (0..plan.background)
        .map(|task| {
            let mut target = target.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut rng = Rng::new(plan.seed.wrapping_mul(7_919).wrapping_add(task as u64));
                let population = plan.population.max(1);
                let fresh = |k: u64| FRESH + (plan.seed << 32) + k * 1024 + task as u64;
                let mut created = VecDeque::new();
                let mut k = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for _ in 0..BATCH {
                        // The mixed workload, as `run_task` runs it.
                        let _ = match k % 100 {
                            0 => {
                                created.push_back(fresh(k));
                                target.create(fresh(k)).await
                            }
                            50 => match created.pop_front() {
                                Some(i) => target.delete(i).await,
                                None => target.delete(fresh(k)).await,
                            },
                            n if n % 12 == 6 => target.save(rng.below(population)).await,
                            _ => target.load(rng.below(population)).await,
                        };
                        k += 1;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut probe = target.clone();
    let mut times = Vec::with_capacity(plan.logouts);
    let mut failure = None;
    for n in 0..plan.logouts as u64 {
        let i = PROBE + (plan.seed << 32) + n;
        if let Err(e) = probe.create(i).await {
            failure = Some(format!("create before a logout failed: {e}"));
            break;
        }
        let start = Instant::now();
        match probe.delete(i).await {
            Ok(Outcome::Done) => times.push(start.elapsed()),
            Ok(other) => {
                failure = Some(format!("a logout found {other:?}"));
                break;
            }
            Err(e) => {
                failure = Some(format!("a logout failed: {e}"));
                break;
            }
        }
        // Between logouts, let the background run as a server between requests would.
        tokio::task::yield_now().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in background {
        let _ = task.await;
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(times),
    }
}

async fn run_round<T: BenchTarget>(target: T, plan: RoundPlan) -> Tally {
    let cpu_before = process_cpu();
    let barrier = Arc::new(Barrier::new(plan.tasks));
    let handles: Vec<_> = (0..plan.tasks)
        .map(|task| {
            let handle = target.clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(run_task(handle, plan, task as u64, barrier))
        })
        .collect();
    let mut total = Tally::default();
    let mut span: Option<(Instant, Instant)> = None;
    for handle in handles {
        match handle.await {
            Ok((tally, start, end)) => {
                total.merge(tally);
                span = Some(match span {
                    None => (start, end),
                    Some((s, e)) => (s.min(start), e.max(end)),
                });
            }
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| format!("task failed: {e}"));
            }
        }
    }
    total.elapsed = span.map_or(Duration::ZERO, |(s, e)| e - s);
    total.cpu = cpu_before
        .zip(process_cpu())
        .map(|(a, b)| b.saturating_sub(a));
    total
}

async fn run_task<T: BenchTarget>(
    mut target: T,
    plan: RoundPlan,
    task: u64,
    barrier: Arc<Barrier>,
) -> (Tally, Instant, Instant) {
    let tasks = plan.tasks as u64;
    let fresh = |k: u64| FRESH + (plan.seed << 32) + k * tasks + task;
    let mut rng = Rng::new(plan.seed.wrapping_mul(1_000_003).wrapping_add(task));
    let population = plan.population.max(1);
    let mut created = VecDeque::new();
    let mut tally = Tally::default();
    let mut k = 0u64;
    barrier.wait().await;
    let start = Instant::now();
    let deadline = start + plan.duration;
    loop {
        for _ in 0..BATCH {
            let result = match plan.workload {
                Workload::Create => target.create(fresh(k)).await,
                Workload::Load => target.load(rng.below(population)).await,
                Workload::Save => target.save(rng.below(population)).await,
                Workload::Mixed => match k % 100 {
                    0 => {
                        created.push_back(fresh(k));
                        target.create(fresh(k)).await
                    }
                    50 => match created.pop_front() {
                        Some(i) => target.delete(i).await,
                        None => target.delete(fresh(k)).await,
                    },
                    // 6, 18, 30, 42, 54, 66, 78, 90: eight saves per hundred.
                    n if n % 12 == 6 => target.save(rng.below(population)).await,
                    _ => target.load(rng.below(population)).await,
                },
            };
            tally.record(result);
            k += 1;
        }
        if Instant::now() >= deadline {
            break;
        }
        if tasks > 1 {
            tokio::task::yield_now().await;
        }
    }
    let end = Instant::now();
    tally.elapsed = end - start;
    (tally, start, end)
}

async fn run_fill<T: BenchTarget>(target: T, range: Range<u64>, tasks: usize) -> Tally {
    let start = Instant::now();
    let tasks = tasks.max(1) as u64;
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let mut target = target.clone();
            let range = range.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut i = range.start + task;
                while i < range.end {
                    tally.record(target.create(i).await);
                    i += tasks;
                    if i % 4096 < tasks {
                        tokio::task::yield_now().await;
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for handle in handles {
        match handle.await {
            Ok(tally) => total.merge(tally),
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| format!("task failed: {e}"));
            }
        }
    }
    total.elapsed = start.elapsed();
    total
}
