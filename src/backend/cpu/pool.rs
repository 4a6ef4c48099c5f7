//! A fork-join team of pinned threads for the CPU kernels: `run(f)` calls `f(tid, n)` on every
//! team member (the caller is member 0) and returns when all are done.
//!
//! Owns: the worker threads, their core pinning and the spin-then-park hand-off. A decode step
//! runs a few hundred short parallel regions, so the hand-off must cost well under a
//! microsecond: workers spin on an epoch counter for a while after each job and only then park.
//! Must not: allocate per call, or know what the jobs compute.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};

/// Spin iterations a worker waits for the next job before it parks (≈ 50–100 µs).
const SPIN_ROUNDS: u32 = 40_000;

type Job = *const (dyn Fn(usize, usize) + Sync);

struct Shared {
    epoch: AtomicU64,
    done: AtomicUsize,
    stop: AtomicBool,
    panicked: AtomicBool,
    job: UnsafeCell<Option<Job>>,
    sleeping: Vec<AtomicBool>, // per worker
    size: AtomicUsize,         // members that actually started (the caller included)
}

// SAFETY: `job` is written only by the owner while no worker reads it (between jobs, ordered
// by the `epoch` release/acquire pair) and read by workers only while `run` is blocked.
unsafe impl Sync for Shared {}
// SAFETY: the raw job pointer is only dereferenced under the protocol above; everything else
// in `Shared` is atomics.
unsafe impl Send for Shared {}

/// The team. `Send` but not `Sync`: `run` publishes one job at a time through `Shared::job`,
/// so two threads calling `run` on one pool at once would overwrite each other's job while
/// workers run it. Without `Sync`, `&Pool` cannot reach a second thread and `run(&self)` is
/// only ever called by one thread at a time. A job cannot capture its own pool either (the
/// job must be `Sync`), so `run` is never re-entered from inside a job:
///
/// ```compile_fail
/// let pool = aisle::backend::cpu::Pool::new(2);
/// std::thread::scope(|s| {
///     s.spawn(|| pool.run(|_, _| {}));
///     pool.run(|_, _| {});
/// });
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    threads: Vec<Thread>,
    handles: Vec<JoinHandle<()>>,
    _not_sync: std::marker::PhantomData<std::cell::Cell<()>>,
}

/// The cores this process may run on, read once: threads inherit their creator's affinity,
/// so asking again from a pinned thread would see only its one core.
fn process_cores() -> Vec<core_affinity::CoreId> {
    static CORES: std::sync::OnceLock<Vec<core_affinity::CoreId>> = std::sync::OnceLock::new();
    CORES
        .get_or_init(|| core_affinity::get_core_ids().unwrap_or_default())
        .clone()
}

/// How many threads to use: `AISLE_THREADS` if set, else the number of cores we may run on.
pub fn default_threads() -> usize {
    std::env::var("AISLE_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl Pool {
    /// A team of `size` threads: the caller plus `size - 1` workers, worker `i` pinned to the
    /// process's core `i` when there are at least `size` cores. The caller is not pinned (it
    /// may be a thread that spawns others, which would inherit the pin); with the workers
    /// holding cores 1.., the scheduler keeps it on core 0.
    pub fn new(size: usize) -> Pool {
        let size = size.max(1);
        let cores = process_cores();
        let pin = cores.len() >= size;
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
            sleeping: (1..size).map(|_| AtomicBool::new(false)).collect(),
            size: AtomicUsize::new(size),
        });
        let mut handles = Vec::new();
        for tid in 1..size {
            let shared = shared.clone();
            let core = cores.get(tid).copied().filter(|_| pin);
            let spawned = std::thread::Builder::new()
                .name(format!("aisle-cpu-{tid}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    worker(&shared, tid)
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    tracing::warn!("could not start CPU worker thread {tid}: {e}; running with fewer threads");
                    break;
                }
            }
        }
        // A worker that failed to start shrinks the team; workers only read the size once a
        // job is published, which happens after this store.
        shared.size.store(handles.len() + 1, Ordering::Release);
        let threads = handles.iter().map(|h| h.thread().clone()).collect();
        Pool {
            shared,
            threads,
            handles,
            _not_sync: std::marker::PhantomData,
        }
    }

    /// Threads in the team (the caller included).
    pub fn size(&self) -> usize {
        self.handles.len() + 1
    }

    /// Call `f(tid, size)` on every member and wait for all of them.
    pub fn run<F: Fn(usize, usize) + Sync>(&self, f: F) {
        let n = self.size();
        if n == 1 {
            return f(0, 1);
        }
        let s = &*self.shared;
        let job: &(dyn Fn(usize, usize) + Sync) = &f;
        // SAFETY: workers only dereference the job between the epoch bump below and their
        // `done` increment, and we do not return (so `f` lives) until every worker is done.
        unsafe {
            *s.job.get() = Some(std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), Job>(job));
        }
        s.done.store(0, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        for (i, sleeping) in s.sleeping.iter().enumerate().take(n - 1) {
            if sleeping.swap(false, Ordering::SeqCst) {
                self.threads[i].unpark();
            }
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0, n)));
        while s.done.load(Ordering::Acquire) != n - 1 {
            std::hint::spin_loop();
        }
        // SAFETY: every worker has incremented `done`, so none reads `job` until the next
        // epoch bump, which only this (single, see `Pool`) caller makes.
        unsafe { *s.job.get() = None };
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::AcqRel) {
            panic!("a CPU worker thread panicked in a kernel");
        }
    }
}

fn worker(s: &Shared, tid: usize) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            spins += 1;
            if spins < SPIN_ROUNDS {
                std::hint::spin_loop();
                continue;
            }
            // Announce sleep, re-check, then park; `run` unparks sleepers after each bump.
            s.sleeping[tid - 1].store(true, Ordering::SeqCst);
            if s.epoch.load(Ordering::SeqCst) == seen && !s.stop.load(Ordering::Acquire) {
                std::thread::park();
            }
            s.sleeping[tid - 1].store(false, Ordering::Release);
            spins = 0;
        }
        // SAFETY: see `run`: the job is set before the epoch bump we just observed, and is not
        // written again until this worker has incremented `done`.
        if let Some(job) = unsafe { *s.job.get() } {
            // SAFETY: `run` keeps the closure alive until every worker is done with it.
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| f(tid, s.size.load(Ordering::Acquire)))).is_err() {
                s.panicked.store(true, Ordering::Release);
            }
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in &self.threads {
            t.unpark();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A raw output pointer handed to every team member, each of which writes only its own,
/// disjoint part of the buffer (the callers' SAFETY notes say which part).
#[derive(Clone, Copy)]
pub struct SyncPtr(*mut f32);
// SAFETY: `SyncPtr` only carries the address; every dereference is an `unsafe` block in a
// caller that writes a range no other member writes, while the buffer outlives `Pool::run`.
unsafe impl Sync for SyncPtr {}
// SAFETY: as for `Sync`.
unsafe impl Send for SyncPtr {}

impl SyncPtr {
    pub fn new(buf: &mut [f32]) -> SyncPtr {
        SyncPtr(buf.as_mut_ptr())
    }

    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// The half-open share `[lo, hi)` of `n` items that member `tid` of `size` takes.
pub fn share(n: usize, tid: usize, size: usize) -> (usize, usize) {
    (n * tid / size, n * (tid + 1) / size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_runs_each_job_once() {
        let pool = Pool::new(3);
        let size = pool.size();
        let hits = AtomicUsize::new(0);
        for round in 0..2000 {
            pool.run(|tid, n| {
                assert_eq!(n, size);
                hits.fetch_add(tid + 1, Ordering::Relaxed);
            });
            let n = pool.size();
            assert_eq!(hits.load(Ordering::Relaxed), (round + 1) * n * (n + 1) / 2);
        }
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = Pool::new(2);
        let hits = AtomicUsize::new(0);
        pool.run(|_, _| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        std::thread::sleep(std::time::Duration::from_millis(50)); // long enough to park
        pool.run(|_, _| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 2 * pool.size());
    }

    #[test]
    fn shares_cover_everything() {
        for n in [0, 1, 7, 64] {
            let mut covered = 0;
            for tid in 0..3 {
                let (lo, hi) = share(n, tid, 3);
                assert_eq!(lo, covered);
                covered = hi;
            }
            assert_eq!(covered, n);
        }
    }
}
