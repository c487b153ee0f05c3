// Batched GEMM / linear layer on cooperative matrices, fast core (f16 only). Defines: F16 (required), TRANS_B,
// HAS_BIAS, HAS_RESIDUAL, ACT, BK, FRAG4.
enable wgpu_cooperative_matrix;
#include "common/dtype.wgsl"
#include "common/activation.wgsl"
#include "matmul/bindings.wgsl"
#include "matmul/load_a_dense.wgsl"
#include "matmul/frag_coop.wgsl"
#include "matmul/gemm_coop.wgsl"
