//! GEMM / linear kernels against an f64 CPU reference: odd shapes, size-1 dimensions, batched and shared B,
//! transposed B, fused bias + activation + residual, f32 and f16 storage, NaN-poisoned outputs.
mod common;

use common::*;
use p2p_wgpu::ops::matmul::{MatmulOpts, matmul};
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
    let gpu = gpu();
    for dt in dtypes() {
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
        matmul(gpu, &mut rec, &ta, &tb, &out, &opts).unwrap();
        gpu.run(&rec).unwrap();
        let want = reference(&c, &a, &b, &bias, &res);
        let name = format!(
            "{dt:?} b{} m{} k{} n{} shared{} tb{} bias{} res{} {:?}",
            c.batch, c.m, c.k, c.n, c.shared_b, c.trans_b, c.bias, c.residual, c.act
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
