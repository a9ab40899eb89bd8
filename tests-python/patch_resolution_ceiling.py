#!/usr/bin/env python3
"""The mIoU ceiling of a decoder that predicts on the patch grid (DEPICT's masks), docs/results.md.

Every label map of a gen-data NYU folder (label_*.png, 8-bit ids, 255 = ignore) is pooled to
patches of P x P pixels (the per-class share of each patch), upsampled back bilinearly
(align_corners=False, as DEPICT's masks are) and argmaxed; the result is scored against the labels
with the project's mIoU convention (one confusion matrix over all images, 255 ignored, mean over
classes present). The PNGs are decoded here (8-bit grayscale, no interlace), so only numpy and
torch (the pinned peer's venv) are needed.

Usage: patch_resolution_ceiling.py LABEL_FOLDER [P=16]
"""
import glob, struct, sys, zlib
import numpy as np
import torch

def read_gray8(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour == 0, (depth, colour)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    out = np.zeros((h, w), np.int64)
    prev = np.zeros(w, np.int64)
    for y in range(h):
        f = raw[y * (w + 1)]
        line = np.frombuffer(raw[y * (w + 1) + 1:(y + 1) * (w + 1)], np.uint8).astype(np.int64)
        cur = np.zeros(w, np.int64)
        for x in range(w):
            a = cur[x - 1] if x else 0
            b = prev[x]
            c = prev[x - 1] if x else 0
            if f == 0: v = line[x]
            elif f == 1: v = line[x] + a
            elif f == 2: v = line[x] + b
            elif f == 3: v = line[x] + (a + b) // 2
            else:
                p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                v = line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)
            cur[x] = v & 255
        out[y] = cur
        prev = cur
    return out

K, P = 14, int(sys.argv[2]) if len(sys.argv) > 2 else 16
conf = np.zeros((K, K), np.int64)
for path in sorted(glob.glob(sys.argv[1] + "/label_*.png")):
    lab = read_gray8(path)
    h, w = lab.shape
    valid = lab != 255
    onehot = torch.zeros(1, K, h, w)
    for k in range(K):
        onehot[0, k] = torch.from_numpy((lab == k).astype(np.float32))
    pooled = torch.nn.functional.avg_pool2d(onehot, P)
    up = torch.nn.functional.interpolate(pooled, size=(h, w), mode="bilinear", align_corners=False)
    pred = up[0].argmax(0).numpy()
    np.add.at(conf, (lab[valid], pred[valid]), 1)
tp = np.diag(conf); union = conf.sum(0) + conf.sum(1) - tp
iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
print("patch", P, "mIoU %.4f" % np.nanmean(iou), "pixel accuracy %.4f" % (tp.sum() / conf.sum()),
      "IoU", " ".join("%.3f" % v for v in iou[:6]))
