//! The graceful drain of the public connections: every connection task is
//! tracked, and learns that the process is draining through a flag it can
//! read for nothing on each request, plus a waker registered once per
//! connection for the moment it sits idle.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio_util::task::TaskTracker;

#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    wakers: Mutex<HashMap<u64, Waker>>,
    next_id: AtomicU64,
    tracker: TaskTracker,
}

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain::default())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Run a connection task that `shutdown` waits for.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    pub fn waiter(self: &Arc<Self>) -> Waiter {
        Waiter {
            drain: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            waker: None,
        }
    }

    /// Tell every connection, then wait until all have finished.
    pub async fn shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = self
            .wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for w in wakers {
            w.wake();
        }
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// One connection's view of the drain.
pub struct Waiter {
    drain: Arc<Drain>,
    id: u64,
    waker: Option<Waker>,
}

impl Waiter {
    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// Ready once draining. The task's waker is registered on first use
    /// (and again only if the task's waker changes), so waiting costs no
    /// lock per request.
    pub fn poll_draining(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            self.drain
                .wakers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(self.id, w.clone());
            self.waker = Some(w);
        }
        if self.drain.is_draining() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub async fn draining(&mut self) {
        std::future::poll_fn(|cx| self.poll_draining(cx)).await
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.waker.is_some() {
            self.drain
                .wakers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn shutdown_wakes_idle_waiters_and_waits_for_tasks() {
        let drain = Drain::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut waiter = drain.waiter();
        drain.spawn(async move {
            waiter.draining().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(());
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!drain.is_draining());
        tokio::time::timeout(Duration::from_secs(5), drain.shutdown())
            .await
            .expect("shutdown returned");
        // The task had finished when shutdown returned.
        assert!(rx.await.is_ok());
        assert!(drain.wakers.lock().expect("lock").is_empty());
    }
}
