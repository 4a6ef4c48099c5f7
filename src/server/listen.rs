//! The accept loop: each connection served by hyper with a header-read timeout (which is also
//! the keep-alive idle timeout: it runs whenever the connection waits for a request's head), at
//! most `max_connections` open at once, and a shutdown bounded by a deadline.
//!
//! Beyond the limit a new connection gets a canned 503 and is closed at once, so the accept loop
//! never stalls and `/health` on an open connection keeps answering. At shutdown the listener
//! closes, every connection is asked to finish (idle keep-alives close now), and whatever is
//! still open at the deadline is dropped: a stalled client cannot keep the process alive.
//!
//! Owns: sockets and connection tasks. Must not: know routes or requests (`app` does); body
//! deadlines are `read_json`'s.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Connection hygiene (`serve --header-timeout`, `--max-connections`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A request head must arrive within this; an idle keep-alive connection closes after it.
    pub header_timeout: Duration,
    /// Open connections at most; more get a 503 and are closed.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 1000,
        }
    }
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 105\r\n\r\n{\"error\":{\"message\":\"too many open connections\",\"type\":\"service_unavailable\",\"param\":null,\"code\":\"busy\"}}";

/// Serve `app` on `listener` until `shutdown` resolves, then give open connections until
/// `deadline` to finish and return.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
    deadline: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // HTTP/1 only, without upgrades: the auto builder's protocol sniffing (which upgradeable
    // connections always do) has no timer, so a client that sends nothing at all would hold
    // its connection forever. hyper's own h1 header timer starts at accept.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors (EMFILE) and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            // Streams write one small event per token: Nagle would hold each behind an ACK.
            tracing::warn!("could not set TCP_NODELAY: {e}");
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(tcp));
            continue;
        };
        let service = app
            .clone()
            .map_request(|r: axum::http::Request<hyper::body::Incoming>| r.map(axum::body::Body::new));
        let conn = builder
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(deadline, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open at the shutdown deadline are dropped");
    }
}

/// Answer a connection over the limit with a 503 and close it (a second at most).
async fn refuse(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(BUSY)).await;
}
