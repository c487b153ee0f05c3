// attention/flash_coop.wgsl with emulated fragments (attention/frag_emu.wgsl): the same staging, online softmax
// and injection without cooperative matrices, so tests can run the cooperative flash kernel on adapters that lack
// them. Never chosen by the op on its own. Defines as flash_coop.wgsl.
#include "common/dtype.wgsl"
#include "attention/params.wgsl"
#include "attention/load.wgsl"

@group(0) @binding(4) var<uniform> p: FlashParams;

#include "attention/frag_emu.wgsl"
#include "attention/flash_coop_core.wgsl"
