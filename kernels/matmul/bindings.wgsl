// Bindings of the GEMM family: C = act(A · op(B) + bias) + residual, per batch entry.
//   a: [batch, M, K] (or the NHWC conv input read by load_a), b: [K, N] or, with TRANS_B, [N, K],
//   c and residual: [batch, M, N], bias: [N].
#include "matmul/params.wgsl"

// VEC4: A and B are bound as vec4 arrays (the op sets it when every run of four the loaders read starts at a
// multiple of 4: K % 4 == 0, N % 4 == 0 for a plain-layout B, Cin % 4 == 0 for a convolution), so that a run is one
// load. Element access goes through a_at / b_at (one element) and a_at4 / b_at4 (a run starting at i).
#ifdef VEC4
@group(0) @binding(0) var<storage, read> a: array<vec4<DT>>;
@group(0) @binding(1) var<storage, read> b: array<vec4<DT>>;
#else
@group(0) @binding(0) var<storage, read> a: array<DT>;
@group(0) @binding(1) var<storage, read> b: array<DT>;
#endif
@group(0) @binding(2) var<storage, read_write> c: array<DT>;
@group(0) @binding(3) var<uniform> p: GemmParams;
#ifdef HAS_BIAS
@group(0) @binding(4) var<storage, read> bias: array<DT>;
#endif
#ifdef HAS_RESIDUAL
@group(0) @binding(5) var<storage, read> residual: array<DT>;
#endif

#ifdef VEC4
fn a_at(i: u32) -> DT {
    return a[i / 4u][i % 4u];
}

// Elements i..i+3 of A; i is a multiple of 4.
fn a_at4(i: u32) -> vec4<DT> {
    return a[i / 4u];
}

fn b_at(i: u32) -> DT {
    return b[i / 4u][i % 4u];
}

fn b_at4(i: u32) -> vec4<DT> {
    return b[i / 4u];
}
#else
fn a_at(i: u32) -> DT {
    return a[i];
}

fn a_at4(i: u32) -> vec4<DT> {
    return vec4<DT>(a[i], a[i + 1u], a[i + 2u], a[i + 3u]);
}

fn b_at(i: u32) -> DT {
    return b[i];
}

fn b_at4(i: u32) -> vec4<DT> {
    return vec4<DT>(b[i], b[i + 1u], b[i + 2u], b[i + 3u]);
}
#endif

// B element (k, n) of batch entry bt, zero outside the matrix.
fn load_b(bt: u32, k: u32, n: u32) -> f32 {
    if (k >= p.k || n >= p.n) {
        return 0.0;
    }
#ifdef TRANS_B
    return f32(b_at(bt * p.b_batch_stride + n * p.k + k));
#else
    return f32(b_at(bt * p.b_batch_stride + k * p.n + n));
#endif
}

// Four adjacent elements of one stored row of B, in the storage type, zero outside: with TRANS_B (B stored [N, K])
// B(k..k+3, n = r) at (r, c = k); otherwise (B stored [K, N]) B(k = r, n..n+3) at (r, c = n). The staged cores load
// B in such runs, along the stored rows, so that adjacent invocations read adjacent memory.
fn load_b4(bt: u32, r: u32, c: u32) -> vec4<DT> {
#ifdef TRANS_B
    let rows = p.n;
    let cols = p.k;
#else
    let rows = p.k;
    let cols = p.n;
#endif
    if (r >= rows) {
        return vec4<DT>();
    }
    let i = bt * p.b_batch_stride + r * cols + c;
    if (c + 3u < cols) {
        return b_at4(i);
    }
    var v = vec4<DT>();
    for (var j = 0u; j < 4u; j++) {
        if (c + j < cols) {
            v[j] = b_at(i + j);
        }
    }
    return v;
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
