//! Per-operation wall-clock timings of the CPU forward pass, for finding where a step goes
//! (`AISLE_PROFILE=1`; the table prints to stderr when the executor is dropped).
//!
//! Owns: the phase list and accumulated times. Must not: cost anything when disabled (one
//! branch per mark).

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Embed,
    Norm,
    Qkv,
    Rope,
    KvWrite,
    Attention,
    OProj,
    GateUp,
    Swiglu,
    Down,
    LmHead,
}

const PHASES: [&str; 11] = [
    "embed",
    "rms_norm",
    "qkv matmul",
    "q/k norm + rope",
    "kv write",
    "attention",
    "o matmul",
    "gate/up matmul",
    "swiglu",
    "down matmul",
    "final norm + lm_head",
];

pub struct Profile {
    enabled: bool,
    last: Instant,
    totals: [Duration; 11],
    steps: u64,
    tokens: u64,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            enabled: std::env::var_os("AISLE_PROFILE").is_some_and(|v| v != "0"),
            last: Instant::now(),
            totals: [Duration::ZERO; 11],
            steps: 0,
            tokens: 0,
        }
    }
}

impl Profile {
    /// Start timing a step of `tokens` tokens.
    pub fn start(&mut self, tokens: usize) {
        if self.enabled {
            self.steps += 1;
            self.tokens += tokens as u64;
            self.last = Instant::now();
        }
    }

    /// Charge the time since the previous mark to `phase`.
    pub fn mark(&mut self, phase: Phase) {
        if self.enabled {
            let now = Instant::now();
            self.totals[phase as usize] += now - self.last;
            self.last = now;
        }
    }

    /// The table of phases: total ms, ms per step and share; None when disabled or unused.
    pub fn report(&self) -> Option<String> {
        if !self.enabled || self.steps == 0 {
            return None;
        }
        let all: Duration = self.totals.iter().sum();
        let mut s = format!(
            "CPU forward profile: {} steps, {} tokens, {:.1} ms\n",
            self.steps,
            self.tokens,
            all.as_secs_f64() * 1e3
        );
        for (name, t) in PHASES.iter().zip(&self.totals) {
            s += &format!(
                "  {name:<22} {:>10.2} ms {:>8.3} ms/step {:>5.1}%\n",
                t.as_secs_f64() * 1e3,
                t.as_secs_f64() * 1e3 / self.steps as f64,
                100.0 * t.as_secs_f64() / all.as_secs_f64().max(1e-12)
            );
        }
        Some(s)
    }
}
