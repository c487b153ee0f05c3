// The fragment functions of matmul/frag_coop.wgsl without cooperative matrices, for testing the coop GEMM core
// where they do not exist (lavapipe): a "subgroup" is 32 consecutive invocations, lane l holds elements
// l, l + 32, ... (row-major) of each C fragment, and A / B fragments are the position and stride of their 16×16
// block in As / Bs, read at the multiply (the core never changes a stage between a fragment's load and its use).
// Same numbers as f16 × f16 products summed in f32; slow, for tests only.

struct FragA {
    i: u32,
    s: u32,
}

struct FragB {
    i: u32,
    s: u32,
}

alias FragC = array<f32, 8>;

var<private> emu_lane: u32;
// 16 and 8, read from the uniforms so that the JIT does not unroll the emulated products (lavapipe takes tens of
// seconds to compile a fully unrolled 4×4-fragment core).
var<private> emu_16: u32;
var<private> emu_8: u32;

fn frag_begin(li: u32) {
    emu_lane = li % 32u;
    emu_16 = select(16u, 8u, p.m == 0xffffffffu);
    emu_8 = emu_16 / 2u;
}

fn frag_elems() -> u32 {
    return emu_8;
}

fn frag_zero() -> FragC {
    return FragC();
}

fn frag_load_a(i: u32, s: u32) -> FragA {
    return FragA(i, s);
}

fn frag_load_b(i: u32, s: u32) -> FragB {
    return FragB(i, s);
}

fn frag_mma(a: FragA, b: FragB, c: FragC) -> FragC {
    var r = c;
    for (var e = 0u; e < emu_8; e++) {
        let idx = emu_lane + e * 32u;
        let row = idx / 16u;
        let col = idx % 16u;
        var acc = r[e];
        for (var k = 0u; k < emu_16; k++) {
#ifdef TRANS_B
            let bv = Bs[b.i + col * b.s + k];
#else
            let bv = Bs[b.i + k * b.s + col];
#endif
            acc = fma(f32(As[a.i + row * a.s + k]), f32(bv), acc);
        }
        r[e] = acc;
    }
    return r;
}

fn frag_store(c: FragC, i: u32, s: u32) {
    for (var e = 0u; e < emu_8; e++) {
        let idx = emu_lane + e * 32u;
        Cs[i + (idx / 16u) * s + idx % 16u] = c[e];
    }
}
