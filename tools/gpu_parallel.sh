#!/usr/bin/env bash
# One device call that runs several small experiments side by side on one GPU (each takes a slice of its
# memory), each under TIMEOUT seconds; rerunning the same call resumes them (workdirs under runs/gpu/, kept
# while the machine stays warm). Wall-clocks measured this way are shared-GPU times: say so where reported.
# Each 'NAME=CONFIG [FLAGS...]' runs `python -m PROJECT.main --config=CONFIG FLAGS --workdir=runs/gpu/NAME`
# (PROJECT = the config's folder; quote a spec that has flags); results.json claims are printed and the
# workdirs, without checkpoints or TensorBoard files, are packed into $OUT/NAME.tgz.
# Usage: bash tools/gpu_parallel.sh TIMEOUT 'NAME=CONFIG [FLAGS...]' ['NAME=CONFIG [FLAGS...]' ...]
set -u
export PYTHONUNBUFFERED=1
timeout_s=$1; shift
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
export XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-$(python3 -c "print(round(0.9 / $#, 2))")}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p "$OUT" runs/gpu
declare -A pids
for spec in "$@"; do
  name=${spec%%=*}; rest=${spec#*=}; config=${rest%% *}; project=${config%%/*}
  read -r -a flags <<< "${rest#"$config"}"
  ( start=$(date +%s)
    timeout "$timeout_s" python3 -m "$project.main" --config="$config" "${flags[@]}" \
      --workdir="runs/gpu/$name" >> "runs/gpu/$name.log" 2>&1
    echo "exit $? after $(( $(date +%s) - start )) s" >> "runs/gpu/$name.log" ) &
  pids[$name]=$!
done
wait
for spec in "$@"; do
  name=${spec%%=*}
  echo "== $name: $(tail -1 "runs/gpu/$name.log")"
  grep -E 'Error|Traceback' "runs/gpu/$name.log" | tail -3 | cut -c1-300
  python3 - "runs/gpu/$name" <<'PY'
import json, sys
try:
  d = json.load(open(sys.argv[1] + '/results.json'))
except OSError:
  sys.exit(0)
for c in d.get('claims', []):
  print(f"  {c['name']}: {c['measured']} ({c['criterion']}) {'PASS' if c['passed'] else 'FAIL'}")
print(f"  wall {d.get('wall_clock_s', 0):.0f} s")
PY
  cp "runs/gpu/$name.log" "runs/gpu/$name/run.log" 2>/dev/null
  tar czf "$OUT/$name.tgz" -C runs/gpu --exclude=checkpoints --exclude=tensorboard "$name"
done
ls -la "$OUT"
