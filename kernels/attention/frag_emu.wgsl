// The fragment functions of attention/frag_coop.wgsl without cooperative matrices, for testing the cooperative
// flash kernel where they do not exist (lavapipe). As matmul/frag_emu.wgsl: a "subgroup" is 32 consecutive
// invocations, lane l holds elements l, l + 32, ... (row-major) of a C fragment, and A / B fragments are the
// position and stride of their block, read at the multiply. Q fragments outlive their staging (the key loop
// overwrites KV), so loading one copies its block to Qe (the query tile without row padding). Slow; tests only.

struct FragA {
    src: u32, // 0: Qe, 1: Ps
    i: u32,
    s: u32,
}

struct FragB {
    col: u32, // 1: column-major (Kᵀ), 0: row-major (V)
    i: u32,
    s: u32,
}

alias FragC = array<f32, 8>;

var<workgroup> Qe: array<f16, 64u * DP>;
var<private> emu_lane: u32;
// 16 and 8 read from the uniforms, so that the JIT does not unroll the emulated products.
var<private> emu_16: u32;
var<private> emu_8: u32;

fn frag_begin(li: u32) {
    emu_lane = li % 32u;
    emu_16 = select(16u, 8u, p.nq == 0xffffffffu);
    emu_8 = emu_16 / 2u;
}

fn frag_zero() -> FragC {
    return FragC();
}

fn frag_load_q(i: u32, s: u32) -> FragA {
    let qi = (i / s) * DP + i % s;
    for (var e = 0u; e < emu_8; e++) {
        let idx = emu_lane + e * 32u;
        Qe[qi + (idx / 16u) * DP + idx % 16u] = KV[i + (idx / 16u) * s + idx % 16u];
    }
    return FragA(0u, qi, DP);
}

fn frag_load_p(i: u32, s: u32) -> FragA {
    return FragA(1u, i, s);
}

fn frag_load_kt(i: u32, s: u32) -> FragB {
    return FragB(1u, i, s);
}

fn frag_load_v(i: u32, s: u32) -> FragB {
    return FragB(0u, i, s);
}

fn frag_mma(a: FragA, b: FragB, c: FragC) -> FragC {
    var r = c;
    for (var e = 0u; e < emu_8; e++) {
        let idx = emu_lane + e * 32u;
        let row = idx / 16u;
        let col = idx % 16u;
        var acc = r[e];
        for (var k = 0u; k < emu_16; k++) {
            var av: f16;
            if (a.src == 0u) {
                av = Qe[a.i + row * a.s + k];
            } else {
                av = Ps[a.i + row * a.s + k];
            }
            var bv: f16;
            if (b.col == 1u) {
                bv = KV[b.i + col * b.s + k];
            } else {
                bv = KV[b.i + k * b.s + col];
            }
            acc = fma(f32(av), f32(bv), acc);
        }
        r[e] = acc;
    }
    return r;
}

fn frag_store_s(c: FragC, i: u32, s: u32) {
    for (var e = 0u; e < emu_8; e++) {
        let idx = emu_lane + e * 32u;
        Ss[i + (idx / 16u) * s + idx % 16u] = c[e];
    }
}
