//! A throwaway Postgres database per test and service, dropped when the test ends (pass or fail), or, when the
//! test was killed before it could, by a test that starts later (databases over two hours old).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
// Database names cannot be bind parameters; ours are generated here from a UUID, never from input.
use sqlx::{AssertSqlSafe, Connection as _, Executor as _, PgConnection};

/// A fresh, empty database on the test server; `DROP DATABASE ... WITH (FORCE)` on drop.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `e2e_<label>_<random>`, whose commits need not wait for the disk: no test crashes the server.
    pub async fn create(label: &str) -> anyhow::Result<Self> {
        Self::create_waiting(label, false).await
    }

    /// Creates `e2e_<label>_<random>`, whose commits wait for the disk as a deployment's do (for benchmarks).
    pub async fn durable(label: &str) -> anyhow::Result<Self> {
        Self::create_waiting(label, true).await
    }

    async fn create_waiting(label: &str, durable: bool) -> anyhow::Result<Self> {
        let name = format!("e2e_{}_{}", label.replace('-', "_"), uuid::Uuid::now_v7().simple());
        let mut admin = admin().await?;
        SWEPT.get_or_init(|| drop_abandoned(&mut admin)).await;
        let create = format!(r#"CREATE DATABASE "{name}""#);
        admin.execute(AssertSqlSafe(create)).await?;
        if !durable {
            let relax = format!(r#"ALTER DATABASE "{name}" SET synchronous_commit = off"#);
            admin.execute(AssertSqlSafe(relax)).await?;
        }
        let url = database_url(&name);
        Ok(Self { name, url })
    }

    /// A name for a database that does not exist yet (a service is to create it); dropped like any other.
    pub fn reserve(label: &str) -> Self {
        let name = format!("e2e_{}_{}", label.replace('-', "_"), uuid::Uuid::now_v7().simple());
        let url = database_url(&name);
        Self { name, url }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `DATABASE_URL` for it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A direct connection, for assertions on what a service stored.
    pub async fn connect(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(&self.url).await.with_context(|| format!("connect to {}", self.name))
    }

    /// Every row of every table, as JSON text (bytea as hex): for asserting what a database does not hold.
    pub async fn dump(&self) -> anyhow::Result<String> {
        let mut connection = self.connect().await?;
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
                .fetch_all(&mut connection)
                .await?;
        let mut dump = String::new();
        for table in tables {
            let query = format!("SELECT coalesce(json_agg(t)::text, '') FROM \"{table}\" t");
            let rows: String = sqlx::query_scalar(AssertSqlSafe(query)).fetch_one(&mut connection).await?;
            dump.push_str(&rows);
        }
        Ok(dump)
    }

    /// Refuses new connections and ends the current ones: the database is "down" for its service.
    pub async fn cut_off(&self) -> anyhow::Result<()> {
        let mut admin = admin().await?;
        let refuse = format!(r#"ALTER DATABASE "{}" ALLOW_CONNECTIONS false"#, self.name);
        admin.execute(AssertSqlSafe(refuse)).await?;
        let terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1";
        sqlx::query(terminate).bind(&self.name).execute(&mut admin).await?;
        Ok(())
    }

    /// Lets connections in again after [`TestDatabase::cut_off`].
    pub async fn restore(&self) -> anyhow::Result<()> {
        let mut admin = admin().await?;
        let allow = format!(r#"ALTER DATABASE "{}" ALLOW_CONNECTIONS true"#, self.name);
        admin.execute(AssertSqlSafe(allow)).await?;
        Ok(())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside or outside a runtime, so the cleanup gets a thread and a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut admin = admin().await?;
                let drop = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                admin.execute(AssertSqlSafe(drop)).await?;
                anyhow::Ok(())
            })
        });
        if let Ok(Err(error)) = cleanup.join() {
            eprintln!("could not drop test database {}: {error:#}", self.name);
        }
    }
}

/// A `DATABASE_URL` for database `name` on the test server.
pub fn database_url(name: &str) -> String {
    let base = crate::backing::postgres_url();
    match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => format!("{base}/{name}"),
    }
}

/// Whether this process has dropped the databases of killed tests.
static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// No test runs this long: a test database older than this belongs to a test that was killed (a timeout, Ctrl-C)
/// before its `Drop` could run.
const ABANDONED_AFTER: Duration = Duration::from_secs(2 * 60 * 60);

/// Drops the test databases older than [`ABANDONED_AFTER`], by the time in their UUIDv7. Best effort: a failure is
/// reported and the test goes on.
async fn drop_abandoned(admin: &mut PgConnection) {
    let names: Vec<String> =
        match sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 'e2e\\_%'")
            .fetch_all(&mut *admin)
            .await
        {
            Ok(names) => names,
            Err(error) => return eprintln!("could not list test databases: {error}"),
        };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    for name in names {
        let created = name.rsplit('_').next().and_then(|id| uuid::Uuid::parse_str(id).ok()?.get_timestamp());
        let Some(created) = created.map(|t| Duration::from_secs(t.to_unix().0)) else { continue };
        if now.saturating_sub(created) > ABANDONED_AFTER {
            let drop = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
            if let Err(error) = admin.execute(AssertSqlSafe(drop)).await {
                eprintln!("could not drop abandoned test database {name}: {error}");
            }
        }
    }
}

async fn admin() -> anyhow::Result<PgConnection> {
    let url = crate::backing::postgres_url();
    PgConnection::connect(&url).await.context("connect to the test Postgres server (TEST_POSTGRES_URL)")
}
