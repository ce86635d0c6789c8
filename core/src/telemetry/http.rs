//! The operations endpoints, on a port of their own: `GET /metrics`
//! (Prometheus text format), `GET /health/live` (200 while the process
//! answers) and `GET /health/ready` (200 when the database and the broker
//! answer, else 503; JSON from [`super::health`]). A minimal HTTP/1.1
//! server on tokio: one request per connection, no body, 8 KB of request
//! head at most, 5 s to send it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::context::{AbortOnDrop, Context};
use crate::error::{Error, ErrorKind, Result};

const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A running operations server; stops when dropped.
#[derive(Debug)]
pub struct OpsServer {
    addr: SocketAddr,
    _task: AbortOnDrop,
}

impl OpsServer {
    /// Listens on `addr` (port 0: any free port; see [`OpsServer::addr`]).
    pub async fn start(ctx: Arc<Context>, addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            Error::with_source(ErrorKind::Config, format!("cannot listen on {addr} for /metrics and /health: {e}"), e)
        })?;
        let addr =
            listener.local_addr().map_err(|e| Error::with_source(ErrorKind::Config, "reading the address", e))?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(ctx.clone(), stream));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting an operations connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tracing::info!(%addr, "serving /metrics, /health/live and /health/ready");
        Ok(Self { addr, _task: AbortOnDrop(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Reads the request line (and the rest of the head, which is ignored).
async fn read_head(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    Some((method, path))
}

async fn serve(ctx: Arc<Context>, mut stream: TcpStream) {
    let Ok(Some((method, path))) = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await else {
        return;
    };
    let (status, content_type, body) = if method != "GET" && method != "HEAD" {
        ("405 Method Not Allowed", "text/plain", "only GET\n".to_owned())
    } else {
        match path.as_str() {
            "/metrics" => match super::metrics::metrics_text(&ctx).await {
                Ok(text) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
                Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
            },
            "/health/live" => ("200 OK", "application/json", "{\"live\":true}\n".to_owned()),
            "/health/ready" | "/health" => {
                let health = super::health::health(&ctx).await;
                let status = if health.ready { "200 OK" } else { "503 Service Unavailable" };
                (status, "application/json", serde_json::to_string(&health).expect("health serializes") + "\n")
            }
            _ => ("404 Not Found", "text/plain", "not found: try /metrics, /health/live, /health/ready\n".to_owned()),
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    if method != "HEAD" {
        let _ = stream.write_all(body.as_bytes()).await;
    }
    let _ = stream.shutdown().await;
}
