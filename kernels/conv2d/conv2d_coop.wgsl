// 2-D convolution, NHWC, as an implicit GEMM on the fast cooperative-matrix core (f16 only). Same contract as
// conv2d.wgsl; defines as matmul/linear_coop.wgsl.
enable wgpu_cooperative_matrix;
#include "common/dtype.wgsl"
#include "common/activation.wgsl"
#include "matmul/bindings.wgsl"
#include "conv2d/load_a_im2col.wgsl"
#include "matmul/frag_coop.wgsl"
#include "matmul/gemm_coop.wgsl"
