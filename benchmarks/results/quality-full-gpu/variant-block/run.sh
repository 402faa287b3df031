#!/bin/bash
# Device run for issue 5 (2026-11-27 b): arm 1 with block + surplus-closing beside scratch/centre/dpiat/upper;
# arm 2 block (all shards); efficientnet_b0 Fashion-MNIST seeds 3-14 (scratch, centre, block, dpiat).
set -u
LIMIT=${1:-560}
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -3
export PYTHONPATH=/tmp/site:$PWD HMT_SHARED=$PWD/.devshared
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | head -2
REM=$(( LIMIT - $(el) - 30 ))
BA=$(awk -v r="$REM" 'BEGIN { printf "%.2f", (r - 60) / 60 }')
BD=$(awk -v r="$REM" 'BEGIN { printf "%.2f", (r - 20) / 60 }')
echo "setup done at $(el)s; budgets A ${BA} D ${BD} min; hard stop after ${REM}s"
SM="--strategy-module benchmarks.variants.block --strategy-module benchmarks.variants.surplus"
Q="timeout -k 10 $REM python3 benchmarks/quality.py --profile full --device cuda --eval-every 5"
$Q --workers 7 --threads 2 --config configs/bench/arm1.yaml --upper-targets resnet50 $SM \
  --inits scratch,centre,block,surplus-closing,dpiat,upper --budget-min "$BA" --out /tmp/qa --cache /tmp/qca > /tmp/qa.log 2>&1 &
P="$!"
$Q --workers 8 --threads 1 --config configs/bench/arm2.yaml $SM --inits block --budget-min "$BD" \
  --out /tmp/qb --cache /tmp/qcb > /tmp/qb.log 2>&1 &
P="$P $!"
for s in 3 6 9 12; do
  $Q --threads 1 --config .devshared/arm2-s$s.yaml $SM --targets efficientnet_b0 --datasets fashion_mnist \
    --inits scratch,centre,block,dpiat --budget-min "$BD" --out /tmp/qd$s --cache /tmp/qcd$s > /tmp/qd$s.log 2>&1 &
  P="$P $!"
done
for p in $P; do wait $p; echo "pid $p rc $? at $(el)s"; done
for x in a b d3 d6 d9 d12; do mkdir -p "$OUT/$x"; cp /tmp/q$x/results.json /tmp/q$x/results.md "$OUT/$x/" 2>/dev/null; done
cp /tmp/qa/curves.png "$OUT/a/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp qa.log qb.log qd3.log qd6.log qd9.log qd12.log qa/shards qb/shards 2>/dev/null
grep -E "mean gain|^\| (mobilenet|efficient|resnet|convnext|regnet|vit)" /tmp/qa/results.md 2>/dev/null | head -40
echo "all done at $(el)s"
