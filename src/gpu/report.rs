//! The text `p2p-wgpu info` prints: adapter, backend, driver, the optional features we use, key limits and the
//! cooperative-matrix configurations.
use super::Gpu;
use super::context::WANTED_FEATURES;

impl Gpu {
    /// A human-readable description of the adapter and what the engine will use on it.
    pub fn report(&self) -> String {
        let i = &self.info;
        let l = &self.limits;
        let have = self.adapter.features();
        let mib = |b: u64| format!("{} MiB", b >> 20);
        let mut s = String::new();
        s += &format!("adapter:  {} ({:?}, {:?})\n", i.name, i.device_type, i.backend);
        s += &format!("driver:   {} {}\n", i.driver, i.driver_info);
        s += &format!("ids:      vendor 0x{:04x} device 0x{:04x}\n", i.vendor, i.device);
        s += &format!("subgroup: {}..{} lanes\n", i.subgroup_min_size, i.subgroup_max_size);
        s += "features:\n";
        for (f, name) in WANTED_FEATURES {
            let state = match (have.contains(f), self.features.contains(f)) {
                (true, true) => "yes (enabled)",
                (true, false) => "yes (not enabled)",
                _ => "no",
            };
            s += &format!("  {name:<34} {state}\n");
        }
        s += "limits:\n";
        s += &format!("  max_buffer_size                    {}\n", mib(l.max_buffer_size));
        s += &format!("  max_storage_buffer_binding_size    {}\n", mib(l.max_storage_buffer_binding_size));
        s += &format!("  max_storage_buffers_per_stage      {}\n", l.max_storage_buffers_per_shader_stage);
        s += &format!("  max_compute_workgroup_storage_size {} KiB\n", l.max_compute_workgroup_storage_size >> 10);
        s += &format!("  max_compute_invocations            {}\n", l.max_compute_invocations_per_workgroup);
        s += &format!("  max_workgroups_per_dimension       {}\n", l.max_compute_workgroups_per_dimension);
        s += &format!("  min_storage_buffer_offset_align    {}\n", l.min_storage_buffer_offset_alignment);
        if self.coop.is_empty() {
            s += "cooperative matrices: none\n";
        } else {
            s += "cooperative matrices (M×N×K, A/B type -> C type):\n";
            for c in &self.coop {
                s += &format!("  {}x{}x{} {} -> {}\n", c.m, c.n, c.k, c.ab, c.cr);
            }
        }
        let core = crate::ops::matmul::choose_core(self, crate::tensor::DType::F16);
        s += &format!("f16 GEMM core: {core:?}\n");
        s += &format!("GEMM tiles ({:?} class; {}):\n", super::tiles::classify(&self.info), self.tile_source());
        for dt in [crate::tensor::DType::F32, crate::tensor::DType::F16] {
            if dt == crate::tensor::DType::F16 && !self.has_f16() {
                continue;
            }
            match crate::ops::matmul::tile_plan(self, dt) {
                Ok(p) => s += &format!("  {:<4} large {}, small {}\n", dt.name(), p.large, p.small),
                Err(e) => s += &format!("  {:<4} {e}\n", dt.name()),
            }
        }
        let flash: Vec<String> = [40, 64, 80, 160]
            .iter()
            .map(|&d| format!("{d}: {:?}", crate::ops::attention::flash_core(self, crate::tensor::DType::F16, d)))
            .collect();
        s += &format!("f16 flash attention by head dim: {}\n", flash.join(", "));
        s
    }

    /// Where the GEMM tiles come from: `P2P_WGPU_GEMM`, a cached autotune (with the cache file), or the table.
    fn tile_source(&self) -> String {
        if self.options.gemm.is_some() {
            return "P2P_WGPU_GEMM".to_string();
        }
        let file = self.options.tile_cache.as_ref().map_or("no cache folder".to_string(), |p| p.display().to_string());
        if super::tiles::tuned(self, crate::tensor::DType::F32).is_some()
            || super::tiles::tuned(self, crate::tensor::DType::F16).is_some()
        {
            if super::tiles::TileCache::load(self.options.tile_cache.as_deref())
                .adapters
                .contains_key(&super::tiles::adapter_key(self))
            {
                format!("autotuned, cached in {file}")
            } else {
                format!("autotuned for this run only: {file} could not be written")
            }
        } else {
            format!("table; P2P_WGPU_AUTOTUNE=1 tunes and caches in {file}")
        }
    }
}
