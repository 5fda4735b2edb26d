//! Graceful shutdown as a type.
//!
//! The server owns a [`ShutdownController`]; every connection task holds a [`Shutdown`] from
//! it. Triggering the controller tells every task to stop after the batch it is running, and
//! then waits until every `Shutdown` has been dropped: each one carries a sender of a channel
//! whose receiver sees "closed" when the last task is gone. So the server knows all replies
//! are written before it flushes the engine, without polling or sleeping.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Tells connection tasks to stop, and waits for them.
#[derive(Debug)]
pub struct ShutdownController {
    notify: watch::Sender<bool>,
    drain_tx: mpsc::Sender<()>,
    drain_rx: mpsc::Receiver<()>,
}

/// A task's view of shutdown: whether it has begun, and a token the controller waits on.
#[derive(Debug, Clone)]
pub struct Shutdown {
    notified: watch::Receiver<bool>,
    /// Never sent on: dropping it is the message.
    _drain: mpsc::Sender<()>,
}

impl Default for ShutdownController {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownController {
    /// A controller nobody has subscribed to yet.
    pub fn new() -> Self {
        let (notify, _) = watch::channel(false);
        let (drain_tx, drain_rx) = mpsc::channel(1);
        ShutdownController {
            notify,
            drain_tx,
            drain_rx,
        }
    }

    /// A handle for one more task; the controller waits for it to be dropped.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            notified: self.notify.subscribe(),
            _drain: self.drain_tx.clone(),
        }
    }

    /// Tells every task to stop and waits up to `grace` for all of them to finish. Returns
    /// whether they all did.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let ShutdownController {
            notify,
            drain_tx,
            mut drain_rx,
        } = self;
        notify.send_replace(true);
        drop(drain_tx);
        tokio::time::timeout(grace, drain_rx.recv()).await.is_ok()
    }
}

impl Shutdown {
    /// Whether shutdown has begun.
    pub fn is_shutdown(&self) -> bool {
        *self.notified.borrow()
    }

    /// Completes when shutdown begins (at once if it already has).
    pub async fn recv(&mut self) {
        // An error means the controller is gone, which is a shutdown too.
        let _ = self.notified.wait_for(|stop| *stop).await;
    }
}

/// Completes on SIGINT or SIGTERM (shared with the storage node's binary).
pub use ringkv_common::signal::terminate_signal;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_every_task() {
        let controller = ShutdownController::new();
        let mut a = controller.subscribe();
        let b = controller.subscribe();
        assert!(!a.is_shutdown());
        let task = tokio::spawn(async move {
            a.recv().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(a);
        });
        let waiter = tokio::spawn(controller.shutdown(Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(b.is_shutdown());
        drop(b);
        assert!(waiter.await.expect("join"), "all tasks finished");
        task.await.expect("join");
    }

    #[tokio::test]
    async fn gives_up_after_the_grace_period() {
        let controller = ShutdownController::new();
        let stuck = controller.subscribe();
        assert!(!controller.shutdown(Duration::from_millis(20)).await);
        drop(stuck);
    }
}
