# Run from the repository root: bash experiments/bundle-v4.sh; outputs go to runs/bundle-v4/ (not committed).
# Version 3's stage 2 trained on for 8 more epochs (8 x 200 x 16 = 25,600 crops of 1.75 disc diameters, both
# datasets' train splits, peak learning rate 5e-4, cosine), paired with version 3's stage 1 unchanged, exported with
# today's signatures (uint8 `images`), scored once on both test splits through the serving pipeline, then
# published into runs/bundle-v4/models. docs/RESULTS.md, "Version 4". The stage-2 time-to-Dice log starts from
# version 3's stage-2 minutes (26.8), so the card's training minutes count both stages' whole lineage.
set -e
export TF_CPP_MIN_LOG_LEVEL=2
V3=models/optic-disc/3
OUT=runs/bundle-v4
mkdir -p $OUT/stage1 $OUT/stage2
cp $V3/model.keras $OUT/stage1/model.keras
.venv/bin/python - "$V3" "$OUT" <<'PY'
import json, sys
from pathlib import Path
v3, out = Path(sys.argv[1]), Path(sys.argv[2])
card = json.loads((v3 / "metrics.json").read_text())
stage1 = {k: v for k, v in card["config"].items() if k != "segment"}
(out / "stage1" / "config.json").write_text(json.dumps(stage1, indent=2))
stage2_seconds = 26.8 * 60  # docs/RESULTS.md, "Version 3": stage 2's wall minutes
(out / "stage1" / "log.jsonl").write_text(json.dumps({"epoch": 0, "seconds": round(card["training_seconds"] - stage2_seconds, 1),
                                                      "from": str(v3)}) + "\n")
log = out / "stage2" / "log.jsonl"
if not log.exists():
    log.write_text(json.dumps({"epoch": 0, "seconds": stage2_seconds, "from": str(v3 / "segment.keras")}) + "\n")
PY
[ -f $OUT/stage2/model.keras ] || /usr/bin/time -f "stage 2 %e s" .venv/bin/python experiments/train_two_stage.py --stage 2 \
    --out $OUT --init $V3/segment.keras --lr 5e-4 --epochs 8 --steps 200 --seed 1
.venv/bin/python experiments/train_two_stage.py --stage export --out $OUT --base $V3 --repo $OUT/models
echo done
