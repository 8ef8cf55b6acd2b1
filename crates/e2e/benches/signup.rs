//! `make bench`: signups per second through the real stack (release binaries, real Postgres and RabbitMQ),
//! next to the raw argon2id bound of the same machine measured in the same run; latency percentiles; peak
//! memory per process; and what happens at twice the sustainable load (only quick 503s, flat memory).
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

use argon2::{Algorithm, Argon2, Params, Version, password_hash::PasswordHasher as _};
use e2e::stack::{Options, Stack};
use proto::user_metadata::v1::{GetUserByEmailRequest, MarkEmailVerifiedRequest};
use serde_json::json;
use tokio::sync::Mutex;

/// How long each load phase runs.
const PHASE: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let queue = 2 * cpus;
    let env = |name: &'static str, value: usize| ("password", name, value.to_string());
    let options =
        Options { env: vec![env("HASHING_THREADS", cpus), env("HASHING_QUEUE_LIMIT", queue)], ..Options::default() };
    let mut stack = Stack::start_with(options).await?;
    let ready = stack.wait_ready().await?;
    let memory = MemorySampler::start(stack.pids());
    let idle = memory.current().await;

    println!("# signup benchmark ({cpus} CPUs, release binaries)\n");
    println!(
        "exec-to-ready: {}",
        ready.iter().map(|(n, d)| format!("{n} {} ms", d.as_millis())).collect::<Vec<_>>().join(", ")
    );
    let bound = argon2_bound(cpus, Duration::from_secs(5));
    println!("raw argon2id (m=19456 KiB, t=2, p=1) on {cpus} threads: {bound:.1} hashes/s\n");

    let cpu_before = cpu_by_group(&stack);
    let saturated = closed_loop(&stack, cpus + queue, PHASE).await?;
    let cpu_after = cpu_by_group(&stack);
    let rate = saturated.accepted as f64 / saturated.elapsed.as_secs_f64();
    println!("## full concurrency ({} clients, {} s)", cpus + queue, PHASE.as_secs());
    saturated.print();
    println!("signups/s: {rate:.1} = {:.0}% of the argon2 bound (target >= 90%)", 100.0 * rate / bound);
    println!("CPU per accepted signup, by process (ms):");
    let per_signup: Vec<f64> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|((_, before), (_, after))| 1000.0 * (after - before) / saturated.accepted.max(1) as f64)
        .collect();
    for ((group, _), ms) in cpu_before.iter().zip(&per_signup) {
        println!("  {group:<20} {ms:>6.2}");
    }
    // The first five groups are our services; Postgres, RabbitMQ and the load generator share these cores only
    // because this is one machine.
    let ours: f64 = per_signup.iter().take(5).sum();
    let projected = 1000.0 * cpus as f64 / ours;
    println!(
        "our five services: {ours:.2} ms CPU per signup -> {projected:.1} signups/s on {cpus} cores = {:.0}% of the bound \
         with the backing services on other machines\n",
        100.0 * projected / bound
    );

    let existing = existing_vs_new(&stack, 20).await?;
    println!("## the same answer in comparable time (sequential, 20 each)");
    println!("p50 new {:.1} ms, existing verified {:.1} ms\n", existing.0, existing.1);

    let before = memory.peaks().await;
    let overload = open_loop(&stack, 2.0 * rate.max(1.0), PHASE).await?;
    println!("## twice the sustainable load, open loop ({:.1} req/s offered, {} s)", 2.0 * rate, PHASE.as_secs());
    overload.print();
    println!(
        "other errors: {} (target 0); 503 p99: {:.1} ms (target: quick)\n",
        overload.other,
        overload.refused_p99_ms()
    );

    println!("## resident memory per process: idle, peak at full concurrency, peak at twice the load, now");
    let now = memory.current().await;
    for (((name, idle), (_, before)), ((_, after), (_, now))) in
        idle.iter().zip(&before).zip(memory.peaks().await.iter().zip(&now))
    {
        println!("{name:<20} {:>7.1} {:>7.1} {:>7.1} {:>7.1} MiB", kib(*idle), kib(*before), kib(*after), kib(*now));
    }
    Ok(())
}

/// CPU seconds used so far by each of our processes, by Postgres, by RabbitMQ, and by this load generator.
fn cpu_by_group(stack: &Stack) -> Vec<(String, f64)> {
    let mut groups: Vec<(String, f64)> =
        stack.pids().into_iter().map(|(name, pid)| (name, cpu_seconds(pid).unwrap_or(0.0))).collect();
    for (group, comm) in [("postgres (all)", "postgres"), ("rabbitmq", "beam.smp")] {
        let total = processes_named(comm).into_iter().filter_map(cpu_seconds).sum();
        groups.push((group.to_owned(), total));
    }
    groups.push(("load generator".to_owned(), cpu_seconds(std::process::id()).unwrap_or(0.0)));
    groups
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn processes_named(comm: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
        .collect()
}

fn kib(value: u64) -> f64 {
    value as f64 / 1024.0
}

/// Hashes per second with `threads` threads doing nothing else, for `duration`.
fn argon2_bound(threads: usize, duration: Duration) -> f64 {
    let count = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let count = count.clone();
            std::thread::spawn(move || {
                let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
                let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                while start.elapsed() < duration {
                    if argon2.hash_password(b"a benchmark passphrase").is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
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
    let body = json!({ "email": email, "password": "a benchmark passphrase", "display_name": "Bench" });
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

/// Median latency of `n` signups for new emails and of `n` for verified accounts, one at a time.
async fn existing_vs_new(stack: &Stack, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut users = stack.users().await?;
    let mut emails = Vec::new();
    for i in 0..n {
        let email = format!("verified-{i}-{}@example.com", uuid::Uuid::now_v7().simple());
        stack
            .signup(&json!({ "email": email, "password": "a benchmark passphrase", "display_name": "V" }), None)
            .await?;
        let user = users.get_user_by_email(GetUserByEmailRequest { email: email.clone() }).await?.into_inner().user;
        let user_id = user.map(|u| u.user_id).unwrap_or_default();
        users.mark_email_verified(MarkEmailVerifiedRequest { user_id, verified_at: None }).await?;
        emails.push(email);
    }
    let time = |email: String| async move {
        let body = json!({ "email": email, "password": "another benchmark passphrase", "display_name": "V" });
        let start = Instant::now();
        let _ = stack.signup(&body, None).await;
        start.elapsed().as_secs_f64() * 1000.0
    };
    let mut existing = Vec::new();
    let mut fresh = Vec::new();
    for email in emails {
        existing.push(time(email).await);
        fresh.push(time(format!("fresh-{}@example.com", uuid::Uuid::now_v7().simple())).await);
    }
    Ok((percentiles(&fresh).0, percentiles(&existing).0))
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
