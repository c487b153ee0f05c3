// Batched GEMM / linear layer on the fast cooperative-matrix core with emulated fragments (matmul/frag_emu.wgsl):
// the staging, indexing and epilogue of linear_coop.wgsl without cooperative matrices, so tests can run that core
// on adapters that lack them. Never chosen by the tile table. Defines as linear_coop.wgsl.
#include "common/dtype.wgsl"
#include "common/activation.wgsl"
#include "matmul/bindings.wgsl"
#include "matmul/load_a_dense.wgsl"
#include "matmul/frag_emu.wgsl"
#include "matmul/gemm_coop.wgsl"
