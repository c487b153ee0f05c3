// Batched GEMM / linear layer, portable register-tiled path. Defines: F16, TRANS_B, HAS_BIAS, HAS_RESIDUAL, ACT,
// and the tile BM, BN, BK, TM, TN.
#include "common/dtype.wgsl"
#include "common/activation.wgsl"
#include "matmul/bindings.wgsl"
#include "matmul/load_a_dense.wgsl"
#include "matmul/gemm_tiled.wgsl"
