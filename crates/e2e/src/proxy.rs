//! A TCP proxy a test can cut and restore: the network between a service and a backing service failing, while
//! the backing service itself (shared by every test) stays up.

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::watch};

/// Forwards a local port to `upstream` while open; when cut, drops every connection and refuses new ones.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    open: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding a fresh local port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (open, _) = watch::channel(true);
        let open = Arc::new(open);
        let task = tokio::spawn(accept(listener, upstream, open.clone()));
        Ok(Self { port, open, task })
    }

    /// The local port to connect to instead of the upstream.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Breaks every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, open: Arc<watch::Sender<bool>>) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        if !*open.borrow() {
            continue;
        }
        let mut closed = open.subscribe();
        tokio::spawn(async move {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = closed.wait_for(|open| !open) => {}
            }
        });
    }
}
