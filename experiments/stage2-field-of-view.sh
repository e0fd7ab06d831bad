# Run from the repository root: bash experiments/stage2-field-of-view.sh
# Stage 2 trained on one instrument, scored from the expert disc (--oracle, so stage 1 plays no part) on the
# other: does the edge of the photo stop passing for the edge of the disc?
#  - drishti-gs1 (whole photos) -> rim-one-dl (photos barely larger than the disc): a share of training crops cut
#    to a tight square around the disc (FieldOfViewAugment.p, --field-of-view);
#  - rim-one-dl -> drishti-gs1: a share of training crops with the photo mirrored beyond its edges instead of black
#    (FieldOfViewAugment.p_mirror, --mirror).
# Stage 2 at Table 2's budget (6 x 50 x 16 crops). Outputs: runs/fov/ (not committed), one JSON line per
# (variant, dataset) in runs/fov/scores.jsonl; docs/RESULTS.md, "The photo's edge is not the disc's".
set -e
export TF_CPP_MIN_LOG_LEVEL=2
D=../shared/data/drishti-gs1; R=../shared/data/rim-one-dl; OUT=runs/fov
mkdir -p $OUT
run() { name=$1; data=$2; shift 2
  [ -f $OUT/$name/stage2/model.keras ] || /usr/bin/time -f "$name: stage 2 %e s" .venv/bin/python experiments/train_two_stage.py \
      --stage 2 --out $OUT/$name --data $data --epochs 6 --steps 50 "$@" > $OUT/$name.log 2>&1
  .venv/bin/python experiments/evaluate_stages.py --stage1 models/optic-disc/3/model.keras --stage2 $OUT/$name/stage2/model.keras \
      --data $R,$D --label $name --oracle 2>/dev/null | tee -a $OUT/scores.jsonl; }
run drishti-fov0 $D --field-of-view 0
run drishti-fov0.5 $D --field-of-view 0.5
run rim-mirror0 $R --mirror 0
run rim-mirror0.5 $R --mirror 0.5
