// 2-D convolution, NHWC, as an implicit GEMM on the first cooperative-matrix core (f16 only), the fallback of
// conv2d_coop.wgsl. Same contract as conv2d.wgsl.
enable wgpu_cooperative_matrix;
#include "common/dtype.wgsl"
#include "common/activation.wgsl"
#include "matmul/bindings.wgsl"
#include "conv2d/load_a_im2col.wgsl"
#include "matmul/gemm_coop_basic.wgsl"
