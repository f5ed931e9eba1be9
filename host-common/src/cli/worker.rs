//! `prima worker`: a ring device's process. For now it answers link probes
//! (see `profiler::probe`); the ring protocol joins it in the ring issue.

use anyhow::Context;
use clap::Args;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::profiler::probe::{read_frame, write_frame, ECHO, ERROR, SINK, TIMEOUT};

/// Connections served at once.
const MAX_CONNECTIONS: usize = 32;

#[derive(Debug, Args)]
pub(super) struct WorkerArgs {
    /// Address to listen on, such as 0.0.0.0:9000.
    #[arg(long = "listen")]
    listen: String,
}

pub(super) fn worker(a: WorkerArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&a.listen).with_context(|| format!("cannot listen on {}", a.listen))?;
    eprintln!("prima worker listening on {}", listener.local_addr()?);
    let open = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        match conn {
            Ok(mut s) => {
                // One thread per connection, so a flood of peers is turned away, not served.
                if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::SeqCst);
                    let _ = write_frame(&mut s, ERROR, b"worker busy: too many connections");
                    continue;
                }
                let open = Arc::clone(&open);
                std::thread::spawn(move || {
                    let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                    if let Err(e) = serve(s) {
                        eprintln!("worker: {peer}: {e:#}");
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) => eprintln!("worker: accept failed: {e}"),
        }
    }
    Ok(())
}

/// Answers probe frames until the peer closes, misbehaves or goes quiet.
fn serve(mut s: TcpStream) -> anyhow::Result<()> {
    s.set_read_timeout(Some(TIMEOUT * 6))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    loop {
        let kind = match read_frame(&mut s, &mut buf) {
            Ok(Some(k)) => k,
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = write_frame(&mut s, ERROR, format!("{e:#}").as_bytes());
                return Err(e);
            }
        };
        match kind {
            ECHO => write_frame(&mut s, ECHO, &buf)?,
            SINK => write_frame(&mut s, SINK, &[])?,
            other => {
                let msg = format!("unknown probe frame kind {other}");
                write_frame(&mut s, ERROR, msg.as_bytes())?;
                anyhow::bail!(msg);
            }
        }
    }
}
