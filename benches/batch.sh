#!/usr/bin/env bash
# Batch throughput: N edits through one `p2p-wgpu batch` (the model loaded once) against the same N edits as N
# separate `p2p-wgpu` processes, in one run on the same adapter; prints the ratio and the batch's per-job time
# split (model load once; text encoding, sampling, decode, write per job, from the manifest).
#
#   bash benches/batch.sh                          # tiny SD fixture, 20 jobs, 4 DDIM steps (a minute on lavapipe)
#   bash benches/batch.sh --model models/default --steps 20 --jobs 20
#
# Writes JSON to $OUT/batch.json when OUT is set. Needs target/release/p2p-wgpu (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=tests/fixtures/sd1-tiny STEPS=4 N=20
while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --jobs) N=$2; shift 2 ;;
        *) echo "usage: $0 [--model DIR] [--steps N] [--jobs N]"; exit 2 ;;
    esac
done
BIN=target/release/p2p-wgpu
[ -x "$BIN" ] || { echo "build first: cargo build --release"; exit 1; }
W=$(mktemp -d /tmp/p2p-batch-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
PROMPT="a red circle on a white background"
for i in $(seq 0 $((N - 1))); do
    echo "{\"id\": \"j$i\", \"prompt\": \"$PROMPT\", \"swap\": [\"red=blue\"], \"seed\": $i, \"steps\": $STEPS, \"scheduler\": \"ddim\"}"
done > "$W/jobs.jsonl"

now() { date +%s.%N; }
t0=$(now)
"$BIN" batch "$W/jobs.jsonl" --model "$MODEL" --out "$W/batch" 2> "$W/batch.log"
t1=$(now)
for i in $(seq 0 $((N - 1))); do
    "$BIN" --model "$MODEL" --prompt "$PROMPT" --swap red=blue --seed "$i" --steps "$STEPS" --scheduler ddim \
        --out "$W/proc-$i" 2>> "$W/procs.log"
done
t2=$(now)
ADAPTER=$("$BIN" info 2>/dev/null | sed -n 's/^adapter: *//p' | head -1)
python3 - "$W" "$t0" "$t1" "$t2" "$N" "$MODEL" "$STEPS" "$ADAPTER" <<'PY'
import json, os, re, sys
w, t0, t1, t2, n, model, steps, adapter = sys.argv[1:]
t0, t1, t2, n = float(t0), float(t1), float(t2), int(n)
lines = [json.loads(l) for l in open(f"{w}/batch/manifest.jsonl")]
done = [l for l in lines if l["kind"] == "done"]
assert len(done) == n, f"{len(done)} of {n} jobs done"
log = open(f"{w}/batch.log").read()
load = float(re.search(r"model loaded in ([0-9.]+) s", log).group(1))
mean = {k: sum(d["seconds"][k] for d in done) / n for k in ["text", "sampling", "decode", "write", "total"]}
batch_s, procs_s = t1 - t0, t2 - t1
r = {
    "adapter": adapter or done[0]["adapter"], "model": model, "jobs": n, "steps": steps,
    "batch_seconds": round(batch_s, 2), "processes_seconds": round(procs_s, 2),
    "speedup": round(procs_s / batch_s, 2), "model_load_seconds": load,
    "per_job_mean_seconds": {k: round(v, 3) for k, v in mean.items()},
}
print(f"{n} jobs on {r['adapter']} ({model}, {steps} steps): batch {batch_s:.1f} s, {n} processes {procs_s:.1f} s, "
      f"ratio {procs_s / batch_s:.2f}x")
print(f"batch: model load {load:.2f} s once; per job: " + ", ".join(f"{k} {v:.3f} s" for k, v in mean.items()))
if os.environ.get("OUT"):
    json.dump(r, open(os.path.join(os.environ["OUT"], "batch.json"), "w"), indent=1)
PY
