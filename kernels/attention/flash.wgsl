// Flash-style scaled dot-product attention, as torch.nn.functional.scaled_dot_product_attention without dropout
// (optionally with the causal mask, `causal`): out[b, i, h] = softmax(scale · Q[b, i, h] · K[b, :, h]^T) · V[b, :, h], with the self-attention injection
// of Prompt-to-Prompt (docs/DESIGN.md §4): rows inject_first..inject_first+inject_count take Q and K from row inject_src
// and V from their own row, out_b = softmax(scale · Q_s K_s^T) · V_b.
//
// One workgroup of 64 invocations handles BQ queries of one head of one batch row. Each query belongs to DSPLIT
// invocations (1, or 2 with SPLIT_D), each owning DS = D4 / DSPLIT groups of 4 channels: its slice of the scaled
// query and of the output accumulator live in registers. Keys and values go through workgroup memory in blocks of
// BK rows; each block updates the running max, the running sum and the accumulator (online softmax), so the
// attention map is never materialised and any number of keys works. With SPLIT_D the two halves of a dot product
// meet through workgroup memory; both invocations add them in the same order and so agree on every score.
// SPLIT_D keeps per-invocation arrays at 32 vec4 or fewer for D = 160 (lavapipe, Mesa 22.3, was seen to skip the
// final stores of a kernel whose private arrays held 40 vec4 after some 740 keys), and halves register use on GPUs.
// Grid: grid_1d(q_blocks · heads · batch), group g = wid.x + wid.y · nwg.x.
//
// Defines: F16 (storage type), D (head dim, a multiple of 4; with SPLIT_D a multiple of 8), BK (keys per block:
// 2 · BK · D f32 tiles, plus 64 · BK partial scores with SPLIT_D, within 16 KiB of workgroup memory), SPLIT_D.
#include "common/dtype.wgsl"
#include "attention/params.wgsl"
#include "attention/load.wgsl"

@group(0) @binding(4) var<uniform> p: FlashParams;

#ifdef SPLIT_D
const DSPLIT: u32 = 2u;
#else
const DSPLIT: u32 = 1u;
#endif
const DS: u32 = D4 / DSPLIT;
const BQ: u32 = 64u / DSPLIT;
const TILE: u32 = BK * D4;

var<workgroup> ks: array<vec4<f32>, TILE>; // [BK keys][D4]
var<workgroup> vs: array<vec4<f32>, TILE>; // [BK keys][D4]
#ifdef SPLIT_D
var<workgroup> part: array<f32, 64u * BK>; // [invocation][key]: partial scores
#endif

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.groups) {
        return;
    }
    let fg = flash_group(p, g);
    let qb = fg.qb;
    let h = fg.h;
    let b = fg.b;
    let src = fg.src;
    let qi = qb * BQ + li / DSPLIT;
    let valid = qi < p.nq;
    // This invocation's vec4 slice of the head: t0..t0+DS.
    let t0 = (li % DSPLIT) * DS;
    let col = h * D + 4u * t0;

    var qv: array<vec4<f32>, DS>;
    var acc: array<vec4<f32>, DS>;
    if (valid) {
        let base = (src * p.nq + qi) * p.channels + col;
        for (var i = 0u; i < DS; i++) {
            qv[i] = load_q4(base + 4u * i) * p.scale;
        }
    }
    var m = -3.0e38;
    var l = 0.0;
    var s: array<f32, BK>;
    for (var k0 = 0u; k0 < p.nk; k0 += BK) {
        let kn = min(BK, p.nk - k0);
        for (var e = li; e < kn * D4; e += 64u) {
            let j = e / D4;
            let c = h * D + 4u * (e % D4);
            ks[e] = load_k4((src * p.nk + k0 + j) * p.channels + c);
            vs[e] = load_v4((b * p.nk + k0 + j) * p.channels + c);
        }
        workgroupBarrier();
        for (var j = 0u; j < kn; j++) {
            var d = vec4<f32>(0.0);
            for (var i = 0u; i < DS; i++) {
                d = fma(qv[i], ks[j * D4 + t0 + i], d);
            }
            s[j] = sum4(d);
        }
#ifdef SPLIT_D
        for (var j = 0u; j < kn; j++) {
            part[li * BK + j] = s[j];
        }
        workgroupBarrier();
        for (var j = 0u; j < kn; j++) {
            s[j] += part[(li ^ 1u) * BK + j];
        }
#endif
        if (p.causal != 0u) {
            // Key 0 is always visible, so the first block leaves m finite and masked keys contribute exp(-huge) = 0.
            for (var j = 0u; j < kn; j++) {
                if (k0 + j > qi) {
                    s[j] = -3.0e38;
                }
            }
        }
        var mb = m;
        for (var j = 0u; j < kn; j++) {
            mb = max(mb, s[j]);
        }
        let corr = exp(m - mb);
        l *= corr;
        for (var i = 0u; i < DS; i++) {
            acc[i] *= corr;
        }
        for (var j = 0u; j < kn; j++) {
            let pj = exp(s[j] - mb);
            l += pj;
            for (var i = 0u; i < DS; i++) {
                acc[i] = fma(vec4<f32>(pj), vs[j * D4 + t0 + i], acc[i]);
            }
        }
        m = mb;
        workgroupBarrier();
    }
    if (valid) {
        let inv = 1.0 / l;
        let base = (b * p.nq + qi) * p.channels + col;
        for (var i = 0u; i < DS; i++) {
            store_out4(base + 4u * i, acc[i] * inv);
        }
    }
}
