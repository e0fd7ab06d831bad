# Run from the repository root: bash experiments/bundle-v4.sh; outputs go to runs/two-stage-v4 (not committed).
# Version 4: both stages retrained with the field-of-view augmentations (docs/RESULTS.md, "The photo's edge is not
# the disc's"). Stage 1: the bundled single-stage model (version 1) fine-tuned with LOCATOR_AUGMENT (zoom 0.33-4,
# half about the disc, half the views with extended edges), 4 x 50 x 32 = 6,400 images, as version 2's; stage 2:
# disc + cup from scratch on crops of 1.75 disc diameters with FieldOfViewAugment(p=0.5, p_mirror=0.5), 8 x 200 x 16 =
# 25,600 crops, as version 3's. Each is resumable (rerun the command); the export scores both test splits once.
set -e
export TF_CPP_MIN_LOG_LEVEL=2
OUT=runs/two-stage-v4
[ -f $OUT/stage1/model.keras ] || .venv/bin/python experiments/train_two_stage.py --stage 1 --out $OUT --epochs 4 --steps 50
[ -f $OUT/stage2/model.keras ] || .venv/bin/python experiments/train_two_stage.py --stage 2 --out $OUT --epochs 8 --steps 200
[ -d $OUT/models/optic-disc/1 ] || .venv/bin/python experiments/train_two_stage.py --stage export --out $OUT --repo $OUT/models
# then: cp -r runs/two-stage-v4/models/optic-disc/1 models/optic-disc/4
