// y = act(x), elementwise: F.silu, F.gelu (exact erf), F.gelu(approximate="tanh"), quick-GELU, or a copy (ACT 0).
// Defines: F16, ACT (ids of common/activation.wgsl). Grid: grid_1d(ceil(n / WG)).
#include "common/dtype.wgsl"
#include "common/activation.wgsl"
#include "elementwise/grid.wgsl"

// Mirrors `UnaryParams` in src/ops/elementwise.rs.
struct UnaryParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> x: array<DT>;
@group(0) @binding(1) var<storage, read_write> y: array<DT>;
@group(0) @binding(2) var<uniform> p: UnaryParams;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(li, wid, nwg);
    if (i >= p.n) {
        return;
    }
    y[i] = DT(activate(f32(x[i]), ACT));
}
