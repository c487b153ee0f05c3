//! Random weights for benchmarks on machines without the Python tools (the lent GPU has no diffusers): a
//! *skeleton* is a diffusers folder whose `*.safetensors` files hold only their header (a few hundred KB for SD
//! 1.5 instead of 2 GB), made here from a folder that `weights-tools/make_sd15_random.py` wrote; `fill` turns it
//! back into a complete folder with seeded random values of the same dtypes and shapes.
//!
//! Values follow make_sd15_random.py's rules, read from the key names: norm weights 1 + N(0, 0.05²), norm
//! biases N(0, 0.05²), token embedding N(0, 0.02²), position embedding N(0, 0.01²), other biases N(0, 0.02²),
//! other weights N(0, 1/fan_in) (fan_in = the product of all dimensions but the first). Normals come from the
//! crate's SplitMix64 + Box–Muller generator (`noise::gaussian`), per chunk of 2²⁰ values seeded by
//! (seed, tensor, chunk), so the output does not depend on the thread count. Not the same numbers as the Python
//! script (a different generator), the same distributions.
use std::path::Path;

use half::f16;
use serde_json::Value;

use crate::error::{Error, Result};

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::model(format!("{}: {e}", path.display()))
}

/// The header of a safetensors file: its JSON and its byte length (without the 8-byte length prefix).
fn read_header(path: &Path) -> Result<(Value, usize)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| io(path, e))?;
    let n = u64::from_le_bytes(len) as usize;
    if n > 100 << 20 {
        return Err(Error::model(format!("{}: header of {n} bytes", path.display())));
    }
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf).map_err(|e| io(path, e))?;
    let v: Value = serde_json::from_slice(&buf).map_err(|e| Error::model(format!("{}: {e}", path.display())))?;
    Ok((v, n))
}

/// Copies the diffusers folder `src` (its files and component folders) to `dst`, every `*.safetensors` cut to
/// its header. Returns the bytes written.
pub fn skeleton(src: &Path, dst: &Path) -> Result<u64> {
    copy_tree(src, dst, &mut |from, to| {
        if from.extension().is_some_and(|x| x == "safetensors") {
            let (_, n) = read_header(from)?;
            let bytes = std::fs::read(from).map_err(|e| io(from, e))?;
            std::fs::write(to, &bytes[..8 + n]).map_err(|e| io(to, e))?;
            Ok(8 + n as u64)
        } else {
            std::fs::copy(from, to).map_err(|e| io(from, e))
        }
    })
}

/// Makes the complete folder `dst` from the skeleton `src`: every `*.safetensors` gets random values for its
/// header's tensors (F16 or F32). Returns the bytes written.
pub fn fill(src: &Path, dst: &Path, seed: u64) -> Result<u64> {
    let mut file_index = 0u64;
    copy_tree(src, dst, &mut |from, to| {
        if from.extension().is_some_and(|x| x == "safetensors") {
            file_index += 1;
            fill_file(from, to, seed.wrapping_mul(1_000_003).wrapping_add(file_index))
        } else {
            std::fs::copy(from, to).map_err(|e| io(from, e))
        }
    })
}

fn copy_tree(src: &Path, dst: &Path, each: &mut dyn FnMut(&Path, &Path) -> Result<u64>) -> Result<u64> {
    std::fs::create_dir_all(dst).map_err(|e| io(dst, e))?;
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(|e| io(src, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| io(src, e))?;
    entries.sort();
    let mut total = 0;
    for p in entries {
        let to = dst.join(p.file_name().unwrap_or_default());
        if p.is_dir() {
            total += copy_tree(&p, &to, each)?;
        } else if p.is_file() {
            total += each(&p, &to)?;
        }
    }
    Ok(total)
}

/// The distribution of a tensor from its key and shape: (mean, standard deviation).
pub fn role(key: &str, shape: &[usize]) -> (f32, f32) {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let owner = key.rsplit('.').nth(1).unwrap_or("");
    let in_norm = owner.contains("norm");
    if key.contains("token_embedding") {
        (0.0, 0.02)
    } else if key.contains("position_embedding") {
        (0.0, 0.01)
    } else if shape.len() == 1 && leaf == "weight" && in_norm {
        (1.0, 0.05)
    } else if shape.len() == 1 && leaf == "bias" && in_norm {
        (0.0, 0.05)
    } else if leaf == "bias" {
        (0.0, 0.02)
    } else if shape.len() == 1 {
        (1.0, 0.05)
    } else {
        let fan_in: usize = shape[1..].iter().product();
        (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
    }
}

const CHUNK: usize = 1 << 20;

fn fill_file(from: &Path, to: &Path, seed: u64) -> Result<u64> {
    let (header, n) = read_header(from)?;
    let bad = |m: String| Error::model(format!("{}: {m}", from.display()));
    let obj = header.as_object().ok_or_else(|| bad("header is not an object".into()))?;
    // (key, dtype size, shape, start, end), in file order.
    let mut tensors = Vec::new();
    for (k, v) in obj {
        if k == "__metadata__" {
            continue;
        }
        let dtype = v["dtype"].as_str().unwrap_or("");
        let size = match dtype {
            "F16" => 2,
            "F32" => 4,
            d => return Err(bad(format!("{k}: dtype {d} (only F16 and F32 are filled)"))),
        };
        let shape: Vec<usize> = v["shape"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_u64()).map(|x| x as usize).collect())
            .unwrap_or_default();
        let off = v["data_offsets"].as_array().ok_or_else(|| bad(format!("{k}: no data_offsets")))?;
        let (a, b) = (off[0].as_u64().unwrap_or(0) as usize, off[1].as_u64().unwrap_or(0) as usize);
        if b - a != shape.iter().product::<usize>() * size {
            return Err(bad(format!("{k}: data_offsets do not match the shape")));
        }
        tensors.push((k.clone(), size, shape, a, b));
    }
    tensors.sort_by_key(|t| t.3);
    let data_len = tensors.last().map_or(0, |t| t.4);
    let mut data = vec![0u8; data_len];
    // Work items: (tensor index, chunk index, byte range in `data`).
    let mut slices: Vec<(usize, usize, &mut [u8])> = Vec::new();
    let mut rest: &mut [u8] = &mut data;
    let mut at = 0;
    for (ti, (_, size, _, a, b)) in tensors.iter().enumerate() {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(a - at);
        let (mut mine, tail) = tail.split_at_mut(b - a);
        rest = tail;
        at = *b;
        let mut ci = 0;
        while !mine.is_empty() {
            let len = (CHUNK * size).min(mine.len());
            let (c, r) = std::mem::take(&mut mine).split_at_mut(len);
            slices.push((ti, ci, c));
            mine = r;
            ci += 1;
        }
    }
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get()).min(32);
    let per = slices.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let mut rest = slices.as_mut_slice();
        while !rest.is_empty() {
            let len = per.min(rest.len());
            let (mine, r) = std::mem::take(&mut rest).split_at_mut(len);
            rest = r;
            let tensors = &tensors;
            s.spawn(move || {
                for (ti, ci, buf) in mine.iter_mut() {
                    let (key, size, shape, _, _) = &tensors[*ti];
                    let (mean, std) = role(key, shape);
                    let n = buf.len() / size;
                    let sd = seed.wrapping_mul(0x9E37_79B9).wrapping_add((*ti as u64) << 24).wrapping_add(*ci as u64);
                    let g = crate::noise::gaussian(sd, n);
                    if *size == 2 {
                        for (o, v) in buf.chunks_exact_mut(2).zip(g) {
                            o.copy_from_slice(&f16::from_f32(mean + std * v).to_le_bytes());
                        }
                    } else {
                        for (o, v) in buf.chunks_exact_mut(4).zip(g) {
                            o.copy_from_slice(&(mean + std * v).to_le_bytes());
                        }
                    }
                }
            });
        }
    });
    let bytes = std::fs::read(from).map_err(|e| io(from, e))?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(to).map_err(|e| io(to, e))?);
    use std::io::Write;
    out.write_all(&bytes[..8 + n]).map_err(|e| io(to, e))?;
    out.write_all(&data).map_err(|e| io(to, e))?;
    out.flush().map_err(|e| io(to, e))?;
    Ok((8 + n + data_len) as u64)
}
