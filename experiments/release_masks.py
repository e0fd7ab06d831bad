"""rim-one-dl TRAIN split's expert masks by release: cup/disc area, mask vCDR, components, cup outside the disc,
contour roughness (perimeter^2 / 4 pi area), image side, the disc's share (docs/RESULTS.md "r2's images").

    .venv/bin/python experiments/release_masks.py
"""
import collections
import csv

import cv2
import numpy as np

root='../shared/data/rim-one-dl/'
rows=[r for r in csv.DictReader(open(root+'manifest.csv')) if r['split']=='train']
stats=collections.defaultdict(list)
for r in rows:
    rel=r['id'].split('_')[0]
    d=cv2.imread(root+r['disc_mask'],0)>127
    c=cv2.imread(root+r['cup_mask'],0)>127
    ys,xs=np.nonzero(d)
    ch=np.ptp(np.nonzero(c)[0])+1 if c.any() else 0
    n,_=cv2.connectedComponents(c.astype(np.uint8))
    outside=(c&~d).sum()/max(c.sum(),1)
    # cup boundary roughness: perimeter^2/(4 pi area)
    cnts,_=cv2.findContours(c.astype(np.uint8),cv2.RETR_EXTERNAL,cv2.CHAIN_APPROX_NONE)
    per=sum(cv2.arcLength(x,True) for x in cnts)
    circ=per**2/(4*np.pi*max(c.sum(),1))
    stats[rel].append((c.sum()/d.sum(), ch/(np.ptp(ys)+1), n-1, outside, circ, d.shape[0], d.sum()/d.size, r['label']))
for rel,v in sorted(stats.items()):
    a=np.array([x[:7] for x in v],float)
    print(rel,len(v),'area',np.median(a[:,0]).round(3),'vcdr',np.median(a[:,1]).round(3),'ncomp>1',(a[:,2]>1).sum(),'outside',a[:,3].max().round(3),'circ med',np.median(a[:,4]).round(3),'size',np.median(a[:,5]),'disc frac',np.median(a[:,6]).round(3), collections.Counter(x[7] for x in v))
