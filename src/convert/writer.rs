//! A streaming safetensors writer: the header first (offsets from the tensors' declared dtypes and shapes), then
//! each tensor's bytes as they are produced, so that converting a 4 GB checkpoint holds one tensor in memory at a
//! time. The layout is the format's: an 8-byte little-endian header length, a JSON header padded with spaces to a
//! multiple of 8 bytes, then the data, tensors tiling it in header order.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::weights::FileDType;

/// A tensor to be written: its name, stored dtype and shape.
#[derive(Clone, Debug)]
pub struct OutTensor {
    pub name: String,
    pub dtype: FileDType,
    pub shape: Vec<usize>,
}

impl OutTensor {
    fn byte_len(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * self.dtype.size()
    }
}

/// Writes `tensors` (in this order) to `path`, taking each one's little-endian bytes from `bytes(i)`. Returns the
/// file's size.
pub fn write(
    path: &Path,
    tensors: &[OutTensor],
    metadata: &BTreeMap<String, String>,
    mut bytes: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<u64> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".to_owned(), json!(metadata));
    }
    let mut offset = 0u64;
    for t in tensors {
        let end = offset + t.byte_len();
        let entry = json!({ "dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, end] });
        if header.insert(t.name.clone(), entry).is_some() {
            return Err(Error::model(format!("{}: tensor {} written twice", path.display(), t.name)));
        }
        offset = end;
    }
    let mut head = serde_json::to_vec(&Value::Object(header)).map_err(|e| Error::model(format!("header JSON: {e}")))?;
    head.resize(head.len().next_multiple_of(8), b' ');

    let err = |e: std::io::Error| Error::model(format!("cannot write {}: {e}", path.display()));
    let file = File::create(path).map_err(err)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(head.len() as u64).to_le_bytes()).map_err(err)?;
    w.write_all(&head).map_err(err)?;
    for (i, t) in tensors.iter().enumerate() {
        let b = bytes(i)?;
        if b.len() as u64 != t.byte_len() {
            return Err(Error::model(format!(
                "{}: tensor {} has {} bytes, its header says {}",
                path.display(),
                t.name,
                b.len(),
                t.byte_len()
            )));
        }
        w.write_all(&b).map_err(err)?;
    }
    let file = w.into_inner().map_err(|e| err(e.into_error()))?;
    file.sync_all().map_err(err)?;
    Ok(8 + head.len() as u64 + offset)
}
