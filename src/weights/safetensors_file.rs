//! A strict safetensors reader (docs/DESIGN.md §6). The whole header is validated before any tensor byte is read: the
//! 8-byte little-endian header length (at most [`MAX_HEADER_LEN`] and within the file), a UTF-8 JSON object without
//! duplicate keys, `__metadata__` as string → string, and for every tensor a known dtype, a shape, and
//! `data_offsets` inside the data section whose length is dtype size × element count. The tensors, sorted by offset,
//! must tile the data section exactly: no holes, no overlaps, no trailing bytes. Reading a tensor seeks to its bytes
//! and reads only those, widening F16/BF16/F32 (little-endian) to f32.
//!
//! Every error is one line that names the file and, where one is involved, the tensor.
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use half::{bf16, f16, slice::HalfFloatSliceExt};
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::HostTensor;
use crate::error::{Error, Result};

/// The largest header accepted (the reference implementation's limit is the same 100 MB).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The dtype of a tensor in a safetensors file. Only [`FileDType::is_float`] types can be loaded as weights; the
/// integer and bool types are accepted so that buffers such as `position_ids` (I64) can be ignored by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileDType {
    F32,
    F16,
    BF16,
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
}

impl FileDType {
    /// The dtype for a header's `dtype` string, or `None` for one this reader does not accept.
    pub fn parse(s: &str) -> Option<FileDType> {
        Some(match s {
            "F32" => FileDType::F32,
            "F16" => FileDType::F16,
            "BF16" => FileDType::BF16,
            "BOOL" => FileDType::Bool,
            "U8" => FileDType::U8,
            "I8" => FileDType::I8,
            "U16" => FileDType::U16,
            "I16" => FileDType::I16,
            "U32" => FileDType::U32,
            "I32" => FileDType::I32,
            "U64" => FileDType::U64,
            "I64" => FileDType::I64,
            _ => return None,
        })
    }

    /// The name used in safetensors headers.
    pub fn name(self) -> &'static str {
        match self {
            FileDType::F32 => "F32",
            FileDType::F16 => "F16",
            FileDType::BF16 => "BF16",
            FileDType::Bool => "BOOL",
            FileDType::U8 => "U8",
            FileDType::I8 => "I8",
            FileDType::U16 => "U16",
            FileDType::I16 => "I16",
            FileDType::U32 => "U32",
            FileDType::I32 => "I32",
            FileDType::U64 => "U64",
            FileDType::I64 => "I64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            FileDType::Bool | FileDType::U8 | FileDType::I8 => 1,
            FileDType::F16 | FileDType::BF16 | FileDType::U16 | FileDType::I16 => 2,
            FileDType::F32 | FileDType::U32 | FileDType::I32 => 4,
            FileDType::U64 | FileDType::I64 => 8,
        }
    }

    /// Whether tensors of this dtype can be loaded as (f32-widened) weights.
    pub fn is_float(self) -> bool {
        matches!(self, FileDType::F32 | FileDType::F16 | FileDType::BF16)
    }
}

impl fmt::Display for FileDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor's header entry. `data_offsets` are relative to the start of the data section, as in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: FileDType,
    pub shape: Vec<usize>,
    pub data_offsets: (u64, u64),
}

impl TensorInfo {
    /// The number of elements (validated not to overflow when the header was parsed).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The number of bytes of data.
    pub fn byte_len(&self) -> u64 {
        self.data_offsets.1 - self.data_offsets.0
    }
}

/// A validated header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub metadata: BTreeMap<String, String>,
    pub tensors: BTreeMap<String, TensorInfo>,
}

/// Formats a shape as `[4, 3]`.
pub(crate) fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// A JSON value parsed with duplicate keys rejected at every level (serde_json's own `Value` keeps the last one).
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key \"{key}\"")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parses JSON text, rejecting duplicate keys anywhere and anything but whitespace after the value.
pub fn parse_json_strict(text: &str) -> std::result::Result<Value, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let StrictValue(v) = StrictValue::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
}

/// Parses and validates a header's JSON bytes against a data section of `data_len` bytes. The error text does not
/// name the file (the caller adds it) but names the tensor.
pub fn parse_header(json: &[u8], data_len: u64) -> std::result::Result<Header, String> {
    let text = std::str::from_utf8(json).map_err(|e| format!("header is not UTF-8 ({e})"))?;
    let value = parse_json_strict(text).map_err(|e| format!("header is not valid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("header is not a JSON object".to_owned());
    };
    let mut header = Header::default();
    for (name, entry) in map {
        if name == "__metadata__" {
            let Value::Object(meta) = entry else {
                return Err("__metadata__ is not a JSON object".to_owned());
            };
            for (k, v) in meta {
                let Value::String(s) = v else {
                    return Err(format!("__metadata__ entry \"{k}\" is not a string"));
                };
                header.metadata.insert(k, s);
            }
            continue;
        }
        let info = parse_entry(&name, entry, data_len)?;
        header.tensors.insert(name, info);
    }
    check_coverage(&header.tensors, data_len)?;
    Ok(header)
}

fn parse_entry(name: &str, entry: Value, data_len: u64) -> std::result::Result<TensorInfo, String> {
    let Value::Object(fields) = entry else {
        return Err(format!("tensor \"{name}\": entry is not a JSON object"));
    };
    if let Some(k) = fields.keys().find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets")) {
        return Err(format!("tensor \"{name}\": unknown field \"{k}\""));
    }
    let dtype = match fields.get("dtype") {
        None => return Err(format!("tensor \"{name}\": no dtype")),
        Some(Value::String(s)) => FileDType::parse(s).ok_or_else(|| {
            format!(
                "tensor \"{name}\" has unsupported dtype {s} (weights must be F32, F16 or BF16; integer and bool \
                 buffers are accepted but not loadable)"
            )
        })?,
        Some(v) => return Err(format!("tensor \"{name}\": dtype {v} is not a string")),
    };
    let shape = match fields.get("shape") {
        None => return Err(format!("tensor \"{name}\": no shape")),
        Some(Value::Array(dims)) => dims
            .iter()
            .map(|d| as_u64(d).and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                format!(
                    "tensor \"{name}\": shape {} is not a list of non-negative integers",
                    Value::Array(dims.clone())
                )
            })?,
        Some(v) => return Err(format!("tensor \"{name}\": shape {v} is not a list")),
    };
    let data_offsets = match fields.get("data_offsets") {
        None => return Err(format!("tensor \"{name}\": no data_offsets")),
        Some(Value::Array(o)) if o.len() == 2 && o.iter().all(|x| as_u64(x).is_some()) => {
            (as_u64(&o[0]).unwrap_or(0), as_u64(&o[1]).unwrap_or(0))
        }
        Some(v) => return Err(format!("tensor \"{name}\": data_offsets {v} is not a pair of non-negative integers")),
    };
    let (begin, end) = data_offsets;
    if begin > end {
        return Err(format!("tensor \"{name}\": data_offsets [{begin}, {end}] end before they begin"));
    }
    if end > data_len {
        return Err(format!(
            "tensor \"{name}\": data_offsets [{begin}, {end}] are out of range (the data section has {data_len} bytes)"
        ));
    }
    let numel =
        shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).filter(|&n| usize::try_from(n).is_ok());
    let Some(bytes) = numel.and_then(|n| n.checked_mul(dtype.size())) else {
        return Err(format!("tensor \"{name}\": shape {} overflows", fmt_shape(&shape)));
    };
    if bytes != end - begin {
        return Err(format!(
            "tensor \"{name}\": size mismatch: shape {} × {dtype} ({} bytes each) = {bytes} bytes, but data_offsets \
             [{begin}, {end}] hold {} bytes",
            fmt_shape(&shape),
            dtype.size(),
            end - begin
        ));
    }
    Ok(TensorInfo { dtype, shape, data_offsets })
}

/// The tensors, sorted by offset, must tile `[0, data_len)` exactly.
fn check_coverage(tensors: &BTreeMap<String, TensorInfo>, data_len: u64) -> std::result::Result<(), String> {
    let mut sorted: Vec<(&String, &TensorInfo)> = tensors.iter().collect();
    sorted.sort_by_key(|(name, t)| (t.data_offsets.0, t.data_offsets.1, *name));
    let mut cursor = 0u64;
    let mut prev: Option<(&String, &TensorInfo)> = None;
    for (name, t) in sorted {
        let (begin, end) = t.data_offsets;
        if begin > cursor {
            return Err(format!(
                "hole in the data section: bytes [{cursor}, {begin}) before tensor \"{name}\" belong to no tensor"
            ));
        }
        if begin < cursor {
            let (pname, pt) = prev.expect("cursor > 0 implies a previous tensor");
            return Err(format!(
                "tensor \"{name}\" (data_offsets [{begin}, {end}]) overlaps tensor \"{pname}\" ([{}, {}])",
                pt.data_offsets.0, pt.data_offsets.1
            ));
        }
        cursor = end;
        prev = Some((name, t));
    }
    if cursor != data_len {
        return Err(format!(
            "hole in the data section: its last {} bytes ([{cursor}, {data_len})) belong to no tensor",
            data_len - cursor
        ));
    }
    Ok(())
}

/// An open, validated safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    file: File,
    data_start: u64,
    header: Header,
}

impl SafetensorsFile {
    /// Opens `path` and validates its header (reading only the header).
    pub fn open(path: &Path) -> Result<SafetensorsFile> {
        let err = |m: String| Error::model(format!("{}: {m}", path.display()));
        let mut file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        let file_len = file.metadata().map_err(|e| err(format!("cannot stat: {e}")))?.len();
        if file_len < 8 {
            return Err(err(format!(
                "truncated: {file_len} bytes is too short for a safetensors file (an 8-byte header length comes first)"
            )));
        }
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes).map_err(|e| err(format!("cannot read the header length: {e}")))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_LEN {
            return Err(err(format!(
                "header length {header_len} exceeds the {MAX_HEADER_LEN}-byte limit (not a safetensors file?)"
            )));
        }
        if header_len > file_len - 8 {
            return Err(err(format!(
                "header length {header_len} runs past the end of the file ({file_len} bytes): truncated or not a \
                 safetensors file"
            )));
        }
        let mut json = vec![0u8; header_len as usize];
        file.read_exact(&mut json).map_err(|e| err(format!("cannot read the header: {e}")))?;
        let data_start = 8 + header_len;
        let header = parse_header(&json, file_len - data_start).map_err(err)?;
        Ok(SafetensorsFile { path: path.to_path_buf(), file, data_start, header })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.header.tensors
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.header.metadata
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensors.get(name)
    }

    fn info_or_err(&self, name: &str) -> Result<&TensorInfo> {
        self.info(name).ok_or_else(|| Error::model(format!("{}: no tensor \"{name}\"", self.path.display())))
    }

    fn read_into(&self, name: &str, info: &TensorInfo, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        let err = |e: std::io::Error| {
            Error::model(format!("{}: tensor \"{name}\": cannot read its {len} bytes: {e}", self.path.display()))
        };
        let mut f = &self.file;
        f.seek(SeekFrom::Start(self.data_start + info.data_offsets.0)).map_err(err)?;
        f.read_exact(buf).map_err(err)
    }

    /// Reads tensor `name`'s raw little-endian bytes, whatever its dtype.
    pub fn read_bytes(&self, name: &str) -> Result<Vec<u8>> {
        let info = self.info_or_err(name)?;
        let mut buf = vec![0u8; info.byte_len() as usize];
        self.read_into(name, info, &mut buf)?;
        Ok(buf)
    }

    /// Reads float tensor `name`, widened to f32.
    pub fn read_f32(&self, name: &str) -> Result<HostTensor> {
        let info = self.info_or_err(name)?;
        let n = info.numel();
        let data = match info.dtype {
            FileDType::F32 => {
                let mut v = vec![0f32; n];
                self.read_into(name, info, bytemuck::cast_slice_mut(&mut v))?;
                if cfg!(target_endian = "big") {
                    for x in &mut v {
                        *x = f32::from_bits(u32::from_le(x.to_bits()));
                    }
                }
                v
            }
            FileDType::F16 => {
                let mut h = vec![f16::ZERO; n];
                self.read_into(name, info, bytemuck::cast_slice_mut(&mut h))?;
                if cfg!(target_endian = "big") {
                    for x in &mut h {
                        *x = f16::from_bits(u16::from_le(x.to_bits()));
                    }
                }
                let mut v = vec![0f32; n];
                h.convert_to_f32_slice(&mut v);
                v
            }
            FileDType::BF16 => {
                let mut h = vec![bf16::ZERO; n];
                self.read_into(name, info, bytemuck::cast_slice_mut(&mut h))?;
                if cfg!(target_endian = "big") {
                    for x in &mut h {
                        *x = bf16::from_bits(u16::from_le(x.to_bits()));
                    }
                }
                let mut v = vec![0f32; n];
                h.convert_to_f32_slice(&mut v);
                v
            }
            other => {
                return Err(Error::model(format!(
                    "{}: tensor \"{name}\" is {other}, not a float tensor (F32, F16 or BF16)",
                    self.path.display()
                )));
            }
        };
        Ok(HostTensor { shape: info.shape.clone(), data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(json: &str, data_len: u64) -> std::result::Result<Header, String> {
        parse_header(json.as_bytes(), data_len)
    }

    #[test]
    fn accepts_valid_header_with_metadata_and_zero_size_tensor() {
        let h = hdr(
            r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},
               "e":{"dtype":"F32","shape":[0],"data_offsets":[12,12]},
               "p":{"dtype":"I64","shape":[1],"data_offsets":[12,20]}}  "#,
            20,
        )
        .unwrap();
        assert_eq!(h.metadata["format"], "pt");
        assert_eq!(h.tensors["a"].shape, vec![2, 3]);
        assert_eq!(h.tensors["p"].dtype, FileDType::I64);
        assert_eq!(h.tensors["e"].numel(), 0);
    }

    #[test]
    fn rejects_nested_duplicates_and_bad_fields() {
        let e = hdr(r#"{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}"#, 4).unwrap_err();
        assert!(e.contains("duplicate key \"dtype\""), "{e}");
        let e = hdr(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}"#, 4).unwrap_err();
        assert!(e.contains("unknown field \"x\""), "{e}");
        let e = hdr(r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, 4).unwrap_err();
        assert!(e.contains("shape"), "{e}");
        let e = hdr(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, 4).unwrap_err();
        assert!(e.contains("end before they begin"), "{e}");
        let e = hdr(r#"{"__metadata__":{"k":1}}"#, 0).unwrap_err();
        assert!(e.contains("not a string"), "{e}");
        let e = hdr(r#"[1,2]"#, 0).unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
        let e = hdr(r#"{} x"#, 0).unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse_header(b"{\"\xff\":1}", 0).unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn rejects_shape_overflow() {
        let big = u64::MAX / 2;
        let e = hdr(&format!(r#"{{"a":{{"dtype":"F32","shape":[{big},4],"data_offsets":[0,4]}}}}"#), 4).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
    }

    #[test]
    fn strict_json_allows_distinct_keys_in_sibling_objects() {
        let v = parse_json_strict(r#"{"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":2}]}"#).unwrap();
        assert_eq!(v["b"]["k"], 2);
    }
}
