// A operand of a plain GEMM: row-major [batch, M, K], zero outside the matrix.
fn load_a(bt: u32, m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) {
        return 0.0;
    }
    return f32(a[bt * p.a_batch_stride + m * p.k + k]);
}
