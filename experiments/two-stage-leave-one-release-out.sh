# Run from the repository root: bash experiments/two-stage-leave-one-release-out.sh; outputs go to runs/ (not committed).
# The two-stage model at Table 2's budget trained on drishti-gs1 + RIM-ONE r1 + r2 (their train splits) and tested
# on all 137 images of RIM-ONE r3 (another camera and hospital, never trained on). The two folders under runs/loro
# are manifests over ../shared/data/rim-one-dl (symlinks; made by the python snippet below).
set -e
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python - <<'PY'
import csv, os
from pathlib import Path
src = Path("../shared/data/rim-one-dl").resolve()
rows = list(csv.DictReader(open(src / "manifest.csv")))
for name, releases, split in (("rim-one-r1r2", ("r1", "r2"), None), ("rim-one-r3", ("r3",), "test")):
    folder = Path("runs/loro") / name
    kept = [dict(r, split=split or r["split"]) for r in rows if r["source_release"] in releases]
    for r in kept:
        for column in ("image", "disc_mask", "cup_mask"):
            (folder / r[column]).parent.mkdir(parents=True, exist_ok=True)
            if not (folder / r[column]).exists():
                os.symlink(src / r[column], folder / r[column])
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0])); writer.writeheader(); writer.writerows(kept)
PY
mkdir -p runs/logs
.venv/bin/python -m training_job --data ../shared/data/drishti-gs1,runs/loro/rim-one-r1r2 --eval-data runs/loro/rim-one-r3 \
    --out runs/loro/models --pipeline two-stage --depth 6 --width 16 --ir 1.4 --epochs 6 --steps-per-epoch 25 --batch-size 32 \
    --lr 0.002 --schedule cosine --seed 0 --segment-epochs 6 --segment-steps-per-epoch 50 --run-id loro-r3 > runs/logs/loro-r3.log 2>&1
.venv/bin/python -m training_job.report --glaucoma runs/loro/models
