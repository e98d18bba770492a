#!/usr/bin/env python3
"""Synthetic clean camera streams for the stream alarm's false-alarm rate
(docs/design.md §10): raw gray8 frames from an IDX image set, either every
frame a new image drawn at random (`iid`) or each drawn image held in view
for 30–90 frames, 1–3 s at 30 fps, as a fixed camera sees a scene (`held`).

Usage: python3 lab/alarm_video.py iid|held FRAMES OUT.gray8 [IMAGES.idx3-ubyte.gz]
then:  badexpert-guard stream --bundle B --format gray8 --width 28 --height 28 --block \\
           --alarm-per-hour 1 --input OUT.gray8 | grep -c '"event":"alarm"'
Standard library only.
"""

import gzip
import random
import struct
import sys


def images(path):
    data = gzip.open(path).read()
    n, h, w = struct.unpack(">III", data[4:16])
    return [data[16 + i * h * w:16 + (i + 1) * h * w] for i in range(n)]


def main():
    mode, frames, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    source = sys.argv[4] if len(sys.argv) > 4 else "models/badnet-fmnist/eval-clean-images-idx3-ubyte.gz"
    if mode not in ("iid", "held"):
        sys.exit("mode must be iid or held")
    pool, rng, written = images(source), random.Random(1), 0
    with open(out, "wb") as f:
        while written < frames:
            hold = min(1 if mode == "iid" else rng.randint(30, 90), frames - written)
            f.write(rng.choice(pool) * hold)
            written += hold
    print(f"{frames} {mode} frames from {len(pool)} images into {out}")


if __name__ == "__main__":
    main()
