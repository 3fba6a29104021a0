#!/usr/bin/env bash
# The GPU check, as one command with a time budget: the GPU-path tests, the attack and AutoAttack speed ratios,
# then wall times of the quickstart and the MNIST adversarial study, each step cut off when the budget runs out.
#   DATA=../shared/data OUT=/tmp/gpu-check BUDGET=540 benchmarks/gpu_check.sh
# WHEELS=<folder of wheels> installs missing packages first (a machine without a registry); logs go to $OUT.
set -u
export PYTHONUNBUFFERED=1
DEV=${DEV:-cuda}; PY=${PY:-python3}; OUT=${OUT:-/tmp/out}; T0=$(date +%s); BUDGET=${BUDGET:-520}
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
DATA=${DATA:-../shared/data}; mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}:$PWD
fi
export ROBUSTCNN_CACHE=/tmp/rc-cache
{ nvidia-smi -L; nproc; $PY -c "import torch,foolbox,pyautoattack,typer;print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-', foolbox.__version__)"; } > $OUT/env.txt 2>&1
cat $OUT/env.txt
step() { local name=$1 lim=$2; shift 2; local l=$(left); [ $l -lt $lim ] && lim=$l; [ $lim -lt 10 ] && { echo "SKIP $name (no time)"; return; }
  echo "== $name (limit ${lim}s, $(( $(date +%s) - T0 ))s in)"; local s=$(date +%s)
  timeout $lim "$@" > $OUT/$name.log 2>&1; local rc=$?
  grep -v "^robustcnn: \[" $OUT/$name.log | tail -25; echo "rc $rc wall $(( $(date +%s) - s ))s" | tee -a $OUT/$name.log; }
step gpu_tests 120 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_attacks.py -k "cuda or bit_for_bit"
step attack_speed 100 $PY benchmarks/attack_speed.py --data-root $DATA --device $DEV --repeats 5 ${N:+--n $N}
step aa_speed 160 $PY benchmarks/autoattack_speed.py --data-root $DATA --device $DEV --weights robustcnn/pretrained/lenet5-mnist.pt ${N:+--n $N}
step quickstart 100 $PY -m robustcnn study adversarial --device $DEV --out /tmp/runs --seed 0
step mnist_study 400 $PY -m robustcnn study adversarial --config studies/adversarial-mnist-cpu.toml --data-root $DATA --device $DEV --out /tmp/runs --seed 0
find /tmp/runs -name checkpoints -prune -o -name .sweep-store -prune -o -type f \( -name "*.csv" -o -name "*.json" -o -name "*.md" \) -print | tar czf $OUT/runs.tar.gz -T - 2>/dev/null
echo "total $(( $(date +%s) - T0 ))s"
