#!/usr/bin/env bash
# Runs a config's behaviour methods side by side once the VLM and the world model are trained: the first
# part's process (WORKDIR/parts/<first>) trains the VLM, the world model (and the connector fine-tune, if
# on) and then its own behaviours; as soon as it starts them, `vlm/`, `wm/` (and `wm_connector_ft/`) are
# copied into every other part's workdir, whose processes restore them and learn only their behaviours,
# spread round-robin over GPUS. A part is one method, or, for the methods named in SPLIT, one (method,
# prompt) pair (WORKDIR/parts/<method>.p<i>, the config's i-th prompt): the VLM-reward baseline learns at
# about a seventh of GenRL's speed (it decodes every imagined frame and backpropagates through the VLM), so
# its prompts are worth a GPU each. A behaviour's random keys depend on its prompt's task, not on which
# process runs it, so the split changes no number. Once every part has its results.json, the stages and the
# behaviours are gathered into WORKDIR/all and the config runs there on all the methods: it reads every
# finished stage and behaviour back and writes the claims and results.json. The data is regenerated
# identically from the seed in every process. Rerun the same command to resume (each part resumes).
# `main` runs the methods one after another in one process; this is the same science in less wall-clock.
# 'wm_clip' (WM-CLIP, not in the default METHODS) trains its head (`wm_clip/`) in its own part after the
# copied world model, and the gathering run takes that stage from it; leave it out of SPLIT (each of its
# prompt parts would train the same head again).
# Across sessions (checkpoints are lost with the lent machine): EXPORT=PREFIX writes the first part's
# trained VLM and world model to PREFIX.npz.part<i> (`world_models/stage_transfer.py`, parts of at most
# 15.5 MiB, three for `gpu.py`) as soon as its behaviours start; IMPORT=PART,PART,... writes them into the
# first part's workdir before it starts (when it has no wm/ yet), so it goes straight to its behaviours.
#   [METHODS='genrl vlm_reward genrl_data_free genrl_no_aligner'] [SPLIT='vlm_reward'] [GPUS='0 1 2 3'] \
#     [EXPORT=$OUT/stages] [IMPORT=.stages/stages.npz.part0,...] \
#     bash world_models/tools/parallel_methods.sh CONFIG WORKDIR [FLAGS...]
# SPLIT uses the prompts of CONFIG (a `behaviour.prompts` flag would be ignored, so it is refused).
# XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.9) is split between the processes of a GPU.
set -u
config=$1 workdir=$2; shift 2
read -r -a methods <<< "${METHODS:-genrl vlm_reward genrl_data_free genrl_no_aligner}"
read -r -a split <<< "${SPLIT:-}"
read -r -a gpus <<< "${GPUS:-0}"
# Parts: names, and the method and prompt flags of each.
names=() method_flag=() prompt_flag=()
if [ ${#split[@]} -gt 0 ]; then
  for f in "$@"; do
    case $f in *behaviour.prompts*) echo "SPLIT uses CONFIG's prompts: drop $f"; exit 2 ;; esac
  done
  prompts=$(python3 -c "
import sys
from common import config as config_lib
print('\n'.join(config_lib.load_config(sys.argv[1]).behaviour.prompts))" "$config") || exit 2
  mapfile -t prompt_list <<< "$prompts"
fi
for m in "${methods[@]}"; do
  if [[ " ${split[*]} " == *" $m "* ]]; then
    for i in "${!prompt_list[@]}"; do
      names+=("$m.p$i"); method_flag+=("--config.behaviour.methods=('$m',)")
      prompt_flag+=("--config.behaviour.prompts=('${prompt_list[$i]}',)")
    done
  else
    names+=("$m"); method_flag+=("--config.behaviour.methods=('$m',)"); prompt_flag+=("")
  fi
done
per_gpu=$(( (${#names[@]} + ${#gpus[@]} - 1) / ${#gpus[@]} ))
fraction=$(python3 -c "print(round(${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9} / $per_gpu, 3))")
export PYTHONUNBUFFERED=1
trap 'kill $(jobs -p) 2> /dev/null' TERM INT
mkdir -p "$workdir/parts" "$workdir/all"
run() {  # run PART_INDEX: one part, in the background, on its GPU.
  local i=$1 extra=()
  [ -n "${prompt_flag[$i]}" ] && extra=("${prompt_flag[$i]}")
  CUDA_VISIBLE_DEVICES=${gpus[$(( i % ${#gpus[@]} ))]} XLA_PYTHON_CLIENT_MEM_FRACTION=$fraction \
    python3 -m world_models.main --config="$config" "${method_flag[$i]}" "${extra[@]}" "${@:2}" \
    --workdir="$workdir/parts/${names[$i]}" >> "$workdir/parts/${names[$i]}.log" 2>&1 &
}
first=${names[0]}
if [ -n "${IMPORT:-}" ] && [ ! -d "$workdir/parts/$first/wm" ]; then
  JAX_PLATFORMS=cpu python3 -m world_models.stage_transfer --action=import --config="$config" \
    "${method_flag[0]}" "$@" --workdir="$workdir/parts/$first" --parts="$IMPORT" || exit 1
fi
run 0 "$@"
first_pid=$!
while [ ! -d "$workdir/parts/$first/behaviour" ] && kill -0 "$first_pid" 2> /dev/null; do sleep 5; done
if [ ! -d "$workdir/parts/$first/behaviour" ]; then
  echo "$first stopped before its behaviours: $(tail -1 "$workdir/parts/$first.log" | cut -c1-200)"
  exit 1
fi
if [ -n "${EXPORT:-}" ] && [ ! -f "$EXPORT.npz.part0" ]; then
  JAX_PLATFORMS=cpu python3 -m world_models.stage_transfer --action=export --config="$config" \
    "${method_flag[0]}" "$@" --workdir="$workdir/parts/$first" --out="$EXPORT" --part_mib=15.5 \
    || echo "export failed"
fi
for i in "${!names[@]}"; do
  [ "$i" = 0 ] && continue
  part=${names[$i]}
  mkdir -p "$workdir/parts/$part"
  for stage in vlm wm wm_connector_ft; do
    src="$workdir/parts/$first/$stage"
    [ -d "$src" ] && [ ! -d "$workdir/parts/$part/$stage" ] && cp -r "$src" "$workdir/parts/$part/"
  done
  run "$i" "$@"
done
wait
mkdir -p "$workdir/all/behaviour"
for part in "${names[@]}"; do
  echo "$part: $(grep -v -E '^\s*$' "$workdir/parts/$part.log" | tail -1 | cut -c1-200)"
  [ -f "$workdir/parts/$part/results.json" ] || { echo "$part has not finished: rerun to resume"; exit 1; }
  cp -rn "$workdir/parts/$part/behaviour/." "$workdir/all/behaviour/"
done
for stage in vlm wm wm_connector_ft; do
  src="$workdir/parts/$first/$stage"
  [ -d "$src" ] && [ ! -d "$workdir/all/$stage" ] && cp -r "$src" "$workdir/all/"
done
for part in "${names[@]}"; do  # The WM-CLIP head, from the first part that trained it.
  src="$workdir/parts/$part/wm_clip"
  [ -d "$src" ] && [ ! -d "$workdir/all/wm_clip" ] && cp -r "$src" "$workdir/all/"
done
list=$(printf "'%s'," "${methods[@]}")
python3 -m world_models.main --config="$config" "--config.behaviour.methods=(${list})" "$@" --workdir="$workdir/all"
