//! The `/metrics` HTTP endpoint: every GET, whatever its path, gets the rendered metrics.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::recorder::MetricsHandle;

/// A scraper that has not sent its request headers by then is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type Prometheus expects for the text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers scrapes on `listener` until the process exits; each connection in its own task.
pub async fn serve(listener: TcpListener, handle: MetricsHandle) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, most likely: wait a little rather than spin.
                tracing::warn!(%err, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request: Request<hyper::body::Incoming>| {
                let handle = handle.clone();
                async move {
                    // Rendering walks every series: off the async workers.
                    let rendered = tokio::task::spawn_blocking(move || handle.render()).await;
                    let failed = rendered.is_err();
                    let body = rendered.unwrap_or_else(|err| format!("rendering failed: {err}\n"));
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    if failed {
                        *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    response
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
                    Ok::<_, Infallible>(response)
                }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                tracing::debug!(%err, "metrics: connection ended");
            }
        });
    }
}
