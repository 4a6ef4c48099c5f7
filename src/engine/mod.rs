//! The serving engine: block manager, scheduler, and the loop that drives an executor.
//!
//! Reading order: `block_manager` (block ids, prefix cache) → `scheduler` (what runs) →
//! `request` (what clients ask and receive) → `core` (one step: schedule → execute →
//! sample → update → emit) → `thread` (the engine thread and its channels).

pub mod block_manager;
pub mod scheduler;
