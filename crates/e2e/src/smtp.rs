//! A real SMTP server on loopback, in process: it speaks enough RFC 5321 for any client (EHLO/HELO, MAIL,
//! RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT), keeps every message it accepts, and can be told to refuse
//! recipients temporarily (4xx) or permanently (5xx), to stop answering mid-session, or to go down (connections refused) and come back on the
//! same port.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use mailparse::MailHeaderMap as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

/// How the server answers `RCPT TO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 250: accept everything.
    Accept,
    /// 450: greylisted, try again later (the answer names the address, as real servers' do).
    TemporaryFailure,
    /// 550: no such mailbox, never retry (the answer names the address).
    PermanentFailure,
    /// No answer at all: the session hangs until the client gives up.
    Stall,
}

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope sender.
    pub from: String,
    /// The envelope recipients.
    pub to: Vec<String>,
    /// The message as transmitted (headers and body, dots unstuffed).
    pub data: String,
}

impl Received {
    /// A header's decoded value.
    pub fn header(&self, name: &str) -> Option<String> {
        let parsed = mailparse::parse_mail(self.data.as_bytes()).ok()?;
        parsed.headers.get_first_value(name)
    }

    /// The decoded body of the first part of `mime_type` (e.g. `text/plain`, `text/html`).
    pub fn part(&self, mime_type: &str) -> Option<String> {
        let parsed = mailparse::parse_mail(self.data.as_bytes()).ok()?;
        find_part(&parsed, mime_type)
    }

    /// The token in the plain-text part's link (a verification or a reset link).
    pub fn token(&self) -> Option<String> {
        let text = self.part("text/plain")?;
        // A verification link (/v1/email-verifications/confirm) or a reset link (/v1/password-resets/confirm).
        let start = text.find("/confirm?token=")? + "/confirm?token=".len();
        let token: String =
            text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
        Some(token)
    }

    /// Whether the message is addressed to `email`.
    pub fn is_to(&self, email: &str) -> bool {
        self.to.iter().any(|to| to.eq_ignore_ascii_case(email))
    }
}

fn find_part(mail: &mailparse::ParsedMail<'_>, mime_type: &str) -> Option<String> {
    if mail.subparts.is_empty() {
        return (mail.ctype.mimetype == mime_type).then(|| mail.get_body().ok()).flatten();
    }
    mail.subparts.iter().find_map(|part| find_part(part, mime_type))
}

#[derive(Debug)]
struct Shared {
    messages: Mutex<Vec<Received>>,
    mode: Mutex<Mode>,
    modes_by_recipient: Mutex<std::collections::HashMap<String, Mode>>,
    recipients_offered: AtomicUsize,
}

/// The server. Dropping it stops it.
#[derive(Debug)]
pub struct SmtpServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SmtpServer {
    /// Starts on a free loopback port, accepting everything.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            messages: Mutex::default(),
            mode: Mutex::new(Mode::Accept),
            modes_by_recipient: Mutex::default(),
            recipients_offered: AtomicUsize::new(0),
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Ok(Self { shared, addr, task: Mutex::new(Some(task)) })
    }

    /// `smtp://127.0.0.1:<port>`, for `SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Changes how recipients are answered from now on.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
    }

    /// Changes how one recipient is answered from now on, whatever the general mode.
    pub fn set_mode_for(&self, recipient: &str, mode: Mode) {
        lock(&self.shared.modes_by_recipient).insert(recipient.to_ascii_lowercase(), mode);
    }

    /// Goes down: the port is closed (connections are refused) and open connections are dropped.
    pub fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }

    /// Comes back on the same port.
    pub async fn resume(&self) -> anyhow::Result<()> {
        self.stop();
        // The aborted task releases the port as it unwinds; retry the bind until it is free.
        let listener = crate::poll::eventually(Duration::from_secs(5), || async {
            TcpListener::bind(self.addr).await.context("binding the SMTP port again")
        })
        .await?;
        *lock(&self.task) = Some(tokio::spawn(serve(listener, self.shared.clone())));
        Ok(())
    }

    /// Every message accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.shared.messages).clone()
    }

    /// How many messages were accepted so far.
    pub fn received(&self) -> usize {
        lock(&self.shared.messages).len()
    }

    /// The messages to `email`.
    pub fn messages_to(&self, email: &str) -> Vec<Received> {
        self.messages().into_iter().filter(|m| m.is_to(email)).collect()
    }

    /// How many `RCPT TO` commands arrived, however they were answered: one per delivery attempt.
    pub fn recipients_offered(&self) -> usize {
        self.shared.recipients_offered.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` messages to `email` arrived; returns them all.
    pub async fn wait_for(&self, email: &str, count: usize, timeout: Duration) -> anyhow::Result<Vec<Received>> {
        crate::poll::eventually(timeout, || async {
            let messages = self.messages_to(email);
            anyhow::ensure!(messages.len() >= count, "{} message(s) to {email}, waiting for {count}", messages.len());
            Ok(messages)
        })
        .await
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts connections until aborted; aborting drops the listener and, with the `JoinSet`, every connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(session(stream, shared.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn session(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 e2e.test ESMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command.split([' ', ':']).next().unwrap_or_default().to_ascii_uppercase();
        let reply: std::borrow::Cow<'static, [u8]> = match verb.as_str() {
            "EHLO" => b"250-e2e.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n".into(),
            "HELO" | "NOOP" => b"250 OK\r\n".into(),
            "RSET" => {
                (from, to) = (String::new(), Vec::new());
                b"250 OK\r\n".into()
            }
            "MAIL" => {
                from = address(&command);
                b"250 OK\r\n".into()
            }
            "RCPT" => {
                shared.recipients_offered.fetch_add(1, Ordering::SeqCst);
                let recipient = address(&command).to_ascii_lowercase();
                let mode = lock(&shared.modes_by_recipient).get(&recipient).copied().unwrap_or(*lock(&shared.mode));
                match mode {
                    Mode::Accept => {
                        to.push(address(&command));
                        b"250 OK\r\n".into()
                    }
                    // As real servers answer: naming the address.
                    Mode::TemporaryFailure => {
                        format!("450 4.2.0 <{recipient}>: Recipient address rejected: Greylisted\r\n")
                            .into_bytes()
                            .into()
                    }
                    Mode::PermanentFailure => {
                        format!("550 5.1.1 <{recipient}>: Recipient address rejected: User unknown\r\n")
                            .into_bytes()
                            .into()
                    }
                    Mode::Stall => {
                        std::future::pending::<()>().await;
                        b"".into()
                    }
                }
            }
            "DATA" if to.is_empty() => b"554 5.5.1 no valid recipients\r\n".into(),
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let data = read_data(&mut lines).await?;
                let message = Received { from: std::mem::take(&mut from), to: std::mem::take(&mut to), data };
                lock(&shared.messages).push(message);
                b"250 OK queued\r\n".into()
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.2 command not recognised\r\n".into(),
        };
        write.write_all(&reply).await?;
    }
}

/// Reads a DATA section up to the lone dot, undoing dot-stuffing.
async fn read_data(lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<String> {
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == ".\r\n" || line == ".\n" {
            return Ok(data);
        }
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
    }
}

/// The address in `MAIL FROM:<a@b>` or `RCPT TO:<a@b>`.
fn address(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command[start..].find('>').map_or(command.len(), |i| start + i);
    command[start..end].to_owned()
}
