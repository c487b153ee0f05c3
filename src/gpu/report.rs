//! The adapter half of what `p2p-wgpu info` prints: adapter, backend, driver, the optional features we use, key
//! limits and the cooperative-matrix configurations (the kernel choices on it are `ops::report`).
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
        s
    }
}
