//! The CPU emulation's bf16 tensor-core primitives (`mma_bf16` = `mma.sync.m16n8k16` with
//! f32 accumulation, `ldsm_x4` / `ldsm_x4_t` / `ldsm_x2` = `ldmatrix`) against the fragment
//! layouts the PTX ISA documents, which the `mma` prefill kernels are written to: each lane
//! builds its fragments from the documented (row, column) formulas, the product must equal
//! a float64 matrix product at the documented accumulator positions, and `ldmatrix` from
//! shared-memory tiles must hand every lane exactly the registers of those formulas.
//! (That the hardware agrees is what `scripts/gpu_kernels.py check` shows on a GPU.)

mod common;
use common::*;

use ligerc::codegen::cuda::emulate::SHIM;

const PROGRAM: &str = r#"
typedef __nv_bfloat16 bf16;
// A 16x16, B 16x16 (two 8-column mma tiles), small integers / 4: exact in bf16, exact sums in f32.
static float A[16][16], B[16][16];
alignas(16) static bf16 As[16][24];   // A row-major, rows padded to 48 bytes
alignas(16) static bf16 Bkn[16][24];  // B row-major: [k][n]
alignas(16) static bf16 Bnk[16][24];  // B transposed: [n][k]
static int fails = 0, checked = 0;

static unsigned bits(float x) { return (unsigned)__bfloat16_as_ushort(__float2bfloat16(x)); }
static unsigned pk(float lo, float hi) { return bits(lo) | (bits(hi) << 16); }
static void expect(bool ok, const char* what, int lane, int i) {
    ++checked;
    if (!ok && fails++ < 10) std::printf("mismatch: %s lane %d register %d\n", what, lane, i);
}

void kernel() {
    const int lane = threadIdx.x, g = lane / 4, t = 2 * (lane % 4);
    // PTX ISA, mma.m16n8k16 with .bf16: A rows g, g + 8 and columns t, t + 1, t + 8, t + 9
    // (registers (g, t..), (g + 8, t..), (g, t + 8..), (g + 8, t + 8..)); B rows t, t + 1,
    // t + 8, t + 9 of column g; C rows g, g + 8 of columns t, t + 1.
    const unsigned a[4] = {pk(A[g][t], A[g][t + 1]), pk(A[g + 8][t], A[g + 8][t + 1]),
                           pk(A[g][t + 8], A[g][t + 9]), pk(A[g + 8][t + 8], A[g + 8][t + 9])};
    for (int nt = 0; nt < 2; ++nt) {
        const int n = 8 * nt + g;
        const unsigned b0 = pk(B[t][n], B[t + 1][n]), b1 = pk(B[t + 8][n], B[t + 9][n]);
        float c[4] = {1.0f, -2.0f, 0.5f, 3.0f};  // accumulates onto C
        const float c0[4] = {1.0f, -2.0f, 0.5f, 3.0f};
        mma_bf16(c, a, b0, b1);
        for (int e = 0; e < 4; ++e) {
            const int row = g + 8 * (e / 2), col = 8 * nt + t + e % 2;
            double ref = c0[e];
            for (int k = 0; k < 16; ++k) ref += (double)A[row][k] * (double)B[k][col];
            expect(c[e] == (float)ref, "mma_bf16 accumulator", lane, e);
        }
        // ldmatrix.x2 of B^T ([n][k] rows): lanes 0..15 give rows n0 + (lane & 7), column 8 (lane >> 3)
        unsigned r2[2];
        ldsm_x2(r2, &Bnk[8 * nt + (lane & 7)][8 * ((lane >> 3) & 1)]);
        expect(r2[0] == b0 && r2[1] == b1, "ldsm_x2 B fragment", lane, nt);
    }
    // ldmatrix.x4 of A: matrix m = lane / 8 at rows 8 (m & 1), columns 8 (m >> 1)
    unsigned r[4];
    ldsm_x4(r, &As[(lane & 7) + 8 * ((lane >> 3) & 1)][8 * (lane >> 4)]);
    for (int i = 0; i < 4; ++i) expect(r[i] == a[i], "ldsm_x4 A fragment", lane, i);
    // ldmatrix.x4.trans of B ([k][n] rows): the B fragments of both 8-column tiles
    ldsm_x4_t(r, &Bkn[(lane & 7) + 8 * ((lane >> 3) & 1)][8 * (lane >> 4)]);
    for (int nt = 0; nt < 2; ++nt) {
        const int n = 8 * nt + g;
        expect(r[2 * nt] == pk(B[t][n], B[t + 1][n]), "ldsm_x4_t B fragment (rows t, t + 1)", lane, 2 * nt);
        expect(r[2 * nt + 1] == pk(B[t + 8][n], B[t + 9][n]), "ldsm_x4_t B fragment (rows t + 8, t + 9)", lane, 2 * nt + 1);
    }
}

int main() {
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) {
            A[i][j] = (float)((i * 7 + j * 3) % 11 - 5) / 4.0f;
            B[i][j] = (float)((i * 5 + j * 13) % 9 - 4) / 4.0f;
            As[i][j] = __float2bfloat16(A[i][j]);
            Bkn[i][j] = __float2bfloat16(B[i][j]);
            Bnk[j][i] = __float2bfloat16(B[i][j]);
        }
    emu_launch(kernel, dim3{1, 1, 1}, dim3{32, 1, 1}, 0);
    std::printf("checked %d fails %d\n", checked, fails);
    return 0;
}
"#;

#[test]
fn emulated_mma_and_ldmatrix_follow_the_ptx_fragment_layouts() {
    let Some(cxx) = gxx() else { return };
    let dir = tempdir("cuda-mma-emulation");
    let prog = gxx_build(&cxx, &dir, &format!("{SHIM}\n{PROGRAM}"), "mma emulation");
    let text = run_emulation(&prog, &[] as &[&str], "mma emulation");
    let last = text.lines().last().unwrap_or_default();
    // 32 lanes × (2 tiles × (4 accumulators + 1 x2 load) + 4 x4 registers + 4 x4.trans registers)
    assert_eq!(last, "checked 576 fails 0", "emulation output:\n{text}");
}
