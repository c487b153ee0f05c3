//! Weight files (no GPU): the strict safetensors reader on valid files written by the `safetensors` crate and on
//! hand-made malformed ones, the component `Loader` (variants, sharded sets, pickle refusal, prefix stripping,
//! ignored buffers, the one-line `finish` report) and the diffusers folder helpers.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use half::{bf16, f16};
use p2p_wgpu::weights::folder::{self, DiffusersFolder, ModelIndex};
use p2p_wgpu::weights::{FileDType, HostTensor, Loader, SafetensorsFile};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("p2p-wgpu-weights-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn sub(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
struct T {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32t(name: &str, shape: &[usize], vals: &[f32]) -> T {
    T {
        name: name.into(),
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        bytes: vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn f16t(name: &str, shape: &[usize], vals: &[f32]) -> T {
    let bytes = vals.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
    T { name: name.into(), dtype: Dtype::F16, shape: shape.to_vec(), bytes }
}

fn bf16t(name: &str, shape: &[usize], vals: &[f32]) -> T {
    let bytes = vals.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect();
    T { name: name.into(), dtype: Dtype::BF16, shape: shape.to_vec(), bytes }
}

fn i64t(name: &str, vals: &[i64]) -> T {
    T {
        name: name.into(),
        dtype: Dtype::I64,
        shape: vec![vals.len()],
        bytes: vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Zeros of `shape` in f32.
fn zeros(name: &str, shape: &[usize]) -> T {
    f32t(name, shape, &vec![0.0; shape.iter().product()])
}

/// Writes a valid safetensors file with the `safetensors` crate's serializer.
fn write_st(path: &Path, tensors: &[T]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|t| (t.name.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap()))
        .collect();
    let mut meta = HashMap::new();
    meta.insert("format".to_owned(), "pt".to_owned());
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// A hand-made file: `len` as the header length, then `header`, then `data`.
fn raw_with_len(len: u64, header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    raw_with_len(header.len() as u64, header, data)
}

/// Opens a hand-made file and returns the error text, which must name the file.
fn open_err(tag: &str, bytes: &[u8]) -> String {
    let dir = TempDir::new(tag);
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let e = SafetensorsFile::open(&path).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()), "error does not name the file: {e}");
    assert!(!e.contains('\n'), "error is not one line: {e}");
    // The loader reports the same problem for the folder.
    let le = Loader::open(dir.path(), None).unwrap_err().to_string();
    assert_eq!(le, e);
    e
}

fn assert_contains(e: &str, parts: &[&str]) {
    for p in parts {
        assert!(e.contains(p), "expected {p:?} in: {e}");
    }
}

#[test]
fn round_trip_f32_f16_bf16_and_metadata() {
    let dir = TempDir::new("roundtrip");
    let vals = [1.5f32, -2.0, 0.333_333, 65504.0, 1e-3, 0.0];
    let path = dir.path().join("model.safetensors");
    write_st(
        &path,
        &[
            f32t("a.f32", &[2, 3], &vals),
            f16t("b.f16", &[3, 2], &vals),
            bf16t("c.bf16", &[6], &vals),
            i64t("pos", &[0, 1, 2]),
        ],
    );
    let f = SafetensorsFile::open(&path).unwrap();
    assert_eq!(f.metadata().get("format").map(String::as_str), Some("pt"));
    assert_eq!(f.info("b.f16").unwrap().dtype, FileDType::F16);
    assert_eq!(f.info("pos").unwrap().dtype, FileDType::I64);
    assert_eq!(f.read_f32("a.f32").unwrap(), HostTensor { shape: vec![2, 3], data: vals.to_vec() });
    let want16: Vec<f32> = vals.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    assert_eq!(f.read_f32("b.f16").unwrap(), HostTensor { shape: vec![3, 2], data: want16.clone() });
    let want_bf: Vec<f32> = vals.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
    assert_eq!(f.read_f32("c.bf16").unwrap().data, want_bf);
    assert_eq!(f.read_bytes("pos").unwrap(), [0i64, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    let e = f.read_f32("pos").unwrap_err().to_string();
    assert_contains(&e, &["model.safetensors", "\"pos\"", "I64", "not a float tensor"]);

    let mut l = Loader::open(dir.path(), None).unwrap();
    assert_eq!(l.take("a.f32", &[2, 3]).unwrap().data, vals);
    assert_eq!(l.take("b.f16", &[3, 2]).unwrap().data, want16);
    assert_eq!(l.take("c.bf16", &[6]).unwrap().data, want_bf);
    l.ignore("pos");
    l.finish().unwrap();
}

#[test]
fn empty_and_zero_size_tensors_are_valid() {
    let dir = TempDir::new("zero");
    let path = dir.path().join("model.safetensors");
    write_st(&path, &[f32t("empty", &[0, 4], &[]), f32t("one", &[1], &[7.0])]);
    let mut l = Loader::open(dir.path(), None).unwrap();
    assert_eq!(l.take("empty", &[0, 4]).unwrap().data.len(), 0);
    assert_eq!(l.take("one", &[1]).unwrap().data, [7.0]);
    l.finish().unwrap();
    std::fs::write(&path, raw("{}", &[])).unwrap();
    assert!(SafetensorsFile::open(&path).unwrap().tensors().is_empty());
}

const A4: &str = r#""a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;

#[test]
fn truncated_file() {
    let e = open_err("trunc", &[1, 0, 0]);
    assert_contains(&e, &["truncated", "3 bytes"]);
}

#[test]
fn header_length_beyond_file() {
    let hdr = format!("{{{A4}}}");
    let e = open_err("beyond", &raw_with_len(1000, &hdr, &[0; 4]));
    assert_contains(&e, &["header length 1000", "runs past the end of the file"]);
}

#[test]
fn header_length_over_limit() {
    let e = open_err("huge", &raw_with_len(1 << 40, "{}", &[]));
    assert_contains(&e, &["header length 1099511627776", "exceeds", "limit"]);
}

#[test]
fn bad_json() {
    let e = open_err("badjson", &raw(r#"{"a":{"dtype":"F32","#, &[]));
    assert_contains(&e, &["header is not valid JSON"]);
    let e = open_err("notobj", &raw(r#"[1, 2, 3]"#, &[]));
    assert_contains(&e, &["header is not a JSON object"]);
    let e = open_err("notutf8", &[&4u64.to_le_bytes()[..], b"{\"\xff\"}"].concat());
    assert_contains(&e, &["not UTF-8"]);
}

#[test]
fn duplicate_key() {
    let hdr = format!("{{{A4},{A4}}}");
    let e = open_err("dup", &raw(&hdr, &[0; 4]));
    assert_contains(&e, &["duplicate key \"a\""]);
}

#[test]
fn offsets_out_of_range() {
    let hdr = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let e = open_err("range", &raw(hdr, &[0; 4]));
    assert_contains(&e, &["tensor \"a\"", "[0, 8]", "out of range", "4 bytes"]);
}

#[test]
fn overlapping_tensors() {
    let hdr = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let e = open_err("overlap", &raw(hdr, &[0; 12]));
    assert_contains(&e, &["tensor \"b\"", "overlaps tensor \"a\""]);
}

#[test]
fn hole_between_and_after_tensors() {
    let hdr = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let e = open_err("hole", &raw(hdr, &[0; 12]));
    assert_contains(&e, &["hole", "[4, 8)", "\"b\""]);
    let hdr = format!("{{{A4}}}");
    let e = open_err("tail", &raw(&hdr, &[0; 8]));
    assert_contains(&e, &["hole", "last 4 bytes"]);
}

#[test]
fn size_mismatch() {
    let hdr = r#"{"w":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}"#;
    let e = open_err("size", &raw(hdr, &[0; 8]));
    assert_contains(&e, &["tensor \"w\"", "size mismatch", "[3]", "F16", "6 bytes", "8 bytes"]);
}

#[test]
fn unknown_dtype() {
    let hdr = r#"{"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#;
    let e = open_err("f64", &raw(hdr, &[0; 8]));
    assert_contains(&e, &["tensor \"w\"", "unsupported dtype F64"]);
    let hdr = r#"{"w":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,8]}}"#;
    let e = open_err("q4", &raw(hdr, &[0; 8]));
    assert_contains(&e, &["tensor \"w\"", "unsupported dtype Q4_K"]);
}

#[test]
fn malformed_entries_and_metadata() {
    let e = open_err("nooff", &raw(r#"{"w":{"dtype":"F32","shape":[1]}}"#, &[0; 4]));
    assert_contains(&e, &["tensor \"w\"", "no data_offsets"]);
    let e = open_err("meta", &raw(r#"{"__metadata__":{"format":["pt"]}}"#, &[]));
    assert_contains(&e, &["__metadata__", "\"format\"", "not a string"]);
    let e = open_err("shape", &raw(r#"{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, &[0; 4]));
    assert_contains(&e, &["tensor \"w\"", "shape"]);
}

#[test]
fn missing_and_empty_folders() {
    let dir = TempDir::new("nofolder");
    let missing = dir.path().join("unet");
    let e = Loader::open(&missing, None).unwrap_err().to_string();
    assert_contains(&e, &[&missing.display().to_string(), "no such folder"]);
    let empty = dir.sub("vae");
    std::fs::write(empty.join("config.json"), "{}").unwrap();
    let e = Loader::open(&empty, None).unwrap_err().to_string();
    assert_contains(&e, &["vae/", "no weight files"]);
}

#[test]
fn variant_selection() {
    let dir = TempDir::new("variant");
    let unet = dir.sub("unet");
    write_st(&unet.join("diffusion_pytorch_model.safetensors"), &[f32t("w", &[2], &[1.0, 1.0])]);
    write_st(&unet.join("diffusion_pytorch_model.fp16.safetensors"), &[f16t("w", &[2], &[2.0, 2.0])]);
    write_st(&unet.join("diffusion_pytorch_model.non_ema.safetensors"), &[f32t("w", &[2], &[3.0, 3.0])]);

    let mut l = Loader::open(&unet, None).unwrap();
    assert_eq!(l.take("w", &[2]).unwrap().data, [1.0, 1.0]);
    l.finish().unwrap();
    let mut l = Loader::open(&unet, Some("fp16")).unwrap();
    assert_eq!(l.files().len(), 1);
    assert_eq!(l.take("w", &[2]).unwrap().data, [2.0, 2.0]);
    l.finish().unwrap();
    let e = Loader::open(&unet, Some("bf16")).unwrap_err().to_string();
    assert_contains(&e, &["unet/", "no bf16 variant", "fp16", "non_ema", "plain"]);

    // Without plain files, a single variant is used; several are an error naming them.
    std::fs::remove_file(unet.join("diffusion_pytorch_model.safetensors")).unwrap();
    let e = Loader::open(&unet, None).unwrap_err().to_string();
    assert_contains(&e, &["no plain", "fp16", "non_ema"]);
    std::fs::remove_file(unet.join("diffusion_pytorch_model.non_ema.safetensors")).unwrap();
    let mut l = Loader::open(&unet, None).unwrap();
    assert_eq!(l.take("w", &[2]).unwrap().data, [2.0, 2.0]);
    l.finish().unwrap();

    // transformers naming.
    let te = dir.sub("text_encoder");
    write_st(&te.join("model.safetensors"), &[f32t("x", &[1], &[5.0])]);
    write_st(&te.join("model.fp16.safetensors"), &[f16t("x", &[1], &[6.0])]);
    assert_eq!(Loader::open(&te, Some("fp16")).unwrap().take("x", &[1]).unwrap().data, [6.0]);
    assert_eq!(Loader::open(&te, None).unwrap().take("x", &[1]).unwrap().data, [5.0]);
}

fn write_index(path: &Path, map: &[(&str, &str)]) {
    let wm: serde_json::Map<String, serde_json::Value> =
        map.iter().map(|(k, f)| (k.to_string(), serde_json::Value::String(f.to_string()))).collect();
    let v = serde_json::json!({"metadata": {"total_size": 16}, "weight_map": wm});
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn sharded_index() {
    let dir = TempDir::new("sharded");
    let unet = dir.sub("unet");
    let s1 = "diffusion_pytorch_model-00001-of-00002.safetensors";
    let s2 = "diffusion_pytorch_model-00002-of-00002.safetensors";
    write_st(&unet.join(s1), &[f32t("a", &[1], &[1.0]), f32t("b", &[1], &[2.0])]);
    write_st(&unet.join(s2), &[f32t("c", &[1], &[3.0])]);
    let index = unet.join("diffusion_pytorch_model.safetensors.index.json");
    write_index(&index, &[("a", s1), ("b", s1), ("c", s2)]);
    // A variant's shards and index, diffusers style.
    let v1 = "diffusion_pytorch_model.fp16-00001-of-00002.safetensors";
    let v2 = "diffusion_pytorch_model.fp16-00002-of-00002.safetensors";
    write_st(&unet.join(v1), &[f16t("a", &[1], &[10.0])]);
    write_st(&unet.join(v2), &[f16t("b", &[1], &[20.0]), f16t("c", &[1], &[30.0])]);
    write_index(&unet.join("diffusion_pytorch_model.safetensors.index.fp16.json"), &[("a", v1), ("b", v2), ("c", v2)]);

    let mut l = Loader::open(&unet, None).unwrap();
    assert_eq!(l.files().len(), 2);
    for (k, v) in [("a", 1.0), ("b", 2.0), ("c", 3.0)] {
        assert_eq!(l.take(k, &[1]).unwrap().data, [v]);
    }
    l.finish().unwrap();
    let mut l = Loader::open(&unet, Some("fp16")).unwrap();
    for (k, v) in [("a", 10.0), ("b", 20.0), ("c", 30.0)] {
        assert_eq!(l.take(k, &[1]).unwrap().data, [v]);
    }
    l.finish().unwrap();

    // The index names a file that does not exist.
    write_index(&index, &[("a", s1), ("b", s1), ("c", "diffusion_pytorch_model-00003-of-00002.safetensors")]);
    let e = Loader::open(&unet, None).unwrap_err().to_string();
    assert_contains(&e, &["index.json", "names diffusion_pytorch_model-00003-of-00002.safetensors", "not a file"]);
    // The index puts a key in the wrong file.
    write_index(&index, &[("a", s1), ("b", s2), ("c", s2)]);
    let e = Loader::open(&unet, None).unwrap_err().to_string();
    assert_contains(&e, &["index.json", "tensor \"b\"", s2, "no such tensor"]);
    // A shard holds a key the index does not list.
    write_index(&index, &[("a", s1), ("c", s2)]);
    let e = Loader::open(&unet, None).unwrap_err().to_string();
    assert_contains(&e, &["index.json", "does not list tensor \"b\"", s1]);
    // An index that is not an index.
    std::fs::write(&index, r#"{"metadata": {}}"#).unwrap();
    let e = Loader::open(&unet, None).unwrap_err().to_string();
    assert_contains(&e, &["index.json", "weight_map"]);
    // An index path that escapes the folder.
    write_index(&index, &[("a", "../x.safetensors")]);
    let e = Loader::open(&unet, None).unwrap_err().to_string();
    assert_contains(&e, &["names ../x.safetensors", "not a file"]);
}

#[test]
fn same_key_in_two_files() {
    let dir = TempDir::new("twofiles");
    write_st(&dir.path().join("a.safetensors"), &[f32t("w", &[1], &[1.0])]);
    write_st(&dir.path().join("b.safetensors"), &[f32t("w", &[1], &[2.0])]);
    let e = Loader::open(dir.path(), None).unwrap_err().to_string();
    assert_contains(&e, &["tensor \"w\" is in two files", "a.safetensors", "b.safetensors"]);
}

#[test]
fn pickles_are_refused() {
    let dir = TempDir::new("pickle");
    let unet = dir.sub("unet");
    std::fs::write(unet.join("diffusion_pytorch_model.bin"), b"\x80\x02not really a pickle").unwrap();
    std::fs::write(unet.join("config.json"), "{}").unwrap();
    for variant in [None, Some("fp16")] {
        let e = Loader::open(&unet, variant).unwrap_err().to_string();
        assert_contains(
            &e,
            &["diffusion_pytorch_model.bin", "never unpickled", "save_pretrained", "safe_serialization=True", ".ckpt"],
        );
        assert!(!e.contains('\n'), "{e}");
    }
    let ckpt = dir.sub("ckpt");
    std::fs::write(ckpt.join("v1-5-pruned-emaonly.ckpt"), b"PK").unwrap();
    let e = Loader::open(&ckpt, None).unwrap_err().to_string();
    assert_contains(&e, &["v1-5-pruned-emaonly.ckpt", "convert"]);
    // Next to safetensors, pickles are ignored.
    write_st(&unet.join("diffusion_pytorch_model.safetensors"), &[f32t("w", &[1], &[1.0])]);
    let mut l = Loader::open(&unet, None).unwrap();
    assert!(l.take("w", &[1]).is_some());
    l.finish().unwrap();
}

#[test]
fn finish_names_missing_misshapen_unexpected() {
    let dir = TempDir::new("finish");
    let unet = dir.sub("unet");
    write_st(
        &unet.join("diffusion_pytorch_model.safetensors"),
        &[zeros("c.weight", &[4, 3]), zeros("d.weight", &[2]), zeros("ok", &[1])],
    );
    let mut l = Loader::open(&unet, None).unwrap();
    assert!(l.take("a.weight", &[1]).is_none());
    assert!(l.take("b.bias", &[1]).is_none());
    assert!(l.take("c.weight", &[4, 4]).is_none());
    assert!(l.take("ok", &[1]).is_some());
    assert_eq!(l.shape("c.weight"), Some(&[4usize, 3][..]));
    let e = l.finish().unwrap_err().to_string();
    let want = format!(
        "{}/: 2 missing (a.weight, b.bias), 1 misshapen (c.weight is [4, 3], expected [4, 4]), 1 unexpected (d.weight)",
        unet.display()
    );
    assert_eq!(e, want);
}

#[test]
fn finish_truncates_long_lists() {
    let dir = TempDir::new("many");
    let ts: Vec<T> = (0..20).map(|i| zeros(&format!("t{i:02}"), &[1])).collect();
    write_st(&dir.path().join("model.safetensors"), &ts);
    let mut l = Loader::open(dir.path(), None).unwrap();
    for i in 0..12 {
        l.take(&format!("m{i:02}"), &[1]);
    }
    let e = l.finish().unwrap_err().to_string();
    assert!(!e.contains('\n'), "{e}");
    assert_contains(&e, &["12 missing (m00, m01", "m07 and 4 more)", "20 unexpected (t00", "t07 and 12 more)"]);
}

#[test]
fn strip_prefix_text_model() {
    let dir = TempDir::new("prefix");
    let te = dir.sub("text_encoder");
    write_st(
        &te.join("model.safetensors"),
        &[
            zeros("text_model.embeddings.token_embedding.weight", &[10, 4]),
            zeros("text_model.final_layer_norm.weight", &[4]),
            i64t("text_model.embeddings.position_ids", &[0, 1, 2]),
        ],
    );
    let mut l = Loader::open(&te, None).unwrap();
    assert!(l.has("text_model.final_layer_norm.weight"));
    l.strip_prefix("text_model.");
    assert!(!l.has("text_model.final_layer_norm.weight"));
    assert!(l.has("final_layer_norm.weight"));
    assert_eq!(l.dtype("embeddings.position_ids"), Some(FileDType::I64));
    assert_eq!(l.take("embeddings.token_embedding.weight", &[10, 4]).unwrap().data.len(), 40);
    assert!(l.take("final_layer_norm.weight", &[4]).is_some());
    l.ignore("embeddings.position_ids");
    l.ignore("not.there");
    l.finish().unwrap();

    // Stripping onto an existing key is reported.
    let clash = dir.sub("clash");
    write_st(&clash.join("model.safetensors"), &[zeros("text_model.w", &[1]), zeros("w", &[1])]);
    let mut l = Loader::open(&clash, None).unwrap();
    l.strip_prefix("text_model.");
    l.take("w", &[1]);
    l.ignore("text_model.w");
    let e = l.finish().unwrap_err().to_string();
    assert_contains(&e, &["both text_model.w and w exist"]);
}

#[test]
fn ignore_and_integer_tensors() {
    let dir = TempDir::new("ignore");
    write_st(&dir.path().join("model.safetensors"), &[i64t("position_ids", &[0, 1]), zeros("w", &[1])]);
    // Not ignored: unexpected.
    let mut l = Loader::open(dir.path(), None).unwrap();
    l.take("w", &[1]);
    assert_contains(&l.finish().unwrap_err().to_string(), &["1 unexpected (position_ids)"]);
    // Ignored: fine.
    let mut l = Loader::open(dir.path(), None).unwrap();
    l.take("w", &[1]);
    l.ignore("position_ids");
    l.finish().unwrap();
    // Ignoring does not hide a later take; an integer tensor taken as weights is an error.
    let mut l = Loader::open(dir.path(), None).unwrap();
    l.take("w", &[1]);
    assert!(l.take("position_ids", &[2]).is_none());
    assert_contains(&l.finish().unwrap_err().to_string(), &["position_ids is I64, not a float tensor"]);
    // ignore_prefix.
    let mut l = Loader::open(dir.path(), None).unwrap();
    l.ignore_prefix("");
    l.finish().unwrap();
}

#[test]
fn diffusers_folder_helpers() {
    let dir = TempDir::new("folder");
    let root = dir.path();
    let e = DiffusersFolder::open(root).unwrap_err().to_string();
    assert_contains(&e, &["model_index.json", "missing", "not a diffusers folder"]);
    std::fs::write(root.join("model_index.json"), "[1]").unwrap();
    assert_contains(&DiffusersFolder::open(root).unwrap_err().to_string(), &["model_index.json", "not a JSON object"]);
    std::fs::write(root.join("model_index.json"), "{\"unet\": ").unwrap();
    assert_contains(&DiffusersFolder::open(root).unwrap_err().to_string(), &["model_index.json", "malformed JSON"]);
    std::fs::write(root.join("model_index.json"), r#"{"unet": ["diffusers"]}"#).unwrap();
    assert_contains(&DiffusersFolder::open(root).unwrap_err().to_string(), &["component \"unet\"", "[library, class]"]);

    std::fs::write(
        root.join("model_index.json"),
        r#"{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "PNDMScheduler"], "safety_checker": [null, null],
            "requires_safety_checker": false}"#,
    )
    .unwrap();
    let unet = dir.sub("unet");
    std::fs::write(unet.join("config.json"), r#"{"sample_size": 64, "attention_head_dim": 8}"#).unwrap();
    write_st(&unet.join("diffusion_pytorch_model.safetensors"), &[zeros("conv_in.weight", &[1])]);
    let sched = dir.sub("scheduler");
    std::fs::write(sched.join("scheduler_config.json"), r#"{"num_train_timesteps": 1000}"#).unwrap();
    let vae = dir.sub("vae");
    std::fs::write(vae.join("config.json"), r#"{"latent_channels": 4,"#).unwrap();

    let f = DiffusersFolder::open(root).unwrap();
    let idx: &ModelIndex = f.index();
    assert_eq!(idx.class_name.as_deref(), Some("StableDiffusionPipeline"));
    assert_eq!(
        idx.component_names().collect::<Vec<_>>(),
        ["safety_checker", "scheduler", "text_encoder", "tokenizer", "unet", "vae"]
    );
    let u = idx.component("unet").unwrap();
    assert_eq!((u.library.as_deref(), u.class.as_deref()), (Some("diffusers"), Some("UNet2DConditionModel")));
    assert_eq!(idx.component("safety_checker").unwrap().class, None);
    assert_eq!(idx.raw["requires_safety_checker"], false);

    assert_eq!(f.component_dir(folder::UNET).unwrap(), unet);
    let e = f.component_dir(folder::TEXT_ENCODER).unwrap_err().to_string();
    assert_contains(&e, &[&root.join("text_encoder").display().to_string(), "missing", "CLIPTextModel"]);
    assert_eq!(f.config(folder::UNET).unwrap()["sample_size"], 64);
    assert_eq!(f.config(folder::SCHEDULER).unwrap()["num_train_timesteps"], 1000);
    let e = f.config(folder::VAE).unwrap_err().to_string();
    assert_contains(&e, &["vae", "config.json", "malformed JSON"]);
    std::fs::remove_file(vae.join("config.json")).unwrap();
    let e = f.config(folder::VAE).unwrap_err().to_string();
    assert_contains(&e, &["config.json", "missing"]);
    assert!(f.loader(folder::UNET, None).unwrap().has("conv_in.weight"));
}
