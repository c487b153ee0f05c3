//! `cargo bench --bench sd [-- --model DIR] [--f32] [--quick] [--e2e-steps N] [--e2e-only] [--json PATH]`: text
//! encoder, UNet call at batch 1/2/4, the host side of one UNet step, VAE decode, and a 2-prompt plain generation
//! against a word swap (N steps, default 50; 0 skips it) with the memory the edit allocated, on a diffusers folder
//! (default `target/sd15-random`, made by `weights-tools/.venv/bin/python weights-tools/make_sd15_random.py`);
//! `--quick` runs the tiny test fixture (a smoke test on software Vulkan; `--model` still picks the folder).
//! `--e2e-only` skips the per-call rows. Precision: f16 where the adapter has SHADER_F16 (also on CPU adapters,
//! unlike the main command's default), `--f32` to force f32.
//!
//! Without a GPU: `--make-skeleton SRC DST` copies a diffusers folder with every safetensors file cut to its
//! header; `--fill-random SKELETON DST [--seed N]` makes a complete random-weight folder from one
//! (`bench::weights`; benches/gpu.sh uses both to bring SD 1.5-shaped weights to a machine without Python tools).
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let value2 = |f: &str| args.iter().position(|a| a == f).and_then(|i| Some((args.get(i + 1)?, args.get(i + 2)?)));
    let quick = flag("--quick") || std::env::var_os("P2P_BENCH_QUICK").is_some();
    let run = || -> p2p_wgpu::Result<()> {
        if let Some((src, dst)) = value2("--make-skeleton") {
            let n = p2p_wgpu::bench::weights::skeleton(src.as_ref(), dst.as_ref())?;
            println!("skeleton of {src}: {dst}, {:.1} MiB", n as f64 / (1 << 20) as f64);
            return Ok(());
        }
        if let Some((src, dst)) = value2("--fill-random") {
            let seed = value("--seed").map(|v| v.parse().map_err(|_| p2p_wgpu::Error::msg("--seed N")));
            let t = std::time::Instant::now();
            let n = p2p_wgpu::bench::weights::fill(src.as_ref(), dst.as_ref(), seed.transpose()?.unwrap_or(1500))?;
            println!(
                "filled {dst} from {src}: {:.1} MiB in {:.1} s",
                n as f64 / (1 << 20) as f64,
                t.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        let gpu = p2p_wgpu::Gpu::new(&p2p_wgpu::gpu::GpuOptions::from_env())?;
        let dir = match (quick, value("--model")) {
            (_, Some(m)) => m.into(),
            (true, None) => std::path::PathBuf::from("tests/fixtures/sd1-tiny"),
            (false, None) => std::path::PathBuf::from("target/sd15-random"),
        };
        if !dir.is_dir() {
            return Err(p2p_wgpu::Error::msg(format!(
                "{} does not exist: make it with `weights-tools/.venv/bin/python weights-tools/make_sd15_random.py`",
                dir.display()
            )));
        }
        let dtype = if flag("--f32") || !gpu.has_f16() { p2p_wgpu::DType::F32 } else { p2p_wgpu::DType::F16 };
        let iters = if quick { 2 } else { 10 };
        let steps = value("--e2e-steps").map(|v| v.parse().map_err(|_| p2p_wgpu::Error::msg("--e2e-steps N")));
        let steps = steps.transpose()?.unwrap_or(if quick { 4 } else { 50 });
        let e2e = (steps > 0).then_some(steps);
        let calls = !flag("--e2e-only");
        let report = p2p_wgpu::bench::sd::run_parts(&gpu, &dir, dtype, iters, &[1, 2, 4], e2e, calls)?;
        print!("{}", report.table());
        let path = value("--json").unwrap_or_else(|| "target/bench-sd.json".into());
        let text = serde_json::to_string_pretty(&report).map_err(p2p_wgpu::Error::msg)?;
        std::fs::write(&path, text).map_err(|e| p2p_wgpu::Error::msg(format!("cannot write {path}: {e}")))?;
        println!("json: {path}");
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("bench sd: error: {e}");
        std::process::exit(1);
    }
}
