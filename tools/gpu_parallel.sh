#!/usr/bin/env bash
# One device call that runs several experiments side by side, on one GPU or spread over the GPUs of the
# machine (each run takes a slice of its GPU's memory), each under TIMEOUT seconds; rerunning the same call
# resumes them (workdirs under runs/gpu/, kept while the machine stays warm). Wall-clocks measured this way
# are shared-GPU times: say so where reported.
#
# Specs:
#   'NAME=CONFIG [FLAGS...]'     `python -m PROJECT.main --config=CONFIG FLAGS --workdir=runs/gpu/NAME`
#                                (PROJECT = the config's folder; quote a spec that has flags)
#   'NAME=sh:COMMAND'            `bash -c COMMAND` (its own workdir, if any, should be runs/gpu/NAME)
#   'NAME@G=...'                 either form, pinned to GPU G (CUDA_VISIBLE_DEVICES=G); without @G, runs
#                                go round-robin over the machine's GPUs.
# Each run's output goes to runs/gpu/NAME.log; results.json claims are printed. The workdirs (without
# checkpoints or TensorBoard files) are packed into one $OUT/gpuG.tgz per GPU, so a call returns at most
# one file per GPU plus $OUT/logs.tgz (the return limit is 8 files of 16 MiB).
# The wheels in .whl/ are installed into /tmp/site and kept in runs/.whl so a later call on the same warm
# machine needs not carry them again.
# Usage: bash tools/gpu_parallel.sh TIMEOUT SPEC [SPEC ...]
set -u
export PYTHONUNBUFFERED=1
timeout_s=$1; shift
mkdir -p "$OUT" runs/gpu runs/.whl
for w in .whl/*.whl; do [ -f "$w" ] && [ ! -f "runs/.whl/$(basename "$w")" ] && cp "$w" runs/.whl/; done
new=()  # Wheels not installed yet on this machine (a later call may carry more).
for w in runs/.whl/*.whl; do [ -f "$w" ] && [ ! -f "/tmp/site/.done.$(basename "$w")" ] && new+=("$w"); done
if [ ${#new[@]} -gt 0 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "${new[@]}" || exit 1
  for w in "${new[@]}"; do touch "/tmp/site/.done.$(basename "$w")"; done
fi
export PYTHONPATH=/tmp/site:$PWD
# A persistent compilation cache on the warm machine: a run resumed in the next call skips its compiles.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$PWD/runs/.jax_cache}
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
ngpu=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
declare -A gpu_of rest_of runs_on
names=()
i=0
for spec in "$@"; do
  head=${spec%%=*}; name=${head%@*}
  if [ "$head" != "$name" ]; then gpu=${head#*@}; else gpu=$(( i % ngpu )); i=$(( i + 1 )); fi
  names+=("$name"); gpu_of[$name]=$gpu; rest_of[$name]=${spec#*=}; runs_on[$gpu]=$(( ${runs_on[$gpu]:-0} + 1 ))
done
for name in "${names[@]}"; do
  rest=${rest_of[$name]}; gpu=${gpu_of[$name]}
  fraction=${MEM_FRACTION:-$(python3 -c "print(round(0.9 / ${runs_on[$gpu]}, 2))")}
  ( export CUDA_VISIBLE_DEVICES=$gpu XLA_PYTHON_CLIENT_MEM_FRACTION=$fraction
    start=$(date +%s)
    echo "== $(date -u +%H:%M:%S) start on GPU $gpu (memory fraction $fraction)" >> "runs/gpu/$name.log"
    if [ "${rest#sh:}" != "$rest" ]; then
      timeout "$timeout_s" bash -c "${rest#sh:}" >> "runs/gpu/$name.log" 2>&1
    else
      config=${rest%% *}; project=${config%%/*}
      read -r -a flags <<< "${rest#"$config"}"
      timeout "$timeout_s" python3 -m "$project.main" --config="$config" "${flags[@]}" \
        --workdir="runs/gpu/$name" >> "runs/gpu/$name.log" 2>&1
    fi
    echo "exit $? after $(( $(date +%s) - start )) s" >> "runs/gpu/$name.log" ) &
done
wait
declare -A packed
for name in "${names[@]}"; do
  gpu=${gpu_of[$name]}
  echo "== $name (GPU $gpu): $(tail -1 "runs/gpu/$name.log")"
  grep -E 'Error|Traceback' "runs/gpu/$name.log" | tail -3 | cut -c1-300
  # Where it got to: its last lines before the exit line.
  grep -v -E 'warn|^\s*$' "runs/gpu/$name.log" | tail -4 | head -3 | cut -c1-200 | sed 's/^/  | /'
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
  [ -d "runs/gpu/$name" ] && cp "runs/gpu/$name.log" "runs/gpu/$name/run.log" && packed[$gpu]+="$name "
done
for gpu in "${!packed[@]}"; do
  # shellcheck disable=SC2086
  tar czf "$OUT/gpu$gpu.tgz" -C runs/gpu --exclude=checkpoints --exclude=tensorboard ${packed[$gpu]}
done
tar czf "$OUT/logs.tgz" -C runs/gpu $(cd runs/gpu && ls *.log)
ls -la "$OUT"
