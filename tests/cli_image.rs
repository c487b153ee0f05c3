//! Real-image editing from the command line on the tiny SD 1.x fixture (16 × 16 images, 8 × 8 latents):
//!
//! - `--image` writes input.png (the picture as the model saw it), source.png (the reconstruction), the edit and
//!   a grid input | source | edit; with the default direct inversion the source is the picture through the VAE
//!   (what `--save-raw` keeps as the inversion's x_0), and raw.safetensors holds the S + 1 inversion latents;
//! - a picture of another size and aspect is fitted (crop, stretch, pad) to the model's size;
//! - bad input is one line, the right exit status (2 for usage errors) and no output folder: a missing file, a
//!   file that is no picture, a truncated one, one smaller than the latent grid, `--image` with `--seed`,
//!   `--latents` or a non-DDIM scheduler, `--inversion` without `--image`, an output folder that is a file.
mod common;

use std::path::Path;

use common::cli::{fixtures, one_line_error, run, tmp};
use p2p_wgpu::weights::SafetensorsFile;

const PROMPT: &str = "a red bicycle on a hill";

fn model() -> String {
    fixtures().join("sd1-tiny").to_str().unwrap().to_string()
}

fn input() -> String {
    fixtures().join("inversion/input.png").to_str().unwrap().to_string()
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

#[test]
fn an_edit_of_a_picture_writes_input_reconstruction_and_edit() {
    let dir = tmp("image-edit");
    let out = dir.join("out");
    let m = model();
    let pic = input();
    let o = run(&[
        "--model",
        &m,
        "--image",
        &pic,
        "--prompt",
        PROMPT,
        "--swap",
        "bicycle=car",
        "--steps",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--save-raw",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["edit.png", "grid.png", "input.png", "raw.safetensors", "source.png"]);
    // The picture is already 16 × 16: input.png is it, byte for byte.
    assert_eq!(rgb(&out.join("input.png")), rgb(Path::new(&pic)));
    let grid = rgb(&out.join("grid.png"));
    assert!(grid.width() >= 3 * 16, "grid of input | source | edit, got {}x{}", grid.width(), grid.height());
    let raw = SafetensorsFile::open(&out.join("raw.safetensors")).unwrap();
    let inv = raw.read_f32("inversion_latents").unwrap();
    assert_eq!(inv.shape, [4, 4, 8, 8], "x_0 … x_3");
    // Direct inversion: the source row ends exactly at the encoded picture (x_0).
    let lat = raw.read_f32("latents").unwrap().data;
    assert_eq!(lat[..256], inv.data[..256]);
    // The edit moved the target.
    let (src, edit) = (rgb(&out.join("source.png")), rgb(&out.join("edit.png")));
    let diff: u64 = src.as_raw().iter().zip(edit.as_raw()).map(|(&a, &b)| (a as i64 - b as i64).unsigned_abs()).sum();
    assert!(diff > 16 * 16 * 3, "the edit changed almost nothing ({diff})");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pictures_of_other_sizes_are_fitted() {
    let dir = tmp("image-fit");
    std::fs::create_dir_all(&dir).unwrap();
    let wide = dir.join("wide.png");
    image::RgbImage::from_fn(48, 24, |x, _| image::Rgb([(x * 5) as u8, 100, 50])).save(&wide).unwrap();
    let m = model();
    for mode in ["crop", "stretch", "pad"] {
        let out = dir.join(mode);
        let o = run(&[
            "--model",
            &m,
            "--image",
            wide.to_str().unwrap(),
            "--prompt",
            PROMPT,
            "--steps",
            "2",
            "--resize",
            mode,
            "--inversion",
            "ddim",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{mode}: {}", String::from_utf8_lossy(&o.stderr));
        let seen = rgb(&out.join("input.png"));
        assert_eq!(seen.dimensions(), (16, 16), "{mode}");
        let corner = seen.get_pixel(0, 0)[0];
        match mode {
            // the centred square starts at x = 12 (red 60), then shrinks 24 → 16
            "crop" => assert!((50..=75).contains(&corner), "crop: {corner}"),
            "stretch" => assert!(corner < 15, "stretch keeps the left edge: {corner}"),
            _ => assert_eq!(seen.get_pixel(0, 0).0, [128, 128, 128], "pad: grey border"),
        }
        assert!(out.join("source.png").is_file() && !out.join("edit.png").exists(), "{mode}: reconstruction only");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_pictures_and_flag_combinations_are_refused() {
    let dir = tmp("image-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let m = model();
    let pic = input();
    let out = dir.join("out");
    let o_s = out.to_str().unwrap();
    let truncated = dir.join("cut.png");
    let bytes = std::fs::read(&pic).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let tiny = dir.join("tiny.png");
    image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9])).save(&tiny).unwrap();
    let text = fixtures().join("sd1-tiny/model_index.json");
    let missing = dir.join("nope.png");
    let a_file = dir.join("a-file");
    std::fs::write(&a_file, "x").unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--image", missing.to_str().unwrap()], 1, "nope.png"),
        (vec!["--image", text.to_str().unwrap()], 1, "not a PNG, JPEG or WebP image"),
        (vec!["--image", truncated.to_str().unwrap()], 1, "cannot decode"),
        (vec!["--image", tiny.to_str().unwrap()], 1, "smaller than the model's latent grid"),
        (vec!["--image", &pic, "--seed", "3"], 2, "cannot be used with"),
        (vec!["--image", &pic, "--scheduler", "pndm"], 2, "--scheduler pndm cannot be used with --image"),
        (vec!["--image", &pic, "--resize", "zoom"], 2, "invalid value"),
        (vec!["--inversion", "ddim"], 1, "need an --image"),
        (vec!["--image", &pic, "--inversion", "negative-prompt", "--negative-prompt", "blurry"], 1, "negative-prompt"),
    ];
    for (extra, code, needle) in cases {
        let mut args = vec!["--model", m.as_str(), "--prompt", PROMPT, "--steps", "2", "--out", o_s];
        args.extend(extra.iter().copied());
        let o = run(&args);
        if code == 2 {
            assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", String::from_utf8_lossy(&o.stderr));
            assert!(String::from_utf8_lossy(&o.stderr).contains(needle), "{extra:?}");
        } else {
            one_line_error(&o, code, needle);
        }
        assert!(!out.exists(), "{extra:?}: the output folder was made");
    }
    let o = run(&["--model", &m, "--prompt", PROMPT, "--image", &pic, "--out", a_file.to_str().unwrap()]);
    one_line_error(&o, 1, "a-file");
    assert_eq!(std::fs::read(&a_file).unwrap(), b"x");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The pixel cascade (tests/fixtures/cascade-tiny: 8 × 8 base, 32 × 32 output): with direct inversion both stages
/// are pinned, so the source row reproduces the fitted picture at full size (to the byte, up to one level of
/// rounding); the edit moves the target, and the three methods give different targets.
#[test]
fn the_cascade_reconstructs_the_picture_at_full_size() {
    let dir = tmp("image-cascade");
    let m = fixtures().join("cascade-tiny").to_str().unwrap().to_string();
    let pic = input();
    let mut edits = Vec::new();
    for method in ["direct", "negative-prompt", "ddim"] {
        let out = dir.join(method);
        let o = run(&[
            "--model",
            &m,
            "--image",
            &pic,
            "--prompt",
            "a red circle",
            "--swap",
            "red=blue",
            "--steps",
            "3",
            "--sr-steps",
            "2",
            "--inversion",
            method,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{method}: {}", String::from_utf8_lossy(&o.stderr));
        let (input, source, edit) =
            (rgb(&out.join("input.png")), rgb(&out.join("source.png")), rgb(&out.join("edit.png")));
        assert_eq!(input.dimensions(), (32, 32));
        let worst = input.as_raw().iter().zip(source.as_raw()).map(|(&a, &b)| (a as i32 - b as i32).abs()).max();
        if method == "direct" {
            assert!(worst <= Some(1), "{method}: the source differs from the input by up to {worst:?} levels");
        }
        let moved: i64 = source.as_raw().iter().zip(edit.as_raw()).map(|(&a, &b)| (a as i64 - b as i64).abs()).sum();
        assert!(moved > 32 * 32 * 3, "{method}: the edit changed almost nothing ({moved})");
        edits.push(edit);
    }
    for a in 0..3 {
        for b in a + 1..3 {
            assert_ne!(edits[a], edits[b], "methods {a} and {b} gave the same edit");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Real photographs (tests/fixtures/photos, from scikit-image's data module: weights-tools/make_photo_fixtures.py
/// has their sources and licences) through the tiny SD fixture, as a smoke test of every input path: JPEG, WebP and
/// grey PNG; square and wide pictures; crop, pad and stretch; square and non-square run sizes; each inversion
/// method. Each run succeeds, decodes the photograph at its own size, writes input.png at the run's size with the
/// picture's content (not flat, grey stays grey), and source and edit images that are neither flat nor black.
#[test]
fn photographs_go_through_every_input_path() {
    let dir = tmp("image-photos");
    let m = model();
    let photos = fixtures().join("photos");
    type Case<'a> = (&'a str, (u32, u32), &'a [&'a str], (u32, u32));
    let cases: [Case; 4] = [
        ("astronaut.jpg", (512, 512), &["--inversion", "direct"], (16, 16)),
        ("coffee.jpg", (600, 400), &["--resize", "pad", "--height", "16", "--width", "32"], (32, 16)),
        (
            "chelsea.webp",
            (451, 300),
            &["--resize", "stretch", "--height", "32", "--width", "16", "--inversion", "ddim"],
            (16, 32),
        ),
        ("camera.png", (512, 512), &["--height", "32", "--width", "32", "--inversion", "negative-prompt"], (32, 32)),
    ];
    for (name, size, extra, (w, h)) in cases {
        let path = photos.join(name);
        let pic = p2p_wgpu::input_image::decode(name, &std::fs::read(&path).unwrap()).unwrap();
        assert_eq!((pic.width, pic.height), size, "{name}");
        let out = dir.join(name);
        let p = path.to_str().unwrap();
        let mut args = vec![
            "--model",
            m.as_str(),
            "--image",
            p,
            "--prompt",
            "a photo of a cat",
            "--swap",
            "cat=dog",
            "--steps",
            "2",
        ];
        args.extend(extra.iter().copied());
        args.extend(["--out", out.to_str().unwrap()]);
        let o = run(&args);
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let input = rgb(&out.join("input.png"));
        assert_eq!(input.dimensions(), (w, h), "{name}: input.png size");
        let spread = |img: &image::RgbImage| {
            let (lo, hi) = img.as_raw().iter().fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            hi - lo
        };
        assert!(spread(&input) > 40, "{name}: input.png is flat");
        if name == "camera.png" {
            assert!(input.pixels().all(|p| p[0] == p[1] && p[1] == p[2]), "{name}: a grey picture must stay grey");
        }
        for f in ["source.png", "edit.png"] {
            let img = rgb(&out.join(f));
            assert_eq!(img.dimensions(), (w, h), "{name}: {f} size");
            assert!(spread(&img) > 0, "{name}: {f} is flat");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
