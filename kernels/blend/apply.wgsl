// Local blending, pass 3, in place on the f32 sample x `[B, h·w, C]`: for the target rows b ≥ 1,
// x_b ← x_0 + mask_b · (x_b − x_0) (the source row is only read). Grid: grid_1d(ceil(n / WG)), n = (B − 1)·h·w·C.
#include "blend/params.wgsl"
#include "elementwise/grid.wgsl"

@group(0) @binding(0) var<storage, read> masks: array<f32>;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<uniform> p: BlendParams;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(li, wid, nwg);
    if (i >= p.n) {
        return;
    }
    let plane = p.h * p.w * p.c;
    let j = plane + i;
    let s = x[i % plane];
    x[j] = s + masks[j / p.c] * (x[j] - s);
}
