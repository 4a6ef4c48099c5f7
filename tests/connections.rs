//! Connection hygiene on a real loopback socket (`server::listen`): stalled headers and
//! connections that send nothing are dropped, connections beyond the limit get a 503, a body
//! that never arrives gets a 408, and shutdown returns by its deadline whatever a client does.
//! No model is loaded: `/health` answers while the model loads, and a request body is read
//! before the model is needed.
//! Every wait is bounded by a generous timeout; nothing depends on how fast the machine is.

use crate::common;

use std::time::Duration;

use aisle::server::listen::{serve, ConnLimits};
use aisle::server::{app, AppState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const PATIENCE: Duration = Duration::from_secs(20);

struct Running {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(limits: ConnLimits, body_timeout: Duration, deadline: Duration) -> Running {
    let cfg = aisle::server::ServerConfig {
        body_timeout,
        ..common::server_config()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = rx.await;
    };
    let task = tokio::spawn(serve(listener, app(AppState::new(cfg)), limits, shutdown, deadline));
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

/// Everything the server sends until it closes the connection.
async fn read_all(tcp: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&buf).into_owned()
}

async fn stalled(addr: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    tcp
}

async fn health(addr: std::net::SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    read_all(&mut tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_header_is_dropped_while_health_keeps_answering() {
    let limits = ConnLimits {
        header_timeout: Duration::from_millis(300),
        max_connections: 8,
    };
    let s = start(limits, Duration::from_secs(30), Duration::from_secs(1)).await;
    let mut slow = stalled(s.addr).await;
    assert!(health(s.addr).await.starts_with("HTTP/1.1 200"));
    let got = read_all(&mut slow).await; // returns once the server closes it
    assert!(!got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_dropped_too() {
    // The header timer must start at accept, not at the first byte (hyper-util's protocol
    // sniffing had no timer: such a connection was held until the client left).
    let limits = ConnLimits {
        header_timeout: Duration::from_millis(300),
        max_connections: 8,
    };
    let s = start(limits, Duration::from_secs(30), Duration::from_secs(1)).await;
    let mut silent = TcpStream::connect(s.addr).await.expect("connect");
    assert_eq!(read_all(&mut silent).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_get_a_503_and_capacity_comes_back() {
    let limits = ConnLimits {
        header_timeout: Duration::from_secs(60),
        max_connections: 2,
    };
    let s = start(limits, Duration::from_secs(30), Duration::from_secs(1)).await;
    let first = stalled(s.addr).await;
    let _second = stalled(s.addr).await;
    // The two are accepted in order; once both are held, a third is refused.
    let refused = health_until(s.addr, "HTTP/1.1 503").await;
    assert!(
        refused.contains("\"code\":\"busy\"") && refused.contains("retry-after: 1"),
        "{refused}"
    );
    drop(first);
    health_until(s.addr, "HTTP/1.1 200").await;
}

/// Probe `/health` until the answer starts with `status` (the server acts on connects and
/// closes asynchronously); panics after `PATIENCE`.
async fn health_until(addr: std::net::SocketAddr, status: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = health(addr).await;
        if got.starts_with(status) {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "never `{status}`: {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_a_408() {
    let limits = ConnLimits::default();
    let s = start(limits, Duration::from_millis(300), Duration::from_secs(1)).await;
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 100000\r\nConnection: close\r\n\r\n{\"messages\": [";
    tcp.write_all(head.as_bytes()).await.expect("write");
    let got = read_all(&mut tcp).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("\"code\":\"request_timeout\""), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_by_its_deadline_with_a_client_stalled_mid_header() {
    let limits = ConnLimits {
        header_timeout: Duration::from_secs(600),
        max_connections: 8,
    };
    let mut s = start(limits, Duration::from_secs(30), Duration::from_millis(200)).await;
    let _slow = stalled(s.addr).await;
    assert!(health(s.addr).await.starts_with("HTTP/1.1 200"));
    let _ = s.stop.take().map(|tx| tx.send(()));
    let ended = tokio::time::timeout(PATIENCE, &mut s.task).await;
    assert!(ended.is_ok(), "serve kept running after its deadline");
}
