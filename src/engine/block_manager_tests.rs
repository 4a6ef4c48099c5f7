//! Unit tests for the block manager.

use super::*;

fn toks(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| i * 7 + salt).collect()
}

#[test]
fn allocate_and_free_return_every_block() {
    let mut m = BlockManager::new(8, 4);
    assert!(m.allocate(1, 10, &[])); // 3 blocks
    assert!(m.allocate(2, 4, &[])); // 1 block
    assert_eq!(m.num_free(), 4);
    assert!(m.allocate(1, 13, &[])); // grows to 4 blocks
    assert_eq!(m.table(1).len(), 4);
    assert!(!m.allocate(3, 17, &[]), "5 blocks do not fit in 3");
    assert_eq!(m.num_free(), 3, "a failed allocation changes nothing");
    assert!(m.table(3).is_empty());
    m.free(1);
    m.free(2);
    assert_eq!(m.num_free(), 8);
}

#[test]
fn full_blocks_are_reused_by_a_later_sequence_with_the_same_prefix() {
    let mut m = BlockManager::new(16, 4);
    let a = toks(14, 1); // 3 full blocks + 2 tokens
    assert!(m.allocate(1, a.len(), &[]));
    m.cache_full_blocks(1, &a, a.len());
    assert_eq!(m.num_cached(), 3);
    let a_blocks = m.table(1)[..3].to_vec();
    // Shared while A still runs: B takes references, no copies.
    let mut b = a[..12].to_vec();
    b.extend([900, 901, 902]);
    let (prefix, n) = m.lookup_prefix(&b);
    assert_eq!((prefix.clone(), n), (a_blocks.clone(), 12));
    assert!(m.allocate(2, b.len(), &prefix));
    assert_eq!(&m.table(2)[..3], &a_blocks[..]);
    assert_eq!(m.table(2).len(), 4);
    assert_eq!(m.num_free(), 16 - 4 - 1);
    // After both finish, the cached blocks stay findable until evicted.
    m.free(1);
    m.free(2);
    assert_eq!(m.num_free(), 16);
    assert_eq!(m.lookup_prefix(&b).1, 12);
}

#[test]
fn a_fully_cached_prompt_still_computes_its_last_token() {
    let mut m = BlockManager::new(8, 4);
    let a = toks(8, 3);
    assert!(m.allocate(1, 8, &[]));
    m.cache_full_blocks(1, &a, 8);
    m.free(1);
    let (blocks, n) = m.lookup_prefix(&a);
    assert_eq!(
        (blocks.len(), n),
        (1, 4),
        "the block holding the last token is recomputed"
    );
}

#[test]
fn different_prefixes_do_not_match_even_with_equal_later_blocks() {
    let mut m = BlockManager::new(8, 4);
    let a = toks(9, 1);
    assert!(m.allocate(1, 9, &[]));
    m.cache_full_blocks(1, &a, 9);
    let mut b = a.clone();
    b[0] += 1; // first block differs; second block's tokens are equal but its parent is not
    assert_eq!(m.lookup_prefix(&b).1, 0);
}

#[test]
fn eviction_takes_least_recently_freed_blocks_and_tails_first() {
    let mut m = BlockManager::new(4, 2);
    let a = toks(5, 1); // blocks: [a0 a1] [a2 a3] [a4]
    assert!(m.allocate(1, 5, &[]));
    m.cache_full_blocks(1, &a, 5);
    m.free(1);
    // One free block was never used, so it goes first; then A's tail (block 2, uncached),
    // then A's second full block, keeping the first (shared-prefix) block longest.
    assert!(m.allocate(2, 4, &[]));
    assert_eq!(m.lookup_prefix(&a).1, 4, "both full blocks still cached");
    assert!(m.allocate(3, 2, &[]));
    assert_eq!(m.lookup_prefix(&a).1, 2, "second block evicted before the first");
    m.free(2);
    m.free(3);
    assert_eq!(m.num_free(), 4);
}

#[test]
fn lookup_hits_count_only_when_recorded() {
    let mut m = BlockManager::new(4, 2);
    m.record_lookup(10, 4);
    m.record_lookup(6, 0);
    assert_eq!(m.stats, CacheStats { queries: 16, hits: 4 });
}
