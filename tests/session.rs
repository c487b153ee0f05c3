//! The library API on the tiny SD 1.x fixture: a `Request` from JSON gives the same images as the command line,
//! unknown fields are refused by name, a `Progress` cancels after two steps with `Error::Cancelled` and nothing
//! written, and errors say whose fault they are.
use std::path::{Path, PathBuf};
use std::process::Command;

use p2p_wgpu::error::{Error, Fault};
use p2p_wgpu::gpu::GpuOptions;
use p2p_wgpu::pipelines::{Silent, Step};
use p2p_wgpu::session::{Files, Request, Session, SessionOptions};
use p2p_wgpu::weights::SafetensorsFile;

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd1-tiny")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("p2p-session-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn session() -> Session {
    let o = SessionOptions { gpu: GpuOptions::from_env(), ..SessionOptions::new(model()) };
    Session::open(&o).expect("open the fixture")
}

const JSON: &str = r#"{"prompt": "a red bicycle on a hill", "steps": 3, "seed": 5,
    "swap": ["bicycle=car"], "blend": "bicycle,car", "attention": true}"#;

/// A JSON request run through `Session::run` and the same edit through the CLI: identical images (bit for bit:
/// one code path, same adapter).
#[test]
fn json_request_matches_the_cli() {
    let req = Request::from_json(JSON).unwrap();
    let out = session().run(&req, &mut Silent).unwrap();
    assert_eq!(out.prompts, ["a red bicycle on a hill", "a red car on a hill"]);
    assert_eq!(out.seed, Some(5));
    assert!(out.attention.is_some() && out.blend_masks.is_some());

    let d = tmp("cli");
    let m = model();
    let args = ["--model", m.to_str().unwrap(), "--prompt", "a red bicycle on a hill", "--steps", "3", "--seed", "5"];
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--swap", "bicycle=car", "--blend", "bicycle,car", "--save-attention", "--save-raw"]);
    a.extend(["--out", d.to_str().unwrap()]);
    let o = Command::new(env!("CARGO_BIN_EXE_p2p-wgpu")).args(&a).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cli = SafetensorsFile::open(&d.join("raw.safetensors")).unwrap().read_f32("images").unwrap().data;
    assert_eq!(cli.len(), out.images.len());
    let worst = cli.iter().zip(&out.images).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert_eq!(worst, 0.0, "library and CLI images differ by up to {worst}");
    // The PNGs the library makes are the CLI's files.
    for (name, bytes) in out.files(Files { raw: false }).unwrap() {
        assert_eq!(std::fs::read(d.join(&name)).unwrap(), bytes, "{name}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn unknown_fields_and_bad_values_are_user_errors() {
    let e = Request::from_json(r#"{"prompt": "x", "stpes": 3}"#).unwrap_err();
    assert_eq!(e.fault(), Fault::User);
    assert!(e.to_string().contains("stpes"), "{e}");
    let mut r = Request::new("a red bicycle");
    r.steps = Some(0);
    let e = session().run(&r, &mut Silent).unwrap_err();
    assert_eq!(e.fault(), Fault::User, "{e}");
    assert!(e.to_string().contains("--steps"), "{e}");
    let mut r = Request::new("a red bicycle");
    r.swap = vec!["truck=car".into()];
    let e = session().run(&r, &mut Silent).unwrap_err();
    assert_eq!(e.fault(), Fault::User, "{e}");
    assert!(e.to_string().contains("truck"), "{e}");
    // A model folder that does not exist is the user's to fix too.
    let e = Session::open(&SessionOptions::new("/no/such/model")).err().expect("no such model");
    assert_eq!(e.fault(), Fault::User, "{e}");
}

/// A progress that answers false at the second step stops the run there: `Error::Cancelled`, exactly two steps
/// seen, and nothing written into the output folder.
#[test]
fn progress_cancels_after_two_steps() {
    let s = session();
    let req = Request::from_json(JSON).unwrap();
    let mut seen = Vec::new();
    let mut cancel = |st: &Step| {
        seen.push((st.stage.to_string(), st.step, st.total));
        st.step < 2
    };
    let d = tmp("cancel");
    std::fs::create_dir_all(&d).unwrap();
    let r = s.run(&req, &mut cancel).and_then(|o| o.write(&d, Files::default()));
    assert!(matches!(r, Err(Error::Cancelled)), "{:?}", r.err());
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].1, 2);
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "a cancelled run wrote files");
    // The session is still usable after a cancel.
    let out = s.run(&Request { steps: Some(2), ..Request::new("a red bicycle") }, &mut Silent).unwrap();
    assert_eq!(out.prompts.len(), 1);
    std::fs::remove_dir_all(&d).unwrap();
}
