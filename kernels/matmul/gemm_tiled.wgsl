// Portable register-tiled GEMM body: a 64×64 tile of C per workgroup of 16×16 threads, 4×4 outputs per thread,
// operands staged through workgroup memory in 16-deep slices. Needs load_a (from the including file), load_b and
// store_c (matmul/bindings.wgsl). Grid: (ceil(N/64), ceil(M/64), batch).

var<workgroup> As: array<array<f32, 64>, 16>; // [k][m]
var<workgroup> Bs: array<array<f32, 64>, 16>; // [k][n]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
    let bt = w.z;
    let row0 = w.y * 64u;
    let col0 = w.x * 64u;
    let tid = l.y * 16u + l.x;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += 16u) {
        for (var i = 0u; i < 4u; i++) {
            let e = tid + i * 256u;
            let am = e / 16u;
            let ak = e % 16u;
            As[ak][am] = load_a(bt, row0 + am, k0 + ak);
            let bk = e / 64u;
            let bn = e % 64u;
            Bs[bk][bn] = load_b(bt, k0 + bk, col0 + bn);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = As[kk][l.y * 4u + i];
                bv[i] = Bs[kk][l.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store_c(bt, row0 + l.y * 4u + i, col0 + l.x * 4u + j, acc[i][j]);
        }
    }
}
