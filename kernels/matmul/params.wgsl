// Uniforms of the GEMM family (linear layers and implicit-GEMM convolution). Mirrors `GemmParams` in
// src/ops/matmul.rs field for field.
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    // Element strides between batch entries; 0 broadcasts (shared weights).
    a_batch_stride: u32,
    b_batch_stride: u32,
    c_batch_stride: u32,
    _pad0: u32,
    // Implicit-GEMM convolution geometry (unused by plain GEMM).
    in_h: u32,
    in_w: u32,
    in_c: u32,
    out_h: u32,
    out_w: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}
