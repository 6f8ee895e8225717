//! A TCP peer that accepts connections and never answers: no HTTP/2
//! preface, no reads, no writes. Dialling it times out at the protocol level.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running black hole; dropping it closes the listener and every held
/// connection.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// Listens on `127.0.0.1`, on a free port, accepting connections and holding
/// them open without reading or writing.
///
/// # Panics
///
/// If no port can be bound.
pub async fn blackhole() -> (SocketAddr, Blackhole) {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("cannot bind a black hole on 127.0.0.1");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (
        addr,
        Blackhole {
            addr,
            accepted,
            task,
        },
    )
}

impl Blackhole {
    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
