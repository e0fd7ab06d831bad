# Run from the repository root: bash experiments/<this file>; outputs go to runs/ (not committed).
export TF_CPP_MIN_LOG_LEVEL=2
exec nice -n -5 .venv/bin/fundus-seg train --data ../shared/data/drishti-gs1,../shared/data/rim-one-dl --out runs/bundle \
  --depth 6 --width 16 --ir 1.4 --epochs 12 --steps-per-epoch 50 --batch-size 32 --lr 0.002 --schedule cosine --seed 0
