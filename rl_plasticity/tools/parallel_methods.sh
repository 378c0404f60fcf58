#!/usr/bin/env bash
# Runs a config's methods side by side, one process per method (each in WORKDIR/parts/<method>, its own
# resumable run with `config.methods` = that method alone), on one GPU whose memory they share; once every
# method has its final.json, gathers them into WORKDIR/all and runs the full config there, which reads each
# finished method back and writes the claims, plots and results.json. Rerun the same command to resume.
# `main` runs the methods one after another in one process; this is the same science in less wall-clock.
#   bash rl_plasticity/tools/parallel_methods.sh CONFIG WORKDIR [FLAGS...]
# e.g. bash rl_plasticity/tools/parallel_methods.sh rl_plasticity/configs/gpu.py:env=hopper runs/gpu/rp_hop
# METHODS (space-separated) overrides the config's methods (default: td3 ne ne_code redo, the gpu config's).
set -u
config=$1 workdir=$2; shift 2
read -r -a methods <<< "${METHODS:-td3 ne ne_code redo}"
export JAX_DEFAULT_MATMUL_PRECISION=highest PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c \
  "print(round(${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9} / ${#methods[@]}, 3))")
trap 'kill $(jobs -p) 2> /dev/null' TERM INT
mkdir -p "$workdir/parts" "$workdir/all"
for m in "${methods[@]}"; do
  python3 -m rl_plasticity.main --config="$config" "--config.methods=('$m',)" "$@" \
    --workdir="$workdir/parts/$m" >> "$workdir/parts/$m.log" 2>&1 &
done
wait
for m in "${methods[@]}"; do
  echo "$m: $(tail -1 "$workdir/parts/$m.log" | cut -c1-200)"
  [ -f "$workdir/parts/$m/$m/final.json" ] || { echo "$m has not finished: rerun to resume"; exit 1; }
  [ -d "$workdir/all/$m" ] || cp -r "$workdir/parts/$m/$m" "$workdir/all/"
done
list=$(printf "'%s'," "${methods[@]}")
python3 -m rl_plasticity.main --config="$config" "--config.methods=(${list})" "$@" --workdir="$workdir/all"
