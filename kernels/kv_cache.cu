// KV-cache write: store one step's keys and values at their slots in the paged cache.
//
// Cache layout, per layer: (num_blocks, kv_heads, block_size, head_dim); token t's K/V goes
// to slot slots[t] = block * block_size + offset. CPU reference: src/backend/kernel_ref.rs
// (`write_kv`), which the CUDA test compares this kernel against.
//
// Grid: one block per token; threads stride over kv_heads * head_dim.

#include <stdint.h>

extern "C" __global__ void write_kv_f32(
    float* __restrict__ k_cache,      // (num_blocks, kv_heads, block_size, head_dim)
    float* __restrict__ v_cache,      // (num_blocks, kv_heads, block_size, head_dim)
    const float* __restrict__ k,      // (tokens, kv_heads, head_dim)
    const float* __restrict__ v,      // (tokens, kv_heads, head_dim)
    const uint32_t* __restrict__ slots,  // (tokens)
    int kv_heads, int head_dim, int block_size)
{
    const int t = blockIdx.x;
    const uint32_t slot = slots[t];
    const uint32_t block = slot / block_size;
    const uint32_t off = slot % block_size;
    const int row = kv_heads * head_dim;
    for (int i = threadIdx.x; i < row; i += blockDim.x) {
        const int h = i / head_dim, d = i % head_dim;
        const size_t dst = (((size_t)block * kv_heads + h) * block_size + off) * head_dim + d;
        k_cache[dst] = k[(size_t)t * row + i];
        v_cache[dst] = v[(size_t)t * row + i];
    }
}
