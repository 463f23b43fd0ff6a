"""How fast can a decode step's bytes move through TMA bulk copies, by block structure?

The decode step at batch 64 (H 32, KV 8, D 128, W 64) reads and writes back a 64 KB fp32 state
per (KV head, row) item and reads a 33 KB window ring. This probe moves exactly those bytes with
no decode math at all (each float of the state is scaled in shared memory and stored back in
place) in several block structures. Each is timed as `gpu_kernels.py bench` times `seq_us`
(`graph_us`: µs per launch, N layers' launches back to back in one CUDA graph, each layer on
its own buffers). Beside them: torch's in-place `x.mul_` over the same state; an in-place
`x += y` that also reads 32 KB an item (`y` broadcast over the item's two halves); a
plain-thread kernel (no TMA, one 16-byte load and store a thread) doing either; and a copy of
the same bytes. It answers: what does the structure alone cost, before any compute?

Structures (all sm_90 `cp.async.bulk` + `mbarrier`, 256 threads a block):
  whole   one block an item: its 4 state chunks (16 KB) loaded at once, scaled, stored chunk
          by chunk (the kept decode kernel's data movement), 2 or 3 blocks an SM; with the ring
          loaded too (2 an SM, as the kernel)
  blocks  one block per 16 / 32 / 64 KB piece (independent blocks, many an SM)
  stream  persistent blocks (2 or 3 an SM) cycling 4 chunk buffers: a buffer is refilled with
          the chunk 4 ahead as soon as its store has read it; chunks in grid-stride order
          ('sweep') or an item's 4 chunks in a row ('by item')
  ring    'stream by item' plus the item's window ring (33 KB, one buffer), issued with the
          item's first chunk store ('late') or as soon as the previous ring landed, in 1-65
          copies, or loaded by the block's threads (16-byte `cp.async`) instead of TMA; and a
          32 KB-aligned extra piece in the ring's place
  ring2   'stream by item' with the ring double-buffered (two items ahead) and the state through
          2 chunk buffers (two blocks an SM)

The dynamic shared memory (where the TMA copies land) is declared `__align__(1024)`. With
`--unaligned` it is placed where the compiler puts it after the kernel's few bytes of static
shared memory: the TMA structures then run 20-30 % slower. (The first runs of this probe were
unaligned; that is a property of the probe's kernels, see docs/CUDA.md.)

Run on the GPU machine (CuPy, torch, triton):  python3 scripts/decode_dram_probe.py [--unaligned]
Results: docs/CUDA.md, "decode at batch 64, what the data movement alone costs".
"""
import os
import sys

import cupy as cp
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_kernels import graph_us, seq_layers  # noqa: E402  (the bench's sequence timing)

SRC = r"""
#ifndef SMEM_ALIGN
#define SMEM_ALIGN __align__(1024)  // the TMA copies' shared-memory ends on 1 KB
#endif
__device__ __forceinline__ unsigned su(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void binit(unsigned long long* b) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(su(b)) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void bexp(unsigned long long* b, unsigned n) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(su(b)), "r"(n) : "memory");
}
__device__ __forceinline__ void bload(void* d, const void* s, unsigned n, unsigned long long* b) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
                 ::"r"(su(d)), "l"(s), "r"(n), "r"(su(b)) : "memory");
}
__device__ __forceinline__ void bwait(unsigned long long* b, unsigned ph) {
    asm volatile("{\n .reg .pred p;\n W_%=:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W_%=;\n}\n"
                 ::"r"(su(b)), "r"(ph) : "memory");
}
__device__ __forceinline__ void bstore(void* d, const void* s, unsigned n) {
    asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(d), "r"(su(s)), "r"(n) : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
__device__ __forceinline__ void bdrain() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
__device__ __forceinline__ void bread1() { asm volatile("cp.async.bulk.wait_group.read 1;\n" ::: "memory"); }
__device__ __forceinline__ void pfence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
constexpr int ITEM = 128 * 128;  // floats an item (64 KB)
constexpr int CH = 4096;  // floats a chunk (16 KB)

__device__ __forceinline__ void scale(float* p, int floats) {
    float4* q = reinterpret_cast<float4*>(p);
    for (int i = threadIdx.x; i < floats / 4; i += blockDim.x) {
        float4 x = q[i];
        x.x *= 0.999f; x.y *= 0.999f; x.z *= 0.999f; x.w *= 0.999f;
        q[i] = x;
    }
}

// One block an item: the state's 4 chunks (and the ring, when ring_bytes > 0) loaded at once.
extern "C" __global__ void whole(float* st, const char* ring, int ring_bytes) {
    extern __shared__ SMEM_ALIGN float sm[];
    __shared__ unsigned long long bars[5];
    const long long it = blockIdx.x;
    float* g = st + it * ITEM;
    if (threadIdx.x == 0) {
        for (int c = 0; c < 5; ++c) binit(&bars[c]);
        if (ring_bytes) { bexp(&bars[4], ring_bytes); bload(sm + ITEM, ring + it * ring_bytes, ring_bytes, &bars[4]); }
        for (int c = 0; c < 4; ++c) { bexp(&bars[c], CH * 4); bload(sm + c * CH, g + c * CH, CH * 4, &bars[c]); }
    }
    __syncthreads();
    if (ring_bytes) bwait(&bars[4], 0);
    for (int c = 0; c < 4; ++c) {
        bwait(&bars[c], 0);
        scale(sm + c * CH, CH);
        pfence();
        __syncthreads();
        if (threadIdx.x == 0) bstore(g + c * CH, sm + c * CH, CH * 4);
    }
    if (threadIdx.x == 0) bdrain();
}

// One block a piece of `n` floats.
extern "C" __global__ void pieces(float* st, int n) {
    extern __shared__ SMEM_ALIGN float sm[];
    __shared__ unsigned long long bar;
    float* g = st + (long long)blockIdx.x * n;
    if (threadIdx.x == 0) { binit(&bar); bexp(&bar, n * 4); bload(sm, g, n * 4, &bar); }
    __syncthreads();
    bwait(&bar, 0);
    scale(sm, n);
    pfence();
    __syncthreads();
    if (threadIdx.x == 0) { bstore(g, sm, n * 4); bdrain(); }
}

// Persistent: `nch` chunks through 4 buffers a block; by_item: block x takes items x, x + grid, ...
// (each item's 4 chunks in a row), else chunks x, x + grid, ...
extern "C" __global__ void stream(float* st, long long nch, int by_item) {
    extern __shared__ SMEM_ALIGN float sm[];
    __shared__ unsigned long long bars[4];
    const long long P = gridDim.x;
    auto idx = [&](long long k) { return by_item ? ((long long)blockIdx.x + (k / 4) * P) * 4 + k % 4 : (long long)blockIdx.x + k * P; };
    if (threadIdx.x == 0) {
        for (int c = 0; c < 4; ++c) binit(&bars[c]);
        for (int c = 0; c < 4; ++c)
            if (idx(c) < nch) { bexp(&bars[c], CH * 4); bload(sm + c * CH, st + idx(c) * CH, CH * 4, &bars[c]); }
    }
    __syncthreads();
    long long k = 0;
    for (long long i = idx(0); i < nch; ++k, i = idx(k)) {
        const int s = k % 4;
        bwait(&bars[s], (k / 4) & 1);
        scale(sm + s * CH, CH);
        pfence();
        __syncthreads();
        if (threadIdx.x == 0) {
            bstore(st + i * CH, sm + s * CH, CH * 4);
            if (k >= 1) {  // the previous buffer's store has read it: refill it 4 chunks ahead
                const int s1 = (k - 1) % 4;
                const long long nxt = idx(k + 3);
                bread1();
                if (nxt < nch) { bexp(&bars[s1], CH * 4); bload(sm + s1 * CH, st + nxt * CH, CH * 4, &bars[s1]); }
            }
        }
    }
    if (threadIdx.x == 0) bdrain();
}

// Persistent by item with the ring: each item's ring (`rb` bytes, one buffer) then its 4 state
// chunks (4 buffers); the next item's ring issued with this item's first chunk store (late) or
// as soon as this item's ring has landed. The ring by TMA in `rsplit` copies, or (thr) by the
// block's threads, 16-byte `cp.async` copies, every thread a share (late only).
extern "C" __global__ void stream_ring(float* st, const char* ring, long long items, int rb, int late, int rsplit, int thr) {
    extern __shared__ SMEM_ALIGN float sm[];
    __shared__ unsigned long long bars[5];
    char* rbuf = reinterpret_cast<char*>(sm + 4 * CH);
    const long long P = gridDim.x, first = blockIdx.x;
    if (first >= items) return;
    auto ld_ring = [&](long long it) {  // thread 0, or (thr) every thread
        if (thr) {
            for (int o = threadIdx.x * 16; o < rb; o += blockDim.x * 16)
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(su(rbuf + o)), "l"(ring + it * rb + o) : "memory");
            asm volatile("cp.async.commit_group;\n" ::: "memory");
            return;
        }
        bexp(&bars[4], rb);
        const int pc = rb / rsplit / 16 * 16;
        for (int i = 0; i < rsplit; ++i) bload(rbuf + i * pc, ring + it * rb + i * pc, i == rsplit - 1 ? rb - i * pc : pc, &bars[4]);
    };
    auto ld_chunk = [&](long long it, int c) { bexp(&bars[c], CH * 4); bload(sm + c * CH, st + it * ITEM + c * CH, CH * 4, &bars[c]); };
    if (threadIdx.x == 0) {
        for (int c = 0; c < 5; ++c) binit(&bars[c]);
        if (!thr) ld_ring(first);
        for (int c = 0; c < 4; ++c) ld_chunk(first, c);
    }
    if (thr) ld_ring(first);
    __syncthreads();
    unsigned ph = 0;
    for (long long it = first; it < items; it += P, ph ^= 1u) {
        const long long nx = it + P;
        const bool more = nx < items;
        if (thr) {
            asm volatile("cp.async.wait_all;\n" ::: "memory");
            __syncthreads();
        } else {
            bwait(&bars[4], ph);
        }
        const float touch = reinterpret_cast<const float*>(rbuf)[threadIdx.x] * 0.0f;
        if (!thr) {
            __syncthreads();  // every thread has read the ring
            if (threadIdx.x == 0 && more && !late) ld_ring(nx);
        }
        for (int c = 0; c < 4; ++c) {
            bwait(&bars[c], ph);
            scale(sm + c * CH, CH);
            if (threadIdx.x == 0) sm[c * CH] += touch;
            pfence();
            __syncthreads();
            if (thr && more && c == 0) ld_ring(nx);  // every thread has read the ring (the barrier above)
            if (threadIdx.x == 0) {
                bstore(st + it * ITEM + c * CH, sm + c * CH, CH * 4);
                if (more && c == 0 && late && !thr) ld_ring(nx);
                if (more && c > 0) { bread1(); ld_chunk(nx, c - 1); }
            }
        }
        if (threadIdx.x == 0 && more) { bdrain(); ld_chunk(nx, 3); }
    }
    if (threadIdx.x == 0) bdrain();
}

// Persistent by item, the ring double-buffered: the ring two items ahead (2 buffers, the next
// but one issued as soon as this item's ring is in) and the state's chunks through `nbs` buffers
// (chunk k+nbs-1 issued once chunk k-1's store has read its buffer).
extern "C" __global__ void stream_ring2(float* st, const char* ring, long long items, int rb, int nbs) {
    extern __shared__ SMEM_ALIGN float sm[];
    __shared__ unsigned long long bars[6];  // 0..nbs-1: state buffers; 4, 5: ring buffers
    char* rbuf = reinterpret_cast<char*>(sm + nbs * CH);
    const long long P = gridDim.x, first = blockIdx.x;
    if (first >= items) return;
    auto ld_chunk = [&](long long k) {
        const long long it = first + (k / 4) * P;
        if (it >= items) return;
        const int s = k % nbs;
        bexp(&bars[s], CH * 4);
        bload(sm + s * CH, st + it * ITEM + (k % 4) * CH, CH * 4, &bars[s]);
    };
    auto ld_ring = [&](long long m) {
        const long long it = first + m * P;
        if (it >= items) return;
        const int s = m & 1;
        bexp(&bars[4 + s], rb);
        bload(rbuf + s * rb, ring + it * rb, rb, &bars[4 + s]);
    };
    if (threadIdx.x == 0) {
        for (int c = 0; c < 6; ++c) binit(&bars[c]);
        ld_ring(0);
        ld_ring(1);
        for (int c = 0; c < nbs; ++c) ld_chunk(c);
    }
    __syncthreads();
    long long k = 0;
    for (long long m = 0; first + m * P < items; ++m) {
        const long long it = first + m * P;
        bwait(&bars[4 + (m & 1)], (m / 2) & 1);
        const float touch = reinterpret_cast<const float*>(rbuf + (m & 1) * rb)[threadIdx.x] * 0.0f;
        __syncthreads();
        if (threadIdx.x == 0) ld_ring(m + 2);
        for (int c = 0; c < 4; ++c, ++k) {
            const int s = k % nbs;
            bwait(&bars[s], (k / nbs) & 1);
            scale(sm + s * CH, CH);
            if (threadIdx.x == 0) sm[s * CH] += touch;
            pfence();
            __syncthreads();
            if (threadIdx.x == 0) {
                bstore(st + it * ITEM + c * CH, sm + s * CH, CH * 4);
                if (k >= 1) { bread1(); ld_chunk(k - 1 + nbs); }
            }
        }
    }
    if (threadIdx.x == 0) bdrain();
}
// Plain threads, no TMA: one float4 of the state a thread, scaled in place; with `extra`, the
// threads of each item's first half also add a float4 of y (32 KB an item, each byte read once).
extern "C" __global__ void plain(float4* x, const float4* y, long long n4, int extra) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 v = x[i];
    v.x *= 0.999f; v.y *= 0.999f; v.z *= 0.999f; v.w *= 0.999f;
    const long long it = i / 4096, e = i % 4096;  // 4096 float4s an item
    if (extra && e < 2048) {
        const float4 w = y[it * 2048 + e];
        v.x += w.x; v.y += w.y; v.z += w.z; v.w += w.w;
    }
    x[i] = v;
}
"""


def ptr(t):
    return np.uint64(t.data_ptr())


def main():
    unaligned = "--unaligned" in sys.argv[1:]
    src = ("#define SMEM_ALIGN\n" if unaligned else "") + SRC
    mod = cp.RawModule(code=src, options=("-std=c++17",), backend="nvrtc")
    names = ("whole", "pieces", "stream", "stream_ring", "stream_ring2", "plain")
    k = {n: mod.get_function(n) for n in names}
    for f in k.values():
        f.max_dynamic_shared_size_bytes = 200 * 1024
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(torch.cuda.get_device_name(), f"{sms} SMs;", "dynamic shared memory as the compiler places it (--unaligned)" if unaligned
          else "dynamic shared memory 1024-byte aligned")
    rb = 65 * 128 * 2 * 2  # the window ring's keys and values, bytes an item
    for B in (64, 256):
        items = B * 8
        nl = seq_layers(items * (2 * 65536 + rb))
        xs = [torch.randn(items * 128 * 128, device="cuda") for _ in range(nl)]
        rings = [torch.zeros(items * rb, device="cuda", dtype=torch.uint8) for _ in range(nl)]
        extra = [torch.zeros(items * 32768, device="cuda", dtype=torch.uint8) for _ in range(nl)]
        ys = [torch.zeros(items * 8192, device="cuda") for _ in range(nl)]  # 32 KB an item
        st_mb, ring_mb, extra_mb = items * 65536 * 2 / 1e6, items * rb / 1e6, items * 32768 / 1e6
        half = int((st_mb + ring_mb) * 1e6) // 2
        cx = [torch.empty(half, dtype=torch.uint8, device="cuda") for _ in range(nl)]
        cy = [torch.empty(half, dtype=torch.uint8, device="cuda") for _ in range(nl)]
        res = {}  # name -> (µs a launch, MB it moves)

        def timed(name, mb, one):  # `one(i)` launches layer i's work
            res[name] = (graph_us(lambda: [one(i) for i in range(nl)], nl), mb)

        persistent = (min(items, 2 * sms),)
        timed("torch x.mul_ (the state in place)", st_mb, lambda i: xs[i].mul_(0.999))
        timed("torch x += y (the state in place + a 32 KB read an item)", st_mb + extra_mb,
              lambda i: xs[i].view(items, 2, 8192).add_(ys[i].view(items, 1, 8192)))
        n4 = items * 4096
        for side in (0, 1):
            timed("plain threads: the state in place" + (" + a 32 KB read an item" if side else ""), st_mb + side * extra_mb,
                  lambda i: k["plain"](((n4 + 255) // 256,), (256,), (ptr(xs[i]), ptr(ys[i]), np.int64(n4), np.int32(side))))
        timed("torch copy of the state and ring's bytes", st_mb + ring_mb, lambda i: cy[i].copy_(cx[i]))
        for smem, tag in ((104064, "2 an SM"), (70 * 1024, "3 an SM")):
            timed(f"whole: one block an item, {tag}", st_mb,
                  lambda i: k["whole"]((items,), (256,), (ptr(xs[i]), ptr(rings[i]), np.int32(0)), shared_mem=smem))
        timed("whole + ring: one block an item, 2 an SM", st_mb + ring_mb,
              lambda i: k["whole"]((items,), (256,), (ptr(xs[i]), ptr(rings[i]), np.int32(rb)), shared_mem=104064))
        for n in (4096, 8192, 16384):
            timed(f"blocks: one block a {n // 256} KB piece", st_mb,
                  lambda i: k["pieces"]((items * 16384 // n,), (256,), (ptr(xs[i]), np.int32(n)), shared_mem=n * 4))
        for per_sm in (2, 3):
            for by_item in (0, 1):
                timed(f"stream: {per_sm} an SM x 4 buffers, {'by item' if by_item else 'sweep'}", st_mb,
                      lambda i: k["stream"]((per_sm * sms,), (256,), (ptr(xs[i]), np.int64(items * 4), np.int32(by_item)), shared_mem=65536))
        for late, rsplit in ((1, 1), (1, 4), (1, 65), (0, 1)):
            timed(f"ring: stream by item + ring in {rsplit} cop{'y' if rsplit == 1 else 'ies'}, {'late' if late else 'early'}", st_mb + ring_mb,
                  lambda i: k["stream_ring"](persistent, (256,), (ptr(xs[i]), ptr(rings[i]), np.int64(items), np.int32(rb), np.int32(late),
                                                                 np.int32(rsplit), np.int32(0)), shared_mem=65536 + rb))
        timed("ring: stream by item + a 32 KB-aligned extra piece, late", st_mb + extra_mb,
              lambda i: k["stream_ring"](persistent, (256,), (ptr(xs[i]), ptr(extra[i]), np.int64(items), np.int32(32768), np.int32(1),
                                                             np.int32(1), np.int32(0)), shared_mem=65536 + rb))
        timed("ring2: stream by item, ring 2 buffers (two items ahead), state 2 buffers", st_mb + ring_mb,
              lambda i: k["stream_ring2"](persistent, (256,), (ptr(xs[i]), ptr(rings[i]), np.int64(items), np.int32(rb), np.int32(2)),
                                          shared_mem=2 * 16384 + 2 * rb))
        timed("ring: stream by item + ring by threads (cp.async), late", st_mb + ring_mb,
              lambda i: k["stream_ring"](persistent, (256,), (ptr(xs[i]), ptr(rings[i]), np.int64(items), np.int32(rb), np.int32(1), np.int32(1),
                                                             np.int32(1)), shared_mem=65536 + rb))
        finite = all(torch.isfinite(x).all().item() for x in xs[:2])
        print(f"batch {B}: {items} items, {nl} layers; state {st_mb:.1f} MB read+written, ring {ring_mb:.1f} MB; state finite {finite}")
        for name, (us, mb) in res.items():
            print(f"  {name:72s} {us:7.1f} us  {mb:6.1f} MB  {mb / us:5.2f} TB/s")
        del xs, rings, extra, ys, cx, cy
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
