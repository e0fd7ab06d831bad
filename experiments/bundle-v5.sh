# Run from the repository root: bash experiments/bundle-v5.sh; outputs go to runs/bundle-v5/ (not committed).
# Version 4's stage 2 trained on for 32 more epochs (32 x 200 x 16 = 102,400 crops of 1.75 disc diameters, both
# datasets' train splits, the same jitter and instrument augmentation, peak learning rate 5e-4, cosine), paired with
# version 4's stage 1 unchanged (version 3's, itself version 2's), exported with today's signatures, scored once on
# both test splits through the serving pipeline, then published into runs/bundle-v5/models. docs/RESULTS.md,
# "Version 5". The stage-2 time-to-Dice log starts from version 4's stage-2 minutes (41.7: version 3's 26.8 plus
# version 4's 15.5, rounded per run), so the card's training minutes count both stages' whole lineage.
set -e
export TF_CPP_MIN_LOG_LEVEL=2
V4=models/optic-disc/4
OUT=runs/bundle-v5
mkdir -p $OUT/stage1 $OUT/stage2
cp $V4/model.keras $OUT/stage1/model.keras
.venv/bin/python - "$V4" "$OUT" <<'PY'
import json, sys
from pathlib import Path
v4, out = Path(sys.argv[1]), Path(sys.argv[2])
card = json.loads((v4 / "metrics.json").read_text())
stage1 = {k: v for k, v in card["config"].items() if k != "segment"}
(out / "stage1" / "config.json").write_text(json.dumps(stage1, indent=2))
stage1_seconds = 9.3 * 60  # docs/RESULTS.md, "Version 3": version 2's stage 1, unchanged since
stage2_seconds = card["training_seconds"] - stage1_seconds
(out / "stage1" / "log.jsonl").write_text(json.dumps({"epoch": 0, "seconds": stage1_seconds, "from": str(v4)}) + "\n")
log = out / "stage2" / "log.jsonl"
if not log.exists():
    log.write_text(json.dumps({"epoch": 0, "seconds": round(stage2_seconds, 1), "from": str(v4 / "segment.keras")}) + "\n")
PY
[ -f $OUT/stage2/model.keras ] || /usr/bin/time -f "stage 2 %e s" .venv/bin/python experiments/train_two_stage.py --stage 2 \
    --out $OUT --init $V4/segment.keras --lr 5e-4 --epochs 32 --steps 200 --seed 2
.venv/bin/python experiments/train_two_stage.py --stage export --out $OUT --base $V4 --repo $OUT/models
echo done
