//! Schedulers against diffusers: timestep lists (recorded in the fixtures, and PNDM's S+1 list for S = 50 from
//! DESIGN.md §5), and every single step replayed from diffusers' own UNet outputs of the 4-step fixture runs
//! (epsilon PNDM and DDIM on SD 1.x, v-prediction DDIM on SD 2.x): relative L2 ≤ 1e-5 per step.
mod common;

use std::path::{Path, PathBuf};

use common::rel_l2;
use p2p_wgpu::schedulers::{Kind, SchedulerConfig, build};
use p2p_wgpu::weights::SafetensorsFile;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn config(model: &str) -> SchedulerConfig {
    SchedulerConfig::read(&fixtures().join(model).join("scheduler")).unwrap()
}

#[test]
fn timestep_lists() {
    let c = config("sd1-tiny");
    let pndm = build(&c, Some(Kind::Pndm), 50).unwrap();
    let t = pndm.timesteps();
    assert_eq!(t.len(), 51);
    assert_eq!(&t[..4], &[981, 961, 961, 941]);
    assert_eq!(*t.last().unwrap(), 1);
    let ddim = build(&c, Some(Kind::Ddim), 50).unwrap();
    assert_eq!(ddim.timesteps().len(), 50);
    assert_eq!(&ddim.timesteps()[..2], &[981, 961]);
    assert_eq!(build(&c, Some(Kind::Pndm), 4).unwrap().timesteps(), &[751, 501, 501, 251, 1]);
    assert_eq!(build(&c, Some(Kind::Ddim), 4).unwrap().timesteps(), &[751, 501, 251, 1]);
    assert_eq!(build(&c, Some(Kind::Pndm), 1).unwrap().timesteps(), &[1]);
    assert!(build(&c, Some(Kind::Ddim), 0).is_err());
    assert!(build(&c, Some(Kind::Ddim), 1001).is_err());
}

fn replay(model: &str, kind: Kind, file: &str) {
    let f = SafetensorsFile::open(&fixtures().join("reference").join(file)).unwrap();
    let get = |n: &str| f.read_f32(n).unwrap().data;
    let (outs, steps, init) = (get("unet_out"), get("step_latents"), get("latents"));
    let n = init.len();
    let mut s = build(&config(model), Some(kind), 4).unwrap();
    let evals = s.timesteps().len();
    assert_eq!(outs.len(), evals * 2 * n);
    let mut x = init.clone();
    for i in 0..evals {
        let (u, c) = (&outs[i * 2 * n..i * 2 * n + n], &outs[i * 2 * n + n..(i + 1) * 2 * n]);
        let guided: Vec<f32> = u.iter().zip(c).map(|(&u, &c)| u + 7.5 * (c - u)).collect();
        // Each step from diffusers' own previous latents, so errors cannot accumulate.
        let prev = if i == 0 { init.clone() } else { steps[(i - 1) * n..i * n].to_vec() };
        x = s.step(i, &guided, &prev).unwrap();
        let want: Vec<f64> = steps[i * n..(i + 1) * n].iter().map(|&v| v as f64).collect();
        let e = rel_l2(&x, &want);
        assert!(e < 1e-5, "{model} {kind:?} step {i}: relative L2 {e:.2e}");
    }
    assert!(!x.is_empty());
}

#[test]
fn single_steps_match_diffusers() {
    replay("sd1-tiny", Kind::Pndm, "sd1-tiny_t2i_pndm4.safetensors");
    replay("sd1-tiny", Kind::Ddim, "sd1-tiny_t2i_ddim4.safetensors");
    replay("sd2-tiny", Kind::Ddim, "sd2-tiny_t2i_ddim4.safetensors");
}
