#!/bin/bash
# Device run for issue 5 (2026-11-27 c, second call): more seeds on the arm-2 rows where `block-initscale`
# ends below scratch or DPIAT over seeds 0-2 (run.sh's `b`). One process per (row, init, seed triple), each
# on one thread; .devshared/arm2-s{3,6,9,12}.yaml = configs/bench/arm2.yaml with `seeds:` set to a triple.
#   efficientnet_b0 / fashion_mnist: block-initscale, seeds 3-14 (scratch, block, dpiat: earlier runs)
#   regnety_016 / fashion_mnist, mobilenetv3_large_100 / fashion_mnist: scratch, block, block-initscale, 3-8
#   efficientnet_b0 / cifar10_lowdata: scratch, dpiat, block-initscale, seeds 3-8
set -u
LIMIT=${1:-480}
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -3
export PYTHONPATH=/tmp/site:$PWD HMT_SHARED=$PWD/.devshared
W=/tmp/hmtq2; rm -rf $W; mkdir -p $W
REM=$(( LIMIT - $(el) - 30 ))
B=$(awk -v r="$REM" 'BEGIN { printf "%.2f", (r - 20) / 60 }')
echo "setup done at $(el)s; budget ${B} min; hard stop after ${REM}s"
P=""
go() {  # go NAME TARGET DATASET INIT SEEDSTART
  timeout -k 10 $REM python3 benchmarks/quality.py --profile full --device cuda --eval-every 5 --threads 1 \
    --config .devshared/arm2-s$5.yaml --targets $2 --datasets $3 --inits $4 --budget-min "$B" \
    --out $W/$1 --cache $W/cache-$1 > $W/$1.log 2>&1 &
  P="$P $!"
}
for s in 3 6 9 12; do go effF-bis-$s efficientnet_b0 fashion_mnist block-initscale $s; done
for s in 3 6; do
  for i in scratch block block-initscale; do
    go regF-$i-$s regnety_016 fashion_mnist $i $s
    go mnvF-$i-$s mobilenetv3_large_100 fashion_mnist $i $s
  done
  for i in scratch dpiat block-initscale; do go effC-$i-$s efficientnet_b0 cifar10_lowdata $i $s; done
done
for p in $P; do wait $p; done
echo "all exited at $(el)s"
cd $W && tar czf "$OUT/results.tgz" */results.json */results.md *.log 2>/dev/null
python3 - <<'PY'
import glob, json
for f in sorted(glob.glob("*/results.json")):
    runs = [r for r in json.load(open(f))["runs"] if r.get("acc_final") is not None]
    print(f.split("/")[0], " ".join(f"{r['seed']}:{100 * r['acc_final']:.1f}" for r in runs))
PY
echo "done at $(el)s"
