//! Shares one large job (a publish to hundreds of subscribers) among the cores this process may
//! use: the caller and up to three helper threads take chunks of it until none is left, and the
//! caller returns only when every chunk is done, so a hub's frames still go out in order.
//!
//! Why: a publish writes the frame to each subscriber's socket in turn, and nearly all of that is
//! the kernel's TCP send path (about 10 µs a write on this project's machine), so 1,000
//! subscribers are 10 ms of writes in a row, and the last one waits for all of them. Two cores
//! halve that wait. The CPU is the same (a little more for the hand-over), so only jobs of
//! `MIN_JOB` chunks or more are shared; a dashboard's few subscribers never leave the caller.
//!
//! The helpers start at the first shared job (an idle daemon has none) and then wait on a
//! condition variable for the next one. The caller does chunks too, so a helper that is slow to
//! wake only means the caller does more of them. `available_parallelism`
//! follows the process's CPU affinity and cgroup quota: a daemon pinned to one core never shares.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::lock::lock;

/// Helper threads at most (besides the caller).
const MAX_HELPERS: usize = 3;
/// Fewer chunks than this are done by the caller alone.
pub const MIN_JOB: usize = 4;
/// A helper's stack: it runs only the job's closures (socket writes, queue pushes, wakes).
const HELPER_STACK: usize = 256 * 1024;

/// One shared job: `chunks` calls of `work`, each returning a count; their sum is the result.
struct Job {
    chunks: usize,
    next: AtomicUsize,
    work: Box<dyn Fn(usize) -> usize + Send + Sync>,
    /// Chunks finished (or abandoned by a panic) and the sum of their counts.
    done: Mutex<(usize, usize)>,
    finished: Condvar,
}

impl Job {
    /// Takes chunks until none is left. Returns how many this thread did.
    fn help(&self) -> usize {
        let mut mine = 0;
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.chunks {
                return mine;
            }
            // Counted done even if `work` panics, so the caller never waits for it forever.
            let mut guard = Finish {
                job: self,
                count: 0,
            };
            guard.count = (self.work)(i);
            mine += 1;
        }
    }

    /// Waits until every chunk is done; returns the sum of their counts.
    fn wait(&self) -> usize {
        let mut d = lock(&self.done);
        while d.0 < self.chunks {
            d = self.finished.wait(d).unwrap_or_else(|p| p.into_inner());
        }
        d.1
    }
}

/// Records one chunk as done when dropped, with its count (0 if its `work` panicked).
struct Finish<'a> {
    job: &'a Job,
    count: usize,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let mut d = lock(&self.job.done);
        d.0 += 1;
        d.1 += self.count;
        if d.0 == self.job.chunks {
            self.job.finished.notify_all();
        }
    }
}

/// Jobs waiting for helpers, oldest first.
struct Board {
    jobs: Mutex<VecDeque<Arc<Job>>>,
    posted: Condvar,
    /// Chunks the helpers did, for tests and the README's measurements.
    helped: AtomicUsize,
}

impl Board {
    fn withdraw(&self, job: &Arc<Job>) {
        lock(&self.jobs).retain(|j| !Arc::ptr_eq(j, job));
    }

    fn serve(&self) {
        loop {
            let job = {
                let mut q = lock(&self.jobs);
                loop {
                    if let Some(j) = q.front() {
                        break j.clone();
                    }
                    q = self.posted.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            // A panicking chunk was counted done (`Finish`) and printed; the helper carries on.
            let n = std::panic::catch_unwind(AssertUnwindSafe(|| job.help())).unwrap_or(0);
            self.helped.fetch_add(n, Ordering::Relaxed);
            // Nothing left to take: no other helper needs to see it.
            self.withdraw(&job);
        }
    }
}

/// The process's helpers, started at the first shared job; `None` if there are none (one core,
/// or no thread could be started).
fn board() -> Option<&'static Board> {
    static BOARD: OnceLock<Option<&'static Board>> = OnceLock::new();
    *BOARD.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let wanted = cores.saturating_sub(1).min(MAX_HELPERS);
        if wanted == 0 {
            return None;
        }
        // Lives as long as the process, like its helpers.
        let board: &'static Board = Box::leak(Box::new(Board {
            jobs: Mutex::new(VecDeque::new()),
            posted: Condvar::new(),
            helped: AtomicUsize::new(0),
        }));
        let started = (1..=wanted)
            .filter(|i| {
                std::thread::Builder::new()
                    .name(format!("spread-{i}"))
                    .stack_size(HELPER_STACK)
                    .spawn(|| board.serve())
                    .inspect_err(|e| log::warn!("cannot start fan-out helper {i}: {e}"))
                    .is_ok()
            })
            .count();
        (started > 0).then_some(board)
    })
}

/// Runs `work(0)` … `work(chunks - 1)` and returns the sum of their results: on the calling
/// thread alone for fewer than `MIN_JOB` chunks or without helpers, else shared with the helpers.
/// Returns once all of them are done, whoever did them.
pub fn run(chunks: usize, work: impl Fn(usize) -> usize + Send + Sync + 'static) -> usize {
    let board = if chunks >= MIN_JOB { board() } else { None };
    let Some(board) = board else {
        return (0..chunks).map(work).sum();
    };
    let job = Arc::new(Job {
        chunks,
        next: AtomicUsize::new(0),
        work: Box::new(work),
        done: Mutex::new((0, 0)),
        finished: Condvar::new(),
    });
    lock(&board.jobs).push_back(job.clone());
    board.posted.notify_all();
    job.help();
    board.withdraw(&job);
    job.wait()
}

/// Chunks the helpers have done since the process started (0 without helpers).
#[cfg(test)]
pub fn helped() -> usize {
    board().map_or(0, |b| b.helped.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn every_chunk_runs_once_and_the_sum_is_theirs() {
        for chunks in [0, 1, MIN_JOB - 1, MIN_JOB, 37, 500] {
            let seen: Arc<Vec<AtomicUsize>> =
                Arc::new((0..chunks).map(|_| AtomicUsize::new(0)).collect());
            let s = seen.clone();
            let sum = run(chunks, move |i| {
                s[i].fetch_add(1, Ordering::Relaxed);
                i + 1
            });
            assert_eq!(sum, chunks * (chunks + 1) / 2, "{chunks} chunks");
            assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn a_helper_takes_chunks_while_the_caller_is_busy() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            eprintln!("one core: no helpers to test");
            return;
        }
        // Chunk 0 (the caller's first) holds the caller until a helper has done another chunk:
        // this returns only if a helper took part.
        let other_done = Arc::new((Mutex::new(false), Condvar::new()));
        let o = other_done.clone();
        let before = helped();
        let sum = run(MIN_JOB, move |i| {
            let (m, cv) = &*o;
            if i == 0 {
                let g = lock(m);
                let (g, timeout) = cv
                    .wait_timeout_while(g, std::time::Duration::from_secs(10), |d| !*d)
                    .unwrap();
                assert!(!timeout.timed_out(), "no helper took a chunk within 10 s");
                drop(g);
            } else {
                *lock(m) = true;
                cv.notify_all();
            }
            1
        });
        assert_eq!(sum, MIN_JOB);
        assert!(helped() > before);
    }

    #[test]
    fn a_panicking_chunk_does_not_hang_the_caller() {
        let panicked = Arc::new(AtomicBool::new(false));
        let p = panicked.clone();
        // Whoever runs chunk 1 panics; on the caller's thread that unwinds out of `run`.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(MIN_JOB * 2, move |i| {
                if i == 1 {
                    p.store(true, Ordering::Relaxed);
                    panic!("chunk 1 fails");
                }
                1
            })
        }));
        assert!(panicked.load(Ordering::Relaxed));
        // Either the caller unwound, or a helper did and the rest still summed.
        if let Ok(sum) = r {
            assert_eq!(sum, MIN_JOB * 2 - 1);
        }
        // The pool still works afterwards.
        assert_eq!(run(MIN_JOB, |_| 1), MIN_JOB);
    }
}
