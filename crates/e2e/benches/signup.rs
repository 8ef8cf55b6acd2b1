//! `make bench`: signups per second through the real stack (release binaries, real Postgres and RabbitMQ, commits
//! that wait for the disk as a deployment's do), next to the raw argon2id bound measured in the same run; latency
//! percentiles; peak memory per process; and what happens at twice the sustainable load (only quick 503s, flat
//! memory).
//!
//! Two placements, each against the argon2 bound of the CPUs the hashing gets:
//! - everything on one machine: the five services, Postgres, RabbitMQ, the SMTP server and the load generator
//!   share every core with the hashing, so the bound is that of the whole machine;
//! - the password service on cores of its own (every thread of it pinned there, every thread of everything else
//!   pinned to the other cores), as a deployment that scales the services separately runs it; the bound is that
//!   of the hashing cores, measured on them.
//!
//! Each placement alternates rounds of raw hashing with rounds of signups, so the drift of a shared machine (a
//! VM's neighbours) hits the bound and the throughput alike. A round of signups counts only once its work is
//! done: after it ends, the benchmark waits until every subscriber has applied every accepted signup and its mail
//! has arrived, and charges that CPU to the round.
//!
//! On the whole machine it also measures sessions: authenticated `GET /v1/me` per second with a session token,
//! against the argon2 bound (what a password checked on every request could reach at best), and how many sign-ins
//! succeed while signups arrive at twice the sustainable rate.
//!
//! It reports figures and whether the targets hold; it is not a test and never fails a build on timing.

// A benchmark is a report: printing it is its job.
#![allow(clippy::print_stdout, reason = "the benchmark prints its report")]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use e2e::{
    cpu::{self, Pinned, Processes},
    stack::{Options, Stack, processed_on, subscribers_of},
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// How long the overload phase runs.
const PHASE: Duration = Duration::from_secs(20);
/// Rounds of raw hashing and load, alternated.
const ROUNDS: usize = 6;
/// How long each load round runs.
const LOAD: Duration = Duration::from_secs(8);
/// The password every signup and every raw hash uses.
const PASSWORD: &[u8] = b"a benchmark passphrase";
/// How long the work a phase accepted may take to finish before the benchmark gives up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
/// How long each round of the raw argon2 bound runs.
const BOUND: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    // `cargo bench -p e2e --bench signup -- whole` (or `-- dedicated`) runs one placement only; `-- refusal` only
    // what a refused signup costs (at a given rate: `-- refusal 100`); `-- sessions` only the session reads;
    // `-- launch` only the exec-to-ready times; `-- alike` only the known-vs-unknown answer times.
    let mut args = std::env::args().skip(1);
    let only = args.find(|a| ["whole", "dedicated", "refusal", "sessions", "launch", "alike"].contains(&a.as_str()));
    println!("# signup benchmark ({cpus} CPUs, release binaries)\n");
    if only.as_deref() == Some("refusal") {
        return refusal_cost(args.next().and_then(|rate| rate.parse().ok()).unwrap_or(100.0)).await;
    }
    if only.as_deref() == Some("launch") {
        let (mut stack, _) = stack_hashing_on(cpus, SHARED_QUEUE_PER_THREAD).await?;
        return launch_times(&mut stack).await;
    }
    if only.as_deref() == Some("alike") {
        let (stack, _) = stack_hashing_on(cpus, SHARED_QUEUE_PER_THREAD).await?;
        return same_time(&stack).await;
    }
    if only.as_deref() == Some("sessions") {
        let (stack, _) = stack_hashing_on(cpus, SHARED_QUEUE_PER_THREAD).await?;
        let hashing = Hashing { threads: cpus, cpus: None };
        let bound = hashing.run(BOUND) as f64 / BOUND.as_secs_f64();
        return session_phase(&stack, &verified_account(&stack).await?, bound).await;
    }
    if only.as_deref() != Some("dedicated") {
        whole_machine(cpus).await?;
    }
    if only.as_deref() != Some("whole") {
        if cpus == 1 {
            println!("## password on cores of its own: skipped, this machine has one CPU");
        } else {
            // Ctrl-C drops the run, and with it the pinning: Postgres and RabbitMQ get their CPUs back.
            tokio::select! {
                run = dedicated_cores(cpus) => run?,
                _ = tokio::signal::ctrl_c() => println!("interrupted; every process has its CPUs back"),
            }
        }
    }
    Ok(())
}

/// Hashes allowed to wait per hashing thread (`HASHING_QUEUE_LIMIT` / `HASHING_THREADS`) on the shared machine:
/// the default.
const SHARED_QUEUE_PER_THREAD: usize = 2;
/// The same when password has CPUs of its own: one more, so a hash is always waiting while the others make their
/// round trips through signup-api and user-metadata, and the hashing CPUs never idle.
const DEDICATED_QUEUE_PER_THREAD: usize = 3;

/// A stack whose password service hashes on `threads` threads with a queue of `queue_per_thread` each.
async fn stack_hashing_on(threads: usize, queue_per_thread: usize) -> anyhow::Result<(Stack, Vec<(String, Duration)>)> {
    let env = |name: &'static str, value: usize| ("password", name, value.to_string());
    let mut env = vec![env("HASHING_THREADS", threads), env("HASHING_QUEUE_LIMIT", queue_per_thread * threads)];
    env.extend(production_polling());
    let options = Options { env, durable: true, ..Options::default() };
    let mut stack = Stack::start_with(options).await?;
    let ready = stack.wait_ready().await?;
    Ok((stack, ready))
}

/// The test stack polls its outboxes and mail queue every 100-200 ms so tests do not wait; measured here are the
/// defaults a deployment runs with (new work wakes them at once by notification either way).
fn production_polling() -> Vec<(&'static str, &'static str, String)> {
    let every_second = |service, name| (service, name, "1000".to_owned());
    vec![
        every_second("user-metadata", "OUTBOX_POLL_INTERVAL_MS"),
        every_second("password", "OUTBOX_POLL_INTERVAL_MS"),
        every_second("email-verification", "MAIL_POLL_INTERVAL_MS"),
    ]
}

/// Everything on one machine: throughput and CPU per signup, new vs existing, twice the load, memory.
async fn whole_machine(cpus: usize) -> anyhow::Result<()> {
    let queue = SHARED_QUEUE_PER_THREAD;
    let (mut stack, ready) = stack_hashing_on(cpus, queue).await?;
    let memory = MemorySampler::start(stack.pids());
    let idle = memory.current().await;
    println!("## everything on one machine\n");
    println!(
        "exec-to-ready: {}",
        ready.iter().map(|(n, d)| format!("{n} {} ms", d.as_millis())).collect::<Vec<_>>().join(", ")
    );
    // Every client admitted (threads + queue), none refused.
    let clients = (1 + queue) * cpus;
    let run = measured(&stack, clients, &Hashing { threads: cpus, cpus: None }).await?;
    println!("### full concurrency ({clients} clients)");
    run.print("the whole machine's argon2 bound");
    // In hashes' worth too: the machine's speed drifts between runs, and this ratio much less than milliseconds.
    println!(
        "everything but the hashing (every process, Postgres and RabbitMQ included, the load generator not): {:.2} ms \
         CPU per signup = {:.3} hashes' worth",
        run.non_hashing_ms(),
        run.non_hashing_ms() / (1000.0 * run.threads_per_hash())
    );
    // The first five groups are our services; Postgres, RabbitMQ and the load generator share these cores only
    // because this is one machine.
    let ours: f64 = run.cpu_ms.iter().take(5).map(|(_, ms)| ms).sum();
    let projected = 1000.0 * cpus as f64 / ours;
    println!(
        "our five services: {ours:.2} ms CPU per signup -> {projected:.1} signups/s on {cpus} cores = {:.0}% of the \
         bound if Postgres, RabbitMQ and the load generator ran elsewhere\n",
        100.0 * projected / run.bound()
    );

    same_time(&stack).await?;

    let account = verified_account(&stack).await?;
    session_phase(&stack, &account, run.bound()).await?;

    let before = memory.peaks().await;
    let rate = run.rate();
    let (overload, sign_ins) =
        tokio::join!(open_loop(&stack, 2.0 * rate.max(1.0), PHASE), sign_ins_during(&stack, &account, PHASE));
    let (overload, sign_ins) = (overload?, sign_ins?);
    println!("### twice the sustainable load, open loop ({:.1} req/s offered, {} s)", 2.0 * rate, PHASE.as_secs());
    overload.print();
    println!(
        "other errors: {} (target 0); 503 p99: {:.1} ms (target: quick)",
        overload.other,
        overload.refused_p99_ms()
    );
    println!(
        "sign-ins meanwhile (one client after another): {} of {} succeeded = {:.0}% (target >= 90%)\n",
        sign_ins.0,
        sign_ins.1,
        100.0 * sign_ins.0 as f64 / sign_ins.1.max(1) as f64
    );
    refusal_cost(2.0 * rate.max(1.0)).await?;

    println!("### resident memory per process: idle, peak at full concurrency, peak at twice the load, now");
    let now = memory.current().await;
    for (((name, idle), (_, before)), ((_, after), (_, now))) in
        idle.iter().zip(&before).zip(memory.peaks().await.iter().zip(&now))
    {
        println!("{name:<20} {:>7.1} {:>7.1} {:>7.1} {:>7.1} MiB", kib(*idle), kib(*before), kib(*after), kib(*now));
    }
    println!();
    launch_times(&mut stack).await
}

/// Relaunches of each process, for its median exec-to-ready time.
const LAUNCHES: usize = 5;

/// Each process from exec to ready (its readiness probe passing) against its already migrated database, as an
/// orchestrator starts a new task: the median of [`LAUNCHES`], with the database connection as configured (TLS
/// when the server offers it) and without TLS. The two stay close only because the workspace patches sqlx-core to
/// set TCP_NODELAY (vendor/README.md): this is the check that the patch, or the release that replaces it, works.
async fn launch_times(stack: &mut Stack) -> anyhow::Result<()> {
    println!("### exec to ready against migrated databases (median of {LAUNCHES}; target <= 50 ms)");
    let names: Vec<String> = stack.members.iter().map(|m| m.process.name().to_owned()).collect();
    for name in names {
        let mut line = format!("{name:<20}");
        for (label, tls) in [("database TLS as configured", None), ("without TLS", Some("disable"))] {
            let mut times = Vec::with_capacity(LAUNCHES);
            for _ in 0..LAUNCHES {
                times.push(stack.relaunch(&name, tls).await?.as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            line.push_str(&format!(" {:>6.1} ms {label};", times[LAUNCHES / 2]));
        }
        println!("{line}");
    }
    println!();
    Ok(())
}

/// What a refused signup costs. A stack of its own whose password service holds one signup hashing (for tens of
/// seconds) and one waiting, so every other signup is refused; signups arrive at `rate` for [`REFUSAL_PHASE`];
/// the CPU every process spent meanwhile, except the hashing threads and what the same time costs idle (polls,
/// probes, heartbeats: measured just before), is divided by the signups refused.
async fn refusal_cost(rate: f64) -> anyhow::Result<()> {
    let env = |name: &'static str, value: &str| ("password", name, value.to_owned());
    let mut env = vec![env("HASHING_THREADS", "1"), env("HASHING_QUEUE_LIMIT", "1"), env("ARGON2_ITERATIONS", "2000")];
    env.extend(production_polling());
    let mut stack = Stack::start_with(Options { env, durable: true, ..Options::default() }).await?;
    stack.wait_ready().await?;
    let password = stack.member("password").process.pid().unwrap_or(0);
    let hashing_s = || -> f64 {
        let threads = cpu::seconds_by_thread(password);
        threads.iter().filter(|(name, _)| name.starts_with("argon2")).map(|(_, s)| s).sum()
    };
    // CPU by process over a phase, the hashing threads' taken out of password's.
    let without_hashing = |phase: &mut Vec<(String, f64)>, hashing: f64| {
        phase.iter_mut().filter(|(name, _)| name == "password").for_each(|(_, s)| *s -= hashing);
    };
    let (idle_before, hashing_idle) = (cpu_by_group(&stack), hashing_s());
    tokio::time::sleep(REFUSAL_PHASE).await;
    let (before, hashing_before) = (cpu_by_group(&stack), hashing_s());
    let mut idle = Vec::new();
    add_deltas(&mut idle, &idle_before, &before);
    without_hashing(&mut idle, hashing_before - hashing_idle);
    let outcome = open_loop(&stack, rate, REFUSAL_PHASE).await?;
    let mut spent = Vec::new();
    add_deltas(&mut spent, &before, &cpu_by_group(&stack));
    without_hashing(&mut spent, hashing_s() - hashing_before);
    for (name, s) in &mut spent {
        *s -= idle.iter().find(|(n, _)| n == name).map_or(0.0, |(_, idle)| *idle);
    }
    let refused = outcome.refused.max(1) as f64;
    println!(
        "### what a refused signup costs ({rate:.1} req/s for {} s, every signup but two refused, idle cost aside)",
        REFUSAL_PHASE.as_secs()
    );
    println!("refused: {}, accepted: {}, other: {}", outcome.refused, outcome.accepted, outcome.other);
    let ours: f64 = spent.iter().filter(|(name, _)| name != "load gen + SMTP").map(|(_, s)| s).sum();
    let by_process: Vec<String> = spent.iter().map(|(name, s)| format!("{name} {:.3}", 1000.0 * s / refused)).collect();
    println!("CPU per refused signup: {:.2} ms (target < 1 ms): {}", 1000.0 * ours / refused, by_process.join(", "));
    let (p50, p99) = percentiles(&outcome.refused_ms);
    println!("503 latency with the CPUs not saturated: p50 {p50:.1} ms, p99 {p99:.1} ms\n");
    Ok(())
}

/// How long signups arrive to be refused.
const REFUSAL_PHASE: Duration = Duration::from_secs(10);

/// The password service on the upper half of the CPUs, everything else (our other services, Postgres, RabbitMQ,
/// this load generator and its SMTP server) on the lower half.
async fn dedicated_cores(cpus: usize) -> anyhow::Result<()> {
    let hashing: Vec<usize> = (cpus - cpus / 2..cpus).collect();
    let rest: Vec<usize> = (0..cpus - cpus / 2).collect();
    let queue = DEDICATED_QUEUE_PER_THREAD;
    let (stack, _) = stack_hashing_on(hashing.len(), queue).await?;
    let password = stack.member("password").process.pid().ok_or_else(|| anyhow::anyhow!("password is not running"))?;
    let mut others: Vec<Processes> =
        stack.pids().into_iter().filter(|(_, pid)| *pid != password).map(|(_, pid)| Processes::Id(pid)).collect();
    others.extend([Processes::Id(std::process::id()), Processes::Named("postgres"), Processes::Named("beam.smp")]);
    // Both are undone when dropped, at the end of this function or on an error.
    let _rest = Pinned::pin(others, &rest)?;
    let _hashing = Pinned::pin(vec![Processes::Id(password)], &hashing)?;

    println!("## password on cores of its own: CPUs {hashing:?} for password, {rest:?} for everything else\n");
    let clients = (1 + queue) * hashing.len();
    let run = measured(&stack, clients, &Hashing { threads: hashing.len(), cpus: Some(hashing.clone()) }).await?;
    println!("### full concurrency ({clients} clients)");
    run.print("the argon2 bound of the hashing CPUs (target >= 90%)");
    let busy = |own: bool| -> f64 {
        let ms: f64 = run.cpu_ms.iter().filter(|(group, _)| (group == "password") == own).map(|(_, ms)| ms).sum();
        ms * run.outcome.accepted as f64 / 1000.0 / run.busy.as_secs_f64()
    };
    println!(
        "CPU busy while loaded and draining: hashing CPUs {:.0}%, the other CPUs {:.0}%\n",
        100.0 * busy(true) / hashing.len() as f64,
        100.0 * busy(false) / rest.len() as f64
    );
    Ok(())
}

/// How the raw bound is measured: `threads` threads, pinned to `cpus` when given.
struct Hashing {
    threads: usize,
    cpus: Option<Vec<usize>>,
}

impl Hashing {
    /// Hashes done by the threads doing nothing else for `duration`. Each thread hashes in one reused block
    /// buffer, as the password service does: the strongest bound.
    fn run(&self, duration: Duration) -> usize {
        let count = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let workers: Vec<_> = (0..self.threads)
            .map(|_| {
                let count = count.clone();
                let cpus = self.cpus.clone();
                std::thread::spawn(move || {
                    if let Some(cpus) = cpus
                        && let Err(error) = cpu::pin_current_thread(&cpus)
                    {
                        println!("could not pin a hashing thread: {error}");
                    }
                    let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
                    let mut blocks = vec![Block::default(); params.block_count()];
                    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                    let mut out = [0u8; 32];
                    while start.elapsed() < duration {
                        let salt: [u8; 16] = rand::random();
                        let hashed = argon2.hash_password_into_with_memory(PASSWORD, &salt, &mut out, &mut blocks);
                        if hashed.is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            let _ = worker.join();
        }
        count.load(Ordering::Relaxed)
    }
}

/// Load rounds and raw-argon2 rounds, alternated, and the drain of the work each load round accepted.
struct Measured {
    outcome: Outcome,
    /// Raw hashes and the time they took, over every bound round.
    hashes: usize,
    hashing: Duration,
    hash_threads: usize,
    /// The longest drain: from the end of a load round until every subscriber applied every signup it accepted
    /// and every mail arrived.
    drain: Duration,
    /// Load rounds and their drains.
    busy: Duration,
    /// CPU per accepted signup, by process group, over load rounds and their drains.
    cpu_ms: Vec<(String, f64)>,
    /// CPU time the hypervisor took over load rounds and their drains, as a share of all CPU time.
    stolen: f64,
    /// CPU per accepted signup in the password service, by thread name.
    password_threads_ms: Vec<(String, f64)>,
}

impl Measured {
    /// Accepted signups per second of load.
    fn rate(&self) -> f64 {
        self.outcome.accepted as f64 / self.outcome.elapsed.as_secs_f64()
    }

    /// Raw hashes per second.
    fn bound(&self) -> f64 {
        self.hashes as f64 / self.hashing.as_secs_f64()
    }

    fn print(&self, of: &str) {
        println!(
            "{ROUNDS} rounds of {} s raw argon2id (m=19456 KiB, t=2, p=1), then {} s of signups",
            BOUND.as_secs(),
            LOAD.as_secs()
        );
        println!("raw argon2id: {:.1} hashes/s", self.bound());
        self.outcome.print();
        println!("signups/s: {:.1} = {:.0}% of {of}", self.rate(), 100.0 * self.rate() / self.bound());
        println!(
            "work done at most {:.1} s after a round ended (every subscriber applied every signup, every mail arrived)",
            self.drain.as_secs_f64()
        );
        println!("CPU time taken by the hypervisor (steal) meanwhile: {:.1}%", 100.0 * self.stolen);
        println!("CPU per accepted signup, by process (ms):");
        for (group, ms) in &self.cpu_ms {
            println!("  {group:<20} {ms:>6.2}");
        }
        let threads: Vec<String> = self
            .password_threads_ms
            .iter()
            .filter(|(_, ms)| *ms >= 0.01)
            .map(|(name, ms)| format!("{name} {ms:.2}"))
            .collect();
        println!("  password by thread: {}", threads.join(", "));
        println!("raw argon2id, for comparison: {:.2} ms per hash per thread", 1000.0 * self.threads_per_hash());
    }

    /// CPU per accepted signup of every process (the load generator aside) but the password service's hashing
    /// threads.
    fn non_hashing_ms(&self) -> f64 {
        let all: f64 = self.cpu_ms.iter().filter(|(name, _)| name != "load gen + SMTP").map(|(_, ms)| ms).sum();
        let hashing: f64 =
            self.password_threads_ms.iter().filter(|(name, _)| name.starts_with("argon2")).map(|(_, ms)| ms).sum();
        all - hashing
    }

    /// Seconds of one thread per raw hash.
    fn threads_per_hash(&self) -> f64 {
        self.hashing.as_secs_f64() * self.hash_threads as f64 / self.hashes.max(1) as f64
    }
}

/// [`ROUNDS`] rounds of: the raw bound for [`BOUND`], then `clients` clients signing up for [`LOAD`] and the
/// drain of what they started. Alternating lets the drift of a shared machine hit both figures alike. CPU is
/// charged over load rounds and drains only.
async fn measured(stack: &Stack, clients: usize, hashing: &Hashing) -> anyhow::Result<Measured> {
    let password = stack.member("password").process.pid().unwrap_or(0);
    let mut outcome = Outcome::default();
    let (mut hashes, mut hashed_for, mut drain, mut busy) = (0, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut cpu_s: Vec<(String, f64)> = Vec::new();
    let mut threads_s: Vec<(String, f64)> = Vec::new();
    let mut stolen = 0.0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        hashes += hashing.run(BOUND);
        hashed_for += started.elapsed();

        let (threads_before, cpu_before) = (cpu::seconds_by_thread(password), cpu_by_group(stack));
        let stolen_before = cpu::stolen_seconds();
        let started = Instant::now();
        let round = closed_loop(stack, clients, LOAD).await?;
        let ended = Instant::now();
        outcome.merge(round);
        drained(stack, outcome.accepted).await?;
        drain = drain.max(ended.elapsed());
        busy += started.elapsed();
        stolen += cpu::stolen_seconds() - stolen_before;
        add_deltas(&mut cpu_s, &cpu_before, &cpu_by_group(stack));
        add_deltas(&mut threads_s, &threads_before, &cpu::seconds_by_thread(password));
    }
    let per_signup = |seconds: &Vec<(String, f64)>| -> Vec<(String, f64)> {
        seconds.iter().map(|(name, s)| (name.clone(), 1000.0 * s / outcome.accepted.max(1) as f64)).collect()
    };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    Ok(Measured {
        cpu_ms: per_signup(&cpu_s),
        password_threads_ms: per_signup(&threads_s),
        stolen: stolen / (busy.as_secs_f64() * cpus),
        outcome,
        hashes,
        hashing: hashed_for,
        hash_threads: hashing.threads,
        drain,
        busy,
    })
}

/// Adds `after - before`, by name, to `totals`.
fn add_deltas(totals: &mut Vec<(String, f64)>, before: &[(String, f64)], after: &[(String, f64)]) {
    for (name, value) in after {
        let delta = value - before.iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| *v);
        match totals.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total += delta,
            None => totals.push((name.clone(), delta)),
        }
    }
}

/// Waits until every subscriber that acts on signups applied `accepted` of them and `accepted` mails arrived (the
/// stack saw no other signups before). It keeps one connection per subscriber for the whole wait: a new one per
/// poll (a Postgres backend forked and a TLS handshake every 25 ms) would be charged to the signups.
async fn drained(stack: &Stack, accepted: usize) -> anyhow::Result<()> {
    let expected = i64::try_from(accepted)?;
    let mut connections = Vec::new();
    for subscriber in subscribers_of(proto::Event::USER_SIGNED_UP) {
        connections.push((subscriber, stack.database(subscriber).connect().await?));
    }
    let connections = Mutex::new(connections);
    e2e::poll::eventually(DRAIN_TIMEOUT, || async {
        for (subscriber, connection) in connections.lock().await.iter_mut() {
            let applied = processed_on(connection, Some(proto::Event::USER_SIGNED_UP)).await?;
            anyhow::ensure!(applied >= expected, "{subscriber} applied {applied} of {expected}");
        }
        let mails = stack.smtp.received();
        anyhow::ensure!(mails >= accepted, "{mails} of {accepted} mails arrived");
        Ok(())
    })
    .await
}

/// CPU seconds used so far by each of our processes, by Postgres, by RabbitMQ, and by this load generator
/// (which also runs the SMTP server).
fn cpu_by_group(stack: &Stack) -> Vec<(String, f64)> {
    let mut groups: Vec<(String, f64)> =
        stack.pids().into_iter().map(|(name, pid)| (name, cpu::seconds(pid).unwrap_or(0.0))).collect();
    for (group, comm) in [("postgres (all)", "postgres"), ("rabbitmq", "beam.smp")] {
        let total = cpu::processes_named(comm).into_iter().filter_map(cpu::seconds).sum();
        groups.push((group.to_owned(), total));
    }
    groups.push(("load gen + SMTP".to_owned(), cpu::seconds(std::process::id()).unwrap_or(0.0)));
    groups
}

#[derive(Debug, Default)]
struct Outcome {
    accepted: usize,
    refused: usize,
    other: usize,
    accepted_ms: Vec<f64>,
    refused_ms: Vec<f64>,
    elapsed: Duration,
}

impl Outcome {
    /// Adds `other`'s counts, samples and time to these.
    fn merge(&mut self, other: Self) {
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.other += other.other;
        self.accepted_ms.extend(other.accepted_ms);
        self.refused_ms.extend(other.refused_ms);
        self.elapsed += other.elapsed;
    }

    fn print(&self) {
        let (p50, p99) = percentiles(&self.accepted_ms);
        println!(
            "202: {} (p50 {p50:.1} ms, p99 {p99:.1} ms); 503: {}; other: {}",
            self.accepted, self.refused, self.other
        );
    }

    fn refused_p99_ms(&self) -> f64 {
        percentiles(&self.refused_ms).1
    }
}

fn percentiles(samples: &[f64]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

async fn one_signup(stack: &Stack, outcome: &Mutex<Outcome>) {
    let email = format!("bench-{}@example.com", uuid::Uuid::now_v7().simple());
    let password = String::from_utf8_lossy(PASSWORD);
    let body = json!({ "email": email, "password": password, "display_name": "Bench" });
    let start = Instant::now();
    let status = stack.signup(&body, None).await.map(|r| r.status().as_u16()).unwrap_or(0);
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let mut outcome = outcome.lock().await;
    match status {
        202 => {
            outcome.accepted += 1;
            outcome.accepted_ms.push(ms);
        }
        503 => {
            outcome.refused += 1;
            outcome.refused_ms.push(ms);
        }
        _ => outcome.other += 1,
    }
}

/// `clients` clients each sending one signup after another.
async fn closed_loop(stack: &Stack, clients: usize, duration: Duration) -> anyhow::Result<Outcome> {
    let outcome = Mutex::new(Outcome::default());
    let start = Instant::now();
    let client = || async {
        while start.elapsed() < duration {
            one_signup(stack, &outcome).await;
        }
    };
    futures_util::future::join_all((0..clients).map(|_| client())).await;
    let mut outcome = outcome.into_inner();
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

/// Signups started at a fixed `rate` per second whatever the answers, as real traffic arrives.
async fn open_loop(stack: &Stack, rate: f64, duration: Duration) -> anyhow::Result<Outcome> {
    let outcome = Mutex::new(Outcome::default());
    let start = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    while start.elapsed() < duration {
        tokio::select! {
            _ = interval.tick() => in_flight.push(one_signup(stack, &outcome)),
            Some(()) = futures_util::StreamExt::next(&mut in_flight), if !in_flight.is_empty() => {}
        }
    }
    while futures_util::StreamExt::next(&mut in_flight).await.is_some() {}
    drop(in_flight);
    let mut outcome = outcome.into_inner();
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

/// Clients reading `/v1/me` with a session, and how long the phase runs.
const SESSION_CLIENTS: usize = 16;
const SESSION_PHASE: Duration = Duration::from_secs(5);

/// A verified account whose password signs in: its email.
async fn verified_account(stack: &Stack) -> anyhow::Result<String> {
    let email = format!("session-{}@example.com", uuid::Uuid::now_v7().simple());
    let password = String::from_utf8_lossy(PASSWORD);
    stack.signup(&json!({ "email": email, "password": password, "display_name": "S" }), None).await?;
    stack.mark_verified(&email).await?;
    // password promotes the verified signup's credential when it applies EmailVerified.
    e2e::poll::eventually(DRAIN_TIMEOUT, || async { stack.session(&email, &password).await.map(drop) }).await?;
    Ok(email)
}

/// What a phase of reads did.
#[derive(Debug, Default)]
struct Reads {
    ok: usize,
    failed: usize,
    latencies_ms: Vec<f64>,
    elapsed: Duration,
}

impl Reads {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Authenticated reads per second against `bound` (raw hashes/s: what a password checked per request could reach
/// at best), and the CPU each read costs, by process.
async fn session_phase(stack: &Stack, account: &str, bound: f64) -> anyhow::Result<()> {
    let before = cpu_by_group(stack);
    let reads = session_reads(stack, account, SESSION_CLIENTS, SESSION_PHASE).await?;
    let mut spent = Vec::new();
    add_deltas(&mut spent, &before, &cpu_by_group(stack));
    println!("### GET /v1/me with a session ({SESSION_CLIENTS} clients, {} s)", SESSION_PHASE.as_secs());
    let (p50, p99) = percentiles(&reads.latencies_ms);
    println!(
        "{:.0} requests/s (p50 {p50:.1} ms, p99 {p99:.1} ms, {} not 200) = {:.0}x the argon2 bound of {bound:.1}/s that \
         a password checked per request could reach at best (target >= 50x)",
        reads.rate(),
        reads.failed,
        reads.rate() / bound,
    );
    let per_read: Vec<String> =
        spent.iter().map(|(name, s)| format!("{name} {:.0}", 1e6 * s / reads.ok.max(1) as f64)).collect();
    println!("CPU per read (us): {}\n", per_read.join(", "));
    Ok(())
}

/// `clients` clients each reading `/v1/me` with one session, one request after another, for `duration`. Each
/// client is one kept-alive HTTP/1.1 connection driven by hyper directly, as `wrk` would: the load generator
/// shares the machine, and a general-purpose client (pool, URL parsing, redirects) costs it twice as much per read.
async fn session_reads(stack: &Stack, email: &str, clients: usize, duration: Duration) -> anyhow::Result<Reads> {
    let token = stack.session(email, &String::from_utf8_lossy(PASSWORD)).await?;
    let bearer = format!("Bearer {token}");
    let authority = stack.api_url().trim_start_matches("http://").to_owned();
    let start = Instant::now();
    let client = || async {
        let mut reads = Reads::default();
        let stream = tokio::net::TcpStream::connect(&authority).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        while start.elapsed() < duration {
            let request = hyper::Request::get("/v1/me")
                .header(hyper::header::HOST, &authority)
                .header(hyper::header::AUTHORIZATION, &bearer)
                .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
            let begun = Instant::now();
            // The connection takes the next request once it has finished with the last one.
            sender.ready().await?;
            let ok = match sender.send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    http_body_util::BodyExt::collect(response.into_body()).await.is_ok() && status == 200
                }
                Err(_) => false,
            };
            if ok {
                reads.ok += 1;
                reads.latencies_ms.push(begun.elapsed().as_secs_f64() * 1000.0);
            } else {
                reads.failed += 1;
            }
        }
        anyhow::Ok(reads)
    };
    let mut total = Reads::default();
    for reads in futures_util::future::join_all((0..clients).map(|_| client())).await {
        let reads = reads?;
        total.ok += reads.ok;
        total.failed += reads.failed;
        total.latencies_ms.extend(reads.latencies_ms);
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

/// Signs in to `email` one attempt after another for `duration`: (succeeded, attempted).
async fn sign_ins_during(stack: &Stack, email: &str, duration: Duration) -> anyhow::Result<(usize, usize)> {
    let password = String::from_utf8_lossy(PASSWORD);
    let (mut succeeded, mut attempted) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < duration {
        attempted += 1;
        if stack.sign_in(email, &password).await.is_ok_and(|r| r.status() == 201) {
            succeeded += 1;
        }
    }
    Ok((succeeded, attempted))
}

/// Signups, resends and reset requests for known and unknown addresses, one at a time: the same answer must come in
/// comparable time, or the time tells whether an account exists.
async fn same_time(stack: &Stack) -> anyhow::Result<()> {
    let alike = existing_vs_new(stack, 20).await?;
    let unknown = || format!("unknown-{}@example.com", uuid::Uuid::now_v7().simple());
    let some_signup = || uuid::Uuid::now_v7().to_string();
    let resend = known_vs_unknown(
        stack,
        "/v1/email-verifications",
        &alike.pending,
        || json!({ "email": unknown(), "signup_id": some_signup() }),
    )
    .await?;
    let verified: Vec<Value> = alike.verified.iter().map(|email| json!({ "email": email })).collect();
    let reset = known_vs_unknown(stack, "/v1/password-resets", &verified, || json!({ "email": unknown() })).await?;
    println!("### the same answer in comparable time (sequential, 20 each)");
    println!("signup p50: new {:.1} ms, existing verified {:.1} ms", alike.new_ms, alike.existing_ms);
    println!("resend p50: pending {:.1} ms, unknown {:.1} ms", resend.0, resend.1);
    println!("reset request p50: verified {:.1} ms, unknown {:.1} ms\n", reset.0, reset.1);
    Ok(())
}

/// Signups for new emails and for verified accounts, one at a time: the median latency of each, and the accounts
/// (the new ones still pending, as the body of a resend of their signup).
struct Alike {
    new_ms: f64,
    existing_ms: f64,
    verified: Vec<String>,
    pending: Vec<Value>,
}

async fn existing_vs_new(stack: &Stack, n: usize) -> anyhow::Result<Alike> {
    let mut emails = Vec::new();
    for i in 0..n {
        let email = format!("verified-{i}-{}@example.com", uuid::Uuid::now_v7().simple());
        stack
            .signup(&json!({ "email": email, "password": "a benchmark passphrase", "display_name": "V" }), None)
            .await?;
        stack.mark_verified(&email).await?;
        emails.push(email);
    }
    // The latency, and the signup the answer named.
    let time = |email: String| async move {
        let body = json!({ "email": email, "password": "another benchmark passphrase", "display_name": "V" });
        let start = Instant::now();
        let response = stack.signup(&body, None).await?;
        let elapsed = start.elapsed().as_secs_f64() * 1000.0;
        let accepted: Value = response.json().await?;
        anyhow::Ok((elapsed, accepted["signup_id"].clone()))
    };
    let (mut existing, mut fresh, mut pending) = (Vec::new(), Vec::new(), Vec::new());
    for email in &emails {
        existing.push(time(email.clone()).await?.0);
        let new = format!("fresh-{}@example.com", uuid::Uuid::now_v7().simple());
        let (elapsed, signup_id) = time(new.clone()).await?;
        fresh.push(elapsed);
        pending.push(json!({ "email": new, "signup_id": signup_id }));
    }
    Ok(Alike { new_ms: percentiles(&fresh).0, existing_ms: percentiles(&existing).0, verified: emails, pending })
}

/// Median latency of posting each of the `known` bodies to `path`, and as many `unknown()` ones (naming no
/// account), one at a time and alternating: a request that queues mail for a known address must not answer later
/// than one that finds no account.
async fn known_vs_unknown(
    stack: &Stack,
    path: &str,
    known: &[Value],
    unknown: impl Fn() -> Value,
) -> anyhow::Result<(f64, f64)> {
    let url = format!("{}{path}", stack.api_url());
    let time = |body: Value| {
        let url = &url;
        async move {
            let start = Instant::now();
            let response = stack.http().post(url).json(&body).send().await?;
            anyhow::ensure!(response.status() == 202, "{url} answered {}", response.status());
            Ok(start.elapsed().as_secs_f64() * 1000.0)
        }
    };
    let (mut with_account, mut without) = (Vec::new(), Vec::new());
    for body in known {
        with_account.push(time(body.clone()).await?);
        without.push(time(unknown()).await?);
    }
    Ok((percentiles(&with_account).0, percentiles(&without).0))
}

/// Samples every process's resident memory and keeps each one's peak.
struct MemorySampler {
    pids: Vec<(String, u32)>,
    peaks: Arc<Mutex<Vec<(String, u64)>>>,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

impl MemorySampler {
    fn start(pids: Vec<(String, u32)>) -> Self {
        let peaks = Arc::new(Mutex::new(pids.iter().map(|(n, _)| (n.clone(), 0)).collect::<Vec<_>>()));
        let sink = peaks.clone();
        let sampled = pids.clone();
        tokio::spawn(async move {
            loop {
                for (i, (_, pid)) in sampled.iter().enumerate() {
                    if let Some(rss) = rss_kib(*pid) {
                        let mut peaks = sink.lock().await;
                        peaks[i].1 = peaks[i].1.max(rss);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { pids, peaks }
    }

    /// Resident memory right now.
    async fn current(&self) -> Vec<(String, u64)> {
        self.pids.iter().map(|(name, pid)| (name.clone(), rss_kib(*pid).unwrap_or(0))).collect()
    }

    async fn peaks(&self) -> Vec<(String, u64)> {
        self.peaks.lock().await.clone()
    }
}

fn kib(value: u64) -> f64 {
    value as f64 / 1024.0
}
