// 2-D convolution, NHWC, as an implicit GEMM on cooperative matrices (f16 only). Same contract as conv2d.wgsl.
enable wgpu_cooperative_matrix;
#include "common/dtype.wgsl"
#include "common/activation.wgsl"
#include "matmul/bindings.wgsl"
#include "conv2d/load_a_im2col.wgsl"
#include "matmul/gemm_coop.wgsl"
