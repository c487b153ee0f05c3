#!/usr/bin/env bash
# Starts a one-node Slurm cluster on loopback (Debian's slurm-wlm and munge; installed when missing), submits
# deploy/slurm/p2p-batch.sbatch as a 3-task array over a jobs file on the tiny SD fixture (lavapipe, 2 steps),
# requeues one task while it runs, waits, then merges and checks that every job is present exactly once with
# intact files. Stops its daemons on exit, whatever happens. Needs root (the daemons) and target/release/p2p-wgpu.
#
#   bash deploy/slurm/test-local-cluster.sh        # from the repository root; `.ci/run` calls it
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN="$ROOT/target/release/p2p-wgpu"
LIMIT="${P2P_SLURM_TEST_LIMIT:-600}"
[ -x "$BIN" ] || { echo "slurm-test: build first (cargo build --release)"; exit 1; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm-test: installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi
echo "slurm-test: $(slurmctld -V)"

W=$(mktemp -d /tmp/p2p-slurm.XXXXXX)
pids=()
cleanup() {
    scancel --quiet --full p2p-batch >/dev/null 2>&1 || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then echo "slurm-test: kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
# The whole test stops by itself.
( sleep "$LIMIT"; echo "slurm-test: over $LIMIT s, stopping"; kill -TERM $$ ) &
pids+=($!)

# munge on its own socket and key.
mkdir -p "$W/munge" "$W/state" "$W/spool" "$W/log" "$W/out"
chmod 700 "$W/munge"
dd if=/dev/urandom of="$W/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$W/munge/munge.key"
SOCK="$W/munge/munge.socket"
munged --force --key-file="$W/munge/munge.key" --socket="$SOCK" --pid-file="$W/munge/munged.pid" \
    --log-file="$W/log/munged.log" --seed-file="$W/munge/seed"
pids+=("$(cat "$W/munge/munged.pid")")

HOST=$(hostname -s)
CPUS=$(nproc)
cat > "$W/slurm.conf" <<CONF
ClusterName=p2ptest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
GresTypes=gpu
JobRequeue=1
KillWait=5
NodeName=p2pnode NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$CPUS Gres=gpu:3 State=UNKNOWN
PartitionName=debug Nodes=p2pnode Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
# Three stand-in GPU device files (slurmd only needs them to exist; the jobs run on lavapipe), so that the sbatch
# file's --gres=gpu:1 is scheduled as on a real GPU node.
mkdir -p "$W/dev" && touch "$W/dev/gpu0" "$W/dev/gpu1" "$W/dev/gpu2"
echo "NodeName=p2pnode Name=gpu File=$W/dev/gpu[0-2]" > "$W/gres.conf"
export SLURM_CONF="$W/slurm.conf"
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF" -N p2pnode
sleep 1
pids+=("$(cat "$W/slurmctld.pid")" "$(cat "$W/slurmd.pid")")
for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -q idle && break
    sleep 1
done
sinfo -h -o "%P %T %D %G" || true
sinfo -h -o %T | grep -q idle || { echo "slurm-test: the node did not come up"; tail -n 20 "$W"/log/*.log; exit 1; }

# Twelve jobs on the tiny SD fixture: swaps, reweights and plain generations.
MODEL="$ROOT/tests/fixtures/sd1-tiny"
for i in $(seq 0 11); do
    case $((i % 3)) in
        0) e=', "swap": ["bicycle=car"]' ;;
        1) e=', "reweight": ["red=2"]' ;;
        *) e='' ;;
    esac
    echo "{\"id\": \"job$i\", \"prompt\": \"a red bicycle on a hill\", \"steps\": 2, \"scheduler\": \"ddim\"$e}"
done > "$W/jobs.jsonl"

cd "$W"
JOB=$(JOBS="$W/jobs.jsonl" OUT="$W/out" MODEL="$MODEL" P2P="$BIN" \
    sbatch --parsable --array=0-2 --cpus-per-task=1 "$ROOT/deploy/slurm/p2p-batch.sbatch")
echo "slurm-test: submitted array job $JOB"
# Requeue task 1 once it has finished a job and while it is still running.
requeued=no
for _ in $(seq 600); do
    m="$W/out/manifest-shard-1-of-3.jsonl"
    if [ -f "$m" ] && grep -q '"kind":"done"' "$m" && squeue -h -j "${JOB}_1" -t R | grep -q .; then
        scontrol requeue "${JOB}_1" && requeued=yes
        echo "slurm-test: requeued ${JOB}_1 after $(grep -c '"kind":"done"' "$m") done job(s)"
        # Slurm holds a requeued job back for a while; let it start again now.
        for _ in $(seq 50); do
            squeue -h -j "${JOB}_1" -t PD | grep -q . && break
            sleep 0.2
        done
        scontrol update JobId="${JOB}_1" StartTime=now || true
        break
    fi
    if ! squeue -h -j "${JOB}_1" | grep -q .; then break; fi
    sleep 0.2
done
for _ in $(seq "$LIMIT"); do
    squeue -h -j "$JOB" | grep -q . || break
    sleep 1
done
squeue -h -j "$JOB" | grep -q . && { echo "slurm-test: the array did not finish"; squeue; exit 1; }
echo "slurm-test: task logs:"
tail -n 3 "$W"/p2p-batch-*.log
[ "$requeued" = yes ] || { echo "slurm-test: task 1 ended before it could be requeued"; exit 1; }
grep -q "restart 1" "$W"/p2p-batch-"${JOB}"_1.log || { echo "slurm-test: task 1 did not run again"; exit 1; }

# Every job exactly once with intact files (merge checks sizes and SHA-256 and finds duplicates).
"$BIN" batch --merge "$W/out"
python3 - "$W/out/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ids = sorted(d["id"] for d in r["done"])
assert ids == sorted(f"job{i}" for i in range(12)), ids
assert not (r["failed"] or r["missing"] or r["damaged"] or r["duplicates"] or r["missing_shards"]), r
print(f"slurm-test: {len(ids)} jobs, each done once, over {r['shards']} shards")
PY
