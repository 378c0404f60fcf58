#!/usr/bin/env bash
# One device call for a project: its GPU tests (RUN_TESTS=1), its benchmark (<project>/bench.py, when
# configs are named), then the named experiments (<project>/configs/<name>.py), each under EXP_TIMEOUT
# seconds; everything but checkpoints and TensorBoard files is packed into $OUT/<project>_gpu.tgz.
# Usage: bash tools/gpu_run.sh PROJECT "<bench configs>" "<experiments>" ["<:arg suffix for every config>"]
set -u
export PYTHONUNBUFFERED=1
project=$1; shift
runs=${RUNS_DIR:-/tmp/${project}_runs}; mkdir -p "$runs"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ -n "${RUN_TESTS:-}" ]; then
  timeout 240 python -m pytest "$project" -q -x -p no:cacheprovider 2>&1 | tail -3
fi
if [ -n "$1" ]; then
  python -m "$project.bench" --configs="$1" --updates=10 --repeats=2 --out="$runs/bench.json" 2>&1 | grep -v '^[IW][0-9]'
fi
for exp in $2; do
  start=$(date +%s)
  timeout "${EXP_TIMEOUT:-300}" python -m "$project.main" --config="$project/configs/$exp.py${3:-}" \
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
print(f"  wall {d['wall_clock_s']:.0f} s")
PY
done
tar czf "$OUT/${project}_$(basename "$runs").tgz" -C "$runs" --exclude=checkpoints --exclude=tensorboard .
