//! A FIFO concurrency limiter whose limit can change while running.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Hands out at most `limit` permits, first come first served.
#[derive(Debug, Clone)]
pub struct Limiter {
    semaphore: Arc<Semaphore>,
    limit: Arc<Mutex<usize>>,
}

impl Limiter {
    /// A limiter with `limit` permits (at least 1).
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit: Arc::new(Mutex::new(limit)),
        }
    }

    /// Waits for a permit (FIFO).
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(permit) = self.semaphore.clone().acquire_owned().await {
                return permit;
            }
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        *self.limit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the limit; lowering it takes effect as running work finishes.
    pub fn set_limit(&self, new: usize) {
        let new = new.max(1);
        let mut limit = self.limit.lock().unwrap_or_else(|p| p.into_inner());
        let old = *limit;
        *limit = new;
        if new > old {
            self.semaphore.add_permits(new - old);
        } else if new < old {
            let semaphore = self.semaphore.clone();
            let shrink = (old - new) as u32;
            tokio::spawn(async move {
                if let Ok(permits) = semaphore.acquire_many_owned(shrink).await {
                    permits.forget();
                }
            });
        }
    }
}
