//! Compute pipelines compiled from preprocessed kernel files, cached by (file, defines, entry point).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

use super::Gpu;
use super::preprocess::{Defines, preprocess};

/// A kernel variant: an embedded file, its defines and the entry point.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub path: &'static str,
    pub defines: Defines,
    pub entry: &'static str,
}

impl Kernel {
    pub fn new(path: &'static str) -> Self {
        Kernel { path, defines: Defines::new(), entry: "main" }
    }
    /// Adds `#define name value`.
    pub fn def(mut self, name: &str, value: impl ToString) -> Self {
        self.defines.insert(name.to_string(), value.to_string());
        self
    }
    /// Adds `#define name` (a flag) when `on`.
    pub fn flag(mut self, name: &str, on: bool) -> Self {
        if on {
            self.defines.insert(name.to_string(), String::new());
        }
        self
    }
    pub fn entry(mut self, entry: &'static str) -> Self {
        self.entry = entry;
        self
    }
    /// The WGSL text of this variant.
    pub fn source(&self) -> Result<String> {
        preprocess(self.path, &self.defines)
    }
    fn key(&self) -> String {
        let defs: Vec<String> = self.defines.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}#{}#{}", self.path, self.entry, defs.join(","))
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

#[derive(Default)]
pub struct PipelineCache {
    map: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Gpu {
    /// The compiled pipeline for `kernel`, from the cache or compiled now.
    pub fn pipeline(&self, kernel: &Kernel) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = kernel.key();
        if let Some(p) = self.pipelines.map.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let src = kernel.source()?;
        let device = &self.device;
        let pipeline = self
            .scoped(&format!("compiling {key}"), || {
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.path),
                    source: wgpu::ShaderSource::Wgsl(src.as_str().into()),
                });
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.path),
                    layout: None,
                    module: &module,
                    entry_point: Some(kernel.entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
            .map_err(|e| match e {
                Error::Gpu { message, .. } => Error::Kernel { path: key.clone(), message },
                other => other,
            })?;
        let p = Arc::new(pipeline);
        self.pipelines.map.lock().unwrap_or_else(|p| p.into_inner()).insert(key, p.clone());
        Ok(p)
    }
}
