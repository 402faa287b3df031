#!/bin/bash
# Device run for issue 5 (2026-11-27 c): does `block-initscale` hold on the GPU protocol?
#   a: arm 1, every target, scratch/block/block-initscale/dpiat/upper (upper: resnet50), seeds 0-2;
#   b: arm 2, every target and dataset, block-initscale (arm 2's fixed source makes scratch/block/dpiat
#      of the earlier runs on this GPU comparable: they repeat to the printed digit);
#   c: arm 1's held-out targets (docs/quality.md "Beyond MobileNetV3"), scratch/block/block-initscale,
#      seeds 0-2, on the source `a` trains (it waits for that file).
# Usage on the device: bash run.sh [LIMIT_S]  (needs .whl/ and .devshared/ carried; writes $OUT)
# A local smoke test: DEV=cpu PROFILE=quick OUT=/tmp/smoke bash run.sh 150
# Later calls pick other inits with A_INITS / B_INITS / C_INITS (defaults: what this call ran); an empty
# B_INITS or C_INITS skips that part. The next planned call (docs/quality.md, "A narrow source written as
# a sub-network"):
#   A_INITS=scratch,block-initscale,block-initscale-written,block-initscale-isolate,dpiat,upper \
#   B_INITS=block-initscale-written,block-initscale-isolate \
#   C_INITS=block-initscale-written,block-initscale-isolate bash run.sh 540
set -u
A_INITS=${A_INITS-scratch,block,block-initscale,dpiat,upper}
B_INITS=${B_INITS-block-initscale}
C_INITS=${C_INITS-scratch,block,block-initscale}
LIMIT=${1:-540}
DEV=${DEV:-cuda}
PROFILE=${PROFILE:-full}
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -3
  export PYTHONPATH=/tmp/site:$PWD
fi
export HMT_SHARED=${HMT_SHARED:-$PWD/.devshared}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | head -2
W=/tmp/hmtq; rm -rf $W; mkdir -p $W
REM=$(( LIMIT - $(el) - 30 ))
BA=$(awk -v r="$REM" 'BEGIN { printf "%.2f", (r - 40) / 60 }')
echo "setup done at $(el)s; budget ${BA} min; hard stop after ${REM}s"
Q="python3 benchmarks/quality.py --profile $PROFILE --device $DEV"
timeout -k 10 $REM $Q --eval-every 5 --workers 7 --threads 2 --config configs/bench/arm1.yaml --upper-targets resnet50 \
  --inits "$A_INITS" --budget-min "$BA" --out $W/a --cache $W/ca > $W/a.log 2>&1 &
PA=$!
PB=""
if [ -n "$B_INITS" ]; then
timeout -k 10 $REM $Q --eval-every 5 --workers 8 --threads 1 --config configs/bench/arm2.yaml --inits "$B_INITS" \
  --budget-min "$BA" --out $W/b --cache $W/cb > $W/b.log 2>&1 &
PB=$!
fi
# c reuses a's source: quality.py writes the .json beside the checkpoint last, so its presence means complete.
while ! ls $W/ca/pretrain-*.json >/dev/null 2>&1 && kill -0 $PA 2>/dev/null; do sleep 2; done
RC=$(( LIMIT - $(el) - 30 ))
BC=$(awk -v r="$RC" 'BEGIN { printf "%.2f", (r - 30) / 60 }')
echo "source ready at $(el)s; c budget ${BC} min"
PC=""
if [ -n "$C_INITS" ] && ls $W/ca/pretrain-*.json >/dev/null 2>&1 && [ "$RC" -gt 90 ]; then
timeout -k 10 $RC $Q --eval-every 10 --workers 7 --threads 1 --config configs/bench/arm1.yaml \
  --targets mobilenetv3_small_100,mobilenetv2_100,lcnet_100,mnasnet_100,ghostnet_100,fbnetc_100,resnet34 \
  --inits "$C_INITS" --budget-min "$BC" --out $W/c --cache $W/ca > $W/c.log 2>&1 &
PC=$!
else echo "c skipped: not asked for, no source or too little time"; fi
for p in $PA $PB $PC; do wait $p; echo "pid $p rc $? at $(el)s"; done
for x in a b c; do mkdir -p "$OUT/$x"; cp $W/$x/results.json $W/$x/results.md "$OUT/$x/" 2>/dev/null; done
cp $W/a/curves.png "$OUT/a/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C $W a.log b.log c.log a/shards b/shards c/shards ca/pretrain-resnet18-*.json 2>/dev/null
for x in a b c; do echo "== $x"; grep -E "mean gain|recovery|^\| [a-z]" $W/$x/results.md 2>/dev/null | head -30; done
echo "all done at $(el)s"
