// Local blending, pass 1: per prompt b and map pixel q, the sum of the stored running-sum maps over the prompt's
// blend-word tokens, max-pooled 3×3 (stride 1, padding 1; padding never wins):
//   pooled[b, q] = max over in-bounds neighbours q' of Σ_k store[b, q', pos[b][k]].
// `pos` holds B + 1 prefix offsets, then the positions of every row. Grid: grid_1d(ceil(B · res² / WG)).
#include "blend/params.wgsl"
#include "elementwise/grid.wgsl"

@group(0) @binding(0) var<storage, read> store: array<f32>;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read_write> pooled: array<f32>;
@group(0) @binding(3) var<uniform> p: BlendParams;

fn word_sum(b: u32, q: u32) -> f32 {
    var s = 0.0;
    let base = (b * p.res * p.res + q) * p.keys;
    for (var k = pos[b]; k < pos[b + 1u]; k++) {
        s += store[base + pos[p.b + 1u + k]];
    }
    return s;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(li, wid, nwg);
    let r2 = p.res * p.res;
    if (i >= p.b * r2) {
        return;
    }
    let b = i / r2;
    let q = i % r2;
    let y = q / p.res;
    let x = q % p.res;
    var m = word_sum(b, q);
    for (var yy = max(y, 1u) - 1u; yy <= min(y + 1u, p.res - 1u); yy++) {
        for (var xx = max(x, 1u) - 1u; xx <= min(x + 1u, p.res - 1u); xx++) {
            m = max(m, word_sum(b, yy * p.res + xx));
        }
    }
    pooled[i] = m;
}
