//! The whole system as real processes: five binaries on free ports, each stateful one on a fresh database,
//! all on a broker exchange and queues of their own, configured only through environment variables.

use std::time::Duration;

use proto::{
    password::v1::password_service_client::PasswordServiceClient,
    user_metadata::v1::user_metadata_service_client::UserMetadataServiceClient,
};
use tonic::transport::Channel;

use crate::{
    database::TestDatabase,
    process::{Probe, ServiceProcess, grpc_channel},
    proxy::Proxy,
    smtp::SmtpServer,
};

/// How long any process may take to become ready before a test gives up on it.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The drain bound the stack runs with (`SHUTDOWN_GRACE_PERIOD_SECS`).
pub const GRACE: Duration = Duration::from_secs(5);
/// How long an event may take to reach every subscriber before a test gives up on it.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The gRPC services, in start order.
pub const GRPC_SERVICES: [&str; 4] = ["user-metadata", "password", "email-verification", "friend-discovery"];
/// The services that consume events.
pub const SUBSCRIBERS: [&str; 3] = ["password", "email-verification", "friend-discovery"];

/// The subscribers that act on (and record) events of type `kind`: the only ones whose queues receive them.
pub fn subscribers_of(kind: &str) -> &'static [&'static str] {
    match kind {
        proto::Event::USER_DELETED | proto::Event::EMAIL_VERIFIED => &SUBSCRIBERS,
        proto::Event::SIGNUP_ATTEMPTED_FOR_EXISTING_ACCOUNT => &["password", "email-verification"],
        proto::Event::PASSWORD_CHANGED => &["email-verification"],
        proto::Event::DISCOVERABILITY_CHANGED => &["friend-discovery"],
        _ => &["email-verification", "friend-discovery"],
    }
}

/// Events of type `kind` (all types when `None`) recorded as processed in the subscriber database `connection` is
/// open on: for a caller that polls and keeps its connection (a new one per poll forks a backend each time).
pub async fn processed_on(connection: &mut sqlx::PgConnection, kind: Option<&str>) -> anyhow::Result<i64> {
    let count = sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE $1::text IS NULL OR event_type = $1")
        .bind(kind)
        .fetch_one(connection)
        .await?;
    Ok(count)
}

/// What email-verification puts in front of the links it mails; tests take the token from the link and confirm
/// through the stack's real signup-api.
pub const PUBLIC_BASE_URL: &str = "http://signup.test";

/// The contact hash key of every test stack.
pub const CONTACT_HASH_KEY: &str = "e2e-contact-hash-key-0123456789abcdef";

/// The idempotency fingerprint key of every test stack.
pub const FINGERPRINT_KEY: &str = "e2e-fingerprint-key-0123456789abcdefgh";

/// Rate limits no test reaches unless it sets its own: tests drive one client (127.0.0.1) hard.
pub const UNLIMITED: &str = "1000000/1";

/// What to vary from the default stack.
#[derive(Debug, Default)]
pub struct Options {
    /// Route user-metadata's broker connection through a [`Proxy`] the test can cut.
    pub proxy_user_metadata_broker: bool,
    /// Extra variables for one service: `(service, name, value)`.
    pub env: Vec<(&'static str, &'static str, String)>,
    /// Databases whose commits wait for the disk, as a deployment's do (tests need not: none crashes Postgres).
    pub durable: bool,
    /// Mutual TLS between the services: each gets a certificate of [`Stack::authority`] (`GRPC_TLS_*`), the
    /// upstream URLs are `https://`, and readiness is probed on `/readyz`.
    pub grpc_tls: bool,
}

/// One service of the stack: its process, its ports, and its environment.
#[derive(Debug)]
pub struct Member {
    /// The running binary (the latest, after restarts).
    pub process: ServiceProcess,
    /// Earlier runs of the same service, kept for their logs.
    pub past: Vec<ServiceProcess>,
    /// `PORT`.
    pub port: u16,
    /// `METRICS_PORT`: `/livez`, `/readyz`, `/metrics`.
    pub ops_port: u16,
    /// Exactly the environment it was started with.
    pub env: Vec<(String, String)>,
    /// How readiness is probed.
    pub probe: Probe,
}

impl Member {
    /// Starts `name` on ports below the kernel's ephemeral range (see [`listening_port`]), learns them from its
    /// `serving` line, and pins them in its environment so a restart binds the same ones. Ports another test took
    /// between the choice and the bind are chosen again.
    async fn start(name: &str, env: Vec<(String, String)>, probe: fn(u16, u16) -> Probe) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            let mut env = env.clone();
            for (key, value) in &mut env {
                if (key == "PORT" || key == "METRICS_PORT") && value == "0" {
                    *value = listening_port().to_string();
                }
            }
            let mut process = ServiceProcess::spawn(name, &["serve"], &env)?;
            let (port, ops_port) = match process.serving_ports(READY_TIMEOUT).await {
                Ok(ports) => ports,
                Err(error) if attempt < 5 && format!("{error:#}").contains("Address already in use") => {
                    attempt += 1;
                    continue;
                }
                Err(error) => return Err(error),
            };
            for (key, value) in &mut env {
                match key.as_str() {
                    "PORT" => *value = port.to_string(),
                    "METRICS_PORT" => *value = ops_port.to_string(),
                    _ => {}
                }
            }
            return Ok(Self { process, past: Vec::new(), port, ops_port, env, probe: probe(port, ops_port) });
        }
    }

    /// Every stdout line of every run of this service.
    pub fn all_stdout(&self) -> Vec<String> {
        self.past.iter().chain([&self.process]).flat_map(ServiceProcess::stdout_lines).collect()
    }
}

/// The five processes and what they own. Dropping it kills the processes, drops the databases and deletes the
/// broker topology.
#[derive(Debug)]
pub struct Stack {
    /// The four gRPC services, in [`GRPC_SERVICES`] order, then signup-api.
    pub members: Vec<Member>,
    /// The exchange this stack's events go to.
    pub exchange: String,
    /// user-metadata's way to the broker, when [`Options::proxy_user_metadata_broker`] was set.
    pub broker_proxy: Option<Proxy>,
    /// The SMTP server email-verification sends to.
    pub smtp: SmtpServer,
    /// The authority of the services' certificates, when [`Options::grpc_tls`] was set.
    pub authority: Option<crate::pki::Authority>,
    queues: Vec<String>,
    databases: Vec<TestDatabase>,
    http: reqwest::Client,
}

impl Stack {
    /// Starts the default stack (see [`Stack::start_with`]).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// Creates the databases and starts all five binaries with `MIGRATE_ON_START=true` on kernel-chosen ports.
    /// Waits until each is serving (so its ports are known), not until it is ready.
    pub async fn start_with(options: Options) -> anyhow::Result<Self> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let exchange = format!("e2e.{id}");
        let broker_proxy = match options.proxy_user_metadata_broker {
            true => Some(Proxy::start(([127, 0, 0, 1], 5672).into()).await?),
            false => None,
        };
        let smtp = SmtpServer::start().await?;
        let durable = options.durable;
        let create = |label| async move {
            match durable {
                true => TestDatabase::durable(label).await,
                false => TestDatabase::create(label).await,
            }
        };
        let databases = futures_util::future::try_join_all(GRPC_SERVICES.map(create)).await?;
        let queues: Vec<String> = GRPC_SERVICES.iter().map(|name| format!("e2e.{id}.{name}")).collect();
        crate::broker::write_down(&exchange, &queues);
        let authority = options.grpc_tls.then(|| crate::pki::Authority::new("e2e services")).transpose()?;
        let scheme = if authority.is_some() { "https" } else { "http" };
        let mut tls = Vec::new();
        for name in GRPC_SERVICES.into_iter().chain(["signup-api"]) {
            let Some(authority) = &authority else { break };
            let pem = authority.issue(name)?;
            tls.push(vec![
                var("GRPC_TLS_CERT", pem.cert),
                var("GRPC_TLS_KEY", pem.key),
                var("GRPC_TLS_CA", authority.cert()),
            ]);
        }
        let tls_env = |i: usize| tls.get(i).cloned().unwrap_or_default();
        let grpc_env = |i: usize, user_metadata_port: Option<u16>| {
            let name = GRPC_SERVICES[i];
            let amqp_url = match (&broker_proxy, name) {
                (Some(proxy), "user-metadata") => format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port()),
                _ => crate::backing::amqp_url(),
            };
            let mut env = common_env();
            env.extend([
                var("METRICS_PORT", 0),
                var("DATABASE_URL", databases[i].url()),
                var("MIGRATE_ON_START", "true"),
                var("AMQP_URL", amqp_url),
                var("EVENTS_EXCHANGE", &exchange),
                var("EVENTS_QUEUE", &queues[i]),
                var("OUTBOX_POLL_INTERVAL_MS", 200),
                // Every test's requests come from one client (loopback): the per-client shares of an address's
                // attempts and mail would bite where a test means the address's own limits. Tests of the shares
                // set them.
                var("SIGNUP_ATTEMPTS_PER_CLIENT", 1000),
            ]);
            env.extend(tls_env(i));
            if let Some(port) = user_metadata_port {
                env.extend([
                    var("USER_METADATA_URL", format!("{scheme}://127.0.0.1:{port}")),
                    var("SMTP_URL", smtp.url()),
                    var("MAIL_BUDGET_PER_HOUR", 1000),
                    var("MAIL_BUDGET_PER_DAY", 1000),
                    var("MAIL_BUDGET_PER_CLIENT_PER_DAY", 1000),
                    var("MAIL_GLOBAL_PER_MINUTE", 1_000_000),
                    var("PUBLIC_BASE_URL", PUBLIC_BASE_URL),
                    var("SMTP_TIMEOUT_SECS", 5),
                    var("MAIL_RETRY_BASE_MS", 100),
                    var("MAIL_RETRY_MAX_SECS", 1),
                    var("MAIL_POLL_INTERVAL_MS", 100),
                ]);
            }
            env.extend(extra(&options, name));
            env
        };
        // Everything that needs no other service's port starts at once; email-verification calls user-metadata.
        // With mutual TLS the gRPC port takes only the services' certificates; `/readyz` says the same.
        let grpc: fn(u16, u16) -> Probe = match authority {
            Some(_) => |_, ops| Probe::Http(ops),
            None => |port, _| Probe::Grpc(port),
        };
        let (user_metadata, password, friends) = tokio::try_join!(
            Member::start(GRPC_SERVICES[0], grpc_env(0, None), grpc),
            Member::start(GRPC_SERVICES[1], grpc_env(1, None), grpc),
            Member::start(GRPC_SERVICES[3], grpc_env(3, None), grpc),
        )?;
        let verification = Member::start(GRPC_SERVICES[2], grpc_env(2, Some(user_metadata.port)), grpc).await?;
        let mut members = vec![user_metadata, password, verification, friends];
        let mut env = common_env();
        let url = |i: usize| format!("{scheme}://127.0.0.1:{}", members[i].port);
        env.extend([
            var("USER_METADATA_URL", url(0)),
            var("PASSWORD_URL", url(1)),
            var("EMAIL_VERIFICATION_URL", url(2)),
            var("FRIEND_DISCOVERY_URL", url(3)),
            var("CONTACT_HASH_KEY", CONTACT_HASH_KEY),
            var("IDEMPOTENCY_FINGERPRINT_KEY", FINGERPRINT_KEY),
            var("METRICS_PORT", 0),
        ]);
        for class in ["SIGNUPS", "RESENDS", "CONFIRMS", "SESSIONS", "READS"] {
            env.push(var(&format!("RATE_LIMIT_{class}"), UNLIMITED));
        }
        env.extend(tls_env(4));
        env.extend(extra(&options, "signup-api"));
        members.push(Member::start("signup-api", env, |_, ops| Probe::Http(ops)).await?);
        let http = reqwest::Client::new();
        Ok(Self { members, exchange, broker_proxy, smtp, authority, queues, databases, http })
    }

    /// Waits until every process is ready; returns each one's exec-to-ready time.
    pub async fn wait_ready(&mut self) -> anyhow::Result<Vec<(String, Duration)>> {
        let mut times = Vec::new();
        for member in &mut self.members {
            let took = member.process.wait_ready(member.probe, READY_TIMEOUT).await?;
            times.push((member.process.name().to_owned(), took));
        }
        Ok(times)
    }

    /// The member running `name`.
    pub fn member(&self, name: &str) -> &Member {
        self.members.iter().find(|m| m.process.name() == name).unwrap_or_else(|| panic!("no member {name}"))
    }

    fn member_mut(&mut self, name: &str) -> &mut Member {
        self.members.iter_mut().find(|m| m.process.name() == name).unwrap_or_else(|| panic!("no member {name}"))
    }

    /// Stops `name` with SIGTERM and waits for it to exit.
    pub async fn stop(&mut self, name: &str) -> anyhow::Result<()> {
        let member = self.member_mut(name);
        member.process.sigterm()?;
        member.process.wait(GRACE + Duration::from_secs(2)).await?;
        Ok(())
    }

    /// Kills `name` with SIGKILL, as a crash would, and waits for it to be gone.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let member = self.member_mut(name);
        member.process.sigkill()?;
        member.process.wait(Duration::from_secs(10)).await?;
        Ok(())
    }

    /// Starts `name` again with the same ports and environment, and waits until it is ready. It must have been
    /// stopped or killed (a second process could not bind the ports, and the first would answer the probe).
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let member = self.member_mut(name);
        anyhow::ensure!(member.process.pid().is_none(), "{name} is still running: stop or kill it before restarting");
        let process = ServiceProcess::spawn(name, &["serve"], &member.env)?;
        let old = std::mem::replace(&mut member.process, process);
        member.past.push(old);
        member.process.wait_ready(member.probe, READY_TIMEOUT).await?;
        Ok(())
    }

    /// Stops `name` and starts it again as an orchestrator starts a new task: against its already migrated database
    /// (`MIGRATE_ON_START=false`), on the same ports, with `database_tls` as `sslmode` when given. Returns the time
    /// from exec until its readiness probe, asked every millisecond, first passes.
    pub async fn relaunch(&mut self, name: &str, database_tls: Option<&str>) -> anyhow::Result<Duration> {
        self.stop(name).await?;
        let member = self.member_mut(name);
        let mut env = member.env.clone();
        env.retain(|(key, _)| key != "MIGRATE_ON_START");
        env.push(var("MIGRATE_ON_START", "false"));
        if let (Some(mode), Some((_, url))) = (database_tls, env.iter_mut().find(|(key, _)| key == "DATABASE_URL")) {
            url.push_str(&format!("{}sslmode={mode}", if url.contains('?') { '&' } else { '?' }));
        }
        let process = ServiceProcess::spawn(name, &["serve"], &env)?;
        member.past.push(std::mem::replace(&mut member.process, process));
        member.process.wait_ready_polling(member.probe, READY_TIMEOUT, Duration::from_millis(1)).await
    }

    /// The database of the gRPC service `name`.
    pub fn database(&self, name: &str) -> &TestDatabase {
        let i = GRPC_SERVICES.iter().position(|s| *s == name).unwrap_or_else(|| panic!("no database for {name}"));
        &self.databases[i]
    }

    /// Every database of the stack.
    pub fn databases(&self) -> &[TestDatabase] {
        &self.databases
    }

    /// The queue of a subscribing service.
    pub fn queue(&self, name: &str) -> &str {
        let i = GRPC_SERVICES.iter().position(|s| *s == name).unwrap_or_else(|| panic!("no queue for {name}"));
        &self.queues[i]
    }

    /// signup-api's base URL.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.member("signup-api").port)
    }

    /// `POST /v1/signups` with a JSON body and, optionally, an `Idempotency-Key`.
    pub async fn signup(&self, body: &serde_json::Value, key: Option<&str>) -> anyhow::Result<reqwest::Response> {
        let mut request = self.http.post(format!("{}/v1/signups", self.api_url())).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        Ok(request.send().await?)
    }

    /// `POST /v1/email-verifications`: asks for the link of signup `signup_id` (as its `202` named it) again.
    pub async fn resend(&self, email: &str, signup_id: &str) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}/v1/email-verifications", self.api_url());
        let body = serde_json::json!({ "email": email, "signup_id": signup_id });
        Ok(self.http.post(url).json(&body).send().await?)
    }

    /// `POST /v1/email-verifications/confirm` with a JSON body: the link's token and the signup's password.
    pub async fn confirm(&self, token: &str, password: &str) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}/v1/email-verifications/confirm", self.api_url());
        Ok(self.http.post(url).json(&serde_json::json!({ "token": token, "password": password })).send().await?)
    }

    /// `POST /v1/sessions`: signs in.
    pub async fn sign_in(&self, email: &str, password: &str) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}/v1/sessions", self.api_url());
        Ok(self.http.post(url).json(&serde_json::json!({ "email": email, "password": password })).send().await?)
    }

    /// Signs in and returns the session token; fails unless the answer is `201`.
    pub async fn session(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let response = self.sign_in(email, password).await?;
        anyhow::ensure!(response.status() == 201, "POST /v1/sessions answered {}", response.status());
        let body: serde_json::Value = response.json().await?;
        body["token"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no token in {body}"))
    }

    /// Signs `email` up with `password`, confirms the mailed link and signs in: a verified account's session.
    pub async fn verified_session(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({ "email": email, "password": password, "display_name": "Ada" });
        let status = self.signup(&body, None).await?.status();
        anyhow::ensure!(status == 202, "signup answered {status}");
        let mail = self.smtp.wait_for(email, 1, DELIVERY_TIMEOUT).await?.remove(0);
        let token = mail.token().ok_or_else(|| anyhow::anyhow!("no token in the mail"))?;
        let confirmed = self.confirm(&token, password).await?.status();
        anyhow::ensure!(confirmed == 200, "confirm answered {confirmed}");
        self.session(email, password).await
    }

    /// `GET {path}` with `Authorization: Bearer {token}`.
    pub async fn get_as(&self, token: &str, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self.http.get(format!("{}{path}", self.api_url())).bearer_auth(token).send().await?)
    }

    /// `GET /v1/me` for the session `token`.
    pub async fn me(&self, token: &str) -> anyhow::Result<reqwest::Response> {
        self.get_as(token, "/v1/me").await
    }

    /// Marks the account of `email` verified in user-metadata directly (through its newest signup attempt), as a
    /// confirm would, for tests about what comes after verification. Every service learns it from the event.
    pub async fn mark_verified(&self, email: &str) -> anyhow::Result<String> {
        use proto::user_metadata::v1::{GetUserByEmailRequest, MarkEmailVerifiedRequest};
        let mut users = self.users().await?;
        let user = users.get_user_by_email(GetUserByEmailRequest { email: email.to_owned() }).await?.into_inner();
        let user = user.user.ok_or_else(|| anyhow::anyhow!("no user {email}"))?;
        let request =
            MarkEmailVerifiedRequest { user_id: user.user_id.clone(), verified_at: None, signup_id: user.signup_id };
        users.mark_email_verified(request).await?;
        Ok(user.user_id)
    }

    /// Runs an admin subcommand of `name` (`repair`, `archive`, `report`, ...) to completion, with the member's
    /// environment plus `extra`, as a one-off process of the same release would.
    pub async fn admin(
        &self,
        name: &str,
        args: &[&str],
        extra: &[(String, String)],
    ) -> anyhow::Result<crate::process::Finished> {
        let mut env = self.member(name).env.clone();
        env.extend(extra.iter().cloned());
        ServiceProcess::run(name, args, &env).await
    }

    /// Events of type `kind` (all types when `None`) a subscriber has recorded as processed.
    pub async fn processed(&self, subscriber: &str, kind: Option<&str>) -> anyhow::Result<i64> {
        processed_on(&mut self.database(subscriber).connect().await?, kind).await
    }

    /// Waits until every subscriber that acts on `kind` has processed `expected` events of that type.
    pub async fn wait_processed(&self, kind: &str, expected: i64) -> anyhow::Result<()> {
        for subscriber in subscribers_of(kind) {
            crate::poll::eventually(DELIVERY_TIMEOUT, || async {
                let count = self.processed(subscriber, Some(kind)).await?;
                anyhow::ensure!(count >= expected, "{subscriber} processed {count} {kind}, waiting for {expected}");
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// The process ids of the running members, by name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.members.iter().filter_map(|m| Some((m.process.name().to_owned(), m.process.pid()?))).collect()
    }

    /// An HTTP client for anything else.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A client of user-metadata.
    pub async fn users(&self) -> anyhow::Result<UserMetadataServiceClient<Channel>> {
        Ok(UserMetadataServiceClient::new(grpc_channel(self.member("user-metadata").port).await?))
    }

    /// A client of password.
    pub async fn passwords(&self) -> anyhow::Result<PasswordServiceClient<Channel>> {
        Ok(PasswordServiceClient::new(grpc_channel(self.member("password").port).await?))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let (exchange, queues) = (self.exchange.clone(), self.queues.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(crate::broker::clean_up(&exchange, &queues));
            anyhow::Ok(())
        });
        let _ = cleanup.join();
    }
}

/// A port for a service to listen on that no connection will take while the service restarts: below the kernel's
/// ephemeral range (`ip_local_port_range`, where connections get their local ports; a port there, chosen by the
/// kernel, can be taken by another test's connection between a `kill -9` and the restart), and free now. `0` (the
/// kernel chooses) when the range leaves no room below it.
fn listening_port() -> u16 {
    const LOWEST: u16 = 10_000;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let first_ephemeral = range.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(32_768);
    let Some(room) = first_ephemeral.checked_sub(LOWEST).filter(|room| *room >= 1_000) else { return 0 };
    for _ in 0..100 {
        // The low bits of a UUIDv7 are random.
        let offset = u16::try_from(uuid::Uuid::now_v7().as_u128() % u128::from(room)).unwrap_or(0);
        let port = LOWEST + offset;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    0
}

fn extra(options: &Options, service: &str) -> Vec<(String, String)> {
    options.env.iter().filter(|(s, _, _)| *s == service).map(|(_, k, v)| var(k, v)).collect()
}

fn common_env() -> Vec<(String, String)> {
    vec![
        var("PORT", 0),
        var("LOG_FORMAT", "json"),
        var("RUST_LOG", "info"),
        var("SHUTDOWN_GRACE_PERIOD_SECS", GRACE.as_secs()),
    ]
}

/// One environment variable.
pub fn var(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}
