//! `prima delay-proxy`: forwards TCP connections with a fixed added delay
//! each way, to emulate a Wi-Fi link's latency where netem is missing.
//! Bandwidth limits come from `tc tbf` on the interfaces.

use anyhow::Context;
use clap::Args;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

#[derive(Debug, Args)]
pub(super) struct ProxyArgs {
    /// Address to accept connections on.
    #[arg(long)]
    listen: String,
    /// Address to forward them to.
    #[arg(long)]
    to: String,
    /// Delay added to each direction, in milliseconds.
    #[arg(long = "delay-ms", default_value_t = 5.0)]
    delay_ms: f64,
}

pub(super) fn proxy(a: ProxyArgs) -> anyhow::Result<()> {
    if !(a.delay_ms.is_finite() && a.delay_ms >= 0.0) {
        anyhow::bail!("--delay-ms must be a non-negative number");
    }
    let delay = Duration::from_secs_f64(a.delay_ms / 1e3);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
        eprintln!("prima delay-proxy listening on {} -> {} (+{:?} each way)", listener.local_addr()?, a.to, delay);
        loop {
            let (down, _) = listener.accept().await?;
            let to = a.to.clone();
            tokio::spawn(async move {
                let Ok(up) = TcpStream::connect(&to).await else { return };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(pump(dr, uw, delay));
                tokio::spawn(pump(ur, dw, delay));
            });
        }
    })
}

/// Copies `from` to `to`, each chunk held back until `delay` after it arrived.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin + Send + 'static,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
