//! A bounded mutation fuzzer for the two readers that take files from users: the safetensors header parser (and
//! the file reader around it) and the config readers (UNet, VAE, text encoder, scheduler, `model_index.json`).
//! Seeded random mutations (byte flips, insertions, deletions, chunk copies, truncation, and numbers replaced by
//! huge, negative, fractional or non-number values) of the tiny fixtures' real files; every input must give `Ok`
//! or `Err`, never a panic, and within a time bound (a config value that made the loader run for minutes was one
//! of the defects). Each case is a deterministic function of its index, so a failure message names the case to
//! replay; inputs that ever crashed are kept in [`regressions`].
//!
//! Budget: `P2P_WGPU_FUZZ_CASES` cases per target (default 1500), and at most 25 s per target in any case.
mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Rng;
use common::cli::{copy_dir, fixtures, tmp};
use p2p_wgpu::models::clip::ClipTextConfig;
use p2p_wgpu::models::unet::UNetConfig;
use p2p_wgpu::models::vae::VaeConfig;

use p2p_wgpu::schedulers::SchedulerConfig;
use p2p_wgpu::weights::safetensors_file::{parse_header, parse_json_strict};
use p2p_wgpu::weights::{ModelIndex, SafetensorsFile};

const TIME_PER_TARGET: Duration = Duration::from_secs(25);
/// One input may take at most this long (the quadratic missing-tensor check took minutes).
const TIME_PER_CASE: Duration = Duration::from_secs(5);

fn cases() -> usize {
    std::env::var("P2P_WGPU_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1500)
}

/// Values that have broken parsers elsewhere: sizes at and past every integer width, negative and fractional
/// numbers, exponents, and non-numbers.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1e308",
    "1e999",
    "-0",
    "0.5",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "100000",
    "null",
    "\"8\"",
    "[]",
    "{}",
    "true",
];

/// One mutation of `seed` chosen by `rng`.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        if v.is_empty() {
            v.push(b'{');
        }
        let at = rng.below(v.len() as u64) as usize;
        match rng.below(7) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v.insert(at, rng.below(256) as u8),
            2 => {
                let n = (1 + rng.below(16) as usize).min(v.len() - at);
                v.drain(at..at + n);
            }
            3 => {
                let n = (1 + rng.below(64) as usize).min(v.len() - at);
                let chunk = v[at..at + n].to_vec();
                let to = rng.below(v.len() as u64) as usize;
                v.splice(to..to, chunk);
            }
            4 => v.truncate(at),
            _ => {
                // Replace the number at or after `at` by an awkward value.
                if let Some(start) = v[at..].iter().position(u8::is_ascii_digit).map(|p| p + at) {
                    let end = v[start..].iter().position(|b| !b.is_ascii_digit()).map_or(v.len(), |p| p + start);
                    let with = NUMBERS[rng.below(NUMBERS.len() as u64) as usize].as_bytes();
                    v.splice(start..end, with.iter().copied());
                }
            }
        }
    }
    v
}

/// Runs `f` on `cases()` mutations of each seed, failing on a panic or a slow case.
fn fuzz(target: &str, seeds: &[Vec<u8>], mut f: impl FnMut(&[u8])) {
    let t0 = Instant::now();
    let mut done = 0;
    for case in 0..cases() {
        if t0.elapsed() > TIME_PER_TARGET {
            break;
        }
        let mut rng = Rng::new(0x5eed_0000 + case as u64);
        let seed = &seeds[case % seeds.len()];
        let input = mutate(seed, &mut rng);
        let t = Instant::now();
        if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
            panic!("{target}: case {case} panicked on input {:?}", String::from_utf8_lossy(&input));
        }
        assert!(t.elapsed() < TIME_PER_CASE, "{target}: case {case} took {:?}", t.elapsed());
        done += 1;
    }
    eprintln!("{target}: {done} cases in {:.1} s", t0.elapsed().as_secs_f64());
    assert!(done >= 100.min(cases()), "{target}: only {done} cases ran");
}

/// The header JSON of a safetensors file, and its data length.
fn header_of(path: &Path) -> (Vec<u8>, u64) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (bytes[8..8 + n].to_vec(), (bytes.len() - 8 - n) as u64)
}

fn weight_files() -> Vec<PathBuf> {
    let m = fixtures().join("sd1-tiny");
    [
        "text_encoder/model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    .iter()
    .map(|p| m.join(p))
    .collect()
}

#[test]
fn safetensors_headers() {
    let seeds: Vec<(Vec<u8>, u64)> = weight_files().iter().map(|p| header_of(p)).collect();
    let jsons: Vec<Vec<u8>> = seeds.iter().map(|(j, _)| j.clone()).collect();
    let mut k = 0;
    fuzz("safetensors header", &jsons, |json| {
        let data_len = seeds[k % seeds.len()].1;
        k += 1;
        let _ = parse_header(json, data_len);
    });
}

/// Whole files: a mutated header (and length prefix) before the real data, opened and every tensor read.
#[test]
fn safetensors_files() {
    let dir = tmp("fuzz-st");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("w.safetensors");
    let originals: Vec<Vec<u8>> = weight_files().iter().map(|p| std::fs::read(p).unwrap()).collect();
    // The text encoder file only: the smallest, so that each case is cheap.
    let seed = originals.iter().min_by_key(|b| b.len()).unwrap().clone();
    let n = u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
    let (prefix, data) = (seed[..8 + n].to_vec(), seed[8 + n..].to_vec());
    fuzz("safetensors file", &[prefix], |head| {
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(&data);
        std::fs::write(&file, &bytes).unwrap();
        if let Ok(f) = SafetensorsFile::open(&file) {
            let names: Vec<String> = f.header().tensors.keys().cloned().collect();
            for name in names {
                let _ = f.read_f32(&name);
            }
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_files() {
    let dir = tmp("fuzz-cfg");
    let m = dir.join("model");
    copy_dir(&fixtures().join("sd1-tiny"), &m);
    let files = [
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "scheduler/scheduler_config.json",
        "model_index.json",
    ];
    for (k, rel) in files.iter().enumerate() {
        let path = m.join(rel);
        let original = std::fs::read(&path).unwrap();
        let read = |bytes: &[u8]| -> bool {
            std::fs::write(&path, bytes).unwrap();
            match k {
                0 => UNetConfig::read(&m.join("unet")).is_ok(),
                1 => VaeConfig::read(&m.join("vae")).is_ok(),
                2 => ClipTextConfig::read(&m.join("text_encoder")).is_ok(),
                3 => SchedulerConfig::read(&m.join("scheduler")).is_ok(),
                _ => {
                    let text = String::from_utf8_lossy(bytes);
                    parse_json_strict(&text).map(ModelIndex::parse).is_ok_and(|r| r.is_ok())
                }
            }
        };
        // The unmutated file reads (so that the mutations test the reader, not a wrong path).
        assert!(read(&original), "{rel}: the fixture itself does not read");
        fuzz(rel, std::slice::from_ref(&original), |bytes| {
            read(bytes);
        });
        std::fs::write(&path, &original).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Inputs that once crashed or hung a reader, kept (none found so far by the fuzzer above; these are the
/// hand-found defects of issue 15 that were of the same kind).
#[test]
fn regressions() {
    let dir = tmp("fuzz-regress");
    let m = dir.join("model");
    copy_dir(&fixtures().join("sd1-tiny"), &m);
    let unet = m.join("unet/config.json");
    let text = std::fs::read_to_string(&unet).unwrap();
    let t = Instant::now();
    std::fs::write(&unet, text.replace("\"layers_per_block\": 2", "\"layers_per_block\": 100000")).unwrap();
    let Err(e) = UNetConfig::read(&m.join("unet")) else { panic!("layers_per_block 100000 must be refused") };
    let e = e.to_string();
    assert!(e.contains("layers_per_block") && e.contains("limit"), "{e}");
    assert!(t.elapsed() < TIME_PER_CASE);
    std::fs::remove_dir_all(&dir).unwrap();
}
