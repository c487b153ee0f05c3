//! Reusable inversions from the command line: `p2p-wgpu invert` writes one safetensors file (latents of every
//! step, prompt, model identity, step counts, the fitted picture), and `--inverted FILE` edits from it.
//!
//! - an edit from the file is the same, to the byte, as the edit with `--image` that inverts on the way (SD 1.x
//!   tiny fixture, also with VAE tiles, whose flags `invert` takes too; and the tiny cascade with its two stages);
//! - a file made with another model (another config), another prompt or step count, a damaged file and a file
//!   that is no inversion are refused with one line and no output; `--inverted` with `--image`, `--seed`,
//!   `--height` or a non-DDIM scheduler is a usage error (2); `invert` refuses an output inside the model folder
//!   and writes nothing when it fails.
mod common;

use std::path::Path;

use common::cli::{copy_dir, fixtures, one_line_error, run, tmp};
use p2p_wgpu::weights::SafetensorsFile;

const PROMPT: &str = "a red bicycle on a hill";

fn sd1() -> String {
    fixtures().join("sd1-tiny").to_str().unwrap().to_string()
}

fn picture() -> String {
    fixtures().join("inversion/input.png").to_str().unwrap().to_string()
}

fn ok(o: &std::process::Output, what: &str) {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
}

/// The files of an output folder, by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// Inverts with `invert`, edits from the file with `edit`, and compares with the same edit through `--image`;
/// `vae` (VAE tiling flags) goes to all three runs. Returns the file's inversion latents.
fn same_as_image_edit(model: &str, prompt: &str, steps: &[&str], edit: &[&str], vae: &[&str], name: &str) -> Vec<u8> {
    let dir = tmp(name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pic.inv.safetensors");
    let (f, pic) = (file.to_str().unwrap(), picture());
    let mut args = vec!["invert", "--model", model, "--image", &pic, "--prompt", prompt, "--out", f];
    args.extend(steps);
    args.extend(vae);
    ok(&run(&args), "invert");
    let latents = SafetensorsFile::open(&file).unwrap().read_bytes("inversion_latents").unwrap();
    let (a, b) = (dir.join("from-file"), dir.join("from-image"));
    let mut from_file = vec!["--model", model, "--inverted", f, "--out", a.to_str().unwrap(), "--save-raw"];
    from_file.extend(edit);
    from_file.extend(vae);
    ok(&run(&from_file), "--inverted");
    let mut from_image =
        vec!["--model", model, "--image", &pic, "--prompt", prompt, "--out", b.to_str().unwrap(), "--save-raw"];
    from_image.extend(steps);
    from_image.extend(edit);
    from_image.extend(vae);
    ok(&run(&from_image), "--image");
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.iter().map(|f| &f.0).collect::<Vec<_>>(), fb.iter().map(|f| &f.0).collect::<Vec<_>>());
    for ((n, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(x == y, "{name}: {n} differs between --inverted and --image");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    latents
}

#[test]
fn an_edit_from_an_inversion_file_equals_the_edit_of_the_picture() {
    let whole = same_as_image_edit(&sd1(), PROMPT, &["--steps", "3"], &["--swap", "bicycle=car"], &[], "inv-sd1");
    let ddim = ["--swap", "bicycle=car", "--inversion", "negative-prompt"];
    same_as_image_edit(&sd1(), PROMPT, &["--steps", "3"], &ddim, &[], "inv-sd1-np");
    // VAE tiles (encoder and decoder) follow the same flags in `invert` and the main command.
    let vae = ["--vae-tile", "--vae-tile-size", "8"];
    let tiled = same_as_image_edit(&sd1(), PROMPT, &["--steps", "3"], &["--swap", "bicycle=car"], &vae, "inv-sd1-t");
    assert!(tiled != whole, "--vae-tile did not change the encoding");
}

#[test]
fn the_cascade_edits_from_its_two_stage_inversion_file() {
    let m = fixtures().join("cascade-tiny").to_str().unwrap().to_string();
    same_as_image_edit(
        &m,
        "a red circle",
        &["--steps", "3", "--sr-steps", "2"],
        &["--swap", "red=blue"],
        &[],
        "inv-casc",
    );
}

#[test]
fn the_inversion_file_holds_latents_prompt_model_and_picture() {
    let dir = tmp("inv-file");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("x.safetensors");
    let (m, pic) = (sd1(), picture());
    let o = run(&[
        "invert",
        "--model",
        &m,
        "--image",
        &pic,
        "--prompt",
        PROMPT,
        "--steps",
        "4",
        "--out",
        file.to_str().unwrap(),
    ]);
    ok(&o, "invert");
    let f = SafetensorsFile::open(&file).unwrap();
    let meta = f.metadata();
    assert_eq!(meta["format"], "p2p-wgpu-inversion");
    assert_eq!(meta["prompt"], PROMPT);
    assert_eq!(meta["steps"], "4");
    assert_eq!(meta["model_name"], "sd1-tiny");
    assert!(meta["model_id"].starts_with("sha256:") && meta["model_id"].len() == 7 + 64, "{}", meta["model_id"]);
    assert!(!meta.contains_key("sr_steps"));
    assert_eq!(f.info("inversion_latents").unwrap().shape, [5, 4, 8, 8]);
    let input = f.read_bytes("input").unwrap();
    assert_eq!(f.info("input").unwrap().shape, [16, 16, 3]);
    assert_eq!(input, image::open(&pic).unwrap().to_rgb8().into_raw(), "the fitted picture is the 16×16 input");
    let lat = f.read_f32("inversion_latents").unwrap().data;
    assert!(lat.iter().all(|v| v.is_finite()));
    assert_ne!(lat[..256], lat[4 * 256..], "x_4 is not x_0");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inversion_files_from_elsewhere_and_bad_combinations_are_refused() {
    let dir = tmp("inv-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let (m, pic) = (sd1(), picture());
    let file = dir.join("good.safetensors");
    let f = file.to_str().unwrap();
    ok(&run(&["invert", "--model", &m, "--image", &pic, "--prompt", PROMPT, "--steps", "3", "--out", f]), "invert");
    // A copy of the model is the same model; one with a changed config is another.
    let same = dir.join("copy");
    copy_dir(Path::new(&m), &same);
    let other = dir.join("retrained");
    copy_dir(Path::new(&m), &other);
    let cfg = other.join("unet/config.json");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push('\n');
    std::fs::write(&cfg, text).unwrap();
    let out = dir.join("out");
    let o_s = out.to_str().unwrap();
    ok(&run(&["--model", same.to_str().unwrap(), "--inverted", f, "--out", o_s]), "a copy of the model");
    std::fs::remove_dir_all(&out).unwrap();

    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    // Metadata that no longer matches the tensors: steps 3 → 2 (same length, so the header stays valid).
    let lied = dir.join("lied.safetensors");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let at = text.find("\"steps\":\"3\"").expect("steps in the header");
    let mut edited = bytes.clone();
    edited[at + 9] = b'2';
    std::fs::write(&lied, &edited).unwrap();
    let latents = fixtures().join("inversion/sd1_encoded.safetensors");
    let (o_m, cut_s, lied_s, lat_s) =
        (other.to_str().unwrap(), cut.to_str().unwrap(), lied.to_str().unwrap(), latents.to_str().unwrap());
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--model", o_m, "--inverted", f], 1, "made with model `sd1-tiny`"),
        (vec!["--model", &m, "--inverted", f, "--steps", "2"], 1, "made with 3 steps, not 2"),
        (vec!["--model", &m, "--inverted", f, "--prompt", "a blue bicycle"], 1, "made with the prompt"),
        (vec!["--model", &m, "--inverted", cut_s], 1, "cut.safetensors"),
        (vec!["--model", &m, "--inverted", lied_s], 1, "do not hold 2 steps"),
        (vec!["--model", &m, "--inverted", lat_s], 1, "not an inversion file"),
        (vec!["--model", &m, "--inverted", "/nonexistent/x.safetensors"], 1, "x.safetensors"),
        (vec!["--model", &m, "--inverted", f, "--image", &pic], 2, "cannot be used with"),
        (vec!["--model", &m, "--inverted", f, "--seed", "1"], 2, "cannot be used with"),
        (vec!["--model", &m, "--inverted", f, "--height", "32"], 2, "cannot be used with"),
        (
            vec!["--model", &m, "--inverted", f, "--scheduler", "euler"],
            2,
            "--scheduler euler cannot be used with --inverted",
        ),
        (vec!["--model", &m, "--inverted", f, "--swap", "truck=car"], 1, "truck"),
    ];
    for (args, code, needle) in cases {
        let mut a = args.clone();
        a.extend(["--out", o_s]);
        let o = run(&a);
        if code == 2 {
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
            assert!(String::from_utf8_lossy(&o.stderr).contains(needle), "{args:?}");
        } else {
            one_line_error(&o, code, needle);
        }
        assert!(!out.exists(), "{args:?}: the output folder was made");
    }

    // invert: an output inside the model folder, a picture too small, an edit flag; nothing is written.
    let inside = same.join("x.safetensors");
    let tiny = dir.join("tiny.png");
    image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9])).save(&tiny).unwrap();
    let new = dir.join("new.safetensors");
    let (in_s, tiny_s, new_s) = (inside.to_str().unwrap(), tiny.to_str().unwrap(), new.to_str().unwrap());
    let base = ["invert", "--model", same.to_str().unwrap(), "--prompt", PROMPT, "--steps", "2"];
    let o = run(&[&base[..], &["--image", &pic, "--out", in_s]].concat());
    one_line_error(&o, 1, "model folder");
    let o = run(&[&base[..], &["--image", tiny_s, "--out", new_s]].concat());
    one_line_error(&o, 1, "smaller than the model's latent grid");
    let o = run(&[&base[..], &["--image", &pic, "--out", new_s, "--swap", "red=blue"]].concat());
    assert_eq!(o.status.code(), Some(2));
    assert!(!inside.exists() && !new.exists(), "invert wrote a file it should not have");
    std::fs::remove_dir_all(&dir).unwrap();
}
