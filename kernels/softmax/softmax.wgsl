// Row softmax: y[r, :] = softmax(scale · x[r, :]) over rows of n elements, in f32 (max-subtracted, f32 sum).
// One workgroup per row: each thread keeps an online (max, sum) over the elements li, li + WG, ..., the workgroup
// merges the pairs with a fixed tree, then every thread writes its elements. n may be any size (threads loop).
// Defines: F16, IN_PLACE (x and y are one buffer, bound once read_write). Grid: grid_1d(rows).
#include "common/dtype.wgsl"

// Mirrors `SoftmaxParams` in src/ops/softmax.rs.
struct SoftmaxParams {
    rows: u32,
    n: u32,
    scale: f32,
    _pad0: u32,
}

const WG: u32 = 256u;
// Finite stand-in for -inf as the running max of a thread with no elements, so that merges never compute
// (-inf) - (-inf).
const LOWEST: f32 = -3.0e38;

#ifdef IN_PLACE
@group(0) @binding(1) var<storage, read_write> y: array<DT>;
#else
@group(0) @binding(0) var<storage, read> x: array<DT>;
@group(0) @binding(1) var<storage, read_write> y: array<DT>;
#endif
@group(0) @binding(2) var<uniform> p: SoftmaxParams;

var<workgroup> part_max: array<f32, WG>;
var<workgroup> part_sum: array<f32, WG>;

fn load(i: u32) -> f32 {
#ifdef IN_PLACE
    return p.scale * f32(y[i]);
#else
    return p.scale * f32(x[i]);
#endif
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.n;
    // This thread's running max m and sum s of exp(v - m).
    var m = LOWEST;
    var s = 0.0;
    for (var e = li; e < p.n; e += WG) {
        let v = load(base + e);
        if (v > m) {
            s = s * exp(m - v) + 1.0;
            m = v;
        } else {
            s += exp(v - m);
        }
    }
    part_max[li] = m;
    part_sum[li] = s;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (li < h) {
            let m1 = part_max[li];
            let m2 = part_max[li + h];
            let mm = max(m1, m2);
            part_sum[li] = part_sum[li] * exp(m1 - mm) + part_sum[li + h] * exp(m2 - mm);
            part_max[li] = mm;
        }
        workgroupBarrier();
    }
    let row_max = part_max[0];
    let inv = 1.0 / part_sum[0];
    for (var e = li; e < p.n; e += WG) {
        y[base + e] = DT(exp(load(base + e) - row_max) * inv);
    }
}
