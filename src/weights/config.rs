//! Strict reading of diffusers / transformers `config.json` files. Every key must be either read by the model
//! builder, checked to hold the one value we support, or known to be irrelevant at inference (metadata, dropout,
//! initialisation); anything else is an error naming the file and the key, never silently ignored.
use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Keys that describe a file rather than the model, or only matter for training; accepted and ignored.
pub const METADATA_KEYS: &[&str] = &[
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
    "_commit_hash",
    "_use_default_values",
    "architectures",
    "model_type",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "initializer_range",
    "initializer_factor",
    "attention_dropout",
    "dropout",
    "hidden_dropout",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "use_return_dict",
];

/// One config.json being read.
pub struct Config {
    name: String,
    obj: Map<String, Value>,
    used: BTreeSet<String>,
}

/// Integer keys that must be at least 1 (a 0 would surface later as a misleading error, e.g. a zero `sample_size`
/// as a bad `--height`).
const POSITIVE: &[&str] = &[
    "sample_size",
    "layers_per_block",
    "num_hidden_layers",
    "max_position_embeddings",
    "num_attention_heads",
    "hidden_size",
    "intermediate_size",
    "norm_num_groups",
    "in_channels",
    "out_channels",
    "latent_channels",
    "cross_attention_dim",
    "vocab_size",
];

/// The largest value the engine accepts for an integer config key: layer counts (a typo of 100000 would make the
/// loader look for millions of tensors), token lengths (a tokenizer row is allocated from them) and sizes; every
/// other integer (channels, vocabulary, timesteps) at most 2^20. Far above every released model.
pub fn limit(key: &str) -> usize {
    match key {
        "layers_per_block" | "transformer_layers_per_block" | "num_hidden_layers" => 64,
        "max_position_embeddings" | "model_max_length" => 4096,
        "sample_size" => 8192,
        _ => 1 << 20,
    }
}

fn describe(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 { format!("{}…", &s[..60]) } else { s }
}

impl Config {
    /// Reads `dir/config.json`; `name` (e.g. "unet/config.json") goes into every error.
    pub fn read(dir: &Path, name: &str) -> Result<Config> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::model(format!("{}: {e}", path.display())))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| Error::model(format!("{}: invalid JSON: {e}", path.display())))?;
        Config::from_value(name, v)
    }

    pub fn from_value(name: &str, v: Value) -> Result<Config> {
        match v {
            Value::Object(obj) => Ok(Config { name: name.to_string(), obj, used: BTreeSet::new() }),
            other => Err(Error::model(format!("{name}: expected a JSON object, found {}", describe(&other)))),
        }
    }

    fn err(&self, key: &str, what: impl std::fmt::Display) -> Error {
        Error::model(format!("{}: `{key}` {what}", self.name))
    }

    /// The value of `key` (marking it read), or None when absent or null.
    pub fn get(&mut self, key: &str) -> Option<Value> {
        self.used.insert(key.to_string());
        self.obj.get(key).filter(|v| !v.is_null()).cloned()
    }

    pub fn usize(&mut self, key: &str) -> Result<usize> {
        let v = self.get(key).ok_or_else(|| self.err(key, "is missing"))?;
        let x = v
            .as_u64()
            .ok_or_else(|| self.err(key, format!("must be a non-negative integer, found {}", describe(&v))))?;
        self.bounded(key, x)
    }

    /// Refuses an integer above [`limit`] for `key`, before anything is sized by it.
    fn bounded(&self, key: &str, x: u64) -> Result<usize> {
        let max = limit(key);
        if x == 0 && POSITIVE.contains(&key) {
            return Err(self.err(key, "is 0, but must be at least 1"));
        }
        if x > max as u64 {
            return Err(self.err(key, format!("is {x}, more than the engine's limit of {max} for this key")));
        }
        Ok(x as usize)
    }

    pub fn usize_or(&mut self, key: &str, default: usize) -> Result<usize> {
        if self.get(key).is_none() { Ok(default) } else { self.usize(key) }
    }

    pub fn f64_or(&mut self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.err(key, format!("must be a number, found {}", describe(&v)))),
        }
    }

    pub fn bool_or(&mut self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => {
                v.as_bool().ok_or_else(|| self.err(key, format!("must be true or false, found {}", describe(&v))))
            }
        }
    }

    pub fn str_or(&mut self, key: &str, default: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.err(key, format!("must be a string, found {}", describe(&v)))),
        }
    }

    pub fn str_list(&mut self, key: &str) -> Result<Vec<String>> {
        let v = self.get(key).ok_or_else(|| self.err(key, "is missing"))?;
        let list =
            v.as_array().ok_or_else(|| self.err(key, format!("must be a list of strings, found {}", describe(&v))))?;
        list.iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.err(key, format!("must hold strings, found {}", describe(x))))
            })
            .collect()
    }

    pub fn usize_list(&mut self, key: &str) -> Result<Vec<usize>> {
        let v = self.get(key).ok_or_else(|| self.err(key, "is missing"))?;
        let list =
            v.as_array().ok_or_else(|| self.err(key, format!("must be a list of integers, found {}", describe(&v))))?;
        list.iter()
            .map(|x| {
                let n =
                    x.as_u64().ok_or_else(|| self.err(key, format!("must hold integers, found {}", describe(x))))?;
                self.bounded(key, n)
            })
            .collect()
    }

    /// An integer or a per-block list of integers (e.g. `attention_head_dim`), expanded to `n` entries; None when
    /// absent or null.
    pub fn per_block(&mut self, key: &str, n: usize) -> Result<Option<Vec<usize>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(x)) => {
                let x = x.as_u64().ok_or_else(|| self.err(key, "must be a non-negative integer"))?;
                Ok(Some(vec![self.bounded(key, x)?; n]))
            }
            Some(Value::Array(_)) => {
                let l = self.usize_list(key)?;
                if l.len() != n {
                    return Err(self.err(key, format!("has {} entries for {n} blocks", l.len())));
                }
                Ok(Some(l))
            }
            Some(v) => Err(self.err(key, format!("must be an integer or a list, found {}", describe(&v)))),
        }
    }

    /// Requires `key` to be absent, null, or one of `supported` (compared as JSON); the engine implements only
    /// those. The error names the value found and what is supported.
    pub fn expect(&mut self, key: &str, supported: &[Value]) -> Result<()> {
        match self.get(key) {
            None => Ok(()),
            Some(v) if supported.contains(&v) => Ok(()),
            Some(v) => {
                let s: Vec<String> = supported.iter().map(describe).collect();
                Err(self.err(key, format!("= {} is not supported (supported: {})", describe(&v), s.join(", "))))
            }
        }
    }

    /// Marks keys as known and irrelevant for inference.
    pub fn ignore(&mut self, keys: &[&str]) {
        for k in keys {
            self.used.insert((*k).to_string());
        }
    }

    /// Errors naming every key that was neither read nor ignored.
    pub fn finish(mut self) -> Result<()> {
        self.ignore(METADATA_KEYS);
        let unknown: Vec<&String> = self.obj.keys().filter(|k| !self.used.contains(*k)).collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
        Err(Error::model(format!(
            "{}: unknown option(s) {}; this engine does not implement them",
            self.name,
            names.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strictness() {
        let mut c = Config::from_value(
            "x/config.json",
            json!({"a": 3, "b": [1, 2], "c": "fourier", "d": null, "_class_name": "X", "zzz": 1}),
        )
        .unwrap();
        assert_eq!(c.usize("a").unwrap(), 3);
        assert_eq!(c.per_block("b", 2).unwrap(), Some(vec![1, 2]));
        assert!(c.per_block("b", 3).is_err());
        let e = c.expect("c", &[json!("positional")]).unwrap_err().to_string();
        assert!(e.contains("x/config.json") && e.contains("fourier") && e.contains("positional"), "{e}");
        assert_eq!(c.usize_or("d", 7).unwrap(), 7);
        let e = c.finish().unwrap_err().to_string();
        assert!(e.contains("zzz") && !e.contains("_class_name") && !e.contains("`a`"), "{e}");
    }
}
