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
//!
//! The queue has no bound: a caller that queues faster than the thread
//! stores lets it grow (heartbeats come at a fleet's steady pace, and the
//! first read waits for all of it).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// One queued write. It takes the connection through the `Db` as any call
/// does (on the database thread, which does not wait for the queue: it is
/// the queue) and reports its own failures.
pub(super) type QueuedWrite = Box<dyn FnOnce() + Send>;

/// The queue in front of the database thread (see the module docs).
pub(super) struct WriteBehind {
    /// Hands writes to the thread; dropped with the last `Db` clone, which
    /// ends the thread once it has applied what was queued.
    writes: Sender<QueuedWrite>,
    /// The database thread's id.
    thread: ThreadId,
    progress: Arc<Progress>,
}

/// How many writes were queued and applied so far, and who waits.
#[derive(Default)]
struct Progress {
    /// Writes queued so far (each one's ticket is the count after it).
    queued: AtomicU64,
    /// Writes applied so far, in queue order (a write that panicked
    /// counts; `u64::MAX` once the thread has ended).
    applied: AtomicU64,
    /// Threads waiting in `wait_until_applied` past their spin (the
    /// database thread wakes them only when there are any: no system call
    /// per write otherwise).
    waiters: Mutex<u64>,
    woken: Condvar,
}

/// How long either side spins before it sleeps: the database thread for
/// the next write, a caller for its writes to be applied. A fleet
/// simulation queues a batch every few tens of microseconds, each done in
/// about as long; a sleep and a wake-up (two system calls, a context
/// switch) cost more than that.
const SPIN: Duration = Duration::from_micros(50);

impl Progress {
    fn waiters(&self) -> MutexGuard<'_, u64> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records writes applied (`None`: the thread ended, and nothing more
    /// will be) and wakes the waiters.
    fn advance(&self, applied: Option<()>) {
        match applied {
            Some(()) => self.applied.fetch_add(1, Ordering::AcqRel),
            None => self.applied.swap(u64::MAX, Ordering::AcqRel),
        };
        // A waiter counts itself under this lock before it looks at
        // `applied`: it either sees the new count or is woken here.
        if *self.waiters() > 0 {
            self.woken.notify_all();
        }
    }

    fn reached(&self, ticket: u64) -> bool {
        self.applied.load(Ordering::Acquire) >= ticket
    }
}

/// Marks the thread's end however it ends (a panic outside any write
/// included), so no caller waits forever for writes that will not come.
struct Ended(Arc<Progress>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.advance(None);
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
        let (writes, queued) = channel::<QueuedWrite>();
        let progress = Arc::new(Progress::default());
        let ended = Ended(progress.clone());
        let thread = std::thread::Builder::new()
            .name("kanade-db-writes".into())
            .spawn(move || {
                let ended = ended;
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
                    // waiting for it: it counts as applied. (Built with
                    // `panic = "abort"`, as the simulation's profile is,
                    // a panic ends the process instead.)
                    if std::panic::catch_unwind(AssertUnwindSafe(write)).is_err() {
                        tracing::error!("a queued database write panicked");
                    }
                    ended.0.advance(Some(()));
                }
            })?;
        Ok(Self {
            writes,
            thread: thread.thread().id(),
            progress,
        })
    }

    /// Whether the caller is this queue's database thread (its calls do not
    /// wait for the queue: they are in it).
    pub(super) fn on_its_thread(&self) -> bool {
        std::thread::current().id() == self.thread
    }

    /// Queues `write` behind every write queued before it; gives it back
    /// when the database thread is gone, for the caller to run in place.
    pub(super) fn queue(&self, write: QueuedWrite) -> Result<(), QueuedWrite> {
        self.progress.queued.fetch_add(1, Ordering::AcqRel);
        self.writes.send(write).map_err(|refused| {
            // Only once the thread has ended: `applied` is at its end.
            refused.0
        })
    }

    /// Returns once every write queued before this call is applied (later
    /// ones are not waited for), or the thread has ended.
    pub(super) fn wait_until_applied(&self) {
        let progress = &*self.progress;
        let ticket = progress.queued.load(Ordering::Acquire);
        if progress.reached(ticket) || spin(|| progress.reached(ticket).then_some(())).is_some() {
            return;
        }
        let mut waiters = progress.waiters();
        *waiters += 1;
        while !progress.reached(ticket) {
            waiters = progress
                .woken
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
                assert!(std::thread::current().name() == Some("kanade-db-writes"));
                // Slow enough that the queue is not empty when the wait
                // starts.
                std::thread::sleep(std::time::Duration::from_micros(20));
                applied.lock().expect("applied").push(n);
            }));
            assert!(queued.is_ok());
        }
        assert!(!behind.on_its_thread());
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
        assert!(behind.queue(Box::new(|| panic!("a broken write"))).is_ok());
        let later = applied.clone();
        assert!(behind
            .queue(Box::new(move || later.lock().expect("applied").push(7)))
            .is_ok());
        let (waited, wait_over) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            behind.wait_until_applied();
            let _ = waited.send(());
        });
        assert!(
            wait_over.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the wait stalled behind the panicked write"
        );
        assert_eq!(*applied.lock().expect("applied"), vec![7]);
    }

    /// A wait is for the writes queued before it: one queued while it
    /// waits does not hold it up.
    #[test]
    fn a_wait_is_for_the_writes_queued_before_it() {
        let behind = Arc::new(WriteBehind::start().expect("thread"));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let first_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = first_done.clone();
        assert!(behind
            .queue(Box::new(move || {
                let _ = released.recv();
                done.store(true, Ordering::SeqCst);
            }))
            .is_ok());
        let (waited, wait_over) = std::sync::mpsc::channel();
        {
            let behind = behind.clone();
            std::thread::spawn(move || {
                behind.wait_until_applied();
                let _ = waited.send(());
            });
        }
        // A write queued after the wait began, held until the wait is
        // over: the wait must return without it. (The waiting thread has
        // long taken its ticket after 100 ms: the first write holds it.)
        let (hold, held) = std::sync::mpsc::channel::<()>();
        std::thread::sleep(Duration::from_millis(100));
        assert!(behind
            .queue(Box::new(move || {
                let _ = held.recv();
            }))
            .is_ok());
        assert!(release.send(()).is_ok());
        let over = wait_over.recv_timeout(Duration::from_secs(10));
        let _ = hold.send(());
        assert!(over.is_ok(), "the wait waited for a write queued after it");
        assert!(first_done.load(Ordering::SeqCst));
    }

    /// When the thread ends with writes still counted (a panic outside any
    /// write), a waiter is let go instead of waiting forever.
    #[test]
    fn an_ended_thread_lets_its_waiters_go() {
        let progress = Arc::new(Progress::default());
        progress.queued.fetch_add(3, Ordering::SeqCst);
        let ended = Ended(progress.clone());
        let waiter = {
            let progress = progress.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut waiters = progress.waiters();
                *waiters += 1;
                while !progress.reached(3) && Instant::now() < deadline {
                    waiters = progress
                        .woken
                        .wait_timeout(waiters, Duration::from_millis(100))
                        .expect("wait")
                        .0;
                }
                progress.reached(3)
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(ended);
        assert!(waiter.join().expect("waiter"), "the waiter was not let go");
        assert!(progress.reached(u64::MAX));
    }
}
