//! `p2p-wgpu convert`: single-file CompVis SD 1.x checkpoints → diffusers folders.
//!
//! The fixture `tests/fixtures/compvis/tiny-sd1.safetensors` is the tiny SD 1.x diffusers fixture
//! (`tests/fixtures/sd1-tiny`) under CompVis names, plus the entries real checkpoints carry and the converter
//! skips (EMA, DDPM schedule buffers, `position_ids`); `weights-tools/make_compvis_fixture.py` makes it. Converting
//! it back with `--config-from tests/fixtures/sd1-tiny` must give every original tensor bit for bit, and a folder
//! that `StableDiffusion::load` loads. `tests/fixtures/compvis/sd15-keys.json` lists SD 1.5's parameters (CompVis
//! name, diffusers name, shape), and the mapping for `--preset sd15` must give exactly that list.
//!
//! Honest limitation: both directions of the name mapping are ours (the Python inverse that made the fixture,
//! and the Rust converter). The script checks its output with diffusers' own CompVis → diffusers conversion
//! functions (a third party's reading of the real format), for the tiny file's values and for the SD 1.5 key list,
//! but no real CompVis checkpoint is converted here: that needs a real checkpoint file (about 4 GB).
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use p2p_wgpu::convert::{ConfigSource, ConvertOptions, Preset, convert, mapping};
use p2p_wgpu::models::clip::ClipTextConfig;
use p2p_wgpu::models::sd::{LoadOptions, StableDiffusion};
use p2p_wgpu::models::unet::UNetConfig;
use p2p_wgpu::models::vae::VaeConfig;
use p2p_wgpu::schedulers::SchedulerConfig;
use p2p_wgpu::weights::{DiffusersFolder, FileDType, SafetensorsFile};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn checkpoint() -> PathBuf {
    fixtures().join("compvis/tiny-sd1.safetensors")
}

fn sd1_tiny() -> PathBuf {
    fixtures().join("sd1-tiny")
}

/// A fresh, empty scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("p2p-convert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2p-wgpu")).args(args).output().expect("run p2p-wgpu")
}

fn run_convert(ckpt: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["convert", "--checkpoint", ckpt.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

fn config_from() -> [String; 2] {
    ["--config-from".to_owned(), sd1_tiny().to_str().unwrap().to_owned()]
}

/// One error line on stderr containing every `needle`, exit code 1, no panic.
fn one_line_error(o: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "{:?} does not mention {n:?}", lines[0]);
    }
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_owned()
}

/// Nothing left in `dir` (no output, no hidden staging folder).
fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "{} still holds {left:?}", dir.display());
}

/// A component's tensors: name → (dtype, shape, bytes).
fn tensors(file: &Path) -> BTreeMap<String, (FileDType, Vec<usize>, Vec<u8>)> {
    let f = SafetensorsFile::open(file).unwrap_or_else(|e| panic!("{e}"));
    f.tensors().iter().map(|(k, i)| (k.clone(), (i.dtype, i.shape.clone(), f.read_bytes(k).unwrap()))).collect()
}

const WEIGHTS: [&str; 3] = [
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
];

#[test]
fn converts_the_fixture_bit_exactly_and_the_folder_loads() {
    let base = scratch("exact");
    let out = base.join("model");
    let [a, b] = config_from();
    let o = run_convert(&checkpoint(), &out, &[&a, &b]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stderr.is_empty(), "no warnings expected: {}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("unet 304, vae 124, text_encoder 36"), "{stdout}");
    assert!(stdout.contains("skipped 9 known keys"), "{stdout}");

    for w in WEIGHTS {
        let (got, want) = (tensors(&out.join(w)), tensors(&sd1_tiny().join(w)));
        let (gk, wk): (Vec<_>, Vec<_>) = (got.keys().collect(), want.keys().collect());
        assert_eq!(gk, wk, "{w}: key sets differ");
        for (k, (dt, shape, bytes)) in &want {
            let g = &got[k];
            assert_eq!((g.0, &g.1), (*dt, shape), "{w}: {k} dtype/shape");
            assert!(g.2 == *bytes, "{w}: {k} bytes differ");
        }
    }
    // Configs, scheduler and tokenizer are the --config-from folder's.
    for f in [
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json",
    ] {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(sd1_tiny().join(f)).unwrap(), "{f}");
    }
    let folder = DiffusersFolder::open(&out).unwrap();
    let names: Vec<&str> = folder.index().component_names().collect();
    for c in ["scheduler", "text_encoder", "tokenizer", "unet", "vae"] {
        assert!(names.contains(&c), "model_index.json lacks {c}: {names:?}");
    }
    let sd = StableDiffusion::load(common::gpu(), &out, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sd.unet.config, UNetConfig::read(&sd1_tiny().join("unet")).unwrap());
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn fp16_stores_every_tensor_rounded_to_f16() {
    let base = scratch("fp16");
    let out = base.join("model");
    std::fs::create_dir(&out).unwrap(); // an empty output folder is fine
    let opts = ConvertOptions {
        checkpoint: checkpoint(),
        configs: ConfigSource::Folder(sd1_tiny()),
        out: out.clone(),
        fp16: true,
    };
    let report = convert(&opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.dtypes.iter().copied().collect::<Vec<_>>(), ["F16"]);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    for w in WEIGHTS {
        let got = SafetensorsFile::open(&out.join(w)).unwrap();
        let want = SafetensorsFile::open(&sd1_tiny().join(w)).unwrap();
        assert_eq!(got.tensors().len(), want.tensors().len(), "{w}");
        for (k, info) in got.tensors() {
            assert_eq!(info.dtype, FileDType::F16, "{w}: {k}");
            let g = got.read_bytes(k).unwrap();
            let w32 = want.read_f32(k).unwrap();
            assert_eq!(info.shape, w32.shape, "{w}: {k}");
            let rounded: Vec<u8> =
                w32.data.iter().flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes()).collect();
            assert!(g == rounded, "{w}: {k} is not the f16 rounding of the original");
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// The configs of `--preset sd15`, parsed as the converter parses them.
fn preset_configs(dir: &Path) -> (UNetConfig, VaeConfig, ClipTextConfig) {
    Preset::Sd15.write_configs(dir).unwrap();
    SchedulerConfig::read(&dir.join("scheduler")).unwrap_or_else(|e| panic!("{e}"));
    (
        UNetConfig::read(&dir.join("unet")).unwrap_or_else(|e| panic!("{e}")),
        VaeConfig::read(&dir.join("vae")).unwrap_or_else(|e| panic!("{e}")),
        ClipTextConfig::read(&dir.join("text_encoder")).unwrap_or_else(|e| panic!("{e}")),
    )
}

#[test]
fn preset_sd15_mapping_is_the_sd15_key_list() {
    let base = scratch("sd15");
    let (unet, vae, text) = preset_configs(&base);
    let plan = mapping::plan(&unet, &vae, &text);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("compvis/sd15-keys.json")).unwrap()).unwrap();
    for comp in mapping::Component::ALL {
        let mut want: Vec<(String, String, Vec<usize>)> = json[comp.dir()]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let shape = r[2].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
                (r[0].as_str().unwrap().to_owned(), r[1].as_str().unwrap().to_owned(), shape)
            })
            .collect();
        let mut got: Vec<(String, String, Vec<usize>)> = plan
            .iter()
            .filter(|e| e.component == comp)
            .map(|e| (e.compvis.clone(), e.diffusers.clone(), e.shape.clone()))
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got.len(), want.len(), "{comp}: parameter count");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{comp}");
        }
    }
    let counts: Vec<usize> =
        mapping::Component::ALL.iter().map(|c| plan.iter().filter(|e| e.component == *c).count()).collect();
    assert_eq!(counts, [686, 248, 196]);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn preset_sd15_on_the_tiny_file_names_the_misshapen_keys() {
    let base = scratch("preset-tiny");
    let out = base.join("model");
    let o = run_convert(&checkpoint(), &out, &["--preset", "sd15"]);
    one_line_error(
        &o,
        &["misshapen keys", "model.diffusion_model.input_blocks.0.0.weight is [32, 4, 3, 3], expected [320, 4, 3, 3]"],
    );
    assert_empty(&base);
    let _ = std::fs::remove_dir_all(&base);
}

/// A copy of the fixture checkpoint at `path`, edited.
fn edited_checkpoint(path: &Path, edit: impl FnOnce(&mut BTreeMap<String, (FileDType, Vec<usize>, Vec<u8>)>)) {
    let mut t = tensors(&checkpoint());
    edit(&mut t);
    let dtype = |d: FileDType| match d {
        FileDType::F32 => safetensors::Dtype::F32,
        FileDType::F16 => safetensors::Dtype::F16,
        FileDType::I32 => safetensors::Dtype::I32,
        FileDType::I64 => safetensors::Dtype::I64,
        other => panic!("{other} not used by the fixture"),
    };
    let views: Vec<(String, safetensors::tensor::TensorView)> = t
        .iter()
        .map(|(k, (d, s, b))| (k.clone(), safetensors::tensor::TensorView::new(dtype(*d), s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn bad_input_gets_one_line_and_writes_nothing() {
    let base = scratch("errors");
    let inputs = base.join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let work = base.join("work");
    std::fs::create_dir(&work).unwrap();
    let out = work.join("model");
    let [a, b] = config_from();

    // An extra key that nothing maps.
    let extra = inputs.join("extra.safetensors");
    edited_checkpoint(&extra, |t| {
        t.insert("model.diffusion_model.foo.weight".into(), (FileDType::F32, vec![2], vec![0; 8]));
    });
    one_line_error(&run_convert(&extra, &out, &[&a, &b]), &["1 unmapped key: model.diffusion_model.foo.weight"]);
    assert_empty(&work);

    // A missing key (a decoder block stored in reverse order: CompVis up.0 is diffusers' last up block).
    let missing = inputs.join("missing.safetensors");
    let gone = "first_stage_model.decoder.up.0.block.1.norm1.weight";
    edited_checkpoint(&missing, |t| {
        assert!(t.remove(gone).is_some());
    });
    one_line_error(&run_convert(&missing, &out, &[&a, &b]), &["1 missing key: ", gone]);
    assert_empty(&work);

    // A pickle, by name (never opened) and by content.
    one_line_error(
        &run_convert(&inputs.join("model.ckpt"), &out, &[&a, &b]),
        &["model.ckpt", "pickle", "never unpickled", "safetensors"],
    );
    let disguised = inputs.join("disguised.safetensors");
    std::fs::write(&disguised, b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00").unwrap();
    one_line_error(&run_convert(&disguised, &out, &[&a, &b]), &["pickle", "never unpickled"]);
    assert_empty(&work);

    // An SD 2.x checkpoint is named as such.
    let sd2 = inputs.join("sd2.safetensors");
    edited_checkpoint(&sd2, |t| {
        t.insert("cond_stage_model.model.positional_embedding".into(), (FileDType::F32, vec![2], vec![0; 8]));
    });
    one_line_error(&run_convert(&sd2, &out, &[&a, &b]), &["SD 2.x"]);
    assert_empty(&work);

    // The output is a file, or a folder with something in it: left as it was.
    let file = work.join("model.txt");
    std::fs::write(&file, b"keep").unwrap();
    one_line_error(&run_convert(&checkpoint(), &file, &[&a, &b]), &["is a file, not a folder"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"keep").unwrap();
    one_line_error(&run_convert(&checkpoint(), &out, &[&a, &b]), &["not empty"]);
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"keep");
    std::fs::remove_dir_all(&out).unwrap();

    // Parent folders the converter created for a failed conversion are removed too.
    let deep = work.join("a/b/model");
    one_line_error(&run_convert(&extra, &deep, &[&a, &b]), &["unmapped"]);
    assert_empty(&work);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_betas_schedule_unlike_the_scheduler_config_is_a_warning() {
    let base = scratch("betas");
    let ckpt = base.join("linear-betas.safetensors");
    edited_checkpoint(&ckpt, |t| {
        // ldm's "linear" schedule instead of SD's scaled_linear one.
        let betas: Vec<u8> =
            (0..1000).flat_map(|i| (1e-4f32 + (2e-2 - 1e-4) * i as f32 / 999.0).to_le_bytes()).collect();
        t.insert("betas".into(), (FileDType::F32, vec![1000], betas));
    });
    let out = base.join("model");
    let [a, b] = config_from();
    let o = run_convert(&ckpt, &out, &[&a, &b]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.starts_with("p2p-wgpu: warning: the checkpoint's DDPM betas"), "{err}");
    assert!(out.join("model_index.json").is_file());
    let _ = std::fs::remove_dir_all(&base);
}
