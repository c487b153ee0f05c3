//! The pixel cascade against diffusers on the tiny random cascade (tests/fixtures/cascade-tiny and
//! reference/cascade-*.safetensors, made by weights-tools/make_cascade_fixtures.py): one base UNet call, one SR UNet
//! call with class labels (f32 ≤ 1e-4, f16 storage ≤ 1e-2 relative L2), the host upsampling and noise
//! augmentation, and a whole two-prompt text-to-image run (base 4 PNDM steps + SR 4 DDIM steps, CFG; ≤ 1e-3).
//! Then the command line: an edit producing source/edit/grid whose source row is the plain generation (≤ 1e-5),
//! the seed convention of the SR noises, and a folder without sr_unet/ as a one-line error.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use p2p_wgpu::models::cascade::{Cascade, SR_SCALE, augment, upsample_bilinear};
use p2p_wgpu::models::sd::{LoadOptions, nchw_to_nhwc, nhwc_to_nchw};
use p2p_wgpu::models::unet::{ClassEmbed, UNet, UNetConfig};
use p2p_wgpu::nn::Ctx;
use p2p_wgpu::noise::gaussian;
use p2p_wgpu::pipelines::cascade::SrRun;
use p2p_wgpu::pipelines::{Generate, Sampling, Step};
use p2p_wgpu::tensor::{DType, Tensor};
use p2p_wgpu::weights::SafetensorsFile;

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cascade-tiny")
}

struct Ref(SafetensorsFile);

impl Ref {
    fn open(name: &str) -> Ref {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference").join(name);
        Ref(SafetensorsFile::open(&p).expect("reference file"))
    }
    fn f32(&self, name: &str) -> Vec<f32> {
        self.0.read_f32(name).unwrap_or_else(|e| panic!("{name}: {e}")).data
    }
    fn shape(&self, name: &str) -> Vec<usize> {
        self.0.info(name).expect("tensor").shape.clone()
    }
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn report(name: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_l2(got, &wide(want));
    eprintln!("{name}: relative L2 {e:.2e}");
    assert!(e <= tol, "{name}: relative L2 {e:.3e} exceeds {tol:.1e}");
}

/// One UNet call of `component` from a reference file (NCHW sample, one timestep, optional per-row class labels).
fn unet_call(component: &str, file: &str, labels: bool) {
    let gpu = gpu();
    let r = Ref::open(file);
    let [b, c, h, w] = r.shape("sample")[..] else { panic!("sample shape") };
    let x = nchw_to_nhwc(&r.f32("sample"), b, c, h, w);
    let t = r.f32("timestep")[0];
    let out = r.f32("out");
    let oc = out.len() / (b * h * w);
    for dt in dtypes() {
        let unet = UNet::load(gpu, &model().join(component), None, dt).unwrap();
        let mut cx = Ctx::new(gpu, dt);
        let xt = Tensor::from_f32(gpu, &[b, h, w, c], dt, &x).unwrap();
        let ts = Tensor::from_f32(gpu, &[b], DType::F32, &vec![t; b]).unwrap();
        let text =
            Tensor::from_f32(gpu, &r.shape("encoder_hidden_states"), dt, &r.f32("encoder_hidden_states")).unwrap();
        let cl = labels.then(|| Tensor::from_f32(gpu, &[b], DType::F32, &r.f32("class_labels")).unwrap());
        let y = unet.forward_full(&mut cx, &xt, &ts, cl.as_ref(), &text, None).unwrap();
        cx.flush().unwrap();
        let got = nhwc_to_nchw(&download(&y), b, oc, h, w);
        report(&format!("{component} call {dt:?}"), &got, &out, if dt == DType::F16 { 1e-2 } else { 1e-4 });
    }
}

#[test]
fn base_unet_call() {
    unet_call("unet", "cascade-base_unet_call.safetensors", false);
}

#[test]
fn sr_unet_call_with_class_labels() {
    unet_call("sr_unet", "cascade-sr_unet_call.safetensors", true);
    // The SR UNet refuses to run without its class labels, and the base UNet refuses them.
    let gpu = gpu();
    let sr = UNet::load(gpu, &model().join("sr_unet"), None, DType::F32).unwrap();
    let mut cx = Ctx::new(gpu, DType::F32);
    let x = cx.input(&[1, 8, 8, 6], DType::F32).unwrap();
    let t = cx.input(&[1], DType::F32).unwrap();
    let text = cx.input(&[1, 20, 32], DType::F32).unwrap();
    let e = sr.forward(&mut cx, &x, &t, &text).expect_err("no class labels").to_string();
    assert!(e.contains("class labels"), "{e}");
}

#[test]
fn unet_class_embedding_options() {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model().join("sr_unet/config.json")).unwrap()).unwrap();
    let d = tmp("unet-config");
    std::fs::create_dir_all(&d).unwrap();
    let read = |key: &str, v: serde_json::Value| {
        let mut c = cfg.clone();
        c[key] = v;
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
        UNetConfig::read(&d)
    };
    assert_eq!(read("class_embed_type", "timestep".into()).unwrap().class_embed, Some(ClassEmbed::Timestep));
    assert_eq!(read("class_embed_type", serde_json::Value::Null).unwrap().class_embed, None);
    for (key, v) in [
        ("class_embed_type", serde_json::json!("projection")),
        ("num_class_embeds", serde_json::json!(10)),
        ("projection_class_embeddings_input_dim", serde_json::json!(8)),
        ("class_embeddings_concat", serde_json::json!(true)),
    ] {
        let e = read(key, v).expect_err(key).to_string();
        assert!(e.contains(key), "{e}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn cascade_t2i_matches_diffusers_loop() {
    let gpu = gpu();
    let r = Ref::open("cascade-t2i.safetensors");
    let m = Cascade::load(gpu, &model(), &LoadOptions::default()).unwrap();
    let [_, _, h, w] = r.shape("base_noise")[..] else { panic!("shape") };
    let (hh, ww) = (h * SR_SCALE, w * SR_SCALE);
    let prompts = vec!["a red circle on a white background".to_string(), "a big blue square and a green star".into()];
    let b = prompts.len();

    // The host steps between the stages, from the reference's own base output.
    let base_ref = nchw_to_nhwc(&r.f32("base_final"), b, 3, h, w);
    let clamped: Vec<f32> = base_ref.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
    let up = upsample_bilinear(&clamped, b, h, w, 3, SR_SCALE);
    report("upsampled", &nhwc_to_nchw(&up, b, 3, hh, ww), &r.f32("upsampled"), 1e-6);
    let noise = nchw_to_nhwc(&r.f32("aug_noise"), 1, 3, hh, ww);
    let aug = augment(&m.sr_scheduler, &up, &noise, m.index.sr_noise_level).unwrap();
    report("augmented", &nhwc_to_nchw(&aug, b, 3, hh, ww), &r.f32("augmented"), 1e-6);

    let g = Generate { prompts, sampling: Sampling::new(4, 7.5, r.f32("base_noise"), (h, w)) };
    let sr =
        SrRun { steps: 4, guidance: None, scheduler: None, aug_noise: r.f32("aug_noise"), latents: r.f32("sr_noise") };
    let mut calls = Vec::new();
    let mut seen = |s: &Step| {
        calls.push((s.done, s.of));
        true
    };
    let out = m.generate(gpu, &g, &sr, &mut seen).unwrap();
    // PNDM makes S + 1 = 5 base evaluations, DDIM 4 SR evaluations.
    assert_eq!(calls.last(), Some(&(9, 9)));
    assert_eq!((out.base_hw, out.image_hw), ((h, w), (hh, ww)));
    report("base output", &out.base, &r.f32("base_final"), 1e-3);
    report("sr output", &out.sr, &r.f32("sr_final"), 1e-3);
    report("images", &out.images, &r.f32("images"), 1e-3);
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_p2p-wgpu")).args(args).output().expect("run p2p-wgpu")
}

fn ok(args: &[&str]) {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("p2p-cascade-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn raw(dir: &Path, name: &str) -> Vec<f32> {
    SafetensorsFile::open(&dir.join("raw.safetensors")).unwrap().read_f32(name).unwrap().data
}

#[test]
fn cli_edit_source_row_is_the_plain_generation() {
    let m = model();
    let m = m.to_str().unwrap();
    let d = tmp("edit");
    let (edit, plain) = (d.join("edit"), d.join("plain"));
    let noise = d.join("noise.safetensors");
    let prompt = "a red circle on a white background";
    let common = ["--model", m, "--steps", "3", "--sr-steps", "2", "--seed", "11", "--save-raw"];
    let mut a = common.to_vec();
    a.extend(["--prompt", prompt, "--swap", "red=blue", "--blend", "circle", "--out", edit.to_str().unwrap()]);
    ok(&a);
    for f in ["source.png", "edit.png", "grid.png", "blend-masks.png"] {
        assert!(edit.join(f).is_file(), "{f} missing");
    }
    let mut p = common.to_vec();
    p.extend(["--prompt", prompt, "--out", plain.to_str().unwrap(), "--save-latents", noise.to_str().unwrap()]);
    ok(&p);
    let (ei, pi) = (raw(&edit, "images"), raw(&plain, "images"));
    let n = pi.len();
    assert_eq!(n, 3 * 32 * 32);
    assert_eq!(ei.len(), 2 * n);
    let e_src = rel_l2(&ei[..n], &wide(&pi));
    eprintln!("source row vs plain: {e_src:.2e}");
    assert!(e_src <= 1e-5, "source row differs from the plain generation: {e_src:.2e}");
    // The edit changed the target's base image, and raw.safetensors holds the base outputs.
    let (eb, pb) = (raw(&edit, "base_images"), raw(&plain, "base_images"));
    assert_eq!((eb.len(), raw(&edit, "latents").len()), (2 * 3 * 8 * 8, 2 * 3 * 8 * 8));
    let moved = rel_l2(&eb[eb.len() / 2..], &wide(&pb));
    assert!(moved > 1e-2, "the edit did not change the target ({moved:.2e})");
    // The seed convention: base noise from the seed, SR noises from seed + 1 and seed + 2.
    let f = SafetensorsFile::open(&noise).unwrap();
    let get = |k: &str| f.read_f32(k).unwrap().data;
    assert_eq!(get("latents"), gaussian(11, 3 * 8 * 8));
    assert_eq!(get("sr_aug_noise"), gaussian(12, 3 * 32 * 32));
    assert_eq!(get("sr_latents"), gaussian(13, 3 * 32 * 32));
    std::fs::remove_dir_all(&d).unwrap();
}

/// Copies the fixture model to `to`, leaving out the entry `skip`.
fn copy_model(to: &Path, skip: &str) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(model()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if name == skip {
            continue;
        }
        if p.is_dir() {
            std::fs::create_dir_all(to.join(&name)).unwrap();
            for f in std::fs::read_dir(&p).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, to.join(&name).join(f.file_name().unwrap())).unwrap();
            }
        } else {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
}

#[test]
fn model_guidance_scale_is_the_default_guidance() {
    let d = tmp("guidance");
    let with = d.join("model");
    copy_model(&with, "");
    let index = with.join("model_index.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    v["guidance_scale"] = serde_json::json!(3.0);
    std::fs::write(&index, v.to_string()).unwrap();
    let base = ["--prompt", "a red circle", "--steps", "3", "--sr-steps", "2", "--seed", "5", "--save-raw"];
    let (a, b, c) = (d.join("a"), d.join("b"), d.join("c"));
    let m = model();
    let runs: [(&Path, &Path, &[&str]); 3] =
        [(&with, &a, &[]), (&m, &b, &["--guidance", "3"]), (&with, &c, &["--guidance", "7.5"])];
    for (model, out, extra) in runs {
        let mut args = base.to_vec();
        args.extend(["--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        args.extend(extra);
        ok(&args);
    }
    let (ia, ib, ic) = (raw(&a, "base_images"), raw(&b, "base_images"), raw(&c, "base_images"));
    assert_eq!(ia, ib, "model_index.json's guidance_scale 3 must act as --guidance 3");
    assert!(rel_l2(&ic, &wide(&ia)) > 1e-3, "--guidance must override the model's guidance_scale");
    v["guidance_scale"] = serde_json::json!("high");
    std::fs::write(&index, v.to_string()).unwrap();
    let o = run(&["--model", with.to_str().unwrap(), "--prompt", "a red circle", "--out", a.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("guidance_scale"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn model_step_counts_are_the_default_steps() {
    let d = tmp("steps");
    let with = d.join("model");
    copy_model(&with, "");
    let index = with.join("model_index.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    v["num_inference_steps"] = serde_json::json!(3);
    v["sr_num_inference_steps"] = serde_json::json!(2);
    std::fs::write(&index, v.to_string()).unwrap();
    let base = ["--prompt", "a red circle", "--seed", "5", "--save-raw"];
    let (a, b, c) = (d.join("a"), d.join("b"), d.join("c"));
    let m = model();
    let runs: [(&Path, &Path, &[&str]); 3] = [
        (&with, &a, &[]),
        (&m, &b, &["--steps", "3", "--sr-steps", "2"]),
        (&with, &c, &["--steps", "4", "--sr-steps", "3"]),
    ];
    for (model, out, extra) in runs {
        let mut args = base.to_vec();
        args.extend(["--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        args.extend(extra);
        ok(&args);
    }
    for key in ["base_images", "images"] {
        let (ia, ib, ic) = (raw(&a, key), raw(&b, key), raw(&c, key));
        assert_eq!(ia, ib, "{key}: model_index.json's step counts 3/2 must act as --steps 3 --sr-steps 2");
        assert!(rel_l2(&ic, &wide(&ia)) > 1e-4, "{key}: --steps/--sr-steps must override the model's step counts");
    }
    for bad in [serde_json::json!(0), serde_json::json!(2.5), serde_json::json!("many")] {
        v["sr_num_inference_steps"] = bad;
        std::fs::write(&index, v.to_string()).unwrap();
        let o = run(&["--model", with.to_str().unwrap(), "--prompt", "a red circle", "--out", a.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("sr_num_inference_steps") && err.lines().count() == 1, "{err}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// SR guidance exactly 1 runs without the unconditional half; it must give what the full formula gives at a scale
/// next to 1 (a 2-prompt edit, 2 SR steps). This caught the conditioning image's buffer going back to the pool while
/// the recording still read it (the sample, of the same size without CFG, took it over).
#[test]
fn sr_guidance_one_skips_the_unconditional_half() {
    let d = tmp("sr-guidance1");
    let m = model();
    let mut images = Vec::new();
    for g in ["1", "1.000001"] {
        let out = d.join(g);
        ok(&[
            "--model",
            m.to_str().unwrap(),
            "--prompt",
            "a red circle",
            "--swap",
            "red=blue",
            "--steps",
            "3",
            "--sr-steps",
            "2",
            "--sr-guidance",
            g,
            "--seed",
            "1",
            "--save-raw",
            "--out",
            out.to_str().unwrap(),
        ]);
        images.push(raw(&out, "images"));
    }
    let e = rel_l2(&images[0], &wide(&images[1]));
    assert!(e <= 1e-5, "SR guidance 1 (no CFG batch) vs 1.000001: {e:.2e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn cascade_without_sr_unet_is_a_one_line_error() {
    let d = tmp("broken");
    let broken = d.join("model");
    copy_model(&broken, "sr_unet");
    let out = d.join("out");
    let o = run(&[
        "--model",
        broken.to_str().unwrap(),
        "--prompt",
        "a red circle",
        "--steps",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains("XDG_RUNTIME_DIR")).collect();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(lines.len(), 1, "expected one line, got {err}");
    assert!(lines[0].contains("sr_unet"), "{:?} does not name sr_unet/", lines[0]);
    assert!(!out.join("source.png").exists());
    std::fs::remove_dir_all(&d).unwrap();
}
