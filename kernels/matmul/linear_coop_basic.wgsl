// Batched GEMM / linear layer on cooperative matrices, the first (correct-first, single-stage) core, kept as a
// fallback (P2P_WGPU_GEMM=coop-basic). Defines: F16 (required), TRANS_B, HAS_BIAS, HAS_RESIDUAL, ACT.
enable wgpu_cooperative_matrix;
#include "common/dtype.wgsl"
#include "common/activation.wgsl"
#include "matmul/bindings.wgsl"
#include "matmul/load_a_dense.wgsl"
#include "matmul/gemm_coop_basic.wgsl"
