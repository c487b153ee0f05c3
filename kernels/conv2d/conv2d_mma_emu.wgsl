// 2-D convolution (NHWC, implicit GEMM) on the fast cooperative-matrix core with emulated fragments
// (matmul/frag_emu.wgsl): the staging, indexing and epilogue of conv2d_coop.wgsl without cooperative matrices, so
// tests can run that core on adapters that lack them. Never chosen by the tile table. Defines as conv2d_coop.wgsl.
#include "common/dtype.wgsl"
#include "common/activation.wgsl"
#include "matmul/bindings.wgsl"
#include "conv2d/load_a_im2col.wgsl"
#include "matmul/frag_emu.wgsl"
#include "matmul/gemm_coop.wgsl"
