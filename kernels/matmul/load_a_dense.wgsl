// A operand of a plain GEMM: row-major [batch, M, K], zero outside the matrix.
fn load_a(bt: u32, m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) {
        return 0.0;
    }
    return f32(a_at(bt * p.a_batch_stride + m * p.k + k));
}

// A(m, k..k+3) in the storage type, zero outside the matrix (the staged cores load runs of four along K).
fn load_a4(bt: u32, m: u32, k: u32) -> vec4<DT> {
    if (m >= p.m) {
        return vec4<DT>();
    }
    let i = bt * p.a_batch_stride + m * p.k + k;
    if (k + 3u < p.k) {
        return a_at4(i);
    }
    var r = vec4<DT>();
    for (var j = 0u; j < 4u; j++) {
        if (k + j < p.k) {
            r[j] = a_at(i + j);
        }
    }
    return r;
}
