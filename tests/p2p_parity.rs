//! Prompt-to-Prompt parity against our PyTorch port of docs/DESIGN.md §5 (weights-tools/ptp_reference.py, fixtures in
//! tests/fixtures/p2p made by weights-tools/make_p2p_fixtures.py on the tiny SD 1.x model): for every case the
//! host tables (mapper W, r, eq, the cross window table, the self window, blend positions) and whole edits
//! (final latents ≤ 2e-3, images ≤ 1e-3 relative L2; blend masks exact). Each case also asserts that its edit
//! changes the target by far more than the tolerance, so a no-op edit cannot pass.
mod common;

use std::path::{Path, PathBuf};

use common::{gpu, rel_l2};
use p2p_wgpu::models::sd::{LoadOptions, StableDiffusion};
use p2p_wgpu::p2p::{EditPlan, EditSpec, Mode, Window};
use p2p_wgpu::pipelines::{EditRun, Sampling, Silent};
use p2p_wgpu::schedulers::Kind;
use p2p_wgpu::weights::SafetensorsFile;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn spec_of(s: &Value) -> EditSpec {
    let strs =
        |v: &Value| -> Vec<String> { v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect() };
    let pairs = |v: &Value| -> Vec<(String, Value)> {
        v.as_array().unwrap().iter().map(|p| (p[0].as_str().unwrap().to_string(), p[1].clone())).collect()
    };
    let mut e = EditSpec::new(s["prompt"].as_str().unwrap());
    e.swaps = pairs(&s["swaps"]).into_iter().map(|(a, b)| (a, b.as_str().unwrap().to_string())).collect();
    e.targets = strs(&s["targets"]);
    e.mode = match s["mode"].as_str() {
        Some("replace") => Some(Mode::Replace),
        Some("refine") => Some(Mode::Refine),
        _ => None,
    };
    e.reweights = pairs(&s["reweights"]).into_iter().map(|(w, c)| (w, c.as_f64().unwrap() as f32)).collect();
    e.blend_words = strs(&s["blend_words"]);
    e.blend_threshold = s["blend_threshold"].as_f64().unwrap() as f32;
    e.blend_start = s["blend_start"].as_f64().unwrap();
    e.cross_steps = Window::parse(s["cross_steps"].as_str().unwrap()).unwrap();
    e.cross_steps_word = pairs(&s["cross_steps_word"])
        .into_iter()
        .map(|(w, v)| (w, Window::parse(v.as_str().unwrap()).unwrap()))
        .collect();
    e.self_steps = Window::parse(s["self_steps"].as_str().unwrap()).unwrap();
    e.compat_ptp = s["compat_ptp"].as_bool().unwrap();
    e
}

fn close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6, "{name}[{i}]: {g} vs {w}");
    }
}

#[test]
fn p2p_cases_match_the_reference() {
    let gpu = gpu();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("p2p/manifest.json")).unwrap()).unwrap();
    let sd = StableDiffusion::load(gpu, &dir().join("sd1-tiny"), &LoadOptions::default()).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["case"].as_str().unwrap();
        let s = &case["spec"];
        let f = SafetensorsFile::open(&dir().join("p2p").join(case["file"].as_str().unwrap())).unwrap();
        let get = |n: &str| f.read_f32(n).unwrap().data;
        let steps = s["steps"].as_u64().unwrap() as usize;
        let plan = EditPlan::new(&spec_of(s), &sd.tokenizer, steps).unwrap_or_else(|e| panic!("{name}: {e}"));
        let resolved: Vec<String> =
            case["resolved"]["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        assert_eq!(plan.prompts, resolved, "{name}: prompts");
        let (t, keys) = (plan.prompts.len() - 1, plan.keys);

        // Host tables.
        let mut dense = vec![0.0f32; t * keys * keys];
        for (b, cols) in plan.mapper.iter().enumerate() {
            for (n, col) in cols.iter().enumerate() {
                for &(w, v) in col {
                    dense[(b * keys + w as usize) * keys + n] += v;
                }
            }
        }
        close(&format!("{name} mapper"), &dense, &get("mapper"));
        close(&format!("{name} r"), &plan.r.concat(), &get("r"));
        close(&format!("{name} eq"), &plan.eq.concat(), &get("eq"));
        let alpha: Vec<f32> = plan.alpha.iter().flat_map(|row| row.concat()).collect();
        close(&format!("{name} alpha"), &alpha, &get("alpha"));
        let sw = f.read_bytes("self_window").unwrap();
        let sw: Vec<i32> = sw.chunks(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!((plan.self_steps.0 as i32, plan.self_steps.1 as i32), (sw[0], sw[1]), "{name}: self window");
        if let Some(bp) = &plan.blend {
            let want: Vec<Vec<usize>> = serde_json::from_value(case["resolved"]["blend_positions"].clone()).unwrap();
            assert_eq!(bp.positions, want, "{name}: blend positions");
        }

        // The whole edit.
        let r = EditRun {
            sampling: Sampling {
                negative: s["negative_prompt"].as_str().unwrap().to_string(),
                steps,
                guidance: s["guidance"].as_f64().unwrap(),
                scheduler: Some(if s["scheduler"] == "ddim" { Kind::Ddim } else { Kind::Pndm }),
                latents: get("latents"),
                latent_hw: (8, 8),
            },
            self_max_res: 16,
            // Case 11 overrides the side; the others use the default rule, which the reference shares.
            blend_res: (case["case"] == "11_blend_res8").then(|| s["blend_res"].as_u64().unwrap() as usize),
            attention_res: None,
        };
        let out = sd.edit(gpu, &plan, &r, &mut Silent).unwrap_or_else(|e| panic!("{name}: {e}"));
        let wide = |v: Vec<f32>| -> Vec<f64> { v.into_iter().map(|x| x as f64).collect() };
        let (el, ei) = (rel_l2(&out.latents, &wide(get("final_latents"))), rel_l2(&out.images, &wide(get("image"))));
        eprintln!("{name}: final latents {el:.2e}, image {ei:.2e}");
        assert!(el <= 2e-3, "{name}: final latents relative L2 {el:.2e}");
        assert!(ei <= 1e-3, "{name}: image relative L2 {ei:.2e}");
        let plain = get("plain_image");
        let row = plain.len() / plan.prompts.len();
        for b in 1..plan.prompts.len() {
            let d = rel_l2(&out.images[b * row..(b + 1) * row], &wide(plain[b * row..(b + 1) * row].to_vec()));
            assert!(d > 1e-2, "{name}: target {b} equals its plain generation ({d:.2e}): the edit did nothing");
        }
        if plan.blend.is_some() {
            let masks = out.blend_masks.expect("blend masks");
            close(&format!("{name} blend mask"), &masks.concat(), &get("blend_mask_last"));
        }
    }
}
