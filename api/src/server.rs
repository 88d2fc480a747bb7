//! Serving the API: the router built from the routes, and the accept loop over a bound
//! listener with its connection limit, graceful shutdown, and the final denial records
//! and checkpoint. (The state every handler shares is [`Service`], in `service`.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::service::Service;
use crate::ApiError;

impl Service {
    /// The routes as an axum router, with every layer (auth, limits, timeout, JSON
    /// errors) applied: for in-process tests, or to serve it yourself.
    pub fn router(&self) -> axum::Router {
        crate::routes::router(self.clone())
    }

    /// Every (method, path) the router answers, as written in the OpenAPI document.
    pub fn routes() -> Vec<(&'static str, &'static str)> {
        crate::routes::route_table()
    }

    /// Serves on `listener` (the caller binds it) until `shutdown` resolves; then stops
    /// accepting, lets requests in flight finish (up to the request timeout plus 5 s), and
    /// appends the pending denial records to the ledger.
    ///
    /// At most [`ServeOptions::max_connections`] connections are open at once (lowered to
    /// what the descriptor limit allows); connections without a request head for
    /// [`ServeOptions::header_timeout`] are closed; accept errors are logged at most once a
    /// second, with the count of the ones not logged.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ApiError> {
        let timeout = self.inner.options.request_timeout;
        let (limit, descriptors) =
            crate::conn::connection_limit(self.inner.options.max_connections);
        if limit < self.inner.options.max_connections {
            tracing::info!(
                limit,
                configured = self.inner.options.max_connections,
                descriptors,
                "the connection limit is lowered to fit the descriptor limit"
            );
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(limit));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let connections = crate::conn::Connections::new(self.clone(), stopped);
        let flusher = tokio::spawn(self.clone().flush_loop());
        let signer = self
            .inner
            .options
            .checkpoints
            .clone()
            .map(|signing| tokio::spawn(self.clone().checkpoint_loop(signing)));
        let mut accept_errors = crate::conn::LogLimiter::new(Duration::from_secs(1));
        let mut at_limit = crate::conn::LogLimiter::new(Duration::from_secs(60));
        tokio::pin!(shutdown);
        loop {
            // A slot first: at the limit, nothing is accepted until a connection closes.
            let permit = match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if let Some(suppressed) = at_limit.admit(std::time::Instant::now()) {
                        tracing::warn!(
                            limit,
                            times_since_last_logged = suppressed,
                            "at the connection limit: not accepting until a connection closes"
                        );
                    }
                    tokio::select! {
                        () = &mut shutdown => break,
                        permit = Arc::clone(&slots).acquire_owned() => {
                            permit.expect("the connection semaphore is never closed")
                        }
                    }
                }
            };
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => {
                        if let Some(suppressed) = accept_errors.take_suppressed() {
                            tracing::warn!(suppressed, "accepting again; accept errors not logged since the last one");
                        }
                        accepted
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of
                        // spinning, and log once a second at most.
                        self.inner.metrics.accept_error();
                        if let Some(suppressed) = accept_errors.admit(std::time::Instant::now()) {
                            tracing::warn!(error = %e, suppressed, "accept failed");
                        }
                        drop(permit);
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        }
                    }
                },
            };
            let accepted_at = tokio::time::Instant::now();
            tokio::spawn(connections.clone().serve(stream, peer, accepted_at, permit));
        }
        drop(listener);
        drop(connections);
        let _ = stop.send(true);
        let grace = timeout + Duration::from_secs(5);
        let all = u32::try_from(limit).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the grace period; closing them");
        }
        flusher.abort();
        self.flush_denials().await?;
        if let Some(signer) = signer {
            signer.abort();
            // The last entries get a checkpoint too, so a restart's successor can prove it
            // extends everything this process appended.
            self.sign_checkpoint().await?;
        }
        Ok(())
    }
}
