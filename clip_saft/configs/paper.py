"""The paper's setting: OpenAI CLIP ViT-B/16, 16-shot ImageNet (1000 classes), evaluated on ImageNet (val)
and ImageNet-V2 / -Sketch / -A / -R, all from local paths (nothing is downloaded).

    python -m clip_saft.main --config=clip_saft/configs/paper.py \
        --config.init_checkpoint=/data/clip/vit_b16_openai.npz \
        --config.folders.class_list=/data/imagenet/classes.txt \
        --config.folders.imagenet_train_dir=/data/imagenet/train ... --workdir=runs/clip_saft_paper

- `init_checkpoint`: the OpenAI state dict saved as .npz (names as in `visual.conv1.weight`; converted by
  `common.clip.from_openai_state_dict`, which names any parameter whose shape does not fit ViT-B/16).
- `folders.class_list`: 1000 lines `wnid class name` in label order; `imagenet_v2_dir` has folders 0..999
  (matched-frequency); `imagenet_a_dir` / `imagenet_r_dir` hold their 200-class subsets (the argmax is
  restricted to those classes).
- Paper result: SAFT (0.1 %) +5.15 points average OOD accuracy over conventional fine-tuning.
- Compute (our estimate): mask pass over 16k images + 1250 steps at batch 256 per method on ViT-B/16, about
  20-40 minutes per method on one H100, evaluation of ~190k images ~10 minutes.
- Tokenizer: CLIP's BPE (`common.clip.ClipBPETokenizer`), its vocabulary from `tokenizer_vocab`,
  $CLIP_BPE_VOCAB or an installed open_clip. `:smoke` gives the CPU smoke run of `default.py`.
- The zero-shot head is our 8-template ImageNet ensemble (`data.IMAGENET_TEMPLATES`), not OpenAI's 80.
- `id_val` (ours, research note pitfall 8): `data.val_size` = 1000 images of the train
  folder, one per class (stratified, drawn from `seed`), held out before the 16-shot draw, so no few-shot set
  of any seed contains one; learning rates are chosen on it (`python -m clip_saft.select`), never on the
  ImageNet val set (`imagenet_val`, the ID test) or the variants.
"""

from clip_saft.configs import default
from common import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, seeds=3)
  c = default.get_config(','.join([f'seeds={arg.seeds}'] + (['smoke'] if arg.smoke else [])))
  if arg.smoke:
    return c
  c.claims = 'paper'
  c.data.source = 'folders'
  c.data.num_classes = 1000
  c.data.image_size = 224
  c.data.shots = 16
  c.data.eval_splits = ('imagenet_val', 'imagenet_v2', 'imagenet_sketch', 'imagenet_a', 'imagenet_r')
  c.data.val_size = 1000  # id_val: one image per class held out of the train folder, never a few-shot image.
  c.model.patch_size = 16
  c.model.vision_width = 768
  c.model.vision_layers = 12
  c.model.vision_heads = 12
  c.model.text_width = 512
  c.model.text_layers = 12
  c.model.text_heads = 8
  c.model.embed_dim = 512
  c.model.context_length = 77
  c.model.quick_gelu = True
  c.model.dtype = 'bfloat16'
  c.pretrain.steps = 0
  c.init_checkpoint = '/data/clip/vit_b16_openai.npz'
  c.tokenizer = 'clip_bpe'
  c.finetune.steps = 1250  # 20 epochs of 16k images at batch 256.
  c.finetune.batch_size = 256
  c.finetune.lr = 1e-5
  c.finetune.saft_lr = 1e-4
  c.finetune.warmup_steps = 50
  c.finetune.templates = 'photo'  # "a photo of a {}." as in the paper; the zero-shot row uses the ensemble.
  c.finetune.shortcut_diagnostic = False
  c.saft.mask_batch = 256
  c.folders.class_list = '/data/imagenet/classes.txt'
  c.folders.imagenet_train_dir = '/data/imagenet/train'
  c.folders.imagenet_val_dir = '/data/imagenet/val'
  c.folders.imagenet_v2_dir = '/data/imagenet-v2/imagenetv2-matched-frequency'
  c.folders.imagenet_sketch_dir = '/data/imagenet-sketch/sketch'
  c.folders.imagenet_a_dir = '/data/imagenet-a'
  c.folders.imagenet_r_dir = '/data/imagenet-r'
  return c
