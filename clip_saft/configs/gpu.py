"""The reduced reproduction on one H100/H200 (under 10 minutes): `default.py` at its full reduced size
(mini-CLIP ~8M parameters, 64 px, 12 classes, 5k pretraining steps at batch 1024 in bf16, 300 fine-tuning
steps per method), 3 few-shot seeds. Preconditions first: P1 (zero-shot in-distribution >= 80 %, OOD
average >= 60 %) and P2 (full FT gains >= 5 points in-distribution and loses >= 3 points OOD). Then C1
(SAFT 0.1 % beats full FT on OOD average by >= 2 points), C2 (SAFT in-distribution within 2 points of full
FT) and C3 (the gradient mask beats a random mask of the same density by >= 1 point OOD). WiSE-FT, LP-FT,
FLYP, the density sweep and the colour-shortcut diagnostic are reported beside them.

    python -m clip_saft.main --config=clip_saft/configs/gpu.py --workdir=runs/clip_saft_gpu

Expected: not run yet (no device time); the research pilot (§5.0) warns that P1 needs this much pretraining.
"""

from clip_saft.configs import default


def get_config(arg=None):
  return default.get_config(arg)  # The default is already the reduced GPU size; `:smoke` shrinks it.
