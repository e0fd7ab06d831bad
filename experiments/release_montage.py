"""Twelve seeded-random rim-one-dl TRAIN images of one release, raw and with the expert disc (green) and cup
(blue) contours, into one PNG (docs/RESULTS.md "r2's images").

    .venv/bin/python experiments/release_montage.py r2 runs/r2.png
"""
import csv
import random
import sys

import cv2
import numpy as np

root='../shared/data/rim-one-dl/'
rel=sys.argv[1]
out=sys.argv[2]
rows=[r for r in csv.DictReader(open(root+'manifest.csv')) if r['split']=='train' and r['id'].startswith(rel)]
random.Random(0).shuffle(rows)
tiles=[]
for r in rows[:12]:
    im=cv2.imread(root+r['image'])
    d=cv2.imread(root+r['disc_mask'],0)
    c=cv2.imread(root+r['cup_mask'],0)
    raw=cv2.resize(im,(256,256))
    for m,col in ((d,(0,255,0)),(c,(255,0,0))):
        cn,_=cv2.findContours((m>127).astype(np.uint8),cv2.RETR_EXTERNAL,cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(im,cn,-1,col,max(1,im.shape[0]//200))
    t=np.hstack([raw,cv2.resize(im,(256,256))])
    cv2.putText(t,r['id']+' '+r['label'][0],(5,15),0,0.5,(255,255,255),1)
    tiles.append(t)
rows_=[np.hstack(tiles[i:i+3]) for i in range(0,12,3)]
cv2.imwrite(out,np.vstack(rows_))
