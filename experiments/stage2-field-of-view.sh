# Run from the repository root: bash experiments/stage2-field-of-view.sh
# Does stage 2, trained on whole photos only (drishti-gs1), meet a camera that photographs only the nerve head
# (rim-one-dl) better when some training crops are cut to a tight square around the disc (FieldOfView.p)?
# Stage 2 at Table 2's budget (6 x 50 x 16 crops), scored from the expert disc (--oracle, so stage 1 plays no
# part) on rim-one-dl test and drishti-gs1 test. Outputs: runs/fov/ (not committed); docs/RESULTS.md.
set -e
export TF_CPP_MIN_LOG_LEVEL=2
D=../shared/data/drishti-gs1; R=../shared/data/rim-one-dl; OUT=runs/fov
mkdir -p $OUT
for p in ${FOV_SHARES:-0 0.5}; do
  name=drishti-fov$p
  [ -f $OUT/$name/stage2/model.keras ] || /usr/bin/time -f "$name: stage 2 %e s" .venv/bin/python experiments/train_two_stage.py \
      --stage 2 --out $OUT/$name --data $D --epochs 6 --steps 50 --field-of-view $p > $OUT/$name.log 2>&1
  .venv/bin/python experiments/evaluate_stages.py --stage1 models/optic-disc/3/model.keras --stage2 $OUT/$name/stage2/model.keras \
      --data $R,$D --label $name --oracle 2>/dev/null | tee -a $OUT/scores.jsonl
done
