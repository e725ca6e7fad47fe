//! `coffer-loadgen`: drives a Coffer server with N virtual players over real gRPC and reports
//! throughput and latency percentiles, next to baselines measured in the same run with the same
//! client harness: a no-op gRPC call (the transport ceiling of this machine) and, when a
//! PostgreSQL URL is given, the same purchase as one SQL transaction with `synchronous_commit`
//! on; and this machine's disk alone (one thread appending 4 KiB and `fdatasync`ing it), the
//! floor under every durable commit and the tail it brings with it. It checks every response and
//! ends by running the ledger verifier.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

// The same allocator as the `coffer` binary, so the embedded server measures what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use coffer_client::{ClientError, CofferClient, Rejection, pb};
use hdrhistogram::Histogram;
use serde::Serialize;

mod machine_cpu;
mod reference_append;
use reference_append::{AppendStore, ReferenceServer};
mod server_latency;
use server_latency::{RequestDurations, ServerLatency};

/// Most operations one worker keeps in flight (workers = concurrency).
const CONCURRENCY_MAX: usize = 4_096;
/// Players granted per Execute call while preparing.
const SETUP_GRANTS_PER_CALL: usize = 200;
/// Execute calls in flight while preparing players.
const SETUP_CALLS_IN_FLIGHT: usize = 16;
/// Latencies are recorded in microseconds from 1 µs up to this (longer ones are clamped).
const LATENCY_US_MAX: u64 = 60_000_000;
/// The transport ceiling every other phase is a ratio to.
const NOOP_PHASE_NAME: &str = "no-op gRPC call (baseline)";
/// The closed-loop purchase phase, whose throughput is the peak the half-peak phase halves.
const PURCHASE_PHASE_NAME: &str = "coffer purchase (durable)";
/// Coins granted to each player before the run.
const SETUP_COINS: i64 = 900_000;
/// The disk phase's write: one page, as a small journal record is.
const DISK_PROBE_WRITE_BYTES: usize = 4_096;
/// The disk phase's file starts over at this size, as the journal moves to its next segment.
const DISK_PROBE_FILE_BYTES_MAX: u64 = 64 << 20;
/// The disk phase looks at a commit arriving every this many microseconds of its run (see
/// [`DiskWait`]).
const DISK_ARRIVAL_STEP_US: u64 = 20;
/// A sync at least this long counts as a stall in the disk phase's report.
const DISK_STALL_US_MIN: u64 = 10_000;
/// The name the disk phase reports under.
const DISK_PHASE_NAME: &str = "disk: 4 KiB + fdatasync";
/// Longest wait before a phase for the server's checkpointer to fold in earlier writes (growing
/// the data to millions of players leaves the most).
const SETTLE_TIMEOUT_S: u64 = 900;
/// How often the generator reads the server's checkpoint lag while it waits.
const SETTLE_POLL_MS: u64 = 20;
/// The server's gauge of committed batches its checkpointer has not folded in yet.
const RECORDS_PENDING_METRIC: &str = "coffer_journal_records_pending";
/// The server's gauge that reads 1 while its checkpointer merges runs of history and
/// idempotency rows, or one is due (redb store; absent from others and older servers).
const MERGE_PENDING_METRIC: &str = "coffer_checkpoint_merge_pending";
/// The server's counter of time its checkpointer spent writing checkpoints (and merging runs).
const CHECKPOINT_BUSY_METRIC: &str = "coffer_checkpoint_busy_seconds_total";
/// Bytes of pages the server wrote to its ledger file (redb store; absent from others).
const LEDGER_WRITTEN_METRIC: &str = "coffer_ledger_written_bytes_total";

/// Counts the write phases run so far, so no two phases (in a round or across rounds) share an
/// idempotency key: a repeated key is answered from its stored outcome, a replay that does no work.
static WRITE_PHASES_STARTED: AtomicU64 = AtomicU64::new(0);
/// The newest transaction id any write of this run was answered with.
static NEWEST_TRANSACTION_ID: AtomicU64 = AtomicU64::new(0);
/// Most potions one player may hold, from the server's catalog (read before the phases).
static POTION_STACK_MAX: AtomicU64 = AtomicU64::new(0);
/// Full stacks of potions used up by a consumption after a purchase was refused for one, across
/// all phases of the run: each is a transaction of its own in the ledger.
static STACKS_EMPTIED: AtomicU64 = AtomicU64::new(0);
/// Sets this run's idempotency keys apart from every earlier run's against the same server
/// (`--endpoint`): there, the first phase has seen no transaction yet and could not tell a
/// replay of an earlier run's key from a write.
static RUN_NONCE: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (since_epoch.as_nanos() as u64) ^ (u64::from(std::process::id()) << 40)
});

#[derive(Parser, Debug, Clone)]
#[command(name = "coffer-loadgen", version)]
struct Args {
    /// Server to drive; without it an embedded server is started on loopback with a fresh data dir.
    #[arg(long)]
    endpoint: Option<String>,
    /// Admin key of the server given with --endpoint (the embedded server's is used otherwise).
    #[arg(long, env = "COFFER_ADMIN_KEY")]
    admin_key: Option<String>,
    /// Metrics address (host:port) of the server given with --endpoint. With it (and always with
    /// the embedded server), every phase starts once the server's checkpointer has folded in
    /// what was written before it, so no phase pays for an earlier one's writes.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Virtual players.
    #[arg(long, default_value_t = 10_000)]
    players: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// gRPC connections the workers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds each phase runs.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Runs the phase list this many times, one round after the other, and reports each phase's
    /// median round: on a machine whose speed drifts (a shared VM), ratios to the no-op ceiling
    /// are then taken within a round, where both saw the same machine.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Operation mix in percent: purchase,upgrade,claim,read.
    #[arg(long, default_value = "70,5,10,15")]
    mix: String,
    /// Also measure the PostgreSQL purchase baseline against this database (it creates its own tables).
    #[arg(long)]
    postgres_url: Option<String>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// For the embedded server: the ledger file's commits (checkpoints) with redb's two-phase
    /// commit (two syncs per commit) or one checksummed sync.
    #[arg(long, default_value_t = coffer_store::TWO_PHASE_COMMIT_DEFAULT, action = clap::ArgAction::Set)]
    redb_two_phase_commit: bool,
    /// For the embedded server: how long changes wait in memory at most before a checkpoint.
    #[arg(long, default_value_t = coffer_store::CHECKPOINT_INTERVAL_MS_DEFAULT)]
    redb_checkpoint_interval_ms: u64,
    /// Phases to run, in order: noop, disk, append-redb, append-file, purchase,
    /// purchase-half-peak (after purchase), mixed, postgres (needs --postgres-url).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "noop,disk,append-file,purchase,purchase-half-peak,mixed,postgres"
    )]
    phases: Vec<Phase>,
    /// After the phases, grow the data to each of these player counts (each player gets an
    /// opening and a grant transaction) and run the purchase phase again at each size.
    #[arg(long, value_delimiter = ',')]
    scale_players: Vec<usize>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Noop,
    /// One thread appending 4 KiB to a file beside the data and `fdatasync`ing it: one durable
    /// commit's floor on this disk, and the latency tail the disk alone has.
    Disk,
    /// The no-op call against a minimal server that first appends one row to a redb database,
    /// group-committed: what any durable acknowledged write costs on this machine.
    AppendRedb,
    /// The same with one `write` + `fdatasync` per batch into a zero-filled file, the floor a
    /// journal such as Coffer's builds on.
    AppendFile,
    Purchase,
    /// Purchases sent at half the rate the purchase phase reached, on a fixed schedule.
    PurchaseHalfPeak,
    Mixed,
    Postgres,
}

impl Phase {
    /// The reference server an append phase drives.
    fn append_store(self) -> Option<AppendStore> {
        match self {
            Phase::AppendRedb => Some(AppendStore::Redb),
            Phase::AppendFile => Some(AppendStore::File),
            _ => None,
        }
    }
}

#[derive(Serialize, Default, Clone)]
struct PhaseResult {
    name: String,
    requests: u64,
    unexpected_errors: u64,
    expected_rejections: u64,
    seconds: f64,
    per_second: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    /// Over several rounds: the median of this phase's ratios to the no-op phase of its round.
    #[serde(skip_serializing_if = "Option::is_none")]
    vs_no_op: Option<f64>,
    /// How long the phase waited, before it started, for the server's checkpointer to fold in
    /// earlier writes (absent when the server's metrics were not reachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    settle_s: Option<f64>,
    /// For a write phase: how long the server's checkpointer worked, after the phase's last
    /// answer, to fold in what the phase wrote (its working time, not the time a generation
    /// waited to be due). A phase shorter than the checkpointer's back-pressure leaves part of
    /// its work for after it; this is that part.
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_catch_up_s: Option<f64>,
    /// For a write phase: the wall time from its end until everything it wrote was
    /// checkpointed, the open generation's wait to be due included.
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_wait_s: Option<f64>,
    /// For a write phase: its requests over the phase and its checkpoint catch-up, the rate the
    /// server sustains with its checkpoints kept up. Ratios, medians and the half-peak rate
    /// use this; `per_second` is the rate answers came back at.
    #[serde(skip_serializing_if = "Option::is_none")]
    sustained_per_second: Option<f64>,
    /// For a write phase against the redb store: the bytes of pages its checkpoints wrote to the
    /// ledger file (from the end of the wait before it to the end of the wait after it), per
    /// request; what the data's size makes each write cost the disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_written_bytes_per_request: Option<f64>,
    /// The same phase in the server's own request histogram (absent without its metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<ServerLatency>,
    /// The disk phase only: what its syncs would make a commit wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_wait: Option<DiskWait>,
    /// Percent of the machine's cores busy during the phase (every process; `/proc/stat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    busy_percent: Option<f64>,
    /// Microseconds of busy CPU, all cores and processes together, per request of the phase;
    /// for a write phase counted until its checkpoints caught up, so it pays for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_us_per_request: Option<f64>,
    /// A reference append phase only: rows its server made durable during the phase, read
    /// back from its store (one per answered request).
    #[serde(skip_serializing_if = "Option::is_none")]
    rows_durable: Option<u64>,
}

/// The disk phase's syncs seen from a commit arriving at any moment, as a group-committing
/// server sees them: a commit that arrives while a sync runs waits for that sync and the next
/// one. The sync's own percentiles hide a stall (one slow sample among thousands); every commit
/// arriving during it waits, so the share of time spent in stalls is what reaches a server's
/// tail. These percentiles are the floor of any durable server's latency on this disk, at any
/// rate, for the disk phase's stretch of time (stalls come and go: compare across rounds).
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct DiskWait {
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    longest_sync_us: u64,
    /// Share of the phase spent in syncs of [`DISK_STALL_US_MIN`] or more.
    stalled_share: f64,
}

impl DiskWait {
    /// From the `(start_us, end_us)` of every sync, back to back, in order.
    fn of(syncs: &[(u64, u64)]) -> Option<DiskWait> {
        let (first, last) = (syncs.first()?, syncs.last()?);
        let mut waits = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).expect("histogram");
        let mut next = 0;
        let mut arrival_us = first.0;
        while arrival_us <= last.0 {
            // The first sync that starts at or after the arrival carries its commit.
            while syncs[next].0 < arrival_us {
                next += 1;
            }
            waits.saturating_record(syncs[next].1 - arrival_us);
            arrival_us += DISK_ARRIVAL_STEP_US;
        }
        let span_us = (last.1 - first.0).max(1);
        let stalled_us: u64 = syncs
            .iter()
            .map(|(start, end)| end - start)
            .filter(|took| *took >= DISK_STALL_US_MIN)
            .sum();
        Some(DiskWait {
            p50_us: waits.value_at_quantile(0.50),
            p99_us: waits.value_at_quantile(0.99),
            p999_us: waits.value_at_quantile(0.999),
            longest_sync_us: syncs.iter().map(|(start, end)| end - start).max()?,
            stalled_share: stalled_us as f64 / span_us as f64,
        })
    }

    fn summary(&self) -> String {
        format!(
            "a commit arriving at any moment waits p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; longest sync {:.1} ms; {:.2} % of the time in syncs of {} ms or more",
            self.p50_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0,
            self.p999_us as f64 / 1000.0,
            self.longest_sync_us as f64 / 1000.0,
            100.0 * self.stalled_share,
            DISK_STALL_US_MIN / 1000
        )
    }
}

impl PhaseResult {
    /// The rate this phase is compared by: sustained for a write phase, answered otherwise.
    fn rate(&self) -> f64 {
        self.sustained_per_second.unwrap_or(self.per_second)
    }

    /// Records the checkpoint work left after this write phase.
    fn caught_up(&mut self, settled: Option<Settled>) {
        if let Some(settled) = settled {
            let catch_up_s = settled.checkpoint_busy_s;
            self.checkpoint_catch_up_s = Some(catch_up_s);
            self.checkpoint_wait_s = Some(settled.waited.as_secs_f64());
            self.sustained_per_second = Some(self.requests as f64 / (self.seconds + catch_up_s));
        }
    }
}

/// Each phase's median round (by throughput), with the median of its per-round ratios to that
/// round's no-op ceiling. Every round ran the same phases in the same order.
fn median_rounds(rounds: &[Vec<PhaseResult>]) -> Vec<PhaseResult> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    if rounds.len() == 1 {
        return first.clone();
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    (0..first.len())
        .map(|phase| {
            let mut by_rate: Vec<&PhaseResult> = rounds.iter().map(|round| &round[phase]).collect();
            by_rate.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
            let mut row = by_rate[by_rate.len() / 2].clone();
            let ratios: Vec<f64> = rounds
                .iter()
                .filter(|round| round[phase].name != DISK_PHASE_NAME)
                .filter_map(|round| {
                    let ceiling = round.iter().find(|r| r.name == NOOP_PHASE_NAME)?;
                    Some(round[phase].rate() / ceiling.rate().max(1.0))
                })
                .collect();
            if !ratios.is_empty() {
                row.vs_no_op = Some(median(ratios));
            }
            row
        })
        .collect()
}

/// Small deterministic generator (xorshift64*), so runs need no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What one operation ended as.
enum Ended {
    Ok,
    Expected,
    Unexpected(String),
}

/// Latencies, outcomes and the first unexpected error of a phase's requests.
struct Tally {
    histogram: Histogram<u64>,
    expected: u64,
    unexpected: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            histogram: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("histogram"),
            expected: 0,
            unexpected: 0,
            first_error: None,
        }
    }

    fn record(&mut self, ended: Ended, latency: Duration) {
        match ended {
            Ended::Ok => {}
            Ended::Expected => self.expected += 1,
            Ended::Unexpected(error) => {
                self.unexpected += 1;
                self.first_error.get_or_insert(error);
            }
        }
        self.histogram.saturating_record(latency.as_micros() as u64);
    }
}

/// Runs `operation` for `args.duration_s`. Without `rate_per_s`, `args.concurrency` workers each
/// send their next request as soon as the last one is answered (closed loop: the peak). With
/// it, every request is sent when it is due on a fixed schedule, whether or not earlier ones are
/// answered (open loop, as independent players send; at most [`CONCURRENCY_MAX`] in flight), and
/// its latency counts from that moment, so a server that falls behind shows it in the
/// percentiles instead of slowing the generator down (no coordinated omission); the schedule
/// has `ceil(rate_per_s × duration_s)` slots and every one is sent. Request `n` of the schedule is `operation(n % concurrency, n / concurrency + 1)`, the same (worker,
/// sequence) pairs, and so the same idempotency keys, a closed loop would use.
async fn run_phase<F, Fut>(
    name: &str,
    args: &Args,
    rate_per_s: Option<f64>,
    operation: F,
) -> PhaseResult
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Ended> + Send + 'static,
{
    let operation = Arc::new(operation);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let worker_count = args.concurrency.clamp(1, CONCURRENCY_MAX);
    let mut senders = Vec::new();
    match rate_per_s {
        None => {
            for worker in 0..worker_count {
                let (operation, stop, done) =
                    (Arc::clone(&operation), Arc::clone(&stop), Arc::clone(&done));
                senders.push(tokio::spawn(async move {
                    let mut tally = Tally::new();
                    let mut sequence = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        sequence += 1;
                        let began = Instant::now();
                        let ended = operation(worker, sequence).await;
                        tally.record(ended, began.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    tally
                }));
            }
        }
        Some(rate) => {
            let (operation, done) = (Arc::clone(&operation), Arc::clone(&done));
            let duration_s = args.duration_s as f64;
            senders.push(tokio::spawn(async move {
                let tally = Arc::new(std::sync::Mutex::new(Tally::new()));
                let in_flight = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY_MAX));
                let mut requests = tokio::task::JoinSet::new();
                // Every slot of the schedule is sent, also by a generator that fell behind it.
                let mut slot = 0u64;
                while (slot as f64) / rate < duration_s {
                    let due = started + Duration::from_secs_f64(slot as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    let permit = Arc::clone(&in_flight)
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed");
                    let worker = (slot % worker_count as u64) as usize;
                    let sequence = slot / worker_count as u64 + 1;
                    let request = operation(worker, sequence);
                    let (tally, done) = (Arc::clone(&tally), Arc::clone(&done));
                    requests.spawn(async move {
                        let ended = request.await;
                        tally
                            .lock()
                            .expect("tally lock")
                            .record(ended, due.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                        drop(permit);
                    });
                    slot += 1;
                    while let Some(finished) = requests.try_join_next() {
                        finished.expect("request task");
                    }
                }
                while let Some(finished) = requests.join_next().await {
                    finished.expect("request task");
                }
                Arc::try_unwrap(tally)
                    .ok()
                    .expect("every request task has ended")
                    .into_inner()
                    .expect("tally lock")
            }));
        }
    }
    let deadline = started + Duration::from_secs(args.duration_s);
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        if !args.json {
            let count = done.load(Ordering::Relaxed);
            eprint!(
                "\r  {name}: {count} requests, {:.0}/s   ",
                count as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).expect("histogram");
    let mut result = PhaseResult {
        name: name.to_owned(),
        ..PhaseResult::default()
    };
    for sender in senders {
        let tally = sender.await.expect("sender task");
        histogram
            .add(&tally.histogram)
            .expect("same histogram shape");
        result.expected_rejections += tally.expected;
        result.unexpected_errors += tally.unexpected;
        if let Some(error) = tally.first_error {
            eprintln!("\n  {name}: unexpected error: {error}");
        }
    }
    if !args.json {
        eprintln!();
    }
    result.measured(&histogram, started.elapsed());
    result
}

impl PhaseResult {
    /// Fills in the count, rate and percentiles of `histogram`, recorded over `elapsed`.
    fn measured(&mut self, histogram: &Histogram<u64>, elapsed: Duration) {
        self.seconds = elapsed.as_secs_f64();
        self.requests = histogram.len();
        self.per_second = self.requests as f64 / self.seconds;
        self.p50_us = histogram.value_at_quantile(0.50);
        self.p90_us = histogram.value_at_quantile(0.90);
        self.p99_us = histogram.value_at_quantile(0.99);
        self.p999_us = histogram.value_at_quantile(0.999);
    }
}

/// One thread appends [`DISK_PROBE_WRITE_BYTES`] to a file in `dir` and `fdatasync`s it, again
/// and again for `args.duration_s`. Every Coffer commit waits for such a sync, so this is the
/// floor under its latency and the part of its tail that comes from the disk itself (a shared
/// virtual disk stalls now and then, whatever writes to it). The file is removed afterwards.
async fn disk_phase(args: &Args, dir: &std::path::Path) -> std::io::Result<PhaseResult> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("disk-probe.bin");
    let duration = Duration::from_secs(args.duration_s);
    let progress = !args.json;
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let page = [0x5a_u8; DISK_PROBE_WRITE_BYTES];
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).expect("histogram");
        let started = Instant::now();
        let mut offset = 0u64;
        let mut next_report = Duration::from_secs(1);
        let mut syncs = Vec::new();
        while started.elapsed() < duration {
            let began = started.elapsed();
            file.write_all_at(&page, offset)?;
            file.sync_data()?;
            let ended = started.elapsed();
            histogram.saturating_record((ended - began).as_micros() as u64);
            syncs.push((began.as_micros() as u64, ended.as_micros() as u64));
            offset = (offset + page.len() as u64) % DISK_PROBE_FILE_BYTES_MAX;
            if progress && started.elapsed() >= next_report {
                next_report += Duration::from_secs(1);
                eprint!(
                    "\r  {DISK_PHASE_NAME}: {} syncs, {:.0}/s   ",
                    histogram.len(),
                    histogram.len() as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        let elapsed = started.elapsed();
        drop(file);
        std::fs::remove_file(&path)?;
        if progress {
            eprintln!();
        }
        let mut result = PhaseResult {
            name: DISK_PHASE_NAME.to_owned(),
            disk_wait: DiskWait::of(&syncs),
            ..PhaseResult::default()
        };
        result.measured(&histogram, elapsed);
        Ok(result)
    })
    .await
    .expect("disk phase thread")
}

/// What [`settle`] waited for.
#[derive(Clone, Copy)]
struct Settled {
    /// From the first scrape to the one that found nothing pending.
    waited: Duration,
    /// The checkpointer's working time in that span ([`CHECKPOINT_BUSY_METRIC`]): the wait
    /// without the time a generation spent waiting to be old enough for its checkpoint.
    checkpoint_busy_s: f64,
    /// [`LEDGER_WRITTEN_METRIC`] at the scrape that found nothing pending, when the server has it.
    ledger_written_bytes: Option<f64>,
}

/// The value of the unlabelled sample `name` in a Prometheus text body.
fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next() == Some(name))
            .then(|| fields.next()?.parse::<f64>().ok())
            .flatten()
    })
}

/// Waits until the server's checkpointer has folded in every batch committed so far (its
/// [`RECORDS_PENDING_METRIC`] reads 0) and merged the runs that were due ([`MERGE_PENDING_METRIC`]
/// reads 0 or is absent). The checkpointer works behind the request path, on the
/// same cores: a phase that started while it still folded in an earlier phase's writes (or the
/// players the data was just grown by) would pay for them, and a write phase that ended before
/// its checkpoints did left part of its cost for after it.
async fn settle(metrics_addr: std::net::SocketAddr) -> Result<Settled, String> {
    let started = Instant::now();
    let mut busy_at_start = None;
    loop {
        let body = scrape_metrics(metrics_addr).await?;
        let read = |name: &str| {
            metric_value(&body, name).ok_or_else(|| format!("{metrics_addr}/metrics has no {name}"))
        };
        let pending = read(RECORDS_PENDING_METRIC)?;
        let busy = read(CHECKPOINT_BUSY_METRIC)?;
        let busy_at_start = *busy_at_start.get_or_insert(busy);
        let merging = metric_value(&body, MERGE_PENDING_METRIC).unwrap_or(0.0);
        if pending == 0.0 && merging == 0.0 {
            return Ok(Settled {
                waited: started.elapsed(),
                checkpoint_busy_s: busy - busy_at_start,
                ledger_written_bytes: metric_value(&body, LEDGER_WRITTEN_METRIC),
            });
        }
        if started.elapsed() >= Duration::from_secs(SETTLE_TIMEOUT_S) {
            let merge = if merging == 0.0 {
                ""
            } else {
                " and a merge of runs pending"
            };
            return Err(format!(
                "the server still had {pending} batches to checkpoint{merge} after {SETTLE_TIMEOUT_S} s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
    }
}

/// The body of `GET /metrics` at `addr`.
async fn scrape_metrics(addr: std::net::SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let failed = |error: std::io::Error| format!("scraping {addr}/metrics: {error}");
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(failed)?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(failed)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.map_err(failed)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(format!(
            "{addr}/metrics answered: {}",
            response.lines().next().unwrap_or("nothing")
        )),
    }
}

/// When [`settle`] runs, which decides what is worth printing about its wait.
#[derive(Clone, Copy)]
enum SettleAt {
    /// Before a phase: only a long wait is news (an earlier phase or growing the data left work).
    PhaseStart,
    /// After a write phase: the wait is part of the phase's result, so it is always shown.
    WritePhaseEnd,
}

/// [`settle`], when the server's metrics are reachable. A failure is printed here; the run
/// then ends.
async fn settle_at(
    at: SettleAt,
    metrics_addr: Option<std::net::SocketAddr>,
    args: &Args,
) -> Result<Option<Settled>, ()> {
    let Some(addr) = metrics_addr else {
        return Ok(None);
    };
    let settled = settle(addr).await.map_err(|error| {
        eprintln!("waiting for the server's checkpoints failed: {error}");
    })?;
    if !args.json {
        match at {
            SettleAt::PhaseStart if settled.waited >= Duration::from_secs(1) => eprintln!(
                "  waited {:.1} s for the server's checkpoints",
                settled.waited.as_secs_f64()
            ),
            SettleAt::PhaseStart => {}
            SettleAt::WritePhaseEnd => eprintln!(
                "  checkpoints caught up {:.2} s after the phase ({:.2} s of checkpoint work)",
                settled.waited.as_secs_f64(),
                settled.checkpoint_busy_s
            ),
        }
    }
    Ok(Some(settled))
}

/// Completes a phase's result once it ran: its wait before it, the server's view of it
/// (`before` is the server's histogram when it started), and for a write phase the checkpoint
/// work it left, waited for here. A failed wait is printed; the run then ends.
#[allow(clippy::too_many_arguments)]
async fn finish_phase(
    mut result: PhaseResult,
    cpu_start: Option<machine_cpu::CpuTicks>,
    settled_before: Option<Settled>,
    before: Option<RequestDurations>,
    writes: bool,
    metrics_addr: Option<std::net::SocketAddr>,
    args: &Args,
) -> Result<PhaseResult, ()> {
    if let (Some(start), Some(end)) = (cpu_start, machine_cpu::now()) {
        result.busy_percent = machine_cpu::busy_percent(start, end);
    }
    result.settle_s = settled_before.map(|s| s.waited.as_secs_f64());
    if let (Some(before), Some(after)) = (before, request_durations(metrics_addr).await) {
        result.server = ServerLatency::between(&before, &after);
    }
    if writes {
        let caught_up = settle_at(SettleAt::WritePhaseEnd, metrics_addr, args).await?;
        result.caught_up(caught_up);
        result.checkpoint_written_bytes_per_request = written_per_request(
            settled_before.and_then(|s| s.ledger_written_bytes),
            caught_up.and_then(|s| s.ledger_written_bytes),
            result.requests,
        );
        if let (Some(bytes), false) = (result.checkpoint_written_bytes_per_request, args.json) {
            eprintln!(
                "  checkpoints wrote {:.2} KiB of ledger pages per request",
                bytes / 1024.0
            );
        }
    }
    // After a write phase's checkpoints caught up: their work is part of what a write costs.
    if let (Some(start), Some(end)) = (cpu_start, machine_cpu::now()) {
        result.cpu_us_per_request = machine_cpu::cpu_us_per_request(start, end, result.requests);
    }
    Ok(result)
}

/// Ledger bytes written between two settled scrapes, per request of the phase between them.
fn written_per_request(before: Option<f64>, after: Option<f64>, requests: u64) -> Option<f64> {
    let written = after? - before?;
    (requests > 0 && written >= 0.0).then(|| written / requests as f64)
}

/// The server's request histogram now, when its metrics are reachable. A failed scrape only
/// costs the phase its server-side column, so it is reported and the run goes on.
async fn request_durations(metrics_addr: Option<std::net::SocketAddr>) -> Option<RequestDurations> {
    let scraped = scrape_metrics(metrics_addr?).await;
    scraped
        .and_then(|body| RequestDurations::parse(&body))
        .map_err(|error| eprintln!("  no server-side latency for this phase: {error}"))
        .ok()
}

/// Where a write phase starts: its number, to make its keys its own, and the newest transaction
/// committed before it.
#[derive(Clone, Copy)]
struct WritePhase {
    /// This run's nonce and the phase's number start every idempotency key of the phase; the
    /// number also seeds its choice of players.
    run: u64,
    number: u64,
    newest_transaction_before: u64,
}

impl WritePhase {
    fn start() -> WritePhase {
        let number = WRITE_PHASES_STARTED.fetch_add(1, Ordering::SeqCst);
        WritePhase {
            run: *RUN_NONCE,
            number,
            newest_transaction_before: NEWEST_TRANSACTION_ID.load(Ordering::SeqCst),
        }
    }

    /// Like [`ended`], and a write answered with a transaction committed before this phase began
    /// is an error: it was a replay of an earlier request, not a write.
    fn ended(&self, result: Result<pb::Transaction, ClientError>, expected: &[Rejection]) -> Ended {
        match result {
            Ok(transaction) if transaction.id <= self.newest_transaction_before => {
                Ended::Unexpected(format!(
                    "answered with transaction {} committed before the phase began: a replay, not a write",
                    transaction.id
                ))
            }
            Ok(transaction) => {
                NEWEST_TRANSACTION_ID.fetch_max(transaction.id, Ordering::SeqCst);
                Ended::Ok
            }
            Err(error) => ended(Err::<(), _>(error), expected),
        }
    }
}

fn ended<T>(result: Result<T, ClientError>, expected: &[Rejection]) -> Ended {
    match result {
        Ok(_) => Ended::Ok,
        Err(ClientError::Rejected { rejection, .. }) if expected.contains(&rejection) => {
            Ended::Expected
        }
        Err(error) => Ended::Unexpected(error.to_string()),
    }
}

/// Buys one potion for `player`. A purchase refused because the player's stack is full is
/// followed by a consumption of the whole stack, as a player drinks them: the catalog caps a
/// stack (99 in the demo catalog), so 10,000 players hold at most 990,000 potions, and a run
/// that buys more would otherwise go on measuring refusals, which write no transaction. The
/// refusal counts as the request's (expected) outcome; the consumption's call is extra work the
/// phase pays for, about one per stack.
async fn buy_potion(
    client: &mut CofferClient,
    phase: &WritePhase,
    player: &str,
    key: &str,
) -> Ended {
    let bought = client
        .purchase(player, "potion", &[("coins", 10)], key)
        .await;
    if let Err(ClientError::Rejected {
        rejection: Rejection::StackLimitExceeded,
        ..
    }) = &bought
    {
        let stack = POTION_STACK_MAX.load(Ordering::Relaxed);
        let used = client
            .consume(player, "potion", stack, &format!("{key}-drink"))
            .await;
        // Another request of the same player may have emptied the stack first.
        match phase.ended(used, &[Rejection::InsufficientItems]) {
            Ended::Ok => {
                STACKS_EMPTIED.fetch_add(1, Ordering::Relaxed);
            }
            Ended::Expected => {}
            Ended::Unexpected(error) => {
                return Ended::Unexpected(format!("emptying a full stack of potions: {error}"));
            }
        }
    }
    phase.ended(
        bought,
        &[Rejection::StackLimitExceeded, Rejection::InsufficientFunds],
    )
}

/// Most potions a player may hold, from the server's catalog: the phases buy the demo
/// catalog's `potion` offer.
async fn potion_stack_max(admin: &mut CofferClient) -> Result<u64, String> {
    let catalog = admin.catalog().await.map_err(|error| error.to_string())?;
    catalog
        .items
        .iter()
        .find(|item| item.id == "potion")
        .map(|item| item.max_quantity)
        .filter(|stack| *stack > 0)
        .ok_or_else(|| {
            "the server's catalog has no `potion` item; the load generator buys the demo \
             catalog's potion offer (assets/catalog.toml)"
                .to_owned()
        })
}

/// Grants coins to players `from..to` (their first transactions: an opening and a grant each).
async fn prepare_players(
    connections: &[CofferClient],
    from: usize,
    to: usize,
) -> Result<(), ClientError> {
    let mut calls = tokio::task::JoinSet::new();
    for (call, first) in (from..to).step_by(SETUP_GRANTS_PER_CALL).enumerate() {
        if calls.len() >= SETUP_CALLS_IN_FLIGHT
            && let Some(done) = calls.join_next().await
        {
            done.expect("setup task")?;
        }
        let mut admin = connections[call % connections.len()].clone();
        calls.spawn(async move {
            grant_setup_coins(&mut admin, first, (first + SETUP_GRANTS_PER_CALL).min(to)).await
        });
    }
    while let Some(done) = calls.join_next().await {
        done.expect("setup task")?;
    }
    Ok(())
}

async fn grant_setup_coins(
    admin: &mut CofferClient,
    first: usize,
    end: usize,
) -> Result<(), ClientError> {
    let operations = (first..end)
        .map(|p| pb::Operation {
            operation: Some(pb::operation::Operation::Grant(pb::GrantOperation {
                player_id: format!("p{p}"),
                contents: Some(pb::Contents {
                    currencies: coffer_client::money(&[("coins", SETUP_COINS)]),
                    items: vec![],
                }),
            })),
        })
        .collect();
    admin
        .execute(operations, "load test setup", &format!("setup-{first}"))
        .await?;
    Ok(())
}

const POSTGRES_BASELINE_SCHEMA: &str = "
DROP TABLE IF EXISTS loadgen_balances, loadgen_ledger, loadgen_idempotency;
CREATE TABLE loadgen_balances (player TEXT PRIMARY KEY, coins BIGINT NOT NULL CHECK (coins >= 0), potions BIGINT NOT NULL);
CREATE TABLE loadgen_ledger (id BIGSERIAL PRIMARY KEY, player TEXT NOT NULL, amount BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE loadgen_idempotency (key TEXT PRIMARY KEY, ledger_id BIGINT NOT NULL);
";

/// The purchase a typical studio backend would write: idempotency row, balance check and
/// update, ledger row, in one transaction with synchronous_commit on.
async fn postgres_baseline(url: &str, args: &Args) -> Result<PhaseResult, tokio_postgres::Error> {
    let (setup, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    setup.batch_execute(POSTGRES_BASELINE_SCHEMA).await?;
    setup
        .execute(
            "INSERT INTO loadgen_balances SELECT 'p' || g, $1, 0 FROM generate_series(0, $2::int - 1) g",
            &[&SETUP_COINS, &(args.players as i32)],
        )
        .await?;
    let mut clients = Vec::new();
    for _ in 0..args.concurrency.min(CONCURRENCY_MAX) {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.batch_execute("SET synchronous_commit = on").await?;
        clients.push(Arc::new(tokio::sync::Mutex::new(client)));
    }
    let players = args.players as u64;
    let clients = Arc::new(clients);
    Ok(run_phase("postgres purchase (baseline)", args, None, move |worker, sequence| {
        let clients = Arc::clone(&clients);
        async move {
            let mut rng = Rng(0x9e37_79b9 ^ ((worker as u64) << 32) ^ sequence);
            let player = format!("p{}", rng.below(players));
            let key = format!("w{worker}-{sequence}");
            let mut client = clients[worker].lock().await;
            let result = async {
                let txn = client.transaction().await?;
                let row = txn.query_one("SELECT coins FROM loadgen_balances WHERE player = $1 FOR UPDATE", &[&player]).await?;
                let coins: i64 = row.get(0);
                if coins < 10 {
                    return Ok(false);
                }
                txn.execute("UPDATE loadgen_balances SET coins = coins - 10, potions = potions + 1 WHERE player = $1", &[&player]).await?;
                let id: i64 = txn.query_one("INSERT INTO loadgen_ledger (player, amount) VALUES ($1, -10) RETURNING id", &[&player]).await?.get(0);
                txn.execute("INSERT INTO loadgen_idempotency (key, ledger_id) VALUES ($1, $2)", &[&key, &id]).await?;
                txn.commit().await?;
                Ok::<bool, tokio_postgres::Error>(true)
            }
            .await;
            match result {
                Ok(true) => Ended::Ok,
                Ok(false) => Ended::Expected,
                Err(error) => Ended::Unexpected(error.to_string()),
            }
        }
    })
    .await)
}

/// Health `Check` calls over `channels`: against Coffer's server the no-op ceiling, against a
/// [`ReferenceServer`] a durable append each.
async fn health_check_phase(
    name: &str,
    args: &Args,
    channels: &Arc<Vec<tonic::transport::Channel>>,
) -> PhaseResult {
    let health = Arc::clone(channels);
    run_phase(name, args, None, move |worker, _| {
        let channel = health[worker % health.len()].clone();
        async move {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            match client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                Ok(_) => Ended::Ok,
                Err(status) => Ended::Unexpected(status.to_string()),
            }
        }
    })
    .await
}

/// `connections` channels (at least one) to `endpoint`, each its own HTTP/2 connection.
async fn loopback_channels(
    endpoint: &str,
    connections: usize,
) -> Result<Vec<tonic::transport::Channel>, tonic::transport::Error> {
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        channels.push(
            tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// Health checks against the reference server of `store`: a durable append each. Reads back
/// how many rows the phase made durable.
async fn reference_phase(
    store: AppendStore,
    args: &Args,
    server: &ReferenceServer,
    channels: &Arc<Vec<tonic::transport::Channel>>,
) -> Result<PhaseResult, String> {
    let before = server.rows().await?;
    let mut result = health_check_phase(store.phase_name(), args, channels).await;
    result.rows_durable = Some(server.rows().await? - before);
    Ok(result)
}

/// Purchases of one potion by players drawn uniformly from the first `players`.
async fn purchase_phase(
    name: &str,
    args: &Args,
    connections: &[CofferClient],
    players: usize,
    rate_per_s: Option<f64>,
) -> PhaseResult {
    let connections = Arc::new(connections.to_vec());
    let players = players as u64;
    let phase = WritePhase::start();
    run_phase(name, args, rate_per_s, move |worker, sequence| {
        let mut client = connections[worker % connections.len()].clone();
        async move {
            let mut rng = Rng(0x51_7cc1_b727_220a
                ^ ((worker as u64) << 32)
                ^ sequence
                ^ (phase.number << 56));
            let player = format!("p{}", rng.below(players));
            let key = format!("buy-{:x}-{}-w{worker}-{sequence}", phase.run, phase.number);
            buy_potion(&mut client, &phase, &player, &key).await
        }
    })
    .await
}

async fn mixed_phase(args: &Args, connections: &[CofferClient], mix: &[u64]) -> PhaseResult {
    let mixed = Arc::new(connections.to_vec());
    let mix = Arc::new(mix.to_vec());
    let players = args.players as u64;
    let phase = WritePhase::start();
    run_phase(
        "coffer mixed workload",
        args,
        None,
        move |worker, sequence| {
            let mut client = mixed[worker % mixed.len()].clone();
            let mix = Arc::clone(&mix);
            async move {
                let mut rng =
                    Rng(0x2545_f491 ^ ((worker as u64) << 40) ^ sequence ^ (phase.number << 56));
                let player = format!("p{}", rng.below(players));
                let key = format!("mix-{:x}-{}-w{worker}-{sequence}", phase.run, phase.number);
                let mut pick = rng.below(mix.iter().sum());
                let mut kind = 0;
                while pick >= mix[kind] {
                    pick -= mix[kind];
                    kind += 1;
                }
                match kind {
                    0 => buy_potion(&mut client, &phase, &player, &key).await,
                    1 => {
                        let level = 1 + rng.below(5) as u32;
                        let price: &[(&str, i64)] = match level {
                            1 => &[("coins", 50)],
                            2 => &[("coins", 120)],
                            3 => &[("coins", 300)],
                            4 => &[("coins", 600), ("gems", 2)],
                            _ => &[("coins", 1_200), ("gems", 5)],
                        };
                        phase.ended(
                            client
                                .upgrade(&player, "speed_boots", level, price, &key)
                                .await,
                            &[
                                Rejection::LevelChanged,
                                Rejection::MaxLevelReached,
                                Rejection::InsufficientFunds,
                                Rejection::PriceChanged,
                            ],
                        )
                    }
                    2 => phase.ended(
                        client.claim_reward(&player, "coin_pickup", &key).await,
                        &[Rejection::RateLimited, Rejection::CapExceeded],
                    ),
                    _ => ended(client.wallet(&player).await, &[]),
                }
            }
        },
    )
    .await
}

/// The embedded server on a tokio runtime of its own, as the server has in a process of its
/// own. On the generator's runtime, client and server tasks took turns on the same workers:
/// the no-op ceiling then ran at anything from ≈ 47k to 72k calls/s from one run to the next
/// on the same machine (72–73k with the server as its own process) while the purchase rate
/// did not move with it, so the ratio to the ceiling depended on that draw.
fn embedded_server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("coffer-server-rt")
        .build()
        .expect("the embedded server's runtime")
}

/// The embedded server and its runtime. A runtime cannot be dropped from async code (it would
/// block), so dropping this, also on an early return, lets the runtime's threads end in the
/// background.
struct EmbeddedServer {
    runtime: Option<tokio::runtime::Runtime>,
    server: Option<coffer_server::RunningServer>,
}

impl EmbeddedServer {
    /// Stops the server on its own runtime: the writer drains and the checkpointer folds in
    /// what is left before this returns.
    async fn shutdown(&mut self) {
        if let (Some(runtime), Some(server)) = (&self.runtime, self.server.take()) {
            let _ = runtime.spawn(server.shutdown()).await;
        }
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // As the `coffer` binary does: the embedded server runs in this process.
    coffer_server::disable_transparent_huge_pages();
    let args = Args::parse();
    let mix: Vec<u64> = args
        .mix
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    if mix.len() != 4 || mix.iter().sum::<u64>() == 0 {
        eprintln!("--mix needs four percentages: purchase,upgrade,claim,read");
        return std::process::ExitCode::FAILURE;
    }

    let data_dir = tempfile::tempdir().expect("temporary directory");
    // Beside the embedded server's data (same file system), never inside it.
    let probe_dir = tempfile::tempdir().expect("temporary directory");
    let mut embedded = None;
    let mut metrics_addr = args.metrics_addr;
    let (endpoint, admin_key) = match &args.endpoint {
        Some(endpoint) => match &args.admin_key {
            Some(key) => (endpoint.clone(), key.clone()),
            None => {
                eprintln!("--endpoint needs --admin-key (or COFFER_ADMIN_KEY)");
                return std::process::ExitCode::FAILURE;
            }
        },
        None => {
            let mut config =
                coffer_server::Config::development("127.0.0.1:0".parse().unwrap(), data_dir.path());
            // The generator is one caller driving many players: lift the per-key limit.
            config.limits.key_requests_per_second = u32::MAX;
            config.limits.key_burst = u32::MAX;
            config.redb.two_phase_commit = args.redb_two_phase_commit;
            config.redb.checkpoint_interval_ms = args.redb_checkpoint_interval_ms;
            config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
            let runtime = embedded_server_runtime();
            let server = runtime
                .spawn(coffer_server::start(config))
                .await
                .expect("the embedded server's start task")
                .expect("embedded server starts");
            let endpoint = format!("http://{}", server.local_addr);
            let key = server
                .development_admin_key
                .clone()
                .expect("development key");
            metrics_addr = server.metrics_addr;
            embedded = Some(EmbeddedServer {
                runtime: Some(runtime),
                server: Some(server),
            });
            (endpoint, key)
        }
    };

    let mut connections = Vec::new();
    for _ in 0..args.connections.max(1) {
        let client = CofferClient::connect(endpoint.clone())
            .await
            .expect("connect");
        connections.push(client.with_token(&admin_key).expect("admin key"));
    }
    let mut admin = connections[0].clone();
    if let Err(error) = prepare_players(&connections, 0, args.players).await {
        eprintln!("preparing players failed: {error}");
        return std::process::ExitCode::FAILURE;
    }
    match potion_stack_max(&mut admin).await {
        Ok(stack) => POTION_STACK_MAX.store(stack, Ordering::Relaxed),
        Err(error) => {
            eprintln!("reading the catalog failed: {error}");
            return std::process::ExitCode::FAILURE;
        }
    }
    if !args.json {
        eprintln!(
            "{} players ready at {endpoint}; {} in flight over {} connections, {} s per phase",
            args.players,
            args.concurrency,
            connections.len(),
            args.duration_s
        );
    }

    if metrics_addr.is_none() && !args.json {
        eprintln!(
            "no --metrics-addr: phases start without waiting for the server's checkpoints, so a phase may pay for an earlier one's writes"
        );
    }

    let channels = loopback_channels(&endpoint, args.connections)
        .await
        .expect("connect");
    let health = Arc::new(channels);
    let mut references: Vec<(AppendStore, ReferenceServer, Arc<Vec<_>>)> = Vec::new();
    for store in args.phases.iter().filter_map(|phase| phase.append_store()) {
        if references.iter().any(|r| r.0 == store) {
            continue;
        }
        let started = match ReferenceServer::start(store, probe_dir.path()) {
            Ok(server) => match loopback_channels(&server.endpoint, args.connections).await {
                Ok(channels) => Ok((server, Arc::new(channels))),
                Err(error) => Err(error.to_string()),
            },
            Err(error) => Err(error.to_string()),
        };
        match started {
            Ok((server, channels)) => references.push((store, server, channels)),
            Err(error) => {
                eprintln!(
                    "starting the reference server ({}) failed: {error}",
                    store.phase_name()
                );
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let mut rounds: Vec<Vec<PhaseResult>> = Vec::new();
    for round in 1..=args.rounds.max(1) {
        if args.rounds > 1 && !args.json {
            eprintln!("round {round} of {}", args.rounds);
        }
        let mut results = Vec::new();
        for phase in &args.phases {
            let Ok(settled) = settle_at(SettleAt::PhaseStart, metrics_addr, &args).await else {
                return std::process::ExitCode::FAILURE;
            };
            let before = request_durations(metrics_addr).await;
            let cpu_start = machine_cpu::now();
            let result = match phase {
                Phase::Noop => health_check_phase(NOOP_PHASE_NAME, &args, &health).await,
                Phase::AppendRedb | Phase::AppendFile => {
                    let (store, server, channels) = references
                        .iter()
                        .find(|r| Some(r.0) == phase.append_store())
                        .expect("a reference server is started for every append phase listed");
                    match reference_phase(*store, &args, server, channels).await {
                        Ok(result) => result,
                        Err(error) => {
                            eprintln!("{} failed: {error}", store.phase_name());
                            return std::process::ExitCode::FAILURE;
                        }
                    }
                }
                Phase::Disk => match disk_phase(&args, probe_dir.path()).await {
                    Ok(result) => result,
                    Err(error) => {
                        eprintln!("disk phase failed: {error}");
                        return std::process::ExitCode::FAILURE;
                    }
                },
                Phase::Purchase => {
                    purchase_phase(PURCHASE_PHASE_NAME, &args, &connections, args.players, None)
                        .await
                }
                Phase::PurchaseHalfPeak => {
                    let peak = results
                        .iter()
                        .find(|r: &&PhaseResult| r.name == PURCHASE_PHASE_NAME)
                        .map(PhaseResult::rate);
                    let Some(peak) = peak else {
                        eprintln!("purchase-half needs the purchase phase before it");
                        return std::process::ExitCode::FAILURE;
                    };
                    purchase_phase(
                        "purchase at half of peak",
                        &args,
                        &connections,
                        args.players,
                        Some(peak / 2.0),
                    )
                    .await
                }
                Phase::Mixed => mixed_phase(&args, &connections, &mix).await,
                Phase::Postgres => match &args.postgres_url {
                    Some(url) => match postgres_baseline(url, &args).await {
                        Ok(result) => result,
                        Err(error) => {
                            eprintln!("PostgreSQL baseline failed: {error}");
                            return std::process::ExitCode::FAILURE;
                        }
                    },
                    None => continue,
                },
            };
            let writes = matches!(
                phase,
                Phase::Purchase | Phase::PurchaseHalfPeak | Phase::Mixed
            );
            let Ok(result) = finish_phase(
                result,
                cpu_start,
                settled,
                before,
                writes,
                metrics_addr,
                &args,
            )
            .await
            else {
                return std::process::ExitCode::FAILURE;
            };
            results.push(result);
        }
        rounds.push(results);
    }
    let mut results = median_rounds(&rounds);
    let mut prepared = args.players;
    let mut scale_runs: Vec<Vec<PhaseResult>> = Vec::new();
    for &players in &args.scale_players {
        if players > prepared {
            let started = Instant::now();
            if let Err(error) = prepare_players(&connections, prepared, players).await {
                eprintln!("preparing players failed: {error}");
                return std::process::ExitCode::FAILURE;
            }
            if !args.json {
                eprintln!(
                    "  grew to {players} players in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            prepared = players;
        }
        // As often as the phase list ran, so the row compared with the first purchase row is a
        // median too, not one run of a machine whose speed drifts.
        let name = format!("purchase @ {players} players");
        let mut runs = Vec::new();
        for _ in 0..args.rounds.max(1) {
            let Ok(settled) = settle_at(SettleAt::PhaseStart, metrics_addr, &args).await else {
                return std::process::ExitCode::FAILURE;
            };
            let before = request_durations(metrics_addr).await;
            let cpu_start = machine_cpu::now();
            let result = purchase_phase(&name, &args, &connections, players, None).await;
            let Ok(result) = finish_phase(
                result,
                cpu_start,
                settled,
                before,
                true,
                metrics_addr,
                &args,
            )
            .await
            else {
                return std::process::ExitCode::FAILURE;
            };
            runs.push(result);
        }
        let mut by_rate: Vec<&PhaseResult> = runs.iter().collect();
        by_rate.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        results.push(by_rate[by_rate.len() / 2].clone());
        scale_runs.push(runs);
    }
    let report = match admin.verify_ledger().await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("verifier call failed: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Every run of every phase, not only the median rows.
    let unexpected: u64 = rounds
        .iter()
        .chain(&scale_runs)
        .flatten()
        .map(|r| r.unexpected_errors)
        .sum();
    if args.json {
        let json = serde_json::json!({
            "players": args.players, "concurrency": args.concurrency, "connections": args.connections,
            "duration_s": args.duration_s, "phases": results, "rounds": rounds, "scale_runs": scale_runs,
            "verifier": { "clean": report.clean, "transactions_checked": report.transactions_checked },
            "full_potion_stacks_emptied": STACKS_EMPTIED.load(Ordering::Relaxed),
        });
        println!("{}", serde_json::to_string_pretty(&json).expect("json"));
    } else {
        // Ratios are to the no-op ceiling of this same run; without that phase there is none.
        let ceiling = results
            .iter()
            .find(|r| r.name == NOOP_PHASE_NAME)
            .map(|r| r.per_second);
        println!(
            "{:<34} {:>10} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>11} {:>6} {:>7}",
            "phase",
            "requests",
            "answered/s",
            "sustained/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "vs no-op",
            "errors",
            "server p99",
            "busy",
            "CPU us"
        );
        for r in &results {
            // A sync is not a request: the disk row has no ratio.
            let vs_no_op = match r.vs_no_op.or(ceiling.map(|c| r.rate() / c.max(1.0))) {
                Some(ratio) if r.name != DISK_PHASE_NAME => format!("{:.0}%", 100.0 * ratio),
                _ => "-".to_owned(),
            };
            // A bucket bound: the server answered 99 % of the phase within it.
            let server_p99 = match &r.server {
                Some(server) => match server.p99_us_at_most {
                    Some(us) => format!("<= {}", us as f64 / 1000.0),
                    None => "> max".to_owned(),
                },
                None => "-".to_owned(),
            };
            let sustained = match r.sustained_per_second {
                Some(rate) => format!("{rate:.0}"),
                None => "-".to_owned(),
            };
            let busy = r
                .busy_percent
                .map_or_else(|| "-".to_owned(), |p| format!("{p:.0}%"));
            let cpu_us = r
                .cpu_us_per_request
                .map_or_else(|| "-".to_owned(), |us| format!("{us:.1}"));
            println!(
                "{:<34} {:>10} {:>10.0} {:>11} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>7} {:>11} {:>6} {:>7}",
                r.name,
                r.requests,
                r.per_second,
                sustained,
                r.p50_us as f64 / 1000.0,
                r.p90_us as f64 / 1000.0,
                r.p99_us as f64 / 1000.0,
                r.p999_us as f64 / 1000.0,
                vs_no_op,
                r.unexpected_errors,
                server_p99,
                busy,
                cpu_us
            );
        }
        if rounds.len() > 1 {
            println!(
                "{} rounds; each row is the phase's median round, 'vs no-op' the median of the ratios within rounds. Per round:",
                rounds.len()
            );
            for (phase, r) in results.iter().enumerate().take(rounds[0].len()) {
                let per_round: Vec<String> = rounds
                    .iter()
                    .map(|round| format!("{:.0}/s", round[phase].rate()))
                    .collect();
                println!("  {:<34} {}", r.name, per_round.join("  "));
            }
            for runs in &scale_runs {
                let per_run: Vec<String> = runs
                    .iter()
                    .map(|run| format!("{:.0}/s", run.rate()))
                    .collect();
                println!("  {:<34} {}", runs[0].name, per_run.join("  "));
            }
        }
        // Per round: stalls come and go, so each round's disk has its own floor.
        for (index, round) in rounds.iter().enumerate() {
            for r in round {
                if let Some(wait) = &r.disk_wait {
                    println!("disk, round {}: {}", index + 1, wait.summary());
                }
            }
        }
        let emptied = STACKS_EMPTIED.load(Ordering::Relaxed);
        if emptied > 0 {
            println!(
                "full stacks: {emptied} times a purchase was refused because the player held {} potions and the stack was then used up (a consumption, one more write)",
                POTION_STACK_MAX.load(Ordering::Relaxed)
            );
        }
        println!(
            "ledger verifier: {} ({} transactions replayed)",
            if report.clean { "clean" } else { "VIOLATIONS" },
            report.transactions_checked
        );
    }
    if let Some(mut embedded) = embedded {
        embedded.shutdown().await;
    }
    if !report.clean || unexpected > 0 {
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Back-to-back syncs of these lengths, in microseconds.
    fn timeline(durations_us: &[u64]) -> Vec<(u64, u64)> {
        let mut at = 0;
        durations_us
            .iter()
            .map(|took| {
                let sync = (at, at + took);
                at += took;
                sync
            })
            .collect()
    }

    #[test]
    fn a_disk_stall_reaches_every_commit_arriving_during_it() {
        // 1 ms syncs for half a second, one of 100 ms, 1 ms syncs for another half second.
        let mut durations = vec![1_000; 500];
        durations.push(100_000);
        durations.extend([1_000; 500]);
        let wait = DiskWait::of(&timeline(&durations)).unwrap();
        assert_eq!(wait.longest_sync_us, 100_000);
        // 100 ms of 1.1 s in a stall.
        assert!((wait.stalled_share - 100.0 / 1_100.0).abs() < 1e-6);
        // Outside the stall a commit waits for the rest of one sync and the next: 1–2 ms.
        assert!((1_000..=2_000).contains(&wait.p50_us), "{wait:?}");
        // 9 % of arrivals fall into the stall and wait up to 101 ms: the p99 is deep in it,
        // while 99.9 % of the syncs themselves took 1 ms.
        assert!(wait.p99_us > 80_000, "{wait:?}");
        assert!(wait.p999_us <= 101_100, "{wait:?}");
    }

    #[test]
    fn a_steady_disk_makes_commits_wait_at_most_two_syncs() {
        let wait = DiskWait::of(&timeline(&[500; 2_000])).unwrap();
        assert_eq!(wait.longest_sync_us, 500);
        assert_eq!(wait.stalled_share, 0.0);
        assert!(wait.p999_us <= 1_001, "{wait:?}");
        assert!(DiskWait::of(&[]).is_none());
    }

    #[test]
    fn metric_value_reads_the_unlabelled_sample_only() {
        let body = "\
# HELP coffer_checkpoint_busy_seconds_total Time the checkpointer spent.
# TYPE coffer_checkpoint_busy_seconds_total counter
coffer_checkpoint_busy_seconds_total_created 1.0
coffer_checkpoint_busy_seconds_total 12.5
coffer_journal_records_pending{shard=\"a\"} 3
";
        assert_eq!(metric_value(body, CHECKPOINT_BUSY_METRIC), Some(12.5));
        assert_eq!(metric_value(body, RECORDS_PENDING_METRIC), None);
    }

    #[test]
    fn ledger_bytes_per_request_need_both_scrapes_and_some_requests() {
        assert_eq!(
            written_per_request(Some(1_000.0), Some(41_960.0), 10),
            Some(4_096.0)
        );
        assert_eq!(written_per_request(None, Some(4_096.0), 10), None);
        assert_eq!(written_per_request(Some(0.0), None, 10), None);
        assert_eq!(written_per_request(Some(0.0), Some(4_096.0), 0), None);
        // A restarted server's counter starts again: no answer rather than a negative one.
        assert_eq!(written_per_request(Some(9_000.0), Some(4_096.0), 10), None);
    }

    #[test]
    fn a_write_phase_is_charged_the_checkpoint_work_not_the_wait() {
        let mut phase = PhaseResult {
            requests: 100_000,
            seconds: 10.0,
            per_second: 10_000.0,
            ..PhaseResult::default()
        };
        assert_eq!(
            phase.rate(),
            10_000.0,
            "no catch-up known: the answered rate"
        );
        phase.caught_up(Some(Settled {
            waited: Duration::from_secs(3),
            checkpoint_busy_s: 2.5,
            ledger_written_bytes: None,
        }));
        assert_eq!(phase.checkpoint_catch_up_s, Some(2.5));
        assert_eq!(phase.checkpoint_wait_s, Some(3.0));
        assert_eq!(phase.sustained_per_second, Some(8_000.0));
        assert_eq!(phase.rate(), 8_000.0);
        assert_eq!(
            phase.per_second, 10_000.0,
            "the answered rate stays as measured"
        );
    }
}
