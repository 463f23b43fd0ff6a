// VARIANT_SMEM=104064
constexpr int H = 32;
constexpr int HKV = 8;
constexpr int G = 4;
constexpr int D = 128;
constexpr int W = 64;
constexpr int NRING = W + 1;
constexpr int NT = 256;
constexpr int NW = NT / 32;
constexpr int KT = 32;  // keys per score tile (wmma m32n8k16)
constexpr int KC = 96;  // keys the score tiles cover (rows past the ring read the values: finite, unused)
constexpr int BV = 8;
constexpr int DP = D + BV;  // row pitch (bf16) of the rotated queries
constexpr int QR = 8;  // query rows of the B tile (G, padded)
constexpr int GS = 8;  // row pitch (floats) of the scores
constexpr int OW = G * D / NT;  // window outputs per thread
constexpr int CQ = D / 4;  // column quads of a state row (one warp's lanes)
constexpr int SRT = D / NW;  // state rows per thread (rows warp + NW * p)
constexpr float SCALE = 8.8388346e-2f;
constexpr float NORM = 1.6e1f;
constexpr float MIX_WIN = 5e-1f;
constexpr float MIX_LIN = 5e-1f;
static_assert(CQ == 32, "one warp a state row");

struct alignas(16) VecF { float x[4]; };
struct alignas(2 * BV) LoadB { bf16 x[BV]; };

__device__ __forceinline__ unsigned smem_u32(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbar_init(unsigned long long* bar) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ void mbar_expect(unsigned long long* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
// One bulk copy by the TMA engine (one instruction, no per-thread loads): `bytes` (a multiple
// of 16, both ends 16-byte aligned) from global to shared memory, counted on `bar`.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(smem_u32(dst)), "l"(src), "r"(bytes), "r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned long long* bar) {
    asm volatile("{\n .reg .pred p;\n WAIT_%=:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], 0;\n @!p bra WAIT_%=;\n}\n" ::"r"(smem_u32(bar)) : "memory");
}

extern "C" __global__ void __launch_bounds__(NT, 2) liger_gla_decode_h32_kv8_d128_w64_vt32(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
        const bf16* __restrict__ q_rot, const bf16* __restrict__ k_rot, float* __restrict__ state,
        bf16* __restrict__ ring_k, bf16* __restrict__ ring_v, bf16* __restrict__ out, const int* __restrict__ pos_ptr) {
    __shared__ float qk[(G + 1) * D];  // feature-mapped queries (G rows), then the mapped key
    __shared__ float kr[D];
    __shared__ float alpha[D];
    __shared__ float vcur[D];
    __shared__ float wo[G * D];  // the window's output, times MIX_WIN; then plus the linear part
    __shared__ float wi[G];
    __shared__ alignas(8) unsigned long long bars[2];  // the window's copies, the state's copy
    extern __shared__ __align__(128) float smem[];
    float* ss = smem;  // [D][D] the fp32 state (one bulk copy in, updated in place, one bulk copy out)
    bf16* wk = reinterpret_cast<bf16*>(smem + D * D);  // [NRING][D] the ring's keys (rows to KC read on into wv)
    bf16* wv = wk + NRING * D;  // [NRING][D] the ring's values
    float* wsc = reinterpret_cast<float*>(wv + NRING * D);  // [KC][GS] scores, then exp(score - max)
    bf16* qb = reinterpret_cast<bf16*>(wsc + KC * GS);  // [QR][DP] rotated queries (rows G.. zero)
    float* part = reinterpret_cast<float*>(wk);  // [NW][G][D] per-warp q S (the keys are dead by then)
    const int j = blockIdx.y, b = blockIdx.z, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const long long bj = (long long)b * HKV + j;
    const long long qoff = (long long)b * H * D + (long long)j * G * D;
    bf16* ring_kh = ring_k + bj * NRING * D;
    bf16* ring_vh = ring_v + bj * NRING * D;
    float* sg = state + bj * D * D;
    if (tid == 0) {
        mbar_init(&bars[0]);
        mbar_init(&bars[1]);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        mbar_expect(&bars[0], 2 * NRING * D * 2);
        bulk_load(wk, ring_kh, NRING * D * 2, &bars[0]);
        bulk_load(wv, ring_vh, NRING * D * 2, &bars[0]);
        mbar_expect(&bars[1], D * D * 4);
        bulk_load(ss, sg, D * D * 4, &bars[1]);
    }
    // the token's vectors: q, q_rot (G*D/BV loads each), k, k_rot, v (D/BV each)
    constexpr int E1 = G * D / BV, E2 = 2 * E1, E3 = E2 + D / BV, E4 = E3 + D / BV, E5 = E4 + D / BV;
    static_assert(E5 <= NT, "one load a thread");
    LoadB x{};
    if (tid < E5)
        x = *reinterpret_cast<const LoadB*>(tid < E1 ? q + qoff + tid * BV : tid < E2 ? q_rot + qoff + (tid - E1) * BV
                : tid < E3 ? k + bj * D + (tid - E2) * BV : tid < E4 ? k_rot + bj * D + (tid - E3) * BV : v + bj * D + (tid - E4) * BV);
    const int pos = *pos_ptr;
    const int nk = min(pos, W) + 1, cur = pos % NRING;
    if (tid < E1) {
        for (int c = 0; c < BV; ++c) qk[tid * BV + c] = __bfloat162float(x.x[c]);
    } else if (tid < E2) {
        const int f = (tid - E1) * BV;
        *reinterpret_cast<LoadB*>(qb + f / D * DP + f % D) = x;
    } else if (tid < E3) {
        const int f = (tid - E2) * BV;
        for (int c = 0; c < BV; ++c) {
            const float y = __bfloat162float(x.x[c]);
            kr[f + c] = y;
            qk[G * D + f + c] = y;
        }
    } else if (tid < E5 && tid >= E4) {
        const int f = (tid - E4) * BV;
        for (int c = 0; c < BV; ++c) vcur[f + c] = __bfloat162float(x.x[c]);
    }
    for (int e = tid; e < (QR - G) * DP / 8; e += NT) reinterpret_cast<uint4*>(qb + G * DP)[e] = uint4{0u, 0u, 0u, 0u};
    __syncthreads();  // (also: the barriers' init is seen)
    if (tid < D) alpha[tid] = expf(logsigmoid(kr[tid]) / NORM);
    softmax_rows(qk, G + 1, D);
    mbar_wait(&bars[0]);  // the window landed
    // this step's key and value into their rows (the staged ones and the ring's slot pos % NRING)
    if (tid >= E3 && tid < E4) {
        const int f = (tid - E3) * BV;
        *reinterpret_cast<LoadB*>(wk + cur * D + f) = x;
        *reinterpret_cast<LoadB*>(ring_kh + (long long)cur * D + f) = x;
    } else if (tid >= E4 && tid < E5) {
        const int f = (tid - E4) * BV;
        *reinterpret_cast<LoadB*>(wv + cur * D + f) = x;
        *reinterpret_cast<LoadB*>(ring_vh + (long long)cur * D + f) = x;
    }
    __syncthreads();
    // scores q.k on tensor cores: tile t = 32 keys x 8 query rows
    for (int t = warp; t < KC / KT; t += NW) {
        if (KT * t >= nk) continue;
        wmma::fragment<wmma::accumulator, 32, 8, 16, float> sc;
        wmma::fill_fragment(sc, 0.0f);
#pragma unroll
        for (int k0 = 0; k0 < D; k0 += 16) {
            wmma::fragment<wmma::matrix_a, 32, 8, 16, bf16, wmma::row_major> ka;
            wmma::fragment<wmma::matrix_b, 32, 8, 16, bf16, wmma::col_major> qm;
            wmma::load_matrix_sync(ka, wk + KT * t * D + k0, D);
            wmma::load_matrix_sync(qm, qb + k0, DP);
            wmma::mma_sync(sc, ka, qm, sc);
        }
        wmma::store_matrix_sync(wsc + KT * t * GS, sc, GS, wmma::mem_row_major);
    }
    __syncthreads();
    for (int g = warp; g < G; g += NW) {  // softmax, one warp a head
        float mx = neg_inf();
#pragma unroll
        for (int u = 0; u < (NRING + 31) / 32; ++u) {
            const int r = lane + 32 * u;
            if (r < nk) mx = fmaxf(mx, wsc[r * GS + g] * SCALE);
        }
        const float m = warp_max(mx);
        float sum = 0.0f;
#pragma unroll
        for (int u = 0; u < (NRING + 31) / 32; ++u) {
            const int r = lane + 32 * u;
            if (r >= nk) break;
            const float e = __expf(wsc[r * GS + g] * SCALE - m);
            wsc[r * GS + g] = e;
            sum += e;
        }
        sum = warp_sum(sum);
        if (lane == 0) wi[g] = MIX_WIN / sum;
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < OW; ++u) {  // p V, f32: this thread's outputs (head e / D, column e % D)
        const int e = tid + NT * u, g = e / D, c = e % D;
        float a = 0.0f;
        for (int r = 0; r < nk; ++r) a += wsc[r * GS + g] * __bfloat162float(wv[r * D + c]);
        wo[e] = a * wi[g];
    }
    // the state (landed long ago, as a rule): S <- diag(alpha) S + kf^T v in place; q S
    mbar_wait(&bars[1]);
    const int cq = lane;  // columns 4 lane ..
    float vf[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) vf[c] = vcur[4 * cq + c];
    float acc[G][4] = {};
#pragma unroll 4
    for (int p = 0; p < SRT; ++p) {
        const int i = warp + NW * p;
        const float a = alpha[i], kk = qk[G * D + i];
        VecF s4 = *reinterpret_cast<const VecF*>(ss + i * D + 4 * cq);
#pragma unroll
        for (int c = 0; c < 4; ++c) s4.x[c] = a * s4.x[c] + kk * vf[c];
        *reinterpret_cast<VecF*>(ss + i * D + 4 * cq) = s4;
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const float qg = qk[g * D + i];
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[g][c] += qg * s4.x[c];
        }
    }
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // the state's new values, seen by the bulk store
#pragma unroll
    for (int g = 0; g < G; ++g) {
        VecF y;
#pragma unroll
        for (int c = 0; c < 4; ++c) y.x[c] = acc[g][c];
        *reinterpret_cast<VecF*>(part + (warp * G + g) * D + 4 * cq) = y;
    }
    __syncthreads();
    if (tid == 0) {
        asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(sg), "r"(smem_u32(ss)), "r"(D * D * 4) : "memory");
        asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
    }
#pragma unroll
    for (int u = 0; u < OW; ++u) {
        const int e = tid + NT * u, g = e / D, c = e % D;
        float y = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; ++w) y += part[(w * G + g) * D + c];
        out[(long long)b * H * D + (j * G + g) * D + c] = __float2bfloat16(MIX_LIN * y + wo[e]);
    }
    if (tid == 0) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");  // the state's shared memory is read
}
