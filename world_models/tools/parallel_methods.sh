#!/usr/bin/env bash
# Runs a config's behaviour methods side by side once the VLM and the world model are trained: the first
# method's process (WORKDIR/parts/<first>) trains the VLM, the world model (and the connector fine-tune, if
# on) and then its own behaviours; as soon as it starts them, `vlm/`, `wm/` (and `wm_connector_ft/`) are
# copied into WORKDIR/parts/<method> for every other method, whose processes restore them and learn only
# their behaviours, spread round-robin over GPUS. Once every part has its results.json, the stages and the
# behaviours are gathered into WORKDIR/all and the config runs there on all the methods: it reads every
# finished stage and behaviour back and writes the claims and results.json. The data is regenerated
# identically from the seed in every process. Rerun the same command to resume (each part resumes).
# `main` runs the methods one after another in one process; this is the same science in less wall-clock.
#   [METHODS='genrl vlm_reward genrl_data_free genrl_no_aligner'] [GPUS='0 1 2 3'] \
#     bash world_models/tools/parallel_methods.sh CONFIG WORKDIR [FLAGS...]
# XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.9) is split between the processes of a GPU.
set -u
config=$1 workdir=$2; shift 2
read -r -a methods <<< "${METHODS:-genrl vlm_reward genrl_data_free genrl_no_aligner}"
read -r -a gpus <<< "${GPUS:-0}"
per_gpu=$(( (${#methods[@]} + ${#gpus[@]} - 1) / ${#gpus[@]} ))
fraction=$(python3 -c "print(round(${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9} / $per_gpu, 3))")
export PYTHONUNBUFFERED=1
trap 'kill $(jobs -p) 2> /dev/null' TERM INT
mkdir -p "$workdir/parts" "$workdir/all"
run() {  # run METHOD GPU: one part, in the background.
  CUDA_VISIBLE_DEVICES=$2 XLA_PYTHON_CLIENT_MEM_FRACTION=$fraction python3 -m world_models.main \
    --config="$config" "--config.behaviour.methods=('$1',)" "${@:3}" --workdir="$workdir/parts/$1" \
    >> "$workdir/parts/$1.log" 2>&1 &
}
first=${methods[0]}
run "$first" "${gpus[0]}" "$@"
first_pid=$!
while [ ! -d "$workdir/parts/$first/behaviour" ] && kill -0 "$first_pid" 2> /dev/null; do sleep 5; done
if [ ! -d "$workdir/parts/$first/behaviour" ]; then
  echo "$first stopped before its behaviours: $(tail -1 "$workdir/parts/$first.log" | cut -c1-200)"
  exit 1
fi
for i in "${!methods[@]}"; do
  m=${methods[$i]}
  [ "$m" = "$first" ] && continue
  mkdir -p "$workdir/parts/$m"
  for stage in vlm wm wm_connector_ft; do
    src="$workdir/parts/$first/$stage"
    [ -d "$src" ] && [ ! -d "$workdir/parts/$m/$stage" ] && cp -r "$src" "$workdir/parts/$m/"
  done
  run "$m" "${gpus[$(( i % ${#gpus[@]} ))]}" "$@"
done
wait
mkdir -p "$workdir/all/behaviour"
for m in "${methods[@]}"; do
  echo "$m: $(grep -v -E '^\s*$' "$workdir/parts/$m.log" | tail -1 | cut -c1-200)"
  [ -f "$workdir/parts/$m/results.json" ] || { echo "$m has not finished: rerun to resume"; exit 1; }
  cp -rn "$workdir/parts/$m/behaviour/." "$workdir/all/behaviour/"
done
for stage in vlm wm wm_connector_ft; do
  src="$workdir/parts/$first/$stage"
  [ -d "$src" ] && [ ! -d "$workdir/all/$stage" ] && cp -r "$src" "$workdir/all/"
done
list=$(printf "'%s'," "${methods[@]}")
python3 -m world_models.main --config="$config" "--config.behaviour.methods=(${list})" "$@" --workdir="$workdir/all"
