# Run from the repository root, after `bash experiments/two-stage-leave-one-release-out.sh r3` (its locator):
#     bash experiments/stage2-input-size.sh [SIZE ...]      (default: 128 192 256)
# Stage 2's input size, chosen by measurement: stage 2 retrained at Table 2's budget (6 x 50 x 16 crops of 1.75 disc
# diameters) on drishti-gs1 + RIM-ONE r1 + r2 (train splits) at each input size, everything else as the training job
# chooses it from the data, and scored on the TRAIN split of RIM-ONE r3 (92 images of a camera never trained on; no
# test split is touched), from stage 1's location (the leave-r3-out version's locator) and from the expert disc
# (--oracle). Outputs: runs/size/ (not committed); one JSON line per (size, oracle) in runs/size/scores.jsonl, each
# size's training minutes in runs/size/<size>.log and its time-to-Dice in runs/size/<size>/stage2/log.jsonl.
# docs/RESULTS.md, "Stage 2's input size".
set -e
export TF_CPP_MIN_LOG_LEVEL=2
V=runs/loro-r3/models/optic-disc/1
DATA=../shared/data/drishti-gs1,runs/loro-r3/rim-one-r1r2
OUT=runs/size
mkdir -p $OUT
for size in ${@:-128 192 256}; do
  [ -f $OUT/$size/stage2/model.keras ] || /usr/bin/time -f "size $size: stage 2 %e s" .venv/bin/python experiments/train_two_stage.py \
      --stage 2 --out $OUT/$size --data $DATA --epochs 6 --steps 50 --size $size > $OUT/$size.log 2>&1
  for oracle in "" --oracle; do
    .venv/bin/python experiments/evaluate_stages.py --stage1 $V/model.keras --stage2 $OUT/$size/stage2/model.keras \
        --size $size --data runs/loro-r3/rim-one-r3-train --split train --label size-$size $oracle 2>/dev/null | tee -a $OUT/scores.jsonl; done
done
echo done
