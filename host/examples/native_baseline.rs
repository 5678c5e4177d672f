//! Native baseline for `scripts/bench.sh`: a minimal hyper 1 + tokio HTTP/1.1 server that answers
//! every request with the same bytes the `spin-probe` component sends for
//! `?probe=env&name=BAZAAR_BENCH_UNSET` under `bazaar up`:
//!
//! ```text
//! HTTP/1.1 200 OK
//! content-type: application/json
//! transfer-encoding: chunked
//! date: <now>
//!
//! {"value":null}
//! ```
//!
//! The body is sent with no declared length (so hyper frames it as chunked, as `bazaar up` does for
//! a component's streamed body). Like `bazaar up`, it uses tokio's default multi-threaded runtime
//! and sets `TCP_NODELAY`. There is no routing, no logging and no per-request allocation beyond
//! what hyper itself does: it is the floor against which the per-request cost of a fresh wasm
//! instance is measured.
//!
//! Usage: `cargo run --release -p bazaar-host --example native_baseline -- 127.0.0.1:PORT`
//! (prints `Listening on http://ADDR` once the socket is bound).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;

/// Exactly what the probe's `env` probe answers for an unset variable.
const BODY: &[u8] = br#"{"value":null}"#;

/// One data frame of unknown length: hyper writes it with `transfer-encoding: chunked`.
struct Once(Option<Bytes>);

impl Body for Once {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }
    // `size_hint` and `is_end_stream` keep their defaults (unknown length), on purpose.
}

async fn answer(
    _req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let body = BoxBody::new(Once(Some(Bytes::from_static(BODY))));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:8081")
        .parse()
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad listen address: {e}"),
            )
        })?;
    let listener = TcpListener::bind(addr).await?;
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("Listening on http://{}\n", listener.local_addr()?).as_bytes())
        .await?;
    stdout.flush().await?;

    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(err) => {
                eprintln!("accept failed: {err}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
