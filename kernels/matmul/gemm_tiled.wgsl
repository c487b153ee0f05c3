// Portable register-tiled GEMM body. A workgroup of (BN / TN) × (BM / TM) invocations computes a BM × BN tile of C;
// each invocation owns TM × TN outputs in registers, as (TM / 4) × (TN / 4) blocks of 4 × 4 spread across the
// tile (block (i, j) of invocation (tx, ty) starts at row 4·(ty + i·TY), column 4·(tx + j·TX)), so the f32
// workgroup-memory reads of one K step are whole vec4s, adjacent between neighbouring invocations.
//
// K advances in slices of BK through two stages of workgroup memory (f32, [k][m] and [k][n]): the next slice is
// fetched from storage into registers (load_a4 / load_b4 runs of four, zero outside the matrix) before the current
// one is multiplied, then stored into the other stage, so there is one barrier per K step and the loads overlap
// the arithmetic. Any M, N, K; f32 or f16 storage (DT), f32 arithmetic.
//
// Needs load_a4 (from the including file), load_b4 and store_c (matmul/bindings.wgsl). Defines (u32 literals):
// BM, BN, BK, TM, TN, with TM, TN, BK multiples of 4 and BM·BK/4, BN·BK/4 multiples of the invocation count.
// Grid: (ceil(N / BN), ceil(M / BM), batch).

const TX: u32 = BN / TN;
const TY: u32 = BM / TM;
const NT: u32 = TX * TY;
const BM4: u32 = BM / 4u;
const BN4: u32 = BN / 4u;
const BK4: u32 = BK / 4u;
const TM4: u32 = TM / 4u;
const TN4: u32 = TN / 4u;
// Runs of four elements each invocation fetches per K step.
const RA: u32 = BM * BK4 / NT;
const RB: u32 = BN * BK4 / NT;
const SA: u32 = BK * BM4;
const SB: u32 = BK * BN4;

var<workgroup> As: array<vec4<f32>, 2u * SA>; // two stages of [BK][BM / 4]
var<workgroup> Bs: array<vec4<f32>, 2u * SB>; // two stages of [BK][BN / 4]

@compute @workgroup_size(TX, TY, 1)
fn main(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
    let bt = w.z;
    let row0 = w.y * BM;
    let col0 = w.x * BN;
    let tx = l.x;
    let ty = l.y;
    let tid = ty * TX + tx;
    var acc: array<vec4<f32>, TM * TN4>;
    var ra: array<vec4<DT>, RA>;
    var rb: array<vec4<DT>, RB>;
    let steps = (p.k + BK - 1u) / BK;

    // Fetch the first K slice.
    for (var t = 0u; t < RA; t++) {
        let r = tid + t * NT;
        ra[t] = load_a4(bt, row0 + r / BK4, 4u * (r % BK4));
    }
    for (var t = 0u; t < RB; t++) {
        let r = tid + t * NT;
#ifdef TRANS_B
        rb[t] = load_b4(bt, col0 + r / BK4, 4u * (r % BK4));
#else
        rb[t] = load_b4(bt, r / BN4, col0 + 4u * (r % BN4));
#endif
    }
    for (var s = 0u; s < steps; s++) {
        let sa = (s % 2u) * SA;
        let sb = (s % 2u) * SB;
        // Stage the fetched slice: A transposed to [k][m]; B as [k][n].
        for (var t = 0u; t < RA; t++) {
            let r = tid + t * NT;
            let m = r / BK4;
            let kq = 4u * (r % BK4);
            let v = vec4<f32>(ra[t]);
            for (var j = 0u; j < 4u; j++) {
                As[sa + (kq + j) * BM4 + m / 4u][m % 4u] = v[j];
            }
        }
        for (var t = 0u; t < RB; t++) {
            let r = tid + t * NT;
            let v = vec4<f32>(rb[t]);
#ifdef TRANS_B
            let n = r / BK4;
            let kq = 4u * (r % BK4);
            for (var j = 0u; j < 4u; j++) {
                Bs[sb + (kq + j) * BN4 + n / 4u][n % 4u] = v[j];
            }
#else
            Bs[sb + r] = v;
#endif
        }
        workgroupBarrier();
        // Fetch the next slice while this one is multiplied.
        if (s + 1u < steps) {
            let k0 = (s + 1u) * BK;
            for (var t = 0u; t < RA; t++) {
                let r = tid + t * NT;
                ra[t] = load_a4(bt, row0 + r / BK4, k0 + 4u * (r % BK4));
            }
            for (var t = 0u; t < RB; t++) {
                let r = tid + t * NT;
#ifdef TRANS_B
                rb[t] = load_b4(bt, col0 + r / BK4, k0 + 4u * (r % BK4));
#else
                rb[t] = load_b4(bt, k0 + r / BN4, col0 + 4u * (r % BN4));
#endif
            }
        }
        for (var kk = 0u; kk < BK; kk++) {
            var av: array<vec4<f32>, TM4>;
            var bv: array<vec4<f32>, TN4>;
            for (var i = 0u; i < TM4; i++) {
                av[i] = As[sa + kk * BM4 + ty + i * TY];
            }
            for (var j = 0u; j < TN4; j++) {
                bv[j] = Bs[sb + kk * BN4 + tx + j * TX];
            }
            for (var i = 0u; i < TM4; i++) {
                for (var ii = 0u; ii < 4u; ii++) {
                    let x = vec4<f32>(av[i][ii]);
                    for (var j = 0u; j < TN4; j++) {
                        let o = (i * 4u + ii) * TN4 + j;
                        acc[o] = fma(x, bv[j], acc[o]);
                    }
                }
            }
        }
    }
    for (var i = 0u; i < TM4; i++) {
        for (var ii = 0u; ii < 4u; ii++) {
            let row = row0 + 4u * (ty + i * TY) + ii;
            for (var j = 0u; j < TN4; j++) {
                let col = col0 + 4u * (tx + j * TX);
                let v = acc[(i * 4u + ii) * TN4 + j];
                store_c(bt, row, col, v.x);
                store_c(bt, row, col + 1u, v.y);
                store_c(bt, row, col + 2u, v.z);
                store_c(bt, row, col + 3u, v.w);
            }
        }
    }
}
