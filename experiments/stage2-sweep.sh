# Run from the repository root, after `bash experiments/two-stage-leave-one-release-out.sh r3` (its locator):
#     bash experiments/stage2-sweep.sh size [SIZE ...]              (default: 128 192 256)
#     bash experiments/stage2-sweep.sh multiple [MULTIPLE ...]      (default: 1.75 1.5 1.35)
# One stage-2 setting chosen by measurement: the crop's side in pixels (`size`, stage 2's U-Net input; multiples
# of 2^6 for the depth-6 net) or in disc diameters (`multiple`: a tighter crop gives the cup more of the pixels but
# leaves less margin for stage 1's errors). Stage 2 retrained at Table 2's budget (6 x 50 x 16 crops) on
# drishti-gs1 + RIM-ONE r1 + r2 (train splits) at each value, everything else as the training job chooses it, and
# scored on the TRAIN split of RIM-ONE r3 (92 images of a camera never trained on; no test split is touched), from
# stage 1's location (the leave-r3-out version's locator) and from the expert disc (--oracle). Outputs: runs/<flag>/
# (not committed); one JSON line per (value, oracle) in runs/<flag>/scores.jsonl, each value's training minutes in
# runs/<flag>/<value>.log and its time-to-Dice in runs/<flag>/<value>/stage2/log.jsonl. docs/RESULTS.md, "Stage
# 2's input size" and "Stage 2's crop multiple below 1.75".
set -e
export TF_CPP_MIN_LOG_LEVEL=2
FLAG=$1; shift
case $FLAG in
  size) VALUES=${@:-128 192 256} ;;
  multiple) VALUES=${@:-1.75 1.5 1.35} ;;
  *) echo "usage: $0 size|multiple [VALUE ...]" >&2; exit 2 ;;
esac
V=runs/loro-r3/models/optic-disc/1
DATA=../shared/data/drishti-gs1,runs/loro-r3/rim-one-r1r2
OUT=runs/$FLAG
mkdir -p $OUT
for value in $VALUES; do
  [ -f $OUT/$value/stage2/model.keras ] || /usr/bin/time -f "$FLAG $value: stage 2 %e s" .venv/bin/python \
      experiments/train_two_stage.py --stage 2 --out $OUT/$value --data $DATA --epochs 6 --steps 50 \
      --$FLAG $value > $OUT/$value.log 2>&1
  for oracle in "" --oracle; do
    .venv/bin/python experiments/evaluate_stages.py --stage1 $V/model.keras --stage2 $OUT/$value/stage2/model.keras \
        --$FLAG $value --data runs/loro-r3/rim-one-r3-train --split train --label $FLAG-$value $oracle \
        2>/dev/null | tee -a $OUT/scores.jsonl; done
done
echo done
