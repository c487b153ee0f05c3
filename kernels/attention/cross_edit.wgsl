// Cross-attention (few keys: nk <= MAX_KEYS) with the Prompt-to-Prompt edit applied to the post-softmax maps inside
// the kernel (docs/DESIGN.md §4). Batch rows are [..., src, t_1..t_T, ...]: rows src_row+1..src_row+T are the targets of
// the source row src_row. For target t, head h, query pixel p and key (text token) n, with P_s the source row's
// softmax and P_t the target's:
//   E_t[n]  = eq_t[n] · ( Σ_w P_s[w] · W_t[w, n] + r_t[n] · P_t[n] )
//   P'_t[n] = α_t[n] · E_t[n] + (1 − α_t[n]) · P_t[n]
//   out_t   = P'_t · V_t
// Nothing is renormalised. Every other row (unconditional rows, the source itself) gets plain attention,
// softmax(scale · Q K^T) · V, as torch.nn.functional.scaled_dot_product_attention.
//
// W_t is sparse, one CSR row per target token n: entries w_ptr[t·(nk+1) + n] .. w_ptr[t·(nk+1) + n + 1] of
// w_idx (the source token w) and w_weight. α, eq and r are [T, nk].
//
// Store mode (STORE): the maps of the source and of each target (after the edit) are added to
// store[row − src_row, p, n] (f32, [1 + T, nq, nk]) times store_scale, summed over the heads. The op then runs all
// heads of a query block in one workgroup (heads_per_wg = heads), and each store element belongs to one invocation,
// which adds its heads one after the other: no two invocations of a dispatch touch the same element.
//
// A workgroup of 64 invocations handles BP query pixels, heads_per_wg heads and one unit: a plain row, or the
// source together with its targets, so that the source's map is computed once and shared by every target. Within
// it, invocation li works on pixel li / TPP and on keys n ≡ li (mod TPP), so scores, softmax statistics, the edit
// and the store stay in the invocation; the maps go through workgroup memory only for the product with V.
// Grid: grid_1d(q_blocks · head_chunks · units).
//
// Defines: F16 (storage type), D (head dim, a multiple of 4), MAX_KEYS, BP (pixels per workgroup, divides 64),
// STORE (flag).
#include "common/dtype.wgsl"
#include "attention/params.wgsl"
#include "attention/load.wgsl"

@group(0) @binding(4) var<uniform> p: CrossParams;
@group(0) @binding(5) var<storage, read> alpha: array<f32>;
@group(0) @binding(6) var<storage, read> eq: array<f32>;
@group(0) @binding(7) var<storage, read> rw: array<f32>;
@group(0) @binding(8) var<storage, read> w_ptr: array<u32>;
@group(0) @binding(9) var<storage, read> w_idx: array<u32>;
@group(0) @binding(10) var<storage, read> w_weight: array<f32>;
#ifdef STORE
@group(0) @binding(11) var<storage, read_write> store: array<f32>;
#endif

const WG: u32 = 64u;
const TPP: u32 = WG / BP;
const KPT: u32 = (MAX_KEYS + TPP - 1u) / TPP;
const PMAP: u32 = BP * MAX_KEYS;

var<workgroup> qs: array<vec4<f32>, BP * D4>; // [BP pixels][D4], scaled
var<workgroup> maps: array<f32, 2u * PMAP>; // source map, then the current target's: [BP pixels][MAX_KEYS]
var<workgroup> red_max: array<f32, WG>;
var<workgroup> red_sum: array<f32, WG>;

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
    let qb = g % p.q_blocks;
    let rest = g / p.q_blocks;
    let hc = rest % p.head_chunks;
    let unit = rest / p.head_chunks;
    // Units are the rows with the targets folded into their source.
    var row0 = unit;
    if (unit > p.src_row) {
        row0 = unit + p.n_targets;
    }
    var rows = 1u;
    if (row0 == p.src_row) {
        rows = 1u + p.n_targets;
    }
    let pix = li / TPP;
    let lane = li % TPP;
    let pq = qb * BP + pix;
    let valid = pq < p.nq;

    for (var hh = 0u; hh < p.heads_per_wg; hh++) {
        let col = (hc * p.heads_per_wg + hh) * D;
        for (var gi = 0u; gi < rows; gi++) {
            let row = row0 + gi;
            // Stage the block's scaled queries.
            for (var e = li; e < BP * D4; e += WG) {
                let qq = qb * BP + e / D4;
                var x = vec4<f32>(0.0);
                if (qq < p.nq) {
                    x = load_q4((row * p.nq + qq) * p.channels + col + 4u * (e % D4)) * p.scale;
                }
                qs[e] = x;
            }
            workgroupBarrier();
            // Scores of this invocation's keys, and the softmax over the pixel's TPP invocations.
            var s: array<f32, KPT>;
            var mx = -3.0e38;
            for (var c = 0u; c < KPT; c++) {
                let n = lane + c * TPP;
                if (n < p.nk) {
                    let kb = (row * p.nk + n) * p.channels + col;
                    var d = vec4<f32>(0.0);
                    for (var i = 0u; i < D4; i++) {
                        d = fma(qs[pix * D4 + i], load_k4(kb + 4u * i), d);
                    }
                    s[c] = sum4(d);
                    mx = max(mx, s[c]);
                }
            }
            red_max[li] = mx;
            workgroupBarrier();
            var m = -3.0e38;
            for (var j = 0u; j < TPP; j++) {
                m = max(m, red_max[pix * TPP + j]);
            }
            var sum = 0.0;
            for (var c = 0u; c < KPT; c++) {
                if (lane + c * TPP < p.nk) {
                    s[c] = exp(s[c] - m);
                    sum += s[c];
                }
            }
            red_sum[li] = sum;
            workgroupBarrier();
            var l = 0.0;
            for (var j = 0u; j < TPP; j++) {
                l += red_sum[pix * TPP + j];
            }
            let inv = 1.0 / l;
            // Source (gi = 0) or plain row: map slot 0; targets: slot 1, after the edit.
            var base = 0u;
            if (gi > 0u) {
                base = PMAP;
            }
            for (var c = 0u; c < KPT; c++) {
                let n = lane + c * TPP;
                if (n < p.nk) {
                    var pn = s[c] * inv;
                    if (gi > 0u) {
                        let t = gi - 1u;
                        let ti = t * p.nk + n;
                        let pi = t * (p.nk + 1u) + n;
                        var mapped = 0.0;
                        for (var e = w_ptr[pi]; e < w_ptr[pi + 1u]; e++) {
                            mapped = fma(maps[pix * MAX_KEYS + w_idx[e]], w_weight[e], mapped);
                        }
                        let edited = eq[ti] * fma(rw[ti], pn, mapped);
                        pn = mix(pn, edited, alpha[ti]);
                    }
                    maps[base + pix * MAX_KEYS + n] = pn;
#ifdef STORE
                    if (valid && row0 == p.src_row) {
                        let si = (gi * p.nq + pq) * p.nk + n;
                        store[si] = fma(p.store_scale, pn, store[si]);
                    }
#endif
                }
            }
            workgroupBarrier();
            // out = map · V for the block's pixels.
            for (var e = li; e < BP * D4; e += WG) {
                let pp = e / D4;
                let qq = qb * BP + pp;
                if (qq < p.nq) {
                    let c4 = col + 4u * (e % D4);
                    var o = vec4<f32>(0.0);
                    for (var n = 0u; n < p.nk; n++) {
                        o = fma(vec4<f32>(maps[base + pp * MAX_KEYS + n]), load_v4((row * p.nk + n) * p.channels + c4), o);
                    }
                    store_out4((row * p.nq + qq) * p.channels + c4, o);
                }
            }
        }
    }
}
