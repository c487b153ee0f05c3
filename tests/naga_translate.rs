//! Every kernel variant the library can launch (`ops::variants()`) is preprocessed, parsed and validated by naga,
//! then written as SPIR-V, MSL, HLSL and GLSL, each validated against that backend's own capabilities. This is
//! how Metal, DX12 and GL shader failures are caught without those GPUs, and how the cooperative-matrix kernels
//! are checked on machines that cannot run them.
//!
//! Known, asserted exceptions (a variant that starts translating must be moved out of this list):
//! - f16 storage on GLSL: naga's GLSL backend has no 16-bit floats (`SHADER_FLOAT16` is missing from its
//!   capabilities), and wgpu's GL backend never exposes SHADER_F16, so these variants never run there;
//! - cooperative matrices exist only on Vulkan (SPIR-V) and Metal (MSL simdgroup matrices) in naga 30; HLSL and
//!   GLSL have no writer for them, and the op never picks those variants on such backends. (The `*_mma_emu`
//!   variants run the same cores with emulated fragments and translate like any portable kernel.)
use std::collections::BTreeSet;

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use p2p_wgpu::gpu::Kernel;
use p2p_wgpu::gpu::preprocess::{expand, kernel_paths};
use p2p_wgpu::ops;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Spv,
    Msl,
    Hlsl,
    Glsl,
}

fn expected_ok(k: &Kernel, t: Target) -> bool {
    // f16 storage anywhere in the kernel: `F16`, or a per-binding switch such as lincomb's `G_F16`.
    let f16 = k.defines.keys().any(|d| d == "F16" || d.ends_with("_F16"));
    let coop = k.path.contains("coop");
    match t {
        Target::Spv => true,
        Target::Msl => !coop || msl_coop(),
        Target::Hlsl => !coop,
        Target::Glsl => !coop && !f16,
    }
}

/// naga 30's MSL writer does translate cooperative matrices (to simdgroup matrices); keep this in one place.
fn msl_coop() -> bool {
    true
}

fn caps(t: Target) -> Capabilities {
    match t {
        Target::Spv => spv::supported_capabilities(),
        Target::Msl => msl::supported_capabilities(),
        Target::Hlsl => hlsl::supported_capabilities(),
        Target::Glsl => glsl::supported_capabilities(),
    }
}

fn translate(module: &naga::Module, k: &Kernel, t: Target) -> Result<usize, String> {
    let info =
        Validator::new(ValidationFlags::all(), caps(t)).validate(module).map_err(|e| format!("validate: {e:?}"))?;
    match t {
        Target::Spv => {
            let opts = spv::Options { lang_version: (1, 3), ..Default::default() };
            let pipe = spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: k.entry.into() };
            spv::write_vec(module, &info, &opts, Some(&pipe)).map(|w| w.len()).map_err(|e| format!("{e}"))
        }
        Target::Msl => {
            let opts = msl::Options { lang_version: (2, 4), ..Default::default() };
            let pipe = msl::PipelineOptions::default();
            msl::write_string(module, &info, &opts, &pipe).map(|(s, _)| s.len()).map_err(|e| format!("{e}"))
        }
        Target::Hlsl => {
            let opts = hlsl::Options { shader_model: hlsl::ShaderModel::V6_2, ..Default::default() };
            let pipe = hlsl::PipelineOptions::default();
            let mut s = String::new();
            let mut w = hlsl::Writer::new(&mut s, &opts, &pipe);
            w.write(module, &info, None).map_err(|e| format!("{e}"))?;
            Ok(s.len())
        }
        Target::Glsl => {
            let opts = glsl::Options { version: glsl::Version::new_gles(310), ..Default::default() };
            let pipe = glsl::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: k.entry.into(),
                multiview: None,
            };
            let mut s = String::new();
            let mut w =
                glsl::Writer::new(&mut s, module, &info, &opts, &pipe, naga::proc::BoundsCheckPolicies::default())
                    .map_err(|e| format!("{e}"))?;
            w.write().map_err(|e| format!("{e}"))?;
            Ok(s.len())
        }
    }
}

#[test]
fn every_variant_translates_to_every_backend() {
    let variants = ops::variants();
    assert!(variants.len() > 50, "suspiciously few variants: {}", variants.len());
    // The cooperative-matrix kernels run on no CI adapter: this test is their only check, so they must be listed
    // (fast and basic GEMM cores for linear layers and convolutions, and the flash kernel), as must the emulated
    // variants that run the same cores on lavapipe.
    for path in [
        "matmul/linear_coop.wgsl",
        "matmul/linear_coop_basic.wgsl",
        "conv2d/conv2d_coop.wgsl",
        "conv2d/conv2d_coop_basic.wgsl",
        "attention/flash_coop.wgsl",
        "matmul/linear_mma_emu.wgsl",
        "conv2d/conv2d_mma_emu.wgsl",
        "attention/flash_mma_emu.wgsl",
    ] {
        assert!(variants.iter().any(|k| k.path == path), "no variant of {path}");
    }
    let mut failures = Vec::new();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut translated = [0usize; 4];
    for k in &variants {
        let (src, files) = match expand(k.path, &k.defines) {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("{k}: preprocess: {e}"));
                continue;
            }
        };
        used.extend(files);
        let module = match naga::front::wgsl::parse_str(&src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{k}: parse: {}", e.emit_to_string(&src)));
                continue;
            }
        };
        for t in [Target::Spv, Target::Msl, Target::Hlsl, Target::Glsl] {
            let got = translate(&module, k, t);
            match (got, expected_ok(k, t)) {
                (Ok(_), true) => translated[t as usize] += 1,
                (Err(_), false) => {}
                (Err(e), true) => failures.push(format!("{k} -> {t:?}: {e}")),
                (Ok(_), false) => failures.push(format!("{k} -> {t:?}: translated, but is listed as unsupported")),
            }
        }
    }
    eprintln!("{} variants; translated to SPIR-V/MSL/HLSL/GLSL: {translated:?}", variants.len());
    let unused: Vec<&str> = kernel_paths().filter(|p| !used.contains(*p)).collect();
    assert!(unused.is_empty(), "kernel files no variant reaches: {unused:?}");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
