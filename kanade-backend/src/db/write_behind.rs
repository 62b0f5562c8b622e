//! Write-behind: database writes whose caller needs no answer (a batch of
//! heartbeats: nothing is acknowledged after it) applied by a database
//! thread of their own, in the order they were queued, while the caller
//! goes on.
//!
//! The ordering rule that keeps this invisible: every other use of the
//! connection first waits until the writes queued before it are applied
//! (`Db::lock` calls [`WriteBehind::wait_until_applied`]). A read therefore
//! sees exactly the rows it would have seen had each queued write run in
//! place, and the database does its work in the order of the calls. A
//! simulation that runs everything on one thread with inline database
//! calls (and hashes its trace) stays deterministic, while its heartbeat
//! storage runs on the machine's second core.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One queued write. It takes the connection through the `Db` as any call
/// does (on the database thread that does not wait for the queue: see
/// [`on_database_thread`]) and reports its own failures or leaves its
/// answer where its caller looks.
pub(super) type Write = Box<dyn FnOnce() + Send>;

thread_local! {
    static DATABASE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this is a database thread, whose queued writes are applied in
/// order already (its calls do not wait for the queue: they are in it).
pub(super) fn on_database_thread() -> bool {
    DATABASE_THREAD.with(std::cell::Cell::get)
}

/// The queue in front of the database thread (see the module docs).
pub(super) struct WriteBehind {
    /// Hands writes to the thread; dropped with the last `Db` clone, which
    /// ends the thread once it has applied what was queued.
    writes: Sender<Write>,
    outstanding: Arc<Outstanding>,
}

/// Writes queued and not yet applied, and who waits for none to be left.
#[derive(Default)]
struct Outstanding {
    /// Queued writes not yet applied (or failed).
    writes: AtomicU64,
    /// Threads waiting in `wait_until_applied` past their spin (the
    /// database thread wakes them only when there are any: no system call
    /// per write otherwise).
    waiters: Mutex<u64>,
    applied: Condvar,
}

/// How long either side spins before it sleeps: the database thread for
/// the next write, a caller for the queue to empty. A fleet simulation
/// queues a batch every few tens of microseconds, each done in about as
/// long; a sleep and a wake-up (two system calls, a context switch) cost
/// more than that.
const SPIN: Duration = Duration::from_micros(50);

impl Outstanding {
    fn waiters(&self) -> MutexGuard<'_, u64> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn one_applied(&self) {
        if self.writes.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A waiter counts itself under this lock before it looks at
            // `writes`: it either sees 0 or is woken here.
            if *self.waiters() > 0 {
                self.applied.notify_all();
            }
        }
    }

    fn none_left(&self) -> bool {
        self.writes.load(Ordering::Acquire) == 0
    }
}

/// Calls `ready` until it answers `Some` or [`SPIN`] has passed.
fn spin<T>(mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        for _ in 0..64 {
            if let Some(found) = ready() {
                return Some(found);
            }
            std::hint::spin_loop();
        }
        if started.elapsed() >= SPIN {
            return None;
        }
    }
}

impl WriteBehind {
    /// Starts the database thread.
    ///
    /// # Errors
    /// The thread could not be started.
    pub(super) fn start() -> std::io::Result<Self> {
        let (writes, queued) = channel::<Write>();
        let outstanding = Arc::new(Outstanding::default());
        let done = outstanding.clone();
        std::thread::Builder::new()
            .name("kanade-db-writes".into())
            .spawn(move || {
                DATABASE_THREAD.with(|on| on.set(true));
                loop {
                    let write = match spin(|| queued.try_recv().ok()) {
                        Some(write) => write,
                        None => match queued.recv() {
                            Ok(write) => write,
                            // Every `Db` clone is gone.
                            Err(_) => return,
                        },
                    };
                    // A panicking write must not leave every later reader
                    // waiting for it: it counts as applied.
                    if std::panic::catch_unwind(AssertUnwindSafe(write)).is_err() {
                        tracing::error!("a queued database write panicked");
                    }
                    done.one_applied();
                }
            })?;
        Ok(Self {
            writes,
            outstanding,
        })
    }

    /// Queues `write` behind every write queued before it; gives it back
    /// when the database thread is gone (it ended on a panic outside any
    /// write), for the caller to run in place.
    pub(super) fn queue(&self, write: Write) -> Result<(), Write> {
        self.outstanding.writes.fetch_add(1, Ordering::AcqRel);
        self.writes.send(write).map_err(|refused| {
            self.outstanding.one_applied();
            refused.0
        })
    }

    /// Returns once every write queued so far is applied.
    pub(super) fn wait_until_applied(&self) {
        let outstanding = &*self.outstanding;
        if outstanding.none_left() || spin(|| outstanding.none_left().then_some(())).is_some() {
            return;
        }
        let mut waiters = outstanding.waiters();
        *waiters += 1;
        while !outstanding.none_left() {
            waiters = outstanding
                .applied
                .wait(waiters)
                .unwrap_or_else(|p| p.into_inner());
        }
        *waiters -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes are applied in the order they were queued, on the database
    /// thread, and a wait returns only when all of them are in.
    #[test]
    fn writes_apply_in_order_before_the_wait_returns() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let behind = WriteBehind::start().expect("thread");
        for n in 0..500 {
            let applied = applied.clone();
            let queued = behind.queue(Box::new(move || {
                assert!(on_database_thread());
                // Slow enough that the queue is not empty when the wait
                // starts.
                std::thread::sleep(std::time::Duration::from_micros(20));
                applied.lock().expect("applied").push(n);
            }));
            assert!(queued.is_ok());
        }
        assert!(!on_database_thread());
        behind.wait_until_applied();
        assert_eq!(
            *applied.lock().expect("applied"),
            (0..500).collect::<Vec<u32>>()
        );
    }

    /// A write that panics counts as applied: the wait still returns and
    /// later writes still run.
    #[test]
    fn a_panicking_write_does_not_stall_the_queue() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let behind = WriteBehind::start().expect("thread");
        let _ = behind.queue(Box::new(|| panic!("a broken write")));
        let later = applied.clone();
        let _ = behind.queue(Box::new(move || later.lock().expect("applied").push(7)));
        behind.wait_until_applied();
        assert_eq!(*applied.lock().expect("applied"), vec![7]);
    }
}
