#!/usr/bin/env bash
# One script for the benchmarks of a lent GPU (../shared/GPU.md), in three modes:
#
#   bash benches/gpu.sh --prepare   here (cargo, Python tools): build the release binary and the bench binaries,
#                                   strip them into target/gpu-bundle/bin, make the SD 1.5-shaped random folder
#                                   (weights-tools/make_sd15_random.py, once, 2 GB in target/sd15-random) and
#                                   its skeleton (headers only, 1.7 MB) in target/gpu-bundle/sd15-skeleton, and
#                                   fetch the Vulkan loader debs into .gl when missing. Prints the device call.
#   bash benches/gpu.sh             on the lent GPU, from the bundle (no Rust, no network there): fill the
#                                   skeleton with random weights, then adapter info, the memory plan of a
#                                   2-prompt SD 1.5 edit at 512 px in f16, the kernel bench (GEMM sweep), the SD
#                                   bench (UNet call at batch 1/2/4, host side of a step, VAE decode) and the
#                                   50-step plain generation against a word swap with its measured allocation.
#                                   Each step has its own time limit and all end within 7 min 50 s of the start
#                                   (GPU_SH_SECONDS); JSON and text go to $OUT (default target/gpu-out); a short
#                                   table is printed last. If the end-to-end pair runs out of time (rc=124),
#                                   E2E_STEPS=20 shortens it.
#   bash benches/gpu.sh --quick     the same steps on the tiny fixture, quick modes, on whatever adapter is here
#                                   (lavapipe: about two minutes); builds the bundle's binaries first.
#
# Device call (the run tool): carry [".gl", "target/gpu-bundle"], command "bash benches/gpu.sh", timeout 540.
set -u
cd "$(dirname "$0")/.."
MODE=full
case "${1:-}" in
--prepare) MODE=prepare ;;
--quick) MODE=quick ;;
"") ;;
*)
    echo "usage: bash benches/gpu.sh [--prepare | --quick]" >&2
    exit 2
    ;;
esac
BUNDLE=target/gpu-bundle
BIN=$BUNDLE/bin
OUT=${OUT:-target/gpu-out}
T0=$(date +%s)

build_bins() {
    cargo build --release || return 1
    mkdir -p "$BIN"
    # The bench executables' paths, from cargo's own JSON messages.
    cargo bench --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and "bench" in t.get("kind", []) and m.get("executable"):
        print(t["name"], m["executable"])
' >"$BUNDLE/benches.txt" || return 1
    cp target/release/p2p-wgpu "$BIN/p2p-wgpu"
    while read -r name exe; do cp "$exe" "$BIN/$name"; done <"$BUNDLE/benches.txt"
    strip "$BIN"/* 2>/dev/null || true
    ls -la "$BIN"
    [ -x "$BIN/kernels" ] && [ -x "$BIN/sd" ] && [ -x "$BIN/p2p-wgpu" ]
}

if [ "$MODE" = prepare ]; then
    set -e
    build_bins
    if [ ! -f target/sd15-random/unet/diffusion_pytorch_model.safetensors ]; then
        weights-tools/.venv/bin/python weights-tools/make_sd15_random.py target/sd15-random
    fi
    rm -rf "$BUNDLE/sd15-skeleton"
    "$BIN/sd" --make-skeleton target/sd15-random "$BUNDLE/sd15-skeleton"
    if ! ls .gl/*.deb >/dev/null 2>&1; then
        grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >>.git/info/exclude
        mkdir -p .gl /tmp/amd64/partial
        o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
        # shellcheck disable=SC2086
        apt-get $o update >/dev/null
        # shellcheck disable=SC2086
        (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    fi
    du -sh "$BUNDLE" .gl
    echo 'device call: carry [".gl", "target/gpu-bundle"], command "bash benches/gpu.sh", timeout_s 540'
    exit 0
fi

mkdir -p "$OUT"
: >"$OUT/steps.txt"
# Every step ends by this time (7 min 50 s after the start), whatever its own limit.
DEADLINE=$((T0 + ${GPU_SH_SECONDS:-470}))
# step NAME LIMIT_S CMD...: runs CMD with its output in $OUT/NAME.txt, records status and seconds.
step() {
    local name=$1 limit=$2
    shift 2
    local t=$(date +%s)
    local left=$((DEADLINE - t))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        printf '%-10s rc=%-3s %4ss (no time left)\n' "$name" skip 0 | tee -a "$OUT/steps.txt" >&2
        return 1
    fi
    echo "== $name (limit ${limit}s): $*" >&2
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err"
    local rc=$?
    local dt=$(($(date +%s) - t))
    printf '%-10s rc=%-3s %4ss\n' "$name" "$rc" "$dt" | tee -a "$OUT/steps.txt" >&2
    [ $rc -eq 0 ] || tail -3 "$OUT/$name.err" >&2
    return $rc
}

if [ "$MODE" = quick ]; then
    build_bins >"$OUT/build.txt" 2>&1 || {
        tail -20 "$OUT/build.txt"
        exit 1
    }
    SKEL=$OUT/tiny-skeleton
    WEIGHTS=$OUT/tiny-random
    rm -rf "$SKEL" "$WEIGHTS"
    step skeleton 60 "$BIN/sd" --make-skeleton tests/fixtures/sd1-tiny "$SKEL"
    QUICK=--quick
    SIZE=()
    E2E=4
else
    # The lent machine: Vulkan loader from .gl, NVIDIA's ICD.
    if ls .gl/*.deb >/dev/null 2>&1; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json WGPU_BACKEND=vulkan
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
    SKEL=$BUNDLE/sd15-skeleton
    WEIGHTS=${TMPDIR:-/tmp}/sd15-random
    QUICK=
    SIZE=(--height 512 --width 512)
    E2E=${E2E_STEPS:-50}
fi

step fill 90 "$BIN/sd" --fill-random "$SKEL" "$WEIGHTS"
step info 30 "$BIN/p2p-wgpu" info
# Memory plan: a 2-prompt edit (source + 1 target) at 512 px (the fixture: its native size), f16 text encoder and
# UNet, f32 VAE, recorded (not run) on this adapter.
step memory 90 "$BIN/p2p-wgpu" info --model "$WEIGHTS" --batch 2 "${SIZE[@]}" --f16 --json "$OUT/memory.json"
step kernels 120 "$BIN/kernels" $QUICK --json "$OUT/kernels.json"
step sd 120 "$BIN/sd" $QUICK --model "$WEIGHTS" --e2e-steps 0 --json "$OUT/sd.json"
step e2e 200 "$BIN/sd" $QUICK --model "$WEIGHTS" --e2e-steps "$E2E" --e2e-only --json "$OUT/e2e.json"

echo
echo "== $(date -u '+%Y-%m-%d %H:%M') UTC, $(($(date +%s) - T0)) s, results in $OUT"
cat "$OUT/steps.txt"
grep -E '^adapter|^driver' "$OUT/info.txt" 2>/dev/null
grep -E 'parameters|vae decode|planned peak' "$OUT/memory.txt" 2>/dev/null
grep -E '^peak|gemm 4096|ff.net.0.proj 320|attn1.to_q 320 ' "$OUT/kernels.txt" 2>/dev/null
grep -E 'unet|vae decode|text encoder' "$OUT/sd.txt" 2>/dev/null
grep -E 'generation|edit|^memory' "$OUT/e2e.txt" 2>/dev/null
! grep -qv 'rc=0 ' "$OUT/steps.txt"
