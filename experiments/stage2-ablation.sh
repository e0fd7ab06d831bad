# Run from the repository root, after `bash experiments/two-stage-leave-one-release-out.sh r3`:
#     bash experiments/stage2-ablation.sh
# What each stage-2 augmentation buys on a camera never trained on: stage 2 retrained at Table 2's budget
# (6 x 50 x 16 crops) on drishti-gs1 + RIM-ONE r1 + r2 with one augmentation (or the crop's multiple of the disc diameter) changed at a time, each paired with
# the same locator (the leave-r3-out version's stage 1) and scored on RIM-ONE r3 (unseen), the r1 + r2 test
# images and drishti-gs1 test, from stage 1's location and from the expert disc (--oracle). Outputs: runs/ablation/
# (not committed); one JSON line per (variant, dataset, oracle) in runs/ablation/scores.jsonl. docs/RESULTS.md.
set -e
export TF_CPP_MIN_LOG_LEVEL=2
V=runs/loro-r3/models/optic-disc/1
DATA=../shared/data/drishti-gs1,runs/loro-r3/rim-one-r1r2
TEST=runs/loro-r3/rim-one-r3,runs/loro-r3/rim-one-r1r2,../shared/data/drishti-gs1
OUT=runs/ablation
mkdir -p $OUT
train() { name=$1; multiple=$2; shift 2
  [ -f $OUT/$name/stage2/model.keras ] || /usr/bin/time -f "$name: stage 2 %e s" .venv/bin/python experiments/train_two_stage.py \
      --stage 2 --out $OUT/$name --data $DATA --epochs 6 --steps 50 --multiple $multiple "$@" > $OUT/$name.log 2>&1
  for oracle in "" --oracle; do
    .venv/bin/python experiments/evaluate_stages.py --stage1 $V/model.keras --stage2 $OUT/$name/stage2/model.keras \
        --multiple $multiple --data $TEST --label $name $oracle 2>/dev/null | tee -a $OUT/scores.jsonl; done; }
train all-augmentations 2.5
train no-photometric 2.5 --photometric '{"p_white_balance": 0, "p_exposure": 0, "p_gamma": 0, "p_blur": 0, "p_sharpen": 0, "p_jpeg": 0, "p_noise": 0, "p_vignette": 0}'
train no-crop-jitter 2.5 --jitter-scale 1,1 --jitter-shift 0
train multiple-1.75 1.75
