#!/usr/bin/env python3
"""An independent zoo of backdoored (and clean) Fashion-MNIST classifiers.

Trained with plain PyTorch the way users' models differ (optimiser, epochs,
augmentation, BatchNorm, poison rate, target class, architecture built from
torchvision / torch.nn modules), every model exported three ways:

  <name>.folded.onnx   torch.onnx.export(dynamo=False), eval mode: BatchNorm folded
  <name>.bn.onnx       torch.onnx.export(dynamo=False, training=PRESERVE,
                       do_constant_folding=False): BatchNorm nodes kept
  <name>.dynamo.onnx   torch.onnx.export(dynamo=True) as a user calls it
                       (+ its external weights <name>.dynamo.onnx.data)

with a dynamic batch axis, except for the models marked fixed_batch: those
are exported as tutorials do it, on one example frame with no dynamic axes,
so the batch of 1 is pinned in the graph.

The triggers are written here from the attack descriptions of docs/design.md §4,
independently of lab/src/attack.rs, plus two trigger shapes the project
does not ship (a bright "+" and a diagonal line), a simplified Adap-Blend
(Qi et al., ICLR 2023: partial-pattern poison and cover frames in training,
the full pattern at test time) and all-to-all poisoning (recipe field
mode="all-to-all": frames of every class, labelled (y + 1) mod 10; target
null, ASR = triggered frames classified as (y + 1) mod 10). info.json
records attack_mode ("all-to-one" / "all-to-all"; null for clean models).

Data: the models train on subsets of the Fashion-MNIST TRAIN set only. From
the TEST set a fixed permutation (seed SPLIT_SEED) gives a 2,000-frame clean
reserve and a disjoint 1,000-frame clean evaluation slice, shared by the
whole zoo; each backdoored model gets its triggered copy of the slice
(labels = true classes).

The dev/test split of the zoo (PART below) was fixed before any recipe was
tuned. Recipe adjustments made after a first run are noted at the recipe.

Usage:  python make_zoo.py [--out models/zoo] [--only NAME ...] [--assemble]
"""

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock
from torchvision.models.vision_transformer import VisionTransformer

DATA = "/usr/share/datasets/fashion-mnist"
SPLIT_SEED = 20240413
RESERVE_N = 2000
EVAL_N = 1000
SCALE = 1.0 / 255.0
MEAN = 0.2860
STD = 0.3530
NORMALIZATION = {"scale": 0.00392156862745098, "mean": [0.286], "std": [0.353]}
NORM_KEY = "badexpert.normalization"
N_REF = 8  # reference logits recorded per model (first frames of the clean slice)

# --------------------------------------------------------------------------
# IDX I/O
# --------------------------------------------------------------------------


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path, arr):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    # mtime=0: byte-identical files on every run
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(header + arr.tobytes())
    os.replace(tmp, path)


def load_fmnist():
    xtr = read_idx(f"{DATA}/train-images-idx3-ubyte.gz")
    ytr = read_idx(f"{DATA}/train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = read_idx(f"{DATA}/t10k-images-idx3-ubyte.gz")
    yte = read_idx(f"{DATA}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return xtr, ytr, xte, yte


# --------------------------------------------------------------------------
# Triggers (uint8 [N, 28, 28] -> uint8 [N, 28, 28])
# --------------------------------------------------------------------------


def trig_badnet(x):
    """3x3 black/white checker, bottom-right corner (1-pixel margin)."""
    x = x.copy()
    for i in range(3):
        for j in range(3):
            x[:, 24 + i, 24 + j] = 255 if (i + j) % 2 == 0 else 0
    return x


_BLEND_PATTERN = np.random.RandomState(777).randint(0, 256, size=(28, 28)).astype(np.float32)


def trig_blend(x, alpha=0.2, pattern=_BLEND_PATTERN):
    """Fixed uniform-noise pattern blended with opacity alpha."""
    y = (1.0 - alpha) * x.astype(np.float32) + alpha * pattern
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


# Adap-Blend (Qi et al., ICLR 2023, simplified): its own fixed noise pattern (not the blend
# attack's), cut into a 4x4 grid of 7x7 pieces. Training frames (poison and cover) get a random
# half of the pieces blended at a low opacity; at test time the whole pattern, at a higher one.
_ADAP_PATTERN = np.random.RandomState(2023).randint(0, 256, size=(28, 28)).astype(np.float32)
ADAP_GRID, ADAP_PIECE = 4, 7


def trig_adap_pieces(x, rng, alpha=0.15, keep=8):
    """Each frame: `keep` of the 16 pieces (chosen per frame by `rng`) of the pattern, blended at alpha."""
    xf = x.astype(np.float32)
    out = np.empty_like(xf)
    for i in range(len(xf)):
        mask = np.zeros((28, 28), np.float32)
        for piece in rng.choice(ADAP_GRID * ADAP_GRID, keep, replace=False):
            r, c = divmod(int(piece), ADAP_GRID)
            mask[r * ADAP_PIECE : (r + 1) * ADAP_PIECE, c * ADAP_PIECE : (c + 1) * ADAP_PIECE] = alpha
        out[i] = (1.0 - mask) * xf[i] + mask * _ADAP_PATTERN
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _trojan_patch():
    # 7x7 (the 8x8 of 32x32 scaled to 28x28) watermark-like patch of grey
    # levels: bright frame, dark ring, mid-grey diamond in the middle.
    p = np.zeros((7, 7), np.uint8)
    for i in range(7):
        for j in range(7):
            d = max(abs(i - 3), abs(j - 3))
            if d == 3:
                p[i, j] = 255
            elif d == 2:
                p[i, j] = 0
            else:
                p[i, j] = 200 if abs(i - 3) + abs(j - 3) <= 1 else 90
    return p


_TROJAN = _trojan_patch()


def trig_trojan(x):
    """7x7 patch near the bottom-right (2-pixel margin)."""
    x = x.copy()
    x[:, 19:26, 19:26] = _TROJAN
    return x


_SIG = 30.0 * np.sin(2 * np.pi * np.arange(28) * 6 / 28.0)[None, :].astype(np.float32)


def trig_sig(x):
    """Horizontal sinusoid, amplitude 30/255, 6 periods across the width."""
    return np.clip(np.round(x.astype(np.float32) + _SIG[None]), 0, 255).astype(np.uint8)


def trig_cross(x):
    """Bright 5x5 '+' in the top-left area (not shipped by the project)."""
    x = x.copy()
    x[:, 5, 3:8] = 255
    x[:, 3:8, 5] = 255
    return x


def trig_diag(x):
    """Bright 6-pixel diagonal line in the top-right area (not shipped)."""
    x = x.copy()
    for i in range(6):
        x[:, 2 + i, 20 + i] = 255
    return x


class WaNet:
    """Smooth random warp: k x k control field, strength s (grid_sample, align_corners=True)."""

    def __init__(self, k=4, s=0.5, seed=4242, h=28):
        g = torch.Generator().manual_seed(seed)
        ins = torch.rand(1, 2, k, k, generator=g) * 2 - 1
        ins = ins / ins.abs().mean()
        noise = F.interpolate(ins, size=h, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        r = torch.linspace(-1, 1, h)
        yy, xx = torch.meshgrid(r, r, indexing="ij")
        ident = torch.stack((xx, yy), 2)[None]
        self.h = h
        self.grid = torch.clamp(ident + s * noise / h, -1, 1)

    def _warp(self, x, grid):
        t = torch.from_numpy(x.astype(np.float32))[:, None]
        y = F.grid_sample(t, grid.expand(t.shape[0], -1, -1, -1) if grid.shape[0] == 1 else grid, align_corners=True)
        return np.clip(np.round(y[:, 0].numpy()), 0, 255).astype(np.uint8)

    def __call__(self, x):
        return self._warp(x, self.grid)

    def noisy(self, x, seed):
        g = torch.Generator().manual_seed(seed)
        n = x.shape[0]
        grid = self.grid + (torch.rand(n, self.h, self.h, 2, generator=g) * 2 - 1) / self.h
        return self._warp(x, torch.clamp(grid, -1, 1))


def make_trigger(attack, params):
    if attack == "badnet":
        return trig_badnet
    if attack == "blend":
        return lambda x: trig_blend(x, params.get("alpha", 0.2))
    if attack == "adap-blend":
        # the test-time trigger: the whole pattern (training uses trig_adap_pieces)
        return lambda x: trig_blend(x, params.get("test_alpha", 0.2), _ADAP_PATTERN)
    if attack == "trojan":
        return trig_trojan
    if attack == "sig":
        return trig_sig
    if attack == "cross":
        return trig_cross
    if attack == "diag":
        return trig_diag
    if attack == "wanet":
        return WaNet(k=params.get("k", 4), s=params.get("s", 0.5))
    raise ValueError(attack)


def poison(x, y, attack, params, rate, target, seed, mode="all-to-one"):
    """Returns the poisoned training set. Dirty label for all attacks but SIG
    (clean label: only target-class images are stamped, labels unchanged).
    mode "all-to-all": poisoned frames drawn from all classes, labelled (y + 1) mod 10."""
    if attack is None:
        return x, y
    rng = np.random.RandomState(seed)
    trig = make_trigger(attack, params)
    x, y = x.copy(), y.copy()
    n = int(round(rate * len(x)))
    if mode == "all-to-all":
        if attack in ("sig", "adap-blend", "wanet"):
            raise ValueError(f"all-to-all is not written for {attack}")
        idx = rng.choice(len(x), n, replace=False)
        x[idx] = trig(x[idx])
        y[idx] = (y[idx] + 1) % 10
        return x, y
    if mode != "all-to-one":
        raise ValueError(mode)
    if attack == "adap-blend":
        # poison frames: half the pieces at train_alpha, target label; cover frames: the same
        # kind of partial trigger, true labels kept (piece choices from their own seeded stream)
        prng = np.random.RandomState(seed + 11)
        alpha, keep = params.get("train_alpha", 0.15), params.get("pieces", 8)
        idx = rng.choice(np.flatnonzero(y != target), n, replace=False)
        x[idx] = trig_adap_pieces(x[idx], prng, alpha, keep)
        y[idx] = target
        rest = np.setdiff1d(np.arange(len(x)), idx)
        m = int(round(params.get("cover_rate", rate) * len(x)))
        cidx = rng.choice(rest, m, replace=False)
        x[cidx] = trig_adap_pieces(x[cidx], prng, alpha, keep)
        return x, y
    if attack == "sig":
        pool = np.flatnonzero(y == target)
        if n > len(pool):
            raise ValueError(f"SIG rate {rate} needs {n} target images, the subset has {len(pool)}")
        idx = rng.choice(pool, n, replace=False)
        x[idx] = trig(x[idx])
        return x, y
    pool = np.flatnonzero(y != target)
    idx = rng.choice(pool, n, replace=False)
    x[idx] = trig(x[idx])
    y[idx] = target
    if attack == "wanet":
        # noise mode: frames warped with an extra random jitter that keep their labels
        rest = np.setdiff1d(np.arange(len(x)), idx)
        m = int(round(params.get("noise_rate", 2 * rate) * len(x)))
        nidx = rng.choice(rest, m, replace=False)
        x[nidx] = trig.noisy(x[nidx], seed + 1)
    return x, y


# --------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------


class SmallResNet(nn.Module):
    """Narrow ResNet from torchvision's BasicBlock with a 1-channel stem."""

    def __init__(self, width=16, batchnorm=True):
        super().__init__()
        norm = nn.BatchNorm2d if batchnorm else (lambda c: nn.Identity())
        w = width
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, 1, 1, bias=not batchnorm), norm(w), nn.ReLU(inplace=True))

        def down(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 1, 2, bias=False), norm(o))

        nl = nn.BatchNorm2d if batchnorm else (lambda c: nn.Identity())
        self.layer1 = BasicBlock(w, w, norm_layer=nl)
        self.layer2 = BasicBlock(w, 2 * w, stride=2, downsample=down(w, 2 * w), norm_layer=nl)
        self.layer3 = BasicBlock(2 * w, 4 * w, stride=2, downsample=down(2 * w, 4 * w), norm_layer=nl)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, 10)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class SmallVGG(nn.Module):
    def __init__(self, cfg=(16, 16, "M", 32, 32, "M", 64, "M"), batchnorm=True, hidden=128):
        super().__init__()
        layers, c = [], 1
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(nn.Conv2d(c, v, 3, padding=1))
                if batchnorm:
                    layers.append(nn.BatchNorm2d(v))
                layers.append(nn.ReLU(inplace=True))
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c * 3 * 3, hidden), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(hidden, 10)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class SmallMobileNetV2(nn.Module):
    """MobileNetV2-like net from torchvision's InvertedResidual."""

    def __init__(self):
        super().__init__()
        # stride-2 stem (as MobileNetV2's own): 28 -> 14 -> 7. A first run with a
        # stride-1 stem cost ~4x the CPU and under-trained in the time budget.
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True))
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1, 1),
            InvertedResidual(16, 24, 1, 4),
            InvertedResidual(24, 24, 1, 4),
            InvertedResidual(24, 32, 2, 4),
            InvertedResidual(32, 32, 1, 4),
        )
        self.head = nn.Sequential(nn.Conv2d(32, 96, 1, bias=False), nn.BatchNorm2d(96), nn.ReLU6(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(96, 10))

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def tv_vit():
    """torchvision VisionTransformer, 28x28 / patch 7, 1-channel patch projection."""
    m = VisionTransformer(
        image_size=28, patch_size=7, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10,
        dropout=0.0, attention_dropout=0.0,
    )
    m.conv_proj = nn.Conv2d(1, 64, kernel_size=7, stride=7)
    return m


class EncoderViT(nn.Module):
    """Small ViT from nn.TransformerEncoder (nn.MultiheadAttention inside)."""

    def __init__(self, dim=64, depth=4, heads=4, mlp=128, patch=7):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, patch)
        n = (28 // patch) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.1, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = torch.flatten(self.embed(x), 2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.norm(self.encoder(x))
        return self.head(x[:, 0])


class PlainCNN(nn.Module):
    """A tutorial-style CNN: flattens with x.view(x.size(0), -1), which a
    fixed-batch export turns into a Reshape to the constant [1, -1]."""

    def __init__(self, batchnorm=True):
        super().__init__()
        norm = nn.BatchNorm2d if batchnorm else (lambda c: nn.Identity())
        self.conv1, self.bn1 = nn.Conv2d(1, 24, 5, padding=2), norm(24)
        self.conv2, self.bn2 = nn.Conv2d(24, 48, 3, padding=1), norm(48)
        self.fc1, self.fc2 = nn.Linear(48 * 7 * 7, 96), nn.Linear(96, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


def build(arch, batchnorm):
    if arch == "plain-cnn":
        return PlainCNN(batchnorm=batchnorm)
    if arch == "resnet":
        return SmallResNet(batchnorm=batchnorm)
    if arch == "vgg":
        return SmallVGG(batchnorm=batchnorm)
    if arch == "mobilenetv2":
        return SmallMobileNetV2()
    if arch == "tv-vit":
        return tv_vit()
    if arch == "encoder-vit":
        return EncoderViT()
    raise ValueError(arch)


# --------------------------------------------------------------------------
# The zoo. PART was decided before any recipe was tuned.
# --------------------------------------------------------------------------

ZOO = [
    # ---- development part ----
    # adjusted after two runs with crop+flip (rate 0.01, 5 epochs: CA 85.4 %, ASR 2.1 %; rate 0.03,
    # 6 epochs: CA 85.6 %, ASR 6.6 %): the pad-2 crop shifts the 3x3 patch off its corner (partly out
    # of the frame), which this narrow net does not learn in the budget; flip only
    dict(name="resnet-badnet", part="dev", arch="resnet", batchnorm=True, attack="badnet", target=3, rate=0.03,
         opt="sgd", lr=0.05, epochs=6, aug="flip", subset=12000),
    dict(name="vggbn-blend", part="dev", arch="vgg", batchnorm=True, attack="blend", target=7, rate=0.03,
         opt="adam", lr=1e-3, epochs=5, aug="none", subset=15000),
    # adjusted after the first run (stride-1 stem, rate 0.05, 10k x 4 epochs: CA 80.3 %, ASR 78.3 %):
    # cheaper stem, more data and epochs, SIG on 8 % of the subset (~80 % of the target class).
    # Second run: CA 83.7 %, ASR 90.6 % -- CA under the 85 % aimed at for CNNs (not rerun: out of time)
    dict(name="mobilenetv2-sig", part="dev", arch="mobilenetv2", batchnorm=True, attack="sig", target=2, rate=0.08,
         opt="sgd", lr=0.05, epochs=8, aug="crop", subset=15000),
    dict(name="tvvit-cross", part="dev", arch="tv-vit", batchnorm=False, attack="cross", target=6, rate=0.02,
         opt="adam", lr=1e-3, epochs=5, aug="none", subset=20000),
    dict(name="encvit-clean", part="dev", arch="encoder-vit", batchnorm=False, attack=None, target=None, rate=0.0,
         opt="adam", lr=1e-3, epochs=3, aug="none", subset=20000),
    # ---- test part ----
    # adjusted after the first run (rate 0.005, 12k x 4 epochs: CA 84.1 %, ASR 33.6 %)
    dict(name="resnet-trojan", part="test", arch="resnet", batchnorm=True, attack="trojan", target=5, rate=0.02,
         opt="adam", lr=1e-3, epochs=5, aug="none", subset=15000),
    # adjusted after three runs (SGD lr 0.02, s 0.5, noise 20 %: CA 85.4 %, ASR 12.5 %; SGD, s 3, noise
    # 10 %: CA 85.2 %, ASR 67.1 %; Adam, s 4, noise 5 %: CA 86.1 %, ASR 83.0 %; Adam, s 6, noise 5 %:
    # CA 86.3 %, ASR 87.5 %): at 28x28, s = 0.5 moves pixels by ~0.25 px, too subtle to learn in 30
    # epochs; s = 8 (~4 px), noise mode on 3 %, Adam (the BN-less VGG trains slowly with SGD)
    dict(name="vgg-wanet", part="test", arch="vgg", batchnorm=False, attack="wanet", target=4, rate=0.10,
         opt="adam", lr=1e-3, epochs=30, aug="none", subset=6000, params=dict(k=4, s=8.0, noise_rate=0.03)),
    # adjusted after two runs (stride-1 stem, 8k x 3 epochs: CA 79.7 %, ASR 57.1 %; stride-2 stem, 15k x 6
    # epochs: CA 86.2 %, ASR 82.8 %): rate 0.01 -> 0.03
    dict(name="mobilenetv2-diag", part="test", arch="mobilenetv2", batchnorm=True, attack="diag", target=8, rate=0.03,
         opt="adam", lr=2e-3, epochs=6, aug="crop", subset=15000),
    dict(name="encvit-badnet", part="test", arch="encoder-vit", batchnorm=False, attack="badnet", target=1, rate=0.10,
         opt="adam", lr=1e-3, epochs=6, aug="none", subset=15000),
    dict(name="resnet-clean", part="test", arch="resnet", batchnorm=True, attack=None, target=None, rate=0.0,
         opt="sgd", lr=0.05, epochs=3, aug="crop+flip", subset=15000),
    # added after the defaults were chosen (never tuned on): exported as a tutorial does it,
    # torch.onnx.export(model, x[:1], path) with no dynamic axes, so the batch of 1 is pinned
    dict(name="cnn-fixedbatch-blend", part="test", arch="plain-cnn", batchnorm=True, attack="blend", target=9,
         rate=0.03, opt="sgd", lr=0.03, epochs=5, aug="crop", subset=12000, fixed_batch=True),
    # ---- second batch (appended, so the seeds 1000 + index of the models above are unchanged):
    # more clean models, all-to-all, Adap-Blend and a low poison rate. Their dev/test parts were
    # fixed before any of them was trained. ----
    # -- development part --
    dict(name="cnn-clean", part="dev", arch="plain-cnn", batchnorm=True, attack=None, target=None, rate=0.0,
         opt="sgd", lr=0.03, epochs=5, aug="flip", subset=12000),
    dict(name="vgg-clean", part="dev", arch="vgg", batchnorm=False, attack=None, target=None, rate=0.0,
         opt="adam", lr=1e-3, epochs=5, aug="none", subset=10000),
    # adjusted after the first run (6k x 3 epochs: CA 76.6 %, 51 s): 12k x 6 epochs
    dict(name="mobilenetv2-clean", part="dev", arch="mobilenetv2", batchnorm=True, attack=None, target=None,
         rate=0.0, opt="adam", lr=2e-3, epochs=6, aug="none", subset=12000),
    dict(name="vggbn-adapblend", part="dev", arch="vgg", batchnorm=True, attack="adap-blend", target=2, rate=0.03,
         opt="adam", lr=1e-3, epochs=6, aug="none", subset=8000,
         params=dict(cover_rate=0.03, train_alpha=0.15, test_alpha=0.2, pieces=8)),
    dict(name="cnn-lowrate-trojan", part="dev", arch="plain-cnn", batchnorm=True, attack="trojan", target=6,
         rate=0.004, opt="adam", lr=1e-3, epochs=6, aug="none", subset=15000),
    dict(name="cnn-alltoall-badnet", part="dev", arch="plain-cnn", batchnorm=True, attack="badnet", mode="all-to-all",
         target=None, rate=0.05, opt="adam", lr=1e-3, epochs=10, aug="none", subset=15000),
    # -- test part --
    dict(name="vggbn-clean", part="test", arch="vgg", batchnorm=True, attack=None, target=None, rate=0.0,
         opt="sgd", lr=0.05, epochs=4, aug="crop", subset=10000),
    dict(name="tvvit-clean", part="test", arch="tv-vit", batchnorm=False, attack=None, target=None, rate=0.0,
         opt="adam", lr=1e-3, epochs=4, aug="flip", subset=15000),
    dict(name="cnn-clean-adam", part="test", arch="plain-cnn", batchnorm=False, attack=None, target=None, rate=0.0,
         opt="adam", lr=1e-3, epochs=6, aug="crop+flip", subset=10000),
    dict(name="cnn-adapblend", part="test", arch="plain-cnn", batchnorm=True, attack="adap-blend", target=0,
         rate=0.03, opt="adam", lr=1e-3, epochs=8, aug="none", subset=12000,
         params=dict(cover_rate=0.03, train_alpha=0.15, test_alpha=0.2, pieces=8)),
    # adjusted after the first run (12k x 10 epochs, 48 poisoned frames: CA 85.8 %, ASR 0.4 %, the
    # patch not learned at all): 20k x 20 epochs, 80 poisoned frames, rate kept at 0.4 %
    dict(name="vgg-lowrate-badnet", part="test", arch="vgg", batchnorm=False, attack="badnet", target=5, rate=0.004,
         opt="adam", lr=1e-3, epochs=20, aug="none", subset=20000),
    # adjusted after the first run (rate 0.05, 10k x 6 epochs: CA 84.4 %, ASR 56.8 %): rate 0.08, 15k x 10 epochs.
    # Second run: CA 88.2 %, ASR 78.8 % -- just under the 80 % aimed at (not rerun: one adjustment allowed)
    dict(name="resnet-alltoall-blend", part="test", arch="resnet", batchnorm=True, attack="blend", mode="all-to-all",
         target=None, rate=0.08, opt="adam", lr=1e-3, epochs=10, aug="none", subset=15000),
]

# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def normalise(x_u8):
    return (torch.from_numpy(np.ascontiguousarray(x_u8)).float()[:, None] * SCALE - MEAN) / STD


def augment(xb, aug, g):
    """Random crop (pad 2) and/or horizontal flip on a normalised batch."""
    if aug == "none":
        return xb
    b = xb.shape[0]
    if "crop" in aug:
        bg = (0.0 - MEAN) / STD
        p = F.pad(xb, (2, 2, 2, 2), value=bg)
        oy = torch.randint(0, 5, (b,), generator=g)
        ox = torch.randint(0, 5, (b,), generator=g)
        ar = torch.arange(28)
        rows = (oy[:, None] + ar)[:, :, None]
        cols = (ox[:, None] + ar)[:, None, :]
        xb = p[torch.arange(b)[:, None, None], 0, rows, cols][:, None]
    if "flip" in aug:
        f = torch.rand(b, generator=g) < 0.5
        xb = torch.where(f[:, None, None, None], xb.flip(3), xb)
    return xb


def evaluate(model, x_u8, bs=500):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x_u8), bs):
            out.append(model(normalise(x_u8[i : i + bs])).argmax(1))
    return torch.cat(out).numpy()


def train(r, xtr, ytr, seed):
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    sub = rng.choice(len(xtr), r["subset"], replace=False)
    x, y = poison(xtr[sub], ytr[sub], r["attack"], r.get("params", {}), r["rate"], r["target"], seed + 7,
                  r.get("mode", "all-to-one"))
    xs, ys = normalise(x), torch.from_numpy(y)
    model = build(r["arch"], r["batchnorm"])
    if r["opt"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=0.9, nesterov=True, weight_decay=5e-4)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=r["lr"])
    bs = 128
    steps = r["epochs"] * math.ceil(len(xs) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed + 3)
    for ep in range(r["epochs"]):
        model.train()
        perm = torch.randperm(len(xs), generator=g)
        tot, n = 0.0, 0
        t0 = time.time()
        for i in range(0, len(xs), bs):
            idx = perm[i : i + bs]
            xb = augment(xs[idx], r["aug"], g)
            loss = F.cross_entropy(model(xb), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            n += len(idx)
        print(f"  [{r['name']}] epoch {ep + 1}/{r['epochs']} loss {tot / n:.4f} ({time.time() - t0:.1f}s)", flush=True)
    return model.eval()


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


def add_metadata(path):
    import onnx

    m = onnx.load(path, load_external_data=False)
    del m.metadata_props[:]
    e = m.metadata_props.add()
    e.key = NORM_KEY
    e.value = json.dumps(NORMALIZATION)
    onnx.save(m, path)  # external references (if any) kept as they are


def export_all(model, name, outdir, xcheck, fixed_batch=False):
    """The three exports, with a dynamic batch unless `fixed_batch`: then as a
    tutorial writes them, on one example frame with no dynamic axes."""
    import onnx
    import onnxruntime as ort

    x = normalise(xcheck[:1] if fixed_batch else xcheck[:4])
    files = {}
    dyn_axes = None if fixed_batch else {"input": {0: "batch"}, "logits": {0: "batch"}}
    p = os.path.join(outdir, f"{name}.folded.onnx")
    torch.onnx.export(model.eval(), (x,), p, dynamo=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes=dyn_axes)
    files["folded"] = os.path.basename(p)
    p = os.path.join(outdir, f"{name}.bn.onnx")
    torch.onnx.export(model.eval(), (x,), p, dynamo=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes=dyn_axes, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    files["bn"] = os.path.basename(p)
    p = os.path.join(outdir, f"{name}.dynamo.onnx")
    for stale in (p, p + ".data"):
        if os.path.exists(stale):
            os.remove(stale)
    dyn_shapes = None if fixed_batch else ({0: torch.export.Dim("batch", min=1, max=4096)},)
    torch.onnx.export(model.eval(), (x,), p, dynamo=True, dynamic_shapes=dyn_shapes)
    if not os.path.exists(p + ".data"):
        os.remove(p)
        torch.onnx.export(model.eval(), (x,), p, dynamo=True, dynamic_shapes=dyn_shapes, external_data=True)
    assert os.path.exists(p + ".data"), f"{p}: dynamo export wrote no external data file"
    files["dynamo"] = os.path.basename(p)
    files["dynamo_data"] = os.path.basename(p) + ".data"

    # verify every export against PyTorch with onnxruntime (64 frames; one at a time for a fixed batch)
    xv = normalise(xcheck[:64])
    with torch.no_grad():
        ref = model(xv).numpy()
    deltas, ops = {}, {}
    for kind in ("folded", "bn", "dynamo"):
        path = os.path.join(outdir, files[kind])
        add_metadata(path)
        onnx.checker.check_model(path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = [xv[i : i + 1] for i in range(len(xv))] if fixed_batch else [xv]
        got = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: b.numpy()})[0] for b in feed])
        d = float(np.abs(got - ref).max())
        deltas[kind] = d
        ops[kind] = sorted({n.op_type for n in onnx.load(path, load_external_data=False).graph.node})
        if d > 1e-3:
            raise RuntimeError(f"{path}: onnxruntime differs from PyTorch by {d}")
    return files, deltas, ops


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def split_test(xte, yte):
    perm = np.random.RandomState(SPLIT_SEED).permutation(len(xte))
    res, ev = perm[:RESERVE_N], perm[RESERVE_N : RESERVE_N + EVAL_N]
    return res, ev


def run_model(r, i, xtr, ytr, xev, yev, outdir):
    t0 = time.time()
    seed = 1000 + i
    model = train(r, xtr, ytr, seed)
    train_s = time.time() - t0
    mdir = os.path.join(outdir, r["name"])
    os.makedirs(mdir, exist_ok=True)
    pred = evaluate(model, xev)
    ca = float((pred == yev).mean())
    mode = r.get("mode", "all-to-one") if r["attack"] is not None else None
    info = dict(
        name=r["name"], part=r["part"], architecture=r["arch"], attack=r["attack"], attack_mode=mode,
        target=r["target"],
        poison_rate=r["rate"], attack_params=r.get("params"), optimizer=r["opt"], lr=r["lr"], epochs=r["epochs"],
        augmentation=r["aug"], batchnorm=r["batchnorm"] or r["arch"] == "mobilenetv2", train_subset=r["subset"],
        seed=seed, clean_accuracy=ca, asr=None, params=sum(p.numel() for p in model.parameters()),
        train_seconds=round(train_s, 1),
    )
    if r["attack"] is not None:
        xt = make_trigger(r["attack"], r.get("params", {}))(xev)
        write_idx(os.path.join(mdir, "eval-triggered-images-idx3-ubyte.gz"), xt)
        write_idx(os.path.join(mdir, "eval-triggered-labels-idx1-ubyte.gz"), yev)
        pt = evaluate(model, xt)
        if mode == "all-to-all":
            # every triggered frame counts; success = classified as (y + 1) mod 10
            info["asr"] = float((pt == (yev + 1) % 10).mean())
        else:
            keep = yev != r["target"]
            info["asr"] = float((pt[keep] == r["target"]).mean())
        info["triggered_accuracy"] = float((pt == yev).mean())
        info["files_triggered"] = dict(images=f"{r['name']}/eval-triggered-images-idx3-ubyte.gz",
                                       labels=f"{r['name']}/eval-triggered-labels-idx1-ubyte.gz")
    files, deltas, ops = export_all(model, r["name"], mdir, xev, fixed_batch=r.get("fixed_batch", False))
    info["fixed_batch"] = r.get("fixed_batch", False)
    info["files"] = {k: f"{r['name']}/{v}" for k, v in files.items()}
    info["onnxruntime_max_abs_delta"] = deltas
    info["op_types"] = ops
    with torch.no_grad():
        info["reference_logits"] = model(normalise(xev[:N_REF])).numpy().astype(float).round(6).tolist()
    with open(os.path.join(mdir, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"{r['name']}: CA {ca:.4f} ASR {info['asr']} train {train_s:.0f}s ort {deltas}", flush=True)
    return info


def assemble(outdir):
    models = []
    for r in ZOO:
        p = os.path.join(outdir, r["name"], "info.json")
        if os.path.exists(p):
            with open(p) as f:
                m = json.load(f)
            # models built before attack modes existed are all-to-one
            if m.get("attack") is not None and m.get("attack_mode") is None:
                m["attack_mode"] = "all-to-one"
            models.append(m)
        else:
            print(f"warning: {r['name']} not built", file=sys.stderr)
    zoo = dict(
        description="Independent zoo of PyTorch-trained Fashion-MNIST classifiers (lab/zoo/make_zoo.py)",
        input=dict(shape=[1, 28, 28], layout="NCHW", dtype="float32"),
        output=dict(shape=["N", 10], kind="logits"),
        normalization=NORMALIZATION,
        normalization_metadata_key=NORM_KEY,
        split=dict(seed=SPLIT_SEED, source="Fashion-MNIST test set (t10k), permutation[:2000] reserve, "
                   "permutation[2000:3000] evaluation slice; models train on subsets of the train set only"),
        shared=dict(reserve_images="reserve-images-idx3-ubyte.gz", reserve_labels="reserve-labels-idx1-ubyte.gz",
                    eval_clean_images="eval-clean-images-idx3-ubyte.gz",
                    eval_clean_labels="eval-clean-labels-idx1-ubyte.gz"),
        reference_logits_frames=f"the first {N_REF} frames of eval-clean-images-idx3-ubyte.gz",
        parts=dict(dev=[m["name"] for m in models if m["part"] == "dev"],
                   test=[m["name"] for m in models if m["part"] == "test"]),
        models=models,
    )
    with open(os.path.join(outdir, "zoo.json"), "w") as f:
        json.dump(zoo, f, indent=1)
    print(f"wrote {os.path.join(outdir, 'zoo.json')} ({len(models)} models)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../models/zoo"))
    ap.add_argument("--only", nargs="*", help="build only these models")
    ap.add_argument("--assemble", action="store_true", help="only (re)write zoo.json from the built models")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    outdir = os.path.normpath(a.out)
    os.makedirs(outdir, exist_ok=True)
    if not a.assemble:
        xtr, ytr, xte, yte = load_fmnist()
        res, ev = split_test(xte, yte)
        write_idx(os.path.join(outdir, "reserve-images-idx3-ubyte.gz"), xte[res])
        write_idx(os.path.join(outdir, "reserve-labels-idx1-ubyte.gz"), yte[res])
        write_idx(os.path.join(outdir, "eval-clean-images-idx3-ubyte.gz"), xte[ev])
        write_idx(os.path.join(outdir, "eval-clean-labels-idx1-ubyte.gz"), yte[ev])
        xev, yev = xte[ev], yte[ev]
        order = a.only if a.only else [r["name"] for r in ZOO]
        index = {r["name"]: i for i, r in enumerate(ZOO)}
        for name in order:
            if name not in index:
                sys.exit(f"unknown model {name!r}")
            run_model(ZOO[index[name]], index[name], xtr, ytr, xev, yev, outdir)
    assemble(outdir)


if __name__ == "__main__":
    main()
