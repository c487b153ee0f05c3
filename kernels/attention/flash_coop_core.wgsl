// Flash attention on cooperative matrices (f16 storage, 16×16×16 f16 products with f32 accumulation), the
// self-attention path where the adapter has them. Same contract as attention/flash.wgsl: out[b, i, h] =
// softmax(scale · Q[src, i, h] · K[src, :, h]ᵀ) · V[b, :, h], where src is row b itself, or the injection source
// row inject_src for rows inject_first..inject_first+inject_count (Prompt-to-Prompt self-attention injection:
// source Q and K, own V; the map is never materialised); optional causal mask.
//
// A workgroup of 4 subgroups of 32 lanes takes 64 queries of one head of one batch row; subgroup sg owns queries
// 16·sg..16·sg+15. The head dim D is zero-padded to DP (a multiple of 16) and split into DP / 16 chunks.
//   - The query tile is staged once (f16, zero-padded) and each subgroup keeps its Q fragments (one per chunk) in
//     registers for the whole key loop.
//   - Keys advance in blocks of BKV: K and V blocks are staged as [key][d] (f16, rows padded by 8 halves so that
//     every fragment pointer and stride is 16-byte aligned and the 16 rows of a fragment hit distinct banks).
//   - S = Q·Kᵀ for the subgroup's 16 × BKV scores: BKV / 16 fragments, each a sum over the chunks of Q_c · K_cᵀ
//     (K read column-major as the B operand), stored to an f32 scratch tile.
//   - Online softmax in workgroup memory: lane pair (2r, 2r + 1) owns query row r (alternate columns); the pair
//     combines its row maximum and sum through workgroup memory; P = exp(scale·S − m) goes to an f16 tile (the
//     row sum adds the f16-rounded values the product uses), and the f32 output accumulator, held in registers
//     (each lane: 8 columns of each chunk of its row), is rescaled by exp(m_old − m_new).
//   - O += P·V: per output chunk a fragment product over the block's keys, through the scratch tile into the
//     registers, BKV / 16 chunks per round.
// Keys past Nk (and past the query under the causal mask) score −∞; rows past Nq are computed and not stored.
//
// Fragments are used through attention/frag_coop.wgsl (cooperative matrices) or attention/frag_emu.wgsl (plain
// arithmetic, to run this kernel on adapters without them in tests); the including file picks one.
// Defines: F16 (required), D (head dim, multiple of 4), DP (D rounded up to 16), BKV (32 or 64), and the flags
// DC1..DC9: chunk c exists (c < DP / 16). Grid: grid_1d(ceil(Nq / 64) · heads · batch).

const BQ: u32 = 64u;
const DP4: u32 = DP / 4u;
// Padded rows: Q / K / V staging (f16), the score scratch (f32) and P (f16).
const LD: u32 = DP + 8u;
const LDS: u32 = BKV + 4u;
const LDP: u32 = BKV + 8u;

// K block [BKV][LD], then V block [BKV][LD]; before the key loop, the query tile [64][LD].
var<workgroup> KV: array<f16, 2u * BKV * LD>;
var<workgroup> Ss: array<f32, 64u * LDS>; // per subgroup [16][LDS]
var<workgroup> Ps: array<f16, 64u * LDP>; // per subgroup [16][LDP]
var<workgroup> red: array<f32, 256>; // row-maximum partials [128], then row-sum partials [128]

// Channels d..d+3 of token t of head h in batch row r of Q, K or V, zero past the tokens or the head dim.
fn q_run(r: u32, t: u32, h: u32, d: u32) -> vec4<f16> {
    if (t >= p.nq || d >= D) {
        return vec4<f16>();
    }
    let i = (r * p.nq + t) * p.channels + h * D + d;
    return vec4<f16>(q[i], q[i + 1u], q[i + 2u], q[i + 3u]);
}

fn k_run(r: u32, t: u32, h: u32, d: u32) -> vec4<f16> {
    if (t >= p.nk || d >= D) {
        return vec4<f16>();
    }
    let i = (r * p.nk + t) * p.channels + h * D + d;
    return vec4<f16>(k[i], k[i + 1u], k[i + 2u], k[i + 3u]);
}

fn v_run(r: u32, t: u32, h: u32, d: u32) -> vec4<f16> {
    if (t >= p.nk || d >= D) {
        return vec4<f16>();
    }
    let i = (r * p.nk + t) * p.channels + h * D + d;
    return vec4<f16>(v[i], v[i + 1u], v[i + 2u], v[i + 3u]);
}

fn put4(i: u32, x: vec4<f16>) {
    KV[i] = x.x;
    KV[i + 1u] = x.y;
    KV[i + 2u] = x.z;
    KV[i + 3u] = x.w;
}

// Scaled score of key `key` for query `qi` from the scratch, or −∞ where masked.
fn score(i: u32, key: u32, qi: u32) -> f32 {
    if (key >= p.nk || (p.causal != 0u && key > qi)) {
        return -3.0e38;
    }
    return Ss[i] * p.scale;
}

@compute @workgroup_size(128, 1, 1)
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
    let sg = li / 32u;
    let lane = li % 32u;
    let q0 = qb * BQ;
    frag_begin(li);

    // Query tile, then this subgroup's Q fragments.
    for (var e = li; e < BQ * DP4; e += 128u) {
        let r = e / DP4;
        let d = 4u * (e % DP4);
        put4(r * LD + d, q_run(src, q0 + r, h, d));
    }
    workgroupBarrier();
    let qs = sg * 16u * LD;
    let qf0 = frag_load_q(qs + 0u, LD);
#ifdef DC1
    let qf1 = frag_load_q(qs + 16u, LD);
#endif
#ifdef DC2
    let qf2 = frag_load_q(qs + 32u, LD);
#endif
#ifdef DC3
    let qf3 = frag_load_q(qs + 48u, LD);
#endif
#ifdef DC4
    let qf4 = frag_load_q(qs + 64u, LD);
#endif
#ifdef DC5
    let qf5 = frag_load_q(qs + 80u, LD);
#endif
#ifdef DC6
    let qf6 = frag_load_q(qs + 96u, LD);
#endif
#ifdef DC7
    let qf7 = frag_load_q(qs + 112u, LD);
#endif
#ifdef DC8
    let qf8 = frag_load_q(qs + 128u, LD);
#endif
#ifdef DC9
    let qf9 = frag_load_q(qs + 144u, LD);
#endif
    workgroupBarrier();

    // Lane pair (2·row, 2·row + 1) owns query row `row` of the subgroup; each lane takes alternate columns.
    let row = lane / 2u;
    let half = lane % 2u;
    let qi = q0 + sg * 16u + row;
    let sbase = sg * 16u * LDS;
    let srow = sbase + row * LDS;
    let prow = sg * 16u * LDP + row * LDP;
    var m = -3.0e38;
    var l = 0.0;
    // o[8·c + i]: output column 16·c + 8·half + i of this row.
    var o: array<f32, DP / 2u>;
    for (var k0 = 0u; k0 < p.nk; k0 += BKV) {
        for (var e = li; e < BKV * DP4; e += 128u) {
            let t = e / DP4;
            let d = 4u * (e % DP4);
            put4(t * LD + d, k_run(src, k0 + t, h, d));
            put4((BKV + t) * LD + d, v_run(b, k0 + t, h, d));
        }
        workgroupBarrier();
        // S = Q·Kᵀ, BKV / 16 fragments of 16 × 16.
        for (var j = 0u; j < BKV; j += 16u) {
            var s = frag_zero();
            s = frag_mma(qf0, frag_load_kt(j * LD + 0u, LD), s);
#ifdef DC1
            s = frag_mma(qf1, frag_load_kt(j * LD + 16u, LD), s);
#endif
#ifdef DC2
            s = frag_mma(qf2, frag_load_kt(j * LD + 32u, LD), s);
#endif
#ifdef DC3
            s = frag_mma(qf3, frag_load_kt(j * LD + 48u, LD), s);
#endif
#ifdef DC4
            s = frag_mma(qf4, frag_load_kt(j * LD + 64u, LD), s);
#endif
#ifdef DC5
            s = frag_mma(qf5, frag_load_kt(j * LD + 80u, LD), s);
#endif
#ifdef DC6
            s = frag_mma(qf6, frag_load_kt(j * LD + 96u, LD), s);
#endif
#ifdef DC7
            s = frag_mma(qf7, frag_load_kt(j * LD + 112u, LD), s);
#endif
#ifdef DC8
            s = frag_mma(qf8, frag_load_kt(j * LD + 128u, LD), s);
#endif
#ifdef DC9
            s = frag_mma(qf9, frag_load_kt(j * LD + 144u, LD), s);
#endif
            frag_store_s(s, sbase + j, LDS);
        }
        workgroupBarrier();
        // Online softmax of the block.
        var mx = -3.0e38;
        for (var t = 0u; t < BKV / 2u; t++) {
            let c = half + 2u * t;
            mx = max(mx, score(srow + c, k0 + c, qi));
        }
        red[li] = mx;
        workgroupBarrier();
        let m_new = max(m, max(mx, red[li ^ 1u]));
        let corr = exp(m - m_new);
        var sum = 0.0;
        for (var t = 0u; t < BKV / 2u; t++) {
            let c = half + 2u * t;
            let ph = f16(exp(score(srow + c, k0 + c, qi) - m_new));
            Ps[prow + c] = ph;
            sum += f32(ph);
        }
        red[128u + li] = sum;
        for (var i = 0u; i < DP / 2u; i++) {
            o[i] *= corr;
        }
        m = m_new;
        workgroupBarrier();
        l = l * corr + sum + red[128u + (li ^ 1u)];
        // O += P·V, BKV / 16 output chunks per round through the scratch tile.
        // (Loop bounds rather than `if`s select the chunks: naga's uniformity analysis rejects cooperative
        // products under a condition read from a local variable.)
        for (var c0 = 0u; c0 < DP; c0 += BKV) {
            let nc = min(BKV, DP - c0);
            for (var cc = 0u; cc < nc; cc += 16u) {
                var acc = frag_zero();
                for (var j = 0u; j < BKV; j += 16u) {
                    let pj = frag_load_p(sg * 16u * LDP + j, LDP);
                    acc = frag_mma(pj, frag_load_v((BKV + j) * LD + c0 + cc, LD), acc);
                }
                frag_store_s(acc, sbase + cc, LDS);
            }
            workgroupBarrier();
            for (var cc = 0u; cc < nc; cc += 16u) {
                let ob = ((c0 + cc) / 16u) * 8u;
                for (var i = 0u; i < 8u; i++) {
                    o[ob + i] += Ss[srow + cc + 8u * half + i];
                }
            }
            workgroupBarrier();
        }
    }
    if (qi < p.nq) {
        let inv = 1.0 / l;
        let base = (b * p.nq + qi) * p.channels + h * D;
        for (var c = 0u; c < DP / 16u; c++) {
            for (var i = 0u; i < 8u; i++) {
                let d = 16u * c + 8u * half + i;
                if (d < D) {
                    out[base + d] = f16(o[8u * c + i] * inv);
                }
            }
        }
    }
}
