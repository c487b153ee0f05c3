//! The kernel benchmark's quick mode runs on this adapter and reports sane rows (it is what `cargo bench --bench
//! kernels -- --quick` prints). Timing values are not asserted: speed is measured in benches, not tests.
mod common;

#[test]
fn kernel_bench_quick_mode_runs() {
    let gpu = common::gpu();
    let r = p2p_wgpu::bench::kernels::run(gpu, true).unwrap();
    assert!(r.quick && r.peak_gemm_gflops > 0.0 && r.peak_copy_gbs > 0.0);
    assert!(r.rows.len() >= 10, "{} rows", r.rows.len());
    for row in &r.rows {
        assert!(row.ms.is_finite() && row.ms > 0.0, "{row:?}");
        assert!(row.pct_peak.is_finite() && row.pct_peak > 0.0, "{row:?}");
    }
    let names: Vec<&str> = r.rows.iter().map(|r| r.name.as_str()).collect();
    for want in ["conv3x3 320", "group_norm", "self-attention", "cross-attention", "ff.net.0.proj"] {
        assert!(names.iter().any(|n| n.contains(want)), "no {want} row in {names:?}");
    }
    serde_json::to_string(&r).unwrap();
    print!("{}", r.table());
}

#[test]
fn sd_bench_quick_mode_runs() {
    let gpu = common::gpu();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd1-tiny");
    let r = p2p_wgpu::bench::sd::run(gpu, &dir, p2p_wgpu::DType::F32, 1, &[1, 2], Some(2)).unwrap();
    let names: Vec<&str> = r.rows.iter().map(|r| r.name.as_str()).collect();
    for want in ["text encoder", "unet call, batch 2", "vae decode", "plain generation", "word swap edit"] {
        assert!(names.iter().any(|n| n.contains(want)), "no {want} row in {names:?}");
    }
    assert!(r.rows.iter().all(|row| row.ms.is_finite() && row.ms > 0.0));
}
