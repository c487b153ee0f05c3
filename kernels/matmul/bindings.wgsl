// Bindings of the GEMM family: C = act(A · op(B) + bias) + residual, per batch entry.
//   a: [batch, M, K] (or the NHWC conv input read by load_a), b: [K, N] or, with TRANS_B, [N, K],
//   c and residual: [batch, M, N], bias: [N].
#include "matmul/params.wgsl"

@group(0) @binding(0) var<storage, read> a: array<DT>;
@group(0) @binding(1) var<storage, read> b: array<DT>;
@group(0) @binding(2) var<storage, read_write> c: array<DT>;
@group(0) @binding(3) var<uniform> p: GemmParams;
#ifdef HAS_BIAS
@group(0) @binding(4) var<storage, read> bias: array<DT>;
#endif
#ifdef HAS_RESIDUAL
@group(0) @binding(5) var<storage, read> residual: array<DT>;
#endif

// B element (k, n) of batch entry bt, zero outside the matrix.
fn load_b(bt: u32, k: u32, n: u32) -> f32 {
    if (k >= p.k || n >= p.n) {
        return 0.0;
    }
#ifdef TRANS_B
    return f32(b[bt * p.b_batch_stride + n * p.k + k]);
#else
    return f32(b[bt * p.b_batch_stride + k * p.n + n]);
#endif
}

// Bias, activation (ACT, see common/activation.wgsl), then residual; stores C(bt, row, col) if inside.
fn store_c(bt: u32, row: u32, col: u32, acc: f32) {
    if (row >= p.m || col >= p.n) {
        return;
    }
    var v = acc;
#ifdef HAS_BIAS
    v += f32(bias[col]);
#endif
    v = activate(v, ACT);
    let i = bt * p.c_batch_stride + row * p.n + col;
#ifdef HAS_RESIDUAL
    v += f32(residual[i]);
#endif
    c[i] = DT(v);
}
