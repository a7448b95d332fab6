//! Session threads: every client gets a thread of its own, and a thread whose
//! client has left waits a while to serve the next one instead of exiting.
//!
//! The design stays thread-per-client: a thread runs one session at a time, from
//! greeting to goodbye, with blocking reads. Keeping finished threads for reuse
//! only saves the cost of making and unmaking them (mapping a stack, `clone`,
//! unmapping it: tens of microseconds, and locks on the process's memory map
//! that every other thread then waits for). Under a steady load no thread is
//! made at all.
//!
//! [`SessionThreads::run`] is called by the accepting thread, so it never makes
//! a thread itself: it hands the job to an idle thread if there is one, else to
//! a *spawner* thread that makes a new one. The accept loop is back in `accept`
//! within microseconds, and a burst of clients cannot overflow the listen backlog
//! while it works.

use crate::config::{IDLE_THREAD_TIMEOUT, MAX_IDLE_THREADS, SESSION_STACK_BYTES};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

/// One client's whole session, and what to tell the client when no thread can
/// be had for it (threads, like descriptors, run out: `vm.max_map_count`,
/// `RLIMIT_NPROC`, memory).
pub trait Job: Send + 'static {
    fn run(self: Box<Self>);
    /// No thread could be started for this job. The default does nothing (the
    /// job, and the client's socket in it, is dropped).
    fn refuse(self: Box<Self>) {}
}

type BoxedJob = Box<dyn Job>;

/// A thread waiting for its next client.
struct IdleThread {
    id: u64,
    next_job: Sender<BoxedJob>,
}

struct Shared {
    /// Most recently idle last: the next client gets the warmest thread.
    idle: Mutex<Vec<IdleThread>>,
    next_id: AtomicU64,
    /// Threads kept waiting at most (0: every thread exits after its client).
    max_idle: usize,
    /// How long a thread waits for a next client before it exits.
    idle_timeout: Duration,
}

impl Shared {
    fn idle(&self) -> MutexGuard<'_, Vec<IdleThread>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs each job on a thread of its own: a waiting one, or a new one.
pub struct SessionThreads {
    shared: Arc<Shared>,
    spawner: Sender<BoxedJob>,
}

impl Default for SessionThreads {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionThreads {
    /// Starts the spawner thread; no session thread exists until the first job.
    /// At most [`MAX_IDLE_THREADS`] wait for a next client, each up to
    /// [`IDLE_THREAD_TIMEOUT`].
    pub fn new() -> Self {
        Self::with_policy(MAX_IDLE_THREADS, IDLE_THREAD_TIMEOUT)
    }

    /// As [`new`](Self::new), keeping at most `max_idle` threads waiting, each
    /// up to `idle_timeout` (`max_idle` 0: a thread per client, never reused).
    pub fn with_policy(max_idle: usize, idle_timeout: Duration) -> Self {
        let shared = Arc::new(Shared {
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            max_idle,
            idle_timeout,
        });
        let (spawner, new_jobs) = mpsc::channel::<BoxedJob>();
        let for_spawner = shared.clone();
        thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for job in new_jobs {
                    start_thread(&for_spawner, job);
                }
            })
            .expect("cannot start the spawner thread");
        SessionThreads { shared, spawner }
    }

    /// Runs `job` on its own thread. Never blocks and never makes a thread.
    pub fn run(&self, job: BoxedJob) {
        let waiting = self.shared.idle().pop();
        let job = match waiting {
            Some(thread) => match thread.next_job.send(job) {
                Ok(()) => return,
                // That thread gave up waiting just now: make a new one.
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        // Fails only if the spawner is gone (never, while `self` lives).
        let _ = self.spawner.send(job);
    }

    /// Threads waiting for a client now (for tests and monitoring).
    pub fn idle_count(&self) -> usize {
        self.shared.idle().len()
    }
}

impl Drop for SessionThreads {
    /// Idle threads exit at once (their only job sender is dropped here); the
    /// spawner exits once `self.spawner` is dropped right after. Threads still
    /// serving a client finish that session first.
    fn drop(&mut self) {
        self.shared.idle().clear();
    }
}

fn start_thread(shared: &Arc<Shared>, first: BoxedJob) {
    let shared = shared.clone();
    // Shared with the new thread, so that if it cannot start the job comes
    // back here (spawn drops its closure on failure) and can refuse its client.
    let handed = Arc::new(Mutex::new(Some(first)));
    let for_thread = handed.clone();
    let started = thread::Builder::new()
        // Unnamed, it would show in ps/top under its parent's name, "spawner".
        .name("session".into())
        .stack_size(SESSION_STACK_BYTES)
        .spawn(move || {
            let first = for_thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(job) = first {
                serve_clients(&shared, job);
            }
        });
    if let Err(e) = started {
        log::error!("cannot start a session thread: {e}");
        let job = handed.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(job) = job {
            job.refuse();
        }
    }
}

/// A session thread's life: its first client, then whoever comes next while it
/// waits, until it has waited [`IDLE_THREAD_TIMEOUT`] for nobody.
fn serve_clients(shared: &Shared, first: BoxedJob) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let mut job = first;
    loop {
        job.run();
        // A channel per wait, whose only sender is in the idle list: when the
        // list is cleared (SessionThreads dropped), the wait ends at once.
        let (next_job, jobs): (Sender<BoxedJob>, Receiver<BoxedJob>) = mpsc::channel();
        {
            let mut idle = shared.idle();
            if idle.len() >= shared.max_idle {
                return;
            }
            idle.push(IdleThread { id, next_job });
        }
        job = match jobs.recv_timeout(shared.idle_timeout) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                let mut idle = shared.idle();
                match idle.iter().position(|t| t.id == id) {
                    // Still listed: nobody can send to us any more; retire.
                    Some(at) => {
                        idle.remove(at);
                        return;
                    }
                    // Taken off the list by `run` just now: its job is on the way.
                    None => {
                        drop(idle);
                        match jobs.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closure as a job.
    struct FnJob<F>(F);

    impl<F: FnOnce() + Send + 'static> Job for FnJob<F> {
        fn run(self: Box<Self>) {
            (self.0)()
        }
    }

    fn job(f: impl FnOnce() + Send + 'static) -> BoxedJob {
        Box::new(FnJob(f))
    }
    use std::sync::mpsc::channel;
    use std::time::Instant;

    #[test]
    fn every_job_runs_and_finished_threads_are_reused() {
        let threads = SessionThreads::new();
        let (done, finished) = channel();
        for round in 0..3 {
            for i in 0..4 {
                let done = done.clone();
                threads.run(job(move || {
                    done.send((round, i, thread::current().id())).unwrap();
                }));
            }
            let ids: Vec<_> = (0..4)
                .map(|_| finished.recv_timeout(Duration::from_secs(5)).unwrap().2)
                .collect();
            assert_eq!(ids.len(), 4);
            // Let the threads list themselves as idle before the next round.
            let deadline = Instant::now() + Duration::from_secs(5);
            while threads.idle_count() < 1 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
        }
        assert!(threads.idle_count() >= 1);
        assert!(
            threads.idle_count() <= 12,
            "threads were reused, not piled up"
        );
    }

    #[test]
    fn idle_threads_exit_when_the_pool_is_dropped() {
        let threads = SessionThreads::new();
        let (done, finished) = channel();
        let probe = Arc::new(());
        for _ in 0..3 {
            let done = done.clone();
            let probe = probe.clone();
            threads.run(job(move || {
                // Kept by the thread's stack frame until the job returns; the
                // thread's own state (Shared) is what must go.
                drop(probe);
                done.send(thread::current().name().map(str::to_string))
                    .unwrap();
            }));
        }
        for _ in 0..3 {
            let name = finished.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(name.as_deref(), Some("session"), "named for what it is");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads.idle_count() < 3 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let shared = Arc::downgrade(&threads.shared);
        drop(threads);
        // Every idle thread (and the spawner) held `shared`; all have exited
        // when the last reference is gone, long before IDLE_THREAD_TIMEOUT.
        let deadline = Instant::now() + Duration::from_secs(3);
        while shared.strong_count() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(shared.strong_count(), 0, "idle threads still waiting");
    }

    #[test]
    fn concurrent_jobs_each_get_their_own_thread() {
        // Four jobs that each wait for all four to be running at once: with
        // fewer than four threads this would never finish.
        let threads = SessionThreads::new();
        let barrier = Arc::new(std::sync::Barrier::new(5));
        for _ in 0..4 {
            let barrier = barrier.clone();
            threads.run(job(move || {
                barrier.wait();
            }));
        }
        barrier.wait();
    }
}
