//! A real service binary running as a child process, with a clean environment, its output captured line by
//! line, and the probes a platform would use on it.

use std::{
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
    time::Instant,
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// How a process is asked whether it is ready, as an orchestrator would.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// `grpc.health.v1` on this port reports SERVING.
    Grpc(u16),
    /// `GET /readyz` on this port answers 200.
    Http(u16),
}

/// One running service binary. Killed if still running when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl ServiceProcess {
    /// Starts `target/<profile>/<name> <args>` with exactly `env` (plus `PATH`) in its environment.
    pub fn spawn(name: &str, args: &[&str], env: &[(String, String)]) -> anyhow::Result<Self> {
        // The harness's HTTP client shares the workspace's rustls, which has no built-in provider: every test
        // spawns a process before it makes a request.
        platform::tls::install_provider();
        let mut command = Command::new(binary(name)?);
        command
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command.spawn().with_context(|| format!("spawn {name}"))?;
        let (stdout, stdout_reader) = capture(child.stdout.take());
        let (stderr, stderr_reader) = capture(child.stderr.take());
        let readers = vec![stdout_reader, stderr_reader];
        Ok(Self { name: name.to_owned(), child, stdout, stderr, readers, started })
    }

    /// Starts `name serve` with `PORT=0` (and `METRICS_PORT=0`) added to `env`, waits until it serves, and
    /// returns it with its ports and `env` completed with them (for `healthcheck` runs against it).
    pub async fn serve(name: &str, env: &[(String, String)]) -> anyhow::Result<Serving> {
        let mut env = env.to_vec();
        env.extend([("PORT".to_owned(), "0".to_owned()), ("METRICS_PORT".to_owned(), "0".to_owned())]);
        let mut process = Self::spawn(name, &["serve"], &env)?;
        let (port, ops_port) = process.serving_ports(Duration::from_secs(30)).await?;
        env.retain(|(k, _)| k != "PORT" && k != "METRICS_PORT");
        env.extend([("PORT".to_owned(), port.to_string()), ("METRICS_PORT".to_owned(), ops_port.to_string())]);
        Ok(Serving { process, port, ops_port, env })
    }

    /// Runs a command of `name` to completion (e.g. `migrate`, `healthcheck`) and returns its exit status and
    /// output.
    pub async fn run(name: &str, args: &[&str], env: &[(String, String)]) -> anyhow::Result<Finished> {
        let mut process = Self::spawn(name, args, env)?;
        let status = process.wait(Duration::from_secs(30)).await?;
        Ok(Finished { status, stdout: process.stdout_lines(), stderr: process.stderr_lines() })
    }

    /// The binary's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Every line written to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().map(|lines| lines.clone()).unwrap_or_default()
    }

    /// Every line written to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().map(|lines| lines.clone()).unwrap_or_default()
    }

    /// Waits for the process's [`platform::server::SERVING`] log line and returns the ports it bound: `PORT=0`
    /// lets the kernel pick free ports with no window for another process to take them. Returns (`PORT`, ops
    /// port).
    pub async fn serving_ports(&mut self, timeout: Duration) -> anyhow::Result<(u16, u16)> {
        let deadline = Instant::now() + timeout;
        loop {
            let serving = self.stdout_lines().into_iter().find_map(|line| {
                let entry: serde_json::Value = serde_json::from_str(&line).ok()?;
                (entry["message"] == platform::server::SERVING).then_some(entry)
            });
            if let Some(entry) = serving {
                let port = |key: &str| entry[key].as_str().and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok());
                return match (port("grpc").or(port("http")), port("ops")) {
                    (Some(port), Some(ops)) => Ok((port, ops)),
                    _ => bail!("{}: unexpected serving line {entry}", self.name),
                };
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited with {status} before serving; stderr: {:?}", self.name, self.stderr_lines());
            }
            anyhow::ensure!(Instant::now() < deadline, "{} did not start serving within {timeout:?}", self.name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls `probe` until the process reports ready; returns the time from exec to ready.
    pub async fn wait_ready(&mut self, probe: Probe, timeout: Duration) -> anyhow::Result<Duration> {
        self.wait_ready_polling(probe, timeout, Duration::from_millis(10)).await
    }

    /// [`Self::wait_ready`], probing every `every`.
    pub async fn wait_ready_polling(
        &mut self,
        probe: Probe,
        timeout: Duration,
        every: Duration,
    ) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited with {status} before becoming ready; stderr: {:?}", self.name, self.stderr_lines());
            }
            match is_ready(probe).await {
                Ok(()) => return Ok(self.started.elapsed()),
                Err(error) if Instant::now() >= deadline => {
                    return Err(error.context(format!("{} not ready after {timeout:?}", self.name)));
                }
                Err(_) => tokio::time::sleep(every).await,
            }
        }
    }

    /// Sends SIGTERM, as an orchestrator does to stop a container.
    pub fn sigterm(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("process already reaped")?;
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        Ok(())
    }

    /// Sends SIGKILL: the process dies at once, as in a crash.
    pub fn sigkill(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("process already reaped")?;
        let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -KILL {pid} failed");
        Ok(())
    }

    /// Waits for the process to exit, for at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .with_context(|| format!("{} still running after {timeout:?}", self.name))??;
        // The readers end at EOF, once they have everything the process wrote.
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        Ok(status)
    }
}

/// A server started by [`ServiceProcess::serve`].
#[derive(Debug)]
pub struct Serving {
    /// The process.
    pub process: ServiceProcess,
    /// Its `PORT`.
    pub port: u16,
    /// Its operational port (`METRICS_PORT`, or `PORT` for signup-api).
    pub ops_port: u16,
    /// Its environment with the real ports.
    pub env: Vec<(String, String)>,
}

/// A command that ran to completion.
#[derive(Debug)]
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// Its stdout, line by line.
    pub stdout: Vec<String>,
    /// Its stderr, line by line.
    pub stderr: Vec<String>,
}

/// Asks once whether the process behind `probe` is ready.
pub async fn is_ready(probe: Probe) -> anyhow::Result<()> {
    match probe {
        Probe::Grpc(port) => {
            let mut client = HealthClient::new(grpc_channel(port).await?);
            let status = client.check(HealthCheckRequest { service: String::new() }).await?.into_inner().status();
            anyhow::ensure!(status == ServingStatus::Serving, "health is {}", status.as_str_name());
        }
        Probe::Http(port) => {
            let status = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await?.status();
            anyhow::ensure!(status == reqwest::StatusCode::OK, "/readyz answered {status}");
        }
    }
    Ok(())
}

/// A connected gRPC channel to a local port.
pub async fn grpc_channel(port: u16) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?.tcp_nodelay(true).connect().await?)
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The path of a workspace binary, next to this test's own build output.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // Tests and benches run from target/<profile>/deps/; binaries live in target/<profile>/.
    let mut dir = exe.parent().context("unexpected executable location")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("unexpected executable location")?;
    }
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build the binaries first (`make test` does, or `cargo build --workspace --bins`)",
        path.display()
    );
    Ok(path)
}

fn capture<R>(stream: Option<R>) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let reader = tokio::spawn(async move {
        let Some(stream) = stream else { return };
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if let Ok(mut lines) = sink.lock() {
                lines.push(line);
            }
        }
    });
    (lines, reader)
}
