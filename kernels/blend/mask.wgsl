// Local blending, pass 2: one workgroup per prompt b. The pooled map upsampled (nearest, source index
// floor(dst · res / size)) to h × w, divided by its own maximum over the upsampled image and thresholded strictly
// (an all-zero or negative map gives no pixel: the reference's 0/0 is NaN, never above); target rows OR the
// source row's (b = 0) mask. Masks are 0 or 1, f32 `[B, h·w]`. Grid: [B, 1, 1].
#include "blend/params.wgsl"

const WGB: u32 = 256u;

@group(0) @binding(0) var<storage, read> pooled: array<f32>;
@group(0) @binding(1) var<storage, read_write> masks: array<f32>;
@group(0) @binding(2) var<uniform> p: BlendParams;

var<workgroup> red: array<f32, WGB>;

// The upsampled map of row b at latent pixel i.
fn up(b: u32, i: u32) -> f32 {
    let y = i / p.w;
    let x = i % p.w;
    return pooled[b * p.res * p.res + (y * p.res / p.h) * p.res + x * p.res / p.w];
}

// Maximum of row b's upsampled map, returned to every thread of the workgroup.
fn row_max(b: u32, li: u32) -> f32 {
    let hw = p.h * p.w;
    var m = up(b, 0u);
    for (var i = li; i < hw; i += WGB) {
        m = max(m, up(b, i));
    }
    red[li] = m;
    workgroupBarrier();
    for (var s = WGB / 2u; s > 0u; s = s / 2u) {
        if (li < s) {
            red[li] = max(red[li], red[li + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn hot(v: f32, m: f32) -> bool {
    return m > 0.0 && v / m > p.thr;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let b = wid.x;
    let mb = row_max(b, li);
    var m0 = mb;
    if (b > 0u) {
        m0 = row_max(0u, li);
    }
    let hw = p.h * p.w;
    for (var i = li; i < hw; i += WGB) {
        var v = 0.0;
        if (hot(up(b, i), mb) || (b > 0u && hot(up(0u, i), m0))) {
            v = 1.0;
        }
        masks[b * hw + i] = v;
    }
}
