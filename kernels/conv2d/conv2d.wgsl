// 2-D convolution, NHWC, k×k, stride, padding, as an implicit GEMM on the portable tiled core:
// out[B·Ho·Wo, Cout] = im2col(x) · Wᵀ with W re-laid to [Cout, kh, kw, Cin] (TRANS_B). Defines: F16, HAS_BIAS,
// HAS_RESIDUAL, ACT, TRANS_B (always set by the op), and the tile BM, BN, BK, TM, TN.
#include "common/dtype.wgsl"
#include "common/activation.wgsl"
#include "matmul/bindings.wgsl"
#include "conv2d/load_a_im2col.wgsl"
#include "matmul/gemm_tiled.wgsl"
