// SPDX-License-Identifier: MPL-2.0
//! The HTTP connections of the call server: accepts them within the connection caps (in
//! total and per client address), gives each handler the client's address, and closes a
//! connection whose request head does not arrive in time (idle keep-alive connections
//! included), so that slow or idle clients cannot hold the server's sockets.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tower::ServiceExt;

use super::CAT;

/// The largest request head (request line and headers) read.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Caps on the HTTP connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once, in total.
    pub total: usize,
    /// Connections open at once from one client address.
    pub per_address: usize,
    /// Time for a request head to arrive, and for an idle keep-alive connection to send its
    /// next request.
    pub head_timeout: Duration,
}

/// The connections open now, by client address.
#[derive(Default)]
struct Table {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A connection's place in the table, given back when it closes.
struct Slot {
    table: Arc<Mutex<Table>>,
    address: IpAddr,
}

impl Slot {
    fn take(
        table: &Arc<Mutex<Table>>,
        address: IpAddr,
        limits: &ConnectionLimits,
    ) -> Result<Slot, String> {
        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
        if t.total >= limits.total {
            return Err(format!(
                "the server has {} connections open, its limit",
                t.total
            ));
        }
        let n = t.by_address.entry(address).or_insert(0);
        if *n >= limits.per_address {
            return Err(format!(
                "{address} has {n} connections open, the limit for one address"
            ));
        }
        *n += 1;
        t.total += 1;
        Ok(Slot {
            table: table.clone(),
            address,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.by_address.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.by_address.remove(&self.address);
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` fires. Connections still open then end with the
/// runtime.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stop: oneshot::Receiver<()>,
) {
    let table = Arc::new(Mutex::new(Table::default()));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: let some connections end.
                gst::warning!(CAT, "cannot accept an HTTP connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match Slot::take(&table, client.ip(), &limits) {
            Ok(s) => s,
            Err(why) => {
                gst::info!(CAT, "connection from {client} refused: {why}");
                refuse(stream, &why);
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(client));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.head_timeout)
                // A request head larger than this is answered 431.
                .max_buf_size(MAX_HEAD_BYTES)
                // A client that closes its sending side after the request still gets
                // the answer.
                .half_close(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                gst::debug!(CAT, "HTTP connection from {client} ended: {e}");
            }
        });
    }
}

/// Answers a connection over a cap with a 503 (if the socket takes it at once) and closes it.
fn refuse(stream: tokio::net::TcpStream, why: &str) {
    let body = format!("{why}: try again later\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; \
         charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}
