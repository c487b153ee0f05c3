//! The GPU runtime: preprocessor semantics on the real kernel files, errors as `Result` (missing kernel, a
//! variant that fails to compile, a binding over the adapter limit), row splitting of a GEMM whose operand exceeds
//! the binding limit, the copy kernel, and buffer-pool reuse.
mod common;

use common::*;
use p2p_wgpu::Error;
use p2p_wgpu::gpu::preprocess::{Defines, expand};
use p2p_wgpu::gpu::{Gpu, GpuOptions, Kernel};
use p2p_wgpu::ops::matmul::{MatmulOpts, matmul};
use p2p_wgpu::ops::{Recording, copy};
use p2p_wgpu::tensor::{DType, Tensor};

#[test]
fn preprocessor_on_real_files() {
    let mut d = Defines::new();
    d.insert("ACT".into(), "2u".into());
    let (f32_src, files) = expand("matmul/linear.wgsl", &d).unwrap();
    assert!(files.contains(&"common/dtype.wgsl".to_string()) && files.contains(&"matmul/gemm_tiled.wgsl".to_string()));
    let enables_f16 = |src: &str| src.lines().any(|l| l.trim() == "enable f16;");
    assert!(!enables_f16(&f32_src) && f32_src.contains("alias DT = f32;"));
    assert!(f32_src.contains("activate(v, 2u)") && !f32_src.contains("#include"));
    assert!(!f32_src.contains("bias[col]"), "HAS_BIAS section must be dropped");
    d.insert("F16".into(), String::new());
    d.insert("HAS_BIAS".into(), String::new());
    let (f16_src, _) = expand("matmul/linear.wgsl", &d).unwrap();
    assert!(enables_f16(&f16_src));
    assert!(f16_src.contains("alias DT = f16;") && f16_src.contains("bias[col]"));
    // Each file is included once even when several files include it.
    assert_eq!(f16_src.matches("struct GemmParams").count(), 1);
}

#[test]
fn kernel_errors_are_results() {
    let gpu = gpu();
    let e = gpu.pipeline(&Kernel::new("no/such.wgsl")).unwrap_err();
    assert!(matches!(e, Error::Kernel { .. }), "{e}");
    // Without ACT the GEMM does not compile: the driver-side error must come back as Err, not a panic.
    let e = gpu.pipeline(&Kernel::new("matmul/linear.wgsl")).unwrap_err();
    assert!(matches!(e, Error::Kernel { .. }), "{e}");
    assert!(e.to_string().contains("matmul/linear.wgsl"), "{e}");
}

/// The binding cap of [`small_binding_gpu`]: 4 MiB, far below any adapter's limit, so that exceeding it is cheap.
const SMALL_BINDING: u64 = 4 << 20;

/// A second device on the test adapter whose storage-binding limit is lowered to [`SMALL_BINDING`].
fn small_binding_gpu() -> &'static Gpu {
    static G: std::sync::OnceLock<Gpu> = std::sync::OnceLock::new();
    G.get_or_init(|| {
        let opts = GpuOptions { max_binding: Some(SMALL_BINDING), ..GpuOptions::from_env() };
        let g = Gpu::new(&opts).expect("a second device on the test adapter");
        assert_eq!(g.limits.max_storage_buffer_binding_size, SMALL_BINDING, "the lowered binding limit");
        g
    })
}

#[test]
fn binding_over_the_limit_is_a_clear_error() {
    let gpu = small_binding_gpu();
    let n = (SMALL_BINDING / 4 + 64) as usize;
    let big = Tensor::empty(gpu, &[n], DType::F32).unwrap();
    let dst = Tensor::empty(gpu, &[n], DType::F32).unwrap();
    let mut rec = Recording::new();
    let e = copy::copy(gpu, &mut rec, &big, &dst).map(|_| ()).unwrap_err();
    assert!(matches!(e, Error::Limit { .. }) && e.to_string().contains("binds at most"), "{e}");
    assert!(e.to_string().contains(&format!("[{n}] f32 tensor")), "{e}");
}

/// A shared-weight GEMM whose A and C exceed the binding limit is split into row chunks and still exact.
#[test]
fn gemm_splits_rows_over_the_binding_limit() {
    let gpu = small_binding_gpu();
    let max = gpu.limits.max_storage_buffer_binding_size as usize;
    let (k, n) = (32usize, 3usize);
    let m = max / (k * 4) + 1000;
    let mut rng = Rng::new(7);
    let av = rng.vec(m * k, 1.0);
    let bv = rng.vec(n * k, 1.0);
    let a = Tensor::from_f32(gpu, &[m, k], DType::F32, &av).unwrap();
    let b = Tensor::from_f32(gpu, &[n, k], DType::F32, &bv).unwrap();
    let c = Tensor::empty(gpu, &[m, n], DType::F32).unwrap();
    c.fill(gpu, f32::NAN).unwrap();
    let mut rec = Recording::new();
    matmul(gpu, &mut rec, &a, &b, &c, &MatmulOpts { trans_b: true, ..Default::default() }).unwrap();
    assert!(rec.len() >= 2, "expected a split, got {} dispatch(es)", rec.len());
    gpu.run(&rec).unwrap();
    let mut want = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k).map(|x| av[i * k + x] as f64 * bv[j * k + x] as f64).sum();
        }
    }
    check("split gemm", &c.to_f32(gpu).unwrap(), &want, 1e-5);
}

#[test]
fn copy_kernel_and_pool_reuse() {
    let gpu = gpu();
    let mut rng = Rng::new(3);
    let v = rng.vec(1000, 1.0);
    let (src, _) = upload(&[1000], DType::F32, &v);
    let dst = poisoned(&[1000], DType::F32);
    let mut rec = Recording::new();
    copy::copy(gpu, &mut rec, &src, &dst).unwrap();
    gpu.run(&rec).unwrap();
    assert_eq!(download(&dst), v);
    let odd = poisoned(&[999], DType::F32);
    assert!(copy::copy(gpu, &mut rec, &src, &odd).is_err());

    let before = gpu.pool.idle();
    let t = Tensor::empty(gpu, &[12345], DType::F16).unwrap();
    drop(t);
    assert!(gpu.pool.idle() >= 1 && gpu.pool.idle() >= before);
    let idle = gpu.pool.idle();
    let t2 = Tensor::empty(gpu, &[12345], DType::F16).unwrap();
    assert_eq!(gpu.pool.idle(), idle - 1, "same size class must reuse the idle buffer");
    drop(t2);
}

#[test]
fn f16_round_trip_and_u32() {
    let gpu = gpu();
    let v = [0.5f32, -1.25, 3.0, 65504.0, 1e-3];
    let t = Tensor::from_f32(gpu, &[5], DType::F16, &v).unwrap();
    assert_eq!(t.to_f32(gpu).unwrap(), quantize(&v, DType::F16));
    let u = Tensor::from_u32(gpu, &[3], &[7, 0, u32::MAX]).unwrap();
    assert_eq!(u.to_u32(gpu).unwrap(), vec![7, 0, u32::MAX]);
    assert!(Tensor::from_f32(gpu, &[4], DType::F32, &v).is_err());
}

/// A recording's arena tensors refuse host writes (a queue write would land under every dispatch of the next
/// submission, including the ones that reuse the buffer), and persistent inputs (`Ctx::input`) take them.
#[test]
fn arena_tensors_refuse_host_writes() {
    let gpu = gpu();
    let cx = p2p_wgpu::nn::Ctx::new(gpu, DType::F32);
    let t = cx.alloc(&[5]).unwrap();
    let e = t.write_f32(gpu, &[1.0; 5]).unwrap_err();
    assert!(matches!(e, Error::Msg(_)) && e.to_string().contains("arena"), "{e}");
    assert!(t.fill(gpu, 0.0).is_err());
    let input = cx.input(&[5], DType::F32).unwrap();
    input.write_f32(gpu, &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    assert_eq!(download(&input), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
}
