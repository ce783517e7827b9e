//! A TCP relay whose path can be cut without closing anything: the
//! network failure that gives no signal (a partition, a firewall dropping
//! packets), as opposed to a process that dies and resets its connections.
//!
//! While cut, the relay reads from both sides and drops the bytes (senders
//! do not block, as their packets would just be lost), and a new
//! connection is accepted and then hears nothing, so a client's handshake
//! hangs. Connections that lived through a cut are closed once it heals:
//! by then both ends have given up on them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Relay {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    /// Bumped by each cut: a connection from an earlier generation that
    /// saw a cut closes when it heals.
    generation: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays 127.0.0.1:<free port> to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let (cut, cut_rx) = watch::channel(false);
        let generation = Arc::new(AtomicU64::new(0));
        let gen2 = generation.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut = cut_rx.clone();
                let generation = gen2.clone();
                tokio::spawn(relay(client, target, cut, generation));
            }
        });
        Relay {
            addr,
            cut,
            generation,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops delivering anything, in both directions, without closing.
    pub fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let _ = self.cut.send(true);
    }

    /// Delivers again (to new connections; those that saw the cut close).
    pub fn heal(&self) {
        let _ = self.cut.send(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    client: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<bool>,
    generation: Arc<AtomicU64>,
) {
    // A connection made while cut is a black hole until the cut heals,
    // and is then closed (its client has timed out by then).
    if *cut.borrow() {
        swallow(client, &mut cut).await;
        return;
    }
    let born = generation.load(Ordering::SeqCst);
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let saw_cut = Arc::new(AtomicBool::new(false));
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let a = tokio::spawn(pipe(cr, uw, cut.clone(), saw_cut.clone()));
    let b = tokio::spawn(pipe(ur, cw, cut.clone(), saw_cut.clone()));
    // Close both directions once a cut this connection lived through heals.
    loop {
        if cut.changed().await.is_err() {
            break;
        }
        if !*cut.borrow() && generation.load(Ordering::SeqCst) != born {
            break;
        }
        if a.is_finished() && b.is_finished() {
            return;
        }
    }
    a.abort();
    b.abort();
}

/// Copies `from` to `to` while not cut; while cut, reads and drops.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: watch::Receiver<bool>,
    saw_cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *cut.borrow() {
            saw_cut.store(true, Ordering::SeqCst);
            continue;
        }
        if saw_cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Reads and drops everything until the cut heals.
async fn swallow(mut client: TcpStream, cut: &mut watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = client.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            changed = cut.changed() => {
                if changed.is_err() || !*cut.borrow() {
                    return;
                }
            }
        }
    }
}
