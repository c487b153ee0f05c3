//! GEMM / linear kernels against an f64 CPU reference: odd shapes, size-1 dimensions, batched and shared B,
//! transposed B, fused bias + activation + residual, f32 and f16 storage, NaN-poisoned outputs; the adapter's own
//! tile choice and every other portable tile.
mod common;

use common::*;
use p2p_wgpu::ops::matmul::tiles::{GemmTile, TilePlan, all_tiles};
use p2p_wgpu::ops::matmul::{MatmulOpts, matmul, matmul_with, tile_plan};
use p2p_wgpu::ops::{Activation, Recording};
use p2p_wgpu::tensor::DType;

struct Case {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    shared_b: bool,
    trans_b: bool,
    bias: bool,
    residual: bool,
    act: Activation,
}

#[allow(clippy::too_many_arguments)]
fn reference(c: &Case, a: &[f32], b: &[f32], bias: &[f32], res: &[f32]) -> Vec<f64> {
    let mut out = vec![0.0f64; c.batch * c.m * c.n];
    for bt in 0..c.batch {
        let bo = if c.shared_b { 0 } else { bt * c.k * c.n };
        for i in 0..c.m {
            for j in 0..c.n {
                let mut s = 0.0f64;
                for kk in 0..c.k {
                    let bv = if c.trans_b { b[bo + j * c.k + kk] } else { b[bo + kk * c.n + j] };
                    s += a[(bt * c.m + i) * c.k + kk] as f64 * bv as f64;
                }
                if c.bias {
                    s += bias[j] as f64;
                }
                s = c.act.apply_f64(s);
                let o = (bt * c.m + i) * c.n + j;
                if c.residual {
                    s += res[o] as f64;
                }
                out[o] = s;
            }
        }
    }
    out
}

fn run(c: Case, seed: u64) {
    run_with(c, seed, None, &dtypes());
}

/// `run` in `dts` with a forced tile plan (`None`: the adapter's own choice).
fn run_with(c: Case, seed: u64, plan: Option<TilePlan>, dts: &[DType]) {
    let gpu = gpu();
    for &dt in dts {
        let mut rng = Rng::new(seed);
        let b_shape = if c.trans_b { vec![c.n, c.k] } else { vec![c.k, c.n] };
        let b_shape = if c.shared_b { b_shape } else { [vec![c.batch], b_shape].concat() };
        let (ta, a) = upload(&[c.batch, c.m, c.k], dt, &rng.vec(c.batch * c.m * c.k, 1.0));
        let (tb, b) = upload(&b_shape, dt, &rng.vec(b_shape.iter().product(), 1.0 / (c.k as f32).sqrt()));
        let (tbias, bias) = upload(&[c.n], dt, &rng.vec(c.n, 0.5));
        let (tres, res) = upload(&[c.batch, c.m, c.n], dt, &rng.vec(c.batch * c.m * c.n, 1.0));
        let out = poisoned(&[c.batch, c.m, c.n], dt);
        let opts = MatmulOpts {
            trans_b: c.trans_b,
            bias: c.bias.then_some(&tbias),
            act: c.act,
            residual: c.residual.then_some(&tres),
        };
        let mut rec = Recording::new();
        match plan {
            Some(plan) => matmul_with(gpu, &mut rec, &ta, &tb, &out, &opts, plan).unwrap(),
            None => matmul(gpu, &mut rec, &ta, &tb, &out, &opts).unwrap(),
        }
        gpu.run(&rec).unwrap();
        let want = reference(&c, &a, &b, &bias, &res);
        let name = format!(
            "{dt:?} b{} m{} k{} n{} shared{} tb{} bias{} res{} {:?} tile {}",
            c.batch,
            c.m,
            c.k,
            c.n,
            c.shared_b,
            c.trans_b,
            c.bias,
            c.residual,
            c.act,
            plan.map_or("auto".to_string(), |p| p.large.name())
        );
        check(&name, &download(&out), &want, tol(dt));
    }
}

fn case(batch: usize, m: usize, k: usize, n: usize) -> Case {
    Case { batch, m, k, n, shared_b: true, trans_b: false, bias: false, residual: false, act: Activation::None }
}

#[test]
fn odd_shapes_plain() {
    run(case(1, 37, 29, 53), 1);
    run(case(1, 1, 1, 1), 2);
    run(case(1, 1, 70, 3), 3);
    run(case(3, 65, 17, 1), 4);
    run(case(1, 130, 1, 66), 5);
}

#[test]
fn transposed_batched_and_epilogues() {
    for (i, act) in Activation::ALL.into_iter().enumerate() {
        run(Case { trans_b: true, bias: true, residual: i % 2 == 0, act, ..case(2, 33, 45, 70) }, 10 + i as u64);
    }
    run(Case { shared_b: false, ..case(3, 20, 31, 19) }, 20);
    run(Case { shared_b: false, trans_b: true, bias: true, ..case(2, 64, 64, 64) }, 21);
}

/// Real SD 1.5 linear shapes (to_q 320→320, ff 320→2560 GEGLU projection, cross-attn to_k 768→320), with the
/// 4096 tokens of a 64×64 latent cut to a row count lavapipe finishes quickly.
#[test]
fn sd15_linear_shapes() {
    run(Case { trans_b: true, ..case(1, 96, 320, 320) }, 30);
    run(Case { trans_b: true, bias: true, ..case(1, 64, 320, 2560) }, 31);
    run(Case { trans_b: true, ..case(2, 77, 768, 320) }, 32);
    run(Case { trans_b: true, bias: true, residual: true, ..case(1, 64, 1280, 320) }, 33);
}

/// Every portable tile besides the adapter's own choice (covered by the tests above): a ragged output larger than
/// the biggest tile with a K tail, transposed shared B and the full epilogue (f32); and a batched, plain-layout B
/// (f16 where the adapter has it). One dtype per case keeps lavapipe's JIT compiles (0.3-1 s each) down.
#[test]
fn every_portable_tile() {
    let gpu = gpu();
    let chosen = tile_plan(gpu, DType::F32).unwrap();
    let tiles: Vec<GemmTile> = all_tiles()
        .into_iter()
        .filter(|t| !t.f16_only() && *t != chosen.large && *t != chosen.small && t.check(gpu, DType::F32).is_ok())
        .collect();
    assert!(tiles.len() >= 4, "{tiles:?}");
    for (i, tile) in tiles.into_iter().enumerate() {
        let plan = Some(TilePlan { large: tile, small: tile, vec4: true, narrow: false });
        let seed = 40 + 3 * i as u64;
        // K % 4 == 0: vector loads (with a K tail inside the last slice).
        let fused = Case { trans_b: true, bias: true, residual: true, act: Activation::Gelu, ..case(2, 131, 44, 70) };
        run_with(fused, seed, plan, &[DType::F32]);
        // Odd K and N: scalar loads.
        run_with(Case { shared_b: false, ..case(2, 33, 37, 131) }, seed + 1, plan, &[*dtypes().last().unwrap()]);
        if i == 0 {
            run_with(Case { shared_b: false, ..case(2, 33, 36, 132) }, seed + 2, plan, &[DType::F32]);
        }
    }
}

/// The fast cooperative-matrix core with emulated fragments (`GemmCore::CoopEmu`, kernels/matmul/frag_emu.wgsl),
/// f16: its double-buffered staging, padded layouts, both B layouts, zero-padded edges and the fragment epilogue,
/// on adapters without cooperative matrices. Both K slices with 2×2 fragments per subgroup here; the 4×4 tiles in
/// `coop_core_emulated_4x4` (ignored: lavapipe needs 20-30 s to compile each of them).
#[test]
fn coop_core_emulated() {
    emulated_coop(&[GemmTile::coop_emu(2, 32), GemmTile::coop_emu(2, 16)], 60);
}

/// `cargo test --release --test matmul -- --ignored coop_core_emulated_4x4`
#[test]
#[ignore]
fn coop_core_emulated_4x4() {
    emulated_coop(&[GemmTile::coop_emu(4, 16), GemmTile::coop_emu(4, 32)], 70);
}

/// Every real cooperative-matrix tile (fast core, both fragment counts and K slices, and the basic core) where the
/// adapter has them; on other adapters (lavapipe) this checks nothing, the emulated tests above stand in.
#[test]
fn every_coop_tile() {
    let gpu = gpu();
    if !can_run_coop("every_coop_tile") {
        return;
    }
    let tiles: Vec<GemmTile> =
        all_tiles().into_iter().filter(|t| t.is_coop() && t.check(gpu, DType::F16).is_ok()).collect();
    assert!(
        !tiles.is_empty(),
        "cooperative matrices are usable on {} but no coop tile passes its check",
        gpu.info.name
    );
    emulated_coop(&tiles, 80);
}

fn emulated_coop(tiles: &[GemmTile], seed: u64) {
    let gpu = gpu();
    if !can_run_f16("the coop GEMM cores") {
        return;
    }
    let mut ran = 0;
    for (i, &tile) in tiles.iter().enumerate() {
        if let Err(why) = tile.check(gpu, DType::F16) {
            can_run("the coop GEMM cores", "workgroup", false, &format!("cannot run tile {tile}: {why}"));
            continue;
        }
        ran += 1;
        let plan = Some(TilePlan { large: tile, small: tile, vec4: true, narrow: false });
        let seed = seed + 3 * i as u64;
        // Vector loads (K % 4 == 0), then scalar ones (odd K and N).
        let fused = Case { trans_b: true, bias: true, residual: true, act: Activation::Silu, ..case(2, 131, 44, 70) };
        run_with(fused, seed, plan, &[DType::F16]);
        if i == 0 {
            run_with(Case { shared_b: false, ..case(2, 33, 37, 131) }, seed + 1, plan, &[DType::F16]);
            run_with(case(1, 5, 1, 3), seed + 2, plan, &[DType::F16]);
        }
    }
    assert!(ran > 0, "no emulated tile fits this adapter: {tiles:?}");
}

#[test]
fn shape_errors_are_results() {
    let gpu = gpu();
    let (a, _) = upload(&[4, 5], DType::F32, &[0.0; 20]);
    let (b, _) = upload(&[6, 7], DType::F32, &[0.0; 42]);
    let out = poisoned(&[4, 7], DType::F32);
    let mut rec = Recording::new();
    let e = matmul(gpu, &mut rec, &a, &b, &out, &MatmulOpts::default()).unwrap_err();
    assert!(e.to_string().contains("matmul"), "{e}");
    assert!(rec.is_empty());
}

/// The GEMM autotune runs every candidate tile of this adapter on its two representative GEMMs, and each gives the
/// right result (a wrong one would be dropped from the timings). Nothing is written to the tile cache.
/// `cargo test --release --test matmul -- --ignored autotune_times_every_candidate`
#[test]
#[ignore]
fn autotune_times_every_candidate() {
    let gpu = gpu();
    for dt in dtypes() {
        let r = p2p_wgpu::ops::matmul::autotune(gpu, dt).unwrap();
        let cands = p2p_wgpu::ops::matmul::tiles::candidates(gpu, dt);
        for (t, gl, gs) in &r.timings {
            println!("{dt:?} {t}: {gl:.2} / {gs:.2} GFLOP/s");
        }
        assert_eq!(r.timings.len(), cands.len(), "{dt:?}: some candidate computed a wrong result");
        assert!(cands.contains(&r.plan.large) && cands.contains(&r.plan.small));
    }
}
