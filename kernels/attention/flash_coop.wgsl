// Flash attention with self-attention injection on cooperative matrices (f16 only); see
// attention/flash_coop_core.wgsl. Defines: F16 (required), D, DP, BKV, DC1..DC9.
enable wgpu_cooperative_matrix;
#include "common/dtype.wgsl"
#include "attention/params.wgsl"
#include "attention/load.wgsl"

@group(0) @binding(4) var<uniform> p: FlashParams;

#include "attention/frag_coop.wgsl"
#include "attention/flash_coop_core.wgsl"
