// VARIANT_SMEM=51712
constexpr int H = 32;
constexpr int HKV = 8;
constexpr int G = 4;
constexpr int D = 128;
constexpr int W = 64;
constexpr int NRING = W + 1;
constexpr int NT = 256;  // warps 0..3: the window; warps 4..7: the state
constexpr int TW = 128;  // threads of each role
constexpr int KC = 80;  // staged window rows (a multiple of 16)
constexpr int BV = 8;  // bf16 per load
constexpr int DP = D + BV;  // row pitch (bf16) of the staged keys and rotated queries
constexpr int QR = 16;  // rows of the query / p tile
constexpr int GS = 16;  // row pitch (floats) of the scores
constexpr int CS = 16;  // state columns of a pass
constexpr int VEC = 4;
constexpr int TPR = CS / VEC;  // state threads per row
constexpr int RP = TW / TPR;  // rows of a pass
constexpr int RPT = D / RP;  // rows per thread and pass
constexpr int NP = D / CS;  // passes
#ifndef DEPTH
#define DEPTH 2
#endif
constexpr float SCALE = 8.8388346e-2f;
constexpr float NORM = 1.6e1f;
constexpr float MIX_WIN = 5e-1f;
constexpr float MIX_LIN = 5e-1f;

struct alignas(4 * VEC) VecF { float x[VEC]; };
struct alignas(2 * BV) LoadB { bf16 x[BV]; };

__device__ __forceinline__ void role_sync(int id) { asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(TW) : "memory"); }

extern "C" __global__ void __launch_bounds__(NT, 3) liger_gla_decode_h32_kv8_d128_w64_vt32(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
        const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot, float* __restrict__ state,
        bf16* __restrict__ ring_k, bf16* __restrict__ ring_v, bf16* __restrict__ out, const int* __restrict__ pos_ptr) {
    __shared__ float qk[(G + 1) * D];  // feature-mapped queries (G rows), then the mapped key
    __shared__ float kr[D];
    __shared__ float alpha[D];
    __shared__ float vcur[D];
    __shared__ float olin[G * D];  // q S, summed over the passes' rows by shared atomics
    __shared__ float wo[G * D];  // the window's output, times MIX_WIN
    __shared__ float wi[G];
    extern __shared__ float smem[];
    float* wsc = smem;  // [KC][GS]
    bf16* wk = reinterpret_cast<bf16*>(smem + KC * GS);  // [KC][DP]
    bf16* qb = wk + KC * DP;  // [QR][DP]: rotated queries, then p
    bf16* wv = qb + QR * DP;  // [KC][D]
    float* acc_t = reinterpret_cast<float*>(wk);  // [16][D + 4] p V tiles (the keys are dead)
    const int j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const long long bj = (long long)b * HKV + j;
    const long long qoff = (long long)b * H * D + (long long)j * G * D;
    if (warp < 4) {
        // ---------------- the window: warps 0..3
        const int wt = tid;
        bf16* ring_kh = ring_k + bj * NRING * D;
        bf16* ring_vh = ring_v + bj * NRING * D;
        LoadB x{};
        if (wt < 96) x = *reinterpret_cast<const LoadB*>(wt < 64 ? q_rot + qoff + wt * BV : wt < 80 ? k_rot + bj * D + (wt - 64) * BV : v + bj * D + (wt - 80) * BV);
        for (int e = wt; e < KC * D / BV; e += TW) {
            const int r = e / (D / BV), i = e % (D / BV) * BV;
            const bool live = r < NRING;
            cp_async16(wk + r * DP + i, live ? ring_kh + r * D + i : ring_kh, live);
            cp_async16(wv + r * D + i, live ? ring_vh + r * D + i : ring_vh, live);
        }
        const int pos = *pos_ptr;
        const int nk = min(pos, W) + 1, cur = pos % NRING;
        cp_async_wait_all();
        role_sync(1);
        if (wt < 64) {
            const int f = wt * BV;
            *reinterpret_cast<LoadB*>(qb + f / D * DP + f % D) = x;
        } else if (wt < 80) {
            const int f = (wt - 64) * BV;
            *reinterpret_cast<LoadB*>(wk + cur * DP + f) = x;
            *reinterpret_cast<LoadB*>(ring_kh + (long long)cur * D + f) = x;
        } else if (wt < 96) {
            const int f = (wt - 80) * BV;
            *reinterpret_cast<LoadB*>(wv + cur * D + f) = x;
            *reinterpret_cast<LoadB*>(ring_vh + (long long)cur * D + f) = x;
        }
        for (int e = wt; e < (QR - G) * DP / 8; e += TW) reinterpret_cast<uint4*>(qb + G * DP)[e] = uint4{0u, 0u, 0u, 0u};
        if (nk < NRING)  // early steps: the ring's rows past the window are stale; p V reads them (times 0)
            for (int e = wt; e < (NRING - nk) * D / 8; e += TW) {
                const int r = nk + e / (D / 8), i = e % (D / 8) * 8;
                if (r != cur) *reinterpret_cast<uint4*>(wv + r * D + i) = uint4{0u, 0u, 0u, 0u};
            }
        role_sync(1);
        // scores q.k on tensor cores: tile t of 16 keys x 16 (query rows)
        for (int t = warp; t < KC / 16; t += 4) {
            if (16 * t >= nk) continue;
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> sc;
            wmma::fill_fragment(sc, 0.0f);
#pragma unroll
            for (int k0 = 0; k0 < D; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> ka;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> qm;
                wmma::load_matrix_sync(ka, wk + 16 * t * DP + k0, DP);
                wmma::load_matrix_sync(qm, qb + k0, DP);
                wmma::mma_sync(sc, ka, qm, sc);
            }
            wmma::store_matrix_sync(wsc + 16 * t * GS, sc, GS, wmma::mem_row_major);
        }
        role_sync(1);
        // softmax, warp g = head g: p (bf16) into row g of the query tile
        {
            const int g = warp;
            float mx = neg_inf();
#pragma unroll
            for (int u = 0; u < (KC + 31) / 32; ++u) {
                const int r = lane + 32 * u;
                if (r < nk) mx = fmaxf(mx, wsc[r * GS + g] * SCALE);
            }
            const float m = warp_max(mx);
            float sum = 0.0f;
#pragma unroll
            for (int u = 0; u < (KC + 31) / 32; ++u) {
                const int r = lane + 32 * u;
                if (r < KC) {
                    const float e = r < nk ? __expf(wsc[r * GS + g] * SCALE - m) : 0.0f;
                    qb[g * DP + r] = __float2bfloat16(e);
                    sum += e;
                }
            }
            sum = warp_sum(sum);
            if (lane == 0) wi[g] = MIX_WIN / sum;
        }
        role_sync(1);
        // p V on tensor cores: warp w owns output columns 16n .. for n = w, w + 4, ...
        for (int n = warp; n < D / 16; n += 4) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> oc;
            wmma::fill_fragment(oc, 0.0f);
#pragma unroll
            for (int k0 = 0; k0 < KC; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> pa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> vb;
                wmma::load_matrix_sync(pa, qb + k0, DP);
                wmma::load_matrix_sync(vb, wv + k0 * D + 16 * n, D);
                wmma::mma_sync(oc, pa, vb, oc);
            }
            wmma::store_matrix_sync(acc_t + 16 * n, oc, D + 4, wmma::mem_row_major);
        }
        role_sync(1);
        for (int e = wt; e < G * D; e += TW) wo[e] = acc_t[(e / D) * (D + 4) + e % D] * wi[e / D];
    } else {
        // ---------------- the state: warps 4..7
        const int st = tid - TW, sw = warp - 4;
        const int rr0 = st / TPR, cv = st % TPR;
        float* const sp = state + bj * D * D + VEC * cv;
        VecF s[NP][RPT];
        auto load_pass = [&](int cb) {
#pragma unroll
            for (int p = 0; p < RPT; ++p) s[cb][p] = *reinterpret_cast<const VecF*>(sp + (long long)(rr0 + RP * p) * D + cb * CS);
        };
#pragma unroll
        for (int cb = 0; cb < DEPTH; ++cb) load_pass(cb);
        LoadB x{};
        if (st < 96) x = *reinterpret_cast<const LoadB*>(st < 64 ? q + qoff + st * BV : st < 80 ? k + bj * D + (st - 64) * BV : v + bj * D + (st - 80) * BV);
        for (int e = st; e < G * D; e += TW) olin[e] = 0.0f;
        if (st < 64) {
            for (int c = 0; c < BV; ++c) qk[st * BV + c] = __bfloat162float(x.x[c]);
        } else if (st < 80) {
            const int f = (st - 64) * BV;
            for (int c = 0; c < BV; ++c) {
                const float y = __bfloat162float(x.x[c]);
                kr[f + c] = y;
                qk[G * D + f + c] = y;
            }
        } else if (st < 96) {
            const int f = (st - 80) * BV;
            for (int c = 0; c < BV; ++c) vcur[f + c] = __bfloat162float(x.x[c]);
        }
        role_sync(2);
        alpha[st] = expf(logsigmoid(kr[st]) / NORM);  // TW == D
        for (int r = sw; r < G + 1; r += 4) {  // feature maps: softmax of each row, one warp a row
            float* row = qk + r * D;
            float m = neg_inf();
            for (int i = lane; i < D; i += 32) m = fmaxf(m, row[i]);
            m = warp_max(m);
            float sm = 0.0f;
            for (int i = lane; i < D; i += 32) {
                const float e = __expf(row[i] - m);
                row[i] = e;
                sm += e;
            }
            const float inv = 1.0f / warp_sum(sm);
            for (int i = lane; i < D; i += 32) row[i] *= inv;
        }
        role_sync(2);
#pragma unroll
        for (int cb = 0; cb < NP; ++cb) {
            const int col0 = cb * CS;
            float acc[G][VEC] = {};
            float vf[VEC];
#pragma unroll
            for (int c = 0; c < VEC; ++c) vf[c] = vcur[col0 + VEC * cv + c];
#pragma unroll
            for (int p = 0; p < RPT; ++p) {
                const int i = rr0 + RP * p;
                const float a = alpha[i], kk = qk[G * D + i];
                VecF xs = s[cb][p];
#pragma unroll
                for (int c = 0; c < VEC; ++c) xs.x[c] = a * xs.x[c] + kk * vf[c];
                *reinterpret_cast<VecF*>(sp + (long long)i * D + col0) = xs;
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    const float qg = qk[g * D + i];
#pragma unroll
                    for (int c = 0; c < VEC; ++c) acc[g][c] += qg * xs.x[c];
                }
            }
            if (cb + DEPTH < NP) load_pass(cb + DEPTH);
#pragma unroll
            for (int g = 0; g < G; ++g)
#pragma unroll
                for (int c = 0; c < VEC; ++c) {
                    float y = acc[g][c];
                    for (int off = TPR; off < 32; off <<= 1) y += __shfl_xor_sync(0xffffffffu, y, off);
                    acc[g][c] = y;
                }
            if (lane < TPR)
#pragma unroll
                for (int g = 0; g < G; ++g)
#pragma unroll
                    for (int c = 0; c < VEC; ++c) atomicAdd(&olin[g * D + col0 + VEC * cv + c], acc[g][c]);
        }
    }
    __syncthreads();
    for (int e = tid; e < G * D; e += NT) {
        const int g = e / D, c = e % D;
        out[(long long)b * H * D + (j * G + g) * D + c] = __float2bfloat16(MIX_LIN * olin[e] + wo[e]);
    }
}
