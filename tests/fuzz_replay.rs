//! The fuzz targets (fuzz/src/lib.rs) run in CI without libFuzzer: every committed seed in
//! `fuzz/corpus/TARGET/` and a fixed number of seeded mutations of them (bit flips,
//! interesting integers over binary fields, numbers in text replaced by extreme ones, cuts,
//! duplicated and spliced ranges). Each target must finish every case with 0 panics, 0 hangs
//! (a watchdog aborts a case running past `HANG_AFTER`) and under a memory cap (a counting
//! allocator refuses any allocation that takes the live heap past `MEM_CAP`, which aborts the
//! run with "memory allocation of N bytes failed").
//!
//! The input being run is written to `$CARGO_TARGET_TMPDIR/fuzz-replay/TARGET.current`
//! first, so an abort leaves it for `cargo fuzz run TARGET that-file -s none`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

/// Live heap allowed across the whole test binary (the targets run in parallel).
const MEM_CAP: usize = 2 << 30;
/// A case running this long is a hang (cases take milliseconds; the template fuel bound
/// is well under a second).
const HANG_AFTER: Duration = Duration::from_secs(60);

struct Capped;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's layout and pointer unchanged;
// the counter only decides whether to refuse (return null, which callers must handle).
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size() > MEM_CAP {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as received (see the impl's comment).
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grow = new_size.saturating_sub(layout.size());
        if LIVE.fetch_add(grow, Ordering::Relaxed) + grow > MEM_CAP {
            LIVE.fetch_sub(grow, Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from `System` with `layout`; `new_size` is the caller's.
        let out = unsafe { System.realloc(ptr, layout, new_size) };
        if out.is_null() {
            LIVE.fetch_sub(grow, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size().saturating_sub(new_size), Ordering::Relaxed);
        }
        out
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

/// xorshift64*: the mutations are the same on every machine and run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0001,
    i64::MAX as u64,
    u64::MAX,
    1 << 40,
    4096,
];
const NUMBERS: [&str; 12] = [
    "0",
    "-1",
    "1e308",
    "-1e308",
    "1e-400",
    "18446744073709551616",
    "9223372036854775807",
    "4294967297",
    "0.0",
    "-0",
    "1000000000000",
    "NaN",
];

/// One mutation of `b` (splicing from `other`).
fn mutate(rng: &mut Rng, b: &mut Vec<u8>, other: &[u8]) {
    let len = b.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            b[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            b[i] = [0, 0xff, 0x7f, 0x80, b'9', b'-', b'"', b'{', b'}', b'[', b']', b'%'][rng.below(12)];
        }
        2 if len >= 8 => {
            let width = [1, 2, 4, 8][rng.below(4)];
            let i = rng.below(len - width + 1);
            let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
            b[i..i + width].copy_from_slice(&v[..width]);
        }
        3 => replace_number(rng, b),
        4 if len > 0 => {
            let i = rng.below(len);
            let n = rng.below((len - i).min(64)) + 1;
            b.drain(i..i + n);
        }
        5 if len > 0 => {
            let i = rng.below(len);
            let n = rng.below((len - i).min(256)) + 1;
            let copy = b[i..i + n].to_vec();
            let at = rng.below(len + 1);
            b.splice(at..at, copy);
        }
        6 => b.truncate(rng.below(len + 1)),
        _ if !other.is_empty() => {
            let i = rng.below(other.len());
            let n = rng.below((other.len() - i).min(512)) + 1;
            let at = rng.below(len + 1);
            b.splice(at..at, other[i..i + n].iter().copied());
        }
        _ => {}
    }
}

/// Replace one run of ASCII digits (a JSON or template number) by an extreme one.
fn replace_number(rng: &mut Rng, b: &mut Vec<u8>) {
    let starts: Vec<usize> = (0..b.len())
        .filter(|&i| b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_digit()))
        .collect();
    if starts.is_empty() {
        return;
    }
    let s = starts[rng.below(starts.len())];
    let e = (s..b.len())
        .find(|&i| !matches!(b[i], b'0'..=b'9' | b'.' | b'e' | b'-'))
        .unwrap_or(b.len());
    b.splice(s..e, NUMBERS[rng.below(NUMBERS.len())].bytes());
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).expect("a seed file")).collect()
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call (never 0: 0 means "no case running").
fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Aborts the process when the case in progress (its start in the returned cell) has run
/// past `HANG_AFTER`.
fn watchdog(target: &'static str) -> Arc<AtomicU64> {
    let started = Arc::new(AtomicU64::new(0));
    let seen = started.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        let s = seen.load(Ordering::Relaxed);
        if s != 0 && now_ms().saturating_sub(s) > HANG_AFTER.as_millis() as u64 {
            eprintln!("fuzz replay: {target}: a case ran past {HANG_AFTER:?} (a hang); the input is {target}.current");
            std::process::abort();
        }
    });
    started
}

/// Run `body` over the seeds and `mutants` mutations; panics listing every panicking case.
fn replay(target: &'static str, mutants: usize, body: fn(&[u8]) -> bool) {
    let seeds = seeds(target);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-replay");
    std::fs::create_dir_all(&out).expect("the replay folder");
    let current = out.join(format!("{target}.current"));
    let started = watchdog(target);
    let mut rng = Rng(0x5eed_0018 ^ target.len() as u64);
    let (mut accepted, mut panics) = (0usize, Vec::new());
    let t0 = Instant::now();
    for case in 0..seeds.len() + mutants {
        let mut input = seeds[case % seeds.len()].clone();
        if case >= seeds.len() {
            for _ in 0..rng.below(4) + 1 {
                let other = rng.below(seeds.len());
                mutate(&mut rng, &mut input, &seeds[other]);
            }
        }
        std::fs::write(&current, &input).expect("the current case file");
        started.store(now_ms(), Ordering::Relaxed);
        match catch_unwind(AssertUnwindSafe(|| body(&input))) {
            Ok(ok) => accepted += ok as usize,
            Err(_) => {
                let keep = out.join(format!("{target}-panic-{case}"));
                std::fs::write(&keep, &input).expect("the panic case file");
                panics.push(keep.display().to_string());
            }
        }
        started.store(0, Ordering::Relaxed);
    }
    let total = seeds.len() + mutants;
    eprintln!(
        "fuzz replay {target}: {total} cases in {:.1} s, {accepted} accepted, {} rejected, {} panics",
        t0.elapsed().as_secs_f64(),
        total - accepted - panics.len(),
        panics.len()
    );
    assert!(
        panics.is_empty(),
        "{target}: {} panics, inputs kept: {panics:?}",
        panics.len()
    );
}

#[test]
fn config_inputs_never_panic() {
    replay("config", 20_000, targets::config);
}

#[test]
fn safetensors_inputs_never_panic() {
    replay("safetensors", 10_000, targets::safetensors);
}

#[test]
fn gguf_inputs_never_panic() {
    replay("gguf", 3_000, targets::gguf);
}

#[test]
fn chat_template_inputs_never_panic() {
    replay("chat_template", 10_000, targets::chat_template);
}
