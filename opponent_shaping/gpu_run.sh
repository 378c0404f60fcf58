#!/usr/bin/env bash
# One device call: GPU tests, the throughput benchmark, then the named gpu experiments, each under a time
# limit; everything small is packed into $OUT/opponent_shaping_gpu.tgz.
# Usage: bash opponent_shaping/gpu_run.sh "<bench configs>" "<experiments>" "<extra config args per experiment>"
set -u
export PYTHONUNBUFFERED=1
runs=/tmp/os_runs; mkdir -p "$runs"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ -n "${RUN_TESTS:-}" ]; then
  timeout 240 python -m pytest opponent_shaping common/ppo_test.py -q -x -p no:cacheprovider 2>&1 | tail -3
fi
if [ -n "$1" ]; then
  python -m opponent_shaping.bench --configs="$1" --updates=10 --repeats=2 --out="$runs/bench.json" 2>&1 | grep -v '^[IW][0-9]'
fi
for exp in $2; do
  start=$(date +%s)
  timeout "${EXP_TIMEOUT:-300}" python -m opponent_shaping.main --config="opponent_shaping/configs/$exp.py${3:-}" \
    --workdir="$runs/$exp" > "$runs/$exp.log" 2>&1
  echo "$exp: exit $? after $(( $(date +%s) - start )) s"
  python - "$runs/$exp" <<'PY'
import json, sys
try:
  d = json.load(open(sys.argv[1] + '/results.json'))
except OSError:
  sys.exit(0)
for c in d['claims']:
  print(f"  {c['name']}: {c['measured']} ({c['criterion']}) {'PASS' if c['passed'] else 'FAIL'}")
print(f"  wall {d['wall_clock_s']:.0f} s, train {d['extra']['train_seconds']:.0f} s")
PY
done
tar czf "$OUT/opponent_shaping_gpu.tgz" -C "$runs" --exclude=checkpoints --exclude=tensorboard .
