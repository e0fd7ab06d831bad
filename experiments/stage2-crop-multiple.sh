# Run from the repository root, after `bash experiments/two-stage-leave-one-release-out.sh r3` (its locator):
#     bash experiments/stage2-crop-multiple.sh [MULTIPLE ...]      (default: 1.75 1.5 1.35)
# Stage 2's crop side in disc diameters, below the 1.75 that beat 2.5 ("What each stage-2 augmentation buys"): a
# tighter crop gives the cup more of stage 2's 128 pixels but leaves less margin for stage 1's errors. Stage 2
# retrained at Table 2's budget (6 x 50 x 16 crops) on drishti-gs1 + RIM-ONE r1 + r2 (train splits) at each multiple,
# everything else as the training job chooses it, and scored on the TRAIN split of RIM-ONE r3 (92 images of a camera
# never trained on; no test split is touched), from stage 1's location (the leave-r3-out version's locator) and from
# the expert disc (--oracle). Outputs: runs/multiple/ (not committed); one JSON line per (multiple, oracle) in
# runs/multiple/scores.jsonl, each run's training minutes in runs/multiple/<multiple>.log. docs/RESULTS.md,
# "Stage 2's crop multiple".
set -e
export TF_CPP_MIN_LOG_LEVEL=2
V=runs/loro-r3/models/optic-disc/1
DATA=../shared/data/drishti-gs1,runs/loro-r3/rim-one-r1r2
OUT=runs/multiple
mkdir -p $OUT
for multiple in ${@:-1.75 1.5 1.35}; do
  [ -f $OUT/$multiple/stage2/model.keras ] || /usr/bin/time -f "multiple $multiple: stage 2 %e s" .venv/bin/python \
      experiments/train_two_stage.py --stage 2 --out $OUT/$multiple --data $DATA --epochs 6 --steps 50 \
      --multiple $multiple > $OUT/$multiple.log 2>&1
  for oracle in "" --oracle; do
    .venv/bin/python experiments/evaluate_stages.py --stage1 $V/model.keras --stage2 $OUT/$multiple/stage2/model.keras \
        --multiple $multiple --data runs/loro-r3/rim-one-r3-train --split train --label multiple-$multiple $oracle \
        2>/dev/null | tee -a $OUT/scores.jsonl; done
done
echo done
