//! `make bench` (second part): friend suggestions at scale. Seeds friend-discovery's database straight with a
//! million verified members and ten million contact edges, then reports `GetSuggestions` latency (p50/p99) over
//! gRPC against the real service, and how fast the service consumes `UserSignedUp` events (events/s).
//!
//! It reports figures; it is not a test and never fails a build on timing.

#![allow(clippy::print_stdout, reason = "the benchmark prints its report")]

use std::time::{Duration, Instant};

use e2e::{
    process::grpc_channel,
    stack::{Options, Stack},
};
use lapin::{BasicProperties, options::BasicPublishOptions};
use platform::events::Envelope;
use prost::Message as _;
use proto::{
    events::v1::UserSignedUp,
    friend_discovery::v1::{GetSuggestionsRequest, friend_discovery_service_client::FriendDiscoveryServiceClient},
};
use sqlx::Connection as _;

const MEMBERS: i64 = 1_000_000;
const CONTACTS_PER_MEMBER: i64 = 10;
const QUERIES: usize = 2_000;
const EVENTS: usize = 5_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut stack = Stack::start_with(Options::default()).await?;
    stack.wait_ready().await?;
    println!("# friend-discovery benchmark (release binaries)\n");

    let seeded = Instant::now();
    seed(&stack).await?;
    println!(
        "seeded {MEMBERS} verified members and {} contact edges straight into the database in {:.0} s",
        MEMBERS * CONTACTS_PER_MEMBER,
        seeded.elapsed().as_secs_f64()
    );

    let channel = grpc_channel(stack.member("friend-discovery").port).await?;
    let mut client = FriendDiscoveryServiceClient::new(channel);
    let mut latencies = Vec::with_capacity(QUERIES);
    let mut found = 0usize;
    for i in 0..QUERIES {
        // Spread the askers over the whole id space.
        let member = 1 + (i as i64 * 7_919 * 13) % MEMBERS;
        let request = GetSuggestionsRequest { user_id: member_id(member), limit: 20, page_token: String::new() };
        let started = Instant::now();
        let page = client.get_suggestions(request).await?.into_inner();
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        found += page.suggestions.len();
    }
    let (p50, p99) = percentiles(&latencies);
    println!(
        "GetSuggestions over gRPC, {QUERIES} askers, sequential: p50 {p50:.2} ms, p99 {p99:.2} ms \
         ({:.1} suggestions per page on average)",
        found as f64 / QUERIES as f64
    );

    let rate = consume_rate(&stack).await?;
    println!(
        "event consumption: {EVENTS} UserSignedUp events with {CONTACTS_PER_MEMBER} contacts each: {rate:.0} events/s"
    );
    Ok(())
}

/// A deterministic UUID per member number.
fn member_id(n: i64) -> String {
    uuid::Uuid::from_u64_pair(0x0190_0000_0000_7000, n as u64).to_string()
}

/// Members 1..=MEMBERS, all verified and discoverable, each with CONTACTS_PER_MEMBER contacts: other members'
/// email hashes, spread so each member is in about as many lists as they have contacts.
async fn seed(stack: &Stack) -> anyhow::Result<()> {
    let mut db = sqlx::PgConnection::connect(stack.database("friend-discovery").url()).await?;
    sqlx::query("SET maintenance_work_mem = '512MB'").execute(&mut db).await?;
    // Bulk load without per-row foreign-key triggers; the data is consistent by construction.
    sqlx::query("SET session_replication_role = replica").execute(&mut db).await?;
    // Member n's id, as `member_id` builds it.
    let id = "('01900000-0000-7000-' || lpad(to_hex(n >> 48), 4, '0') || '-' \
              || lpad(to_hex(n & 281474976710655), 12, '0'))::uuid";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO members (user_id, email_hash, display_name, discoverable, signup_id, verified_at) \
         SELECT {id}, sha256(('member-' || n)::bytea), 'Member ' || n, true, {id}, now() \
           FROM generate_series(1, $1::bigint) AS n"
    )))
    .bind(MEMBERS)
    .execute(&mut db)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO contacts (owner_id, contact_hash) \
         SELECT {id}, sha256(('member-' || (1 + (n * 7919 + k * 104729) % $1::bigint))::bytea) \
           FROM generate_series(1, $1::bigint) AS n, generate_series(1, $2::bigint) AS k \
         ON CONFLICT DO NOTHING"
    )))
    .bind(MEMBERS)
    .bind(CONTACTS_PER_MEMBER)
    .execute(&mut db)
    .await?;
    // A fresh bulk load has no hint bits and no visibility map: the first reads would pay for writing them. VACUUM
    // brings the tables to the steady state of a database in service.
    sqlx::query("VACUUM (ANALYZE) members").execute(&mut db).await?;
    sqlx::query("VACUUM (ANALYZE) contacts").execute(&mut db).await?;
    Ok(())
}

/// Publishes EVENTS signups straight to friend-discovery's queue and times from the first publish until all are
/// processed.
async fn consume_rate(stack: &Stack) -> anyhow::Result<f64> {
    let connection =
        lapin::Connection::connect(&e2e::backing::amqp_url(), lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    let queue = stack.queue("friend-discovery").to_owned();
    let hash = |n: i64| sha2_hash(&format!("member-{n}"));
    let started = Instant::now();
    let mut confirms = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let n = MEMBERS + 1 + i as i64;
        let user_id = uuid::Uuid::now_v7();
        let event = UserSignedUp {
            event_id: String::new(),
            user_id: user_id.to_string(),
            signup_id: user_id.to_string(),
            display_name: format!("New {n}"),
            email_hash: hash(n),
            contact_hashes: (1..=CONTACTS_PER_MEMBER).map(|k| hash(1 + (n * 31 + k * 104_729) % MEMBERS)).collect(),
            discoverable: true,
            ..Default::default()
        };
        let envelope = Envelope {
            id: uuid::Uuid::now_v7(),
            kind: proto::Event::USER_SIGNED_UP.to_owned(),
            source: "/bench".to_owned(),
            time: chrono::Utc::now(),
            data: event.encode_to_vec(),
            trace: Default::default(),
        };
        let properties: BasicProperties = envelope.properties();
        let confirm = channel
            .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), &envelope.data, properties)
            .await?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        confirm.await?;
    }
    let deadline = started + Duration::from_secs(600);
    loop {
        let done = stack.processed("friend-discovery", None).await?;
        if done >= EVENTS as i64 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {done} of {EVENTS} events consumed in 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(EVENTS as f64 / started.elapsed().as_secs_f64())
}

fn sha2_hash(text: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

fn percentiles(samples: &[f64]) -> (f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}
