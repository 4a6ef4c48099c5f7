// Paged attention: every query token (prefill or decode) attends to positions
// [lo, pos] of its own sequence, reading K/V block by block through the sequence's block
// table -- no gather into a contiguous copy. lo = pos + 1 - window for sliding-window
// layers (window > 0), else 0.
//
// Exact softmax, computed online over tiles of blockDim.x positions: each tile's scores go
// to shared memory, the running max and denominator are rescaled, and each thread
// accumulates its head_dim entries of the output. f32 throughout.
// CPU reference: src/backend/kernel_ref.rs (`paged_attention`), which the CUDA test compares
// this kernel against.
//
// Grid: (tokens, heads). Block: a power of two <= 1024 threads. Dynamic shared memory:
// (head_dim + blockDim.x + 32) floats.

#include <stdint.h>
#include <math.h>

#define MAX_DIMS_PER_THREAD 8

__device__ float block_reduce(float x, float* red, bool is_max)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int o = 16; o > 0; o /= 2) {
        const float y = __shfl_xor_sync(0xffffffff, x, o);
        x = is_max ? fmaxf(x, y) : x + y;
    }
    __syncthreads();  // `red` may still be read from the previous reduction
    if (lane == 0) red[warp] = x;
    __syncthreads();
    const int warps = blockDim.x / 32;
    x = lane < warps ? red[lane] : (is_max ? -INFINITY : 0.0f);
    for (int o = 16; o > 0; o /= 2) {
        const float y = __shfl_xor_sync(0xffffffff, x, o);
        x = is_max ? fmaxf(x, y) : x + y;
    }
    return x;
}

extern "C" __global__ void paged_attention_f32(
    float* __restrict__ out,                // (tokens, heads, head_dim)
    const float* __restrict__ q,            // (tokens, heads, head_dim)
    const float* __restrict__ k_cache,      // (num_blocks, kv_heads, block_size, head_dim)
    const float* __restrict__ v_cache,      // (num_blocks, kv_heads, block_size, head_dim)
    const uint32_t* __restrict__ block_tables,  // (seqs, max_blocks)
    const uint32_t* __restrict__ positions,     // (tokens)
    const uint32_t* __restrict__ token_seq,     // (tokens) sequence of each token
    int heads, int kv_heads, int head_dim, int block_size, int max_blocks, int window,
    float scale)
{
    extern __shared__ float smem[];
    float* qs = smem;                       // (head_dim)
    float* probs = smem + head_dim;         // (blockDim.x) this tile's scores, then weights
    float* red = probs + blockDim.x;        // (32) reduction scratch

    const int t = blockIdx.x, h = blockIdx.y, kvh = h / (heads / kv_heads);
    const int tile = blockDim.x;
    const float* qrow = q + ((size_t)t * heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += tile) qs[d] = qrow[d];
    __syncthreads();

    const int pos = positions[t];
    const int hi = pos + 1;
    const int lo = window > 0 ? max(0, hi - window) : 0;
    const uint32_t* table = block_tables + (size_t)token_seq[t] * max_blocks;

    float acc[MAX_DIMS_PER_THREAD];
    for (int i = 0; i < MAX_DIMS_PER_THREAD; i++) acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    for (int start = lo; start < hi; start += tile) {
        const int j = start + threadIdx.x;
        float s = -INFINITY;
        if (j < hi) {
            const uint32_t block = table[j / block_size];
            const float* krow = k_cache + (((size_t)block * kv_heads + kvh) * block_size + j % block_size) * head_dim;
            float dot = 0.0f;
            for (int d = 0; d < head_dim; d++) dot += qs[d] * krow[d];
            s = dot * scale;
        }
        const float m_new = fmaxf(m, block_reduce(s, red, true));
        const float p = j < hi ? expf(s - m_new) : 0.0f;
        const float rescale = expf(m - m_new);  // 0 on the first tile (m = -inf)
        l = l * rescale + block_reduce(p, red, false);
        probs[threadIdx.x] = p;
        __syncthreads();
        const int n = min(tile, hi - start);
        for (int i = 0, d = threadIdx.x; d < head_dim; i++, d += tile) {
            float a = acc[i] * rescale;
            for (int jj = 0; jj < n; jj++) {
                const int pj = start + jj;
                const uint32_t block = table[pj / block_size];
                a += probs[jj] * v_cache[(((size_t)block * kv_heads + kvh) * block_size + pj % block_size) * head_dim + d];
            }
            acc[i] = a;
        }
        m = m_new;
        __syncthreads();  // probs is rewritten by the next tile
    }
    float* orow = out + ((size_t)t * heads + h) * head_dim;
    for (int i = 0, d = threadIdx.x; d < head_dim; i++, d += tile) orow[d] = acc[i] / l;
}
