#!/usr/bin/env python3
"""Independent plain-PyTorch reference of BaDExpert on the model zoo.

What it implements -- exactly docs/design.md §3.1-3.5 with the paper's fixed
defaults, no rate search:

  reserve   the zoo's 2,000 clean reserve frames, split 80/20 with a fixed
            seed (--split-seed) into 1,600 fine-tuning and 400 held-out
            calibration frames.
  B (§3.1)  a copy of M fine-tuned in train mode for ONE epoch on the
            fine-tuning frames with the labels (y + 1) mod K: Adam
            (beta 0.9/0.999, eps 1e-8, no weight decay), lr 1e-4
            (--lr-expert), batch 128, shuffled.
  M' (§3.2) a copy of M fine-tuned in train mode on the same frames with the
            true labels: SGD, Nesterov, momentum 0.9, weight decay 1e-4,
            lr 0.1 (--lr-aux) multiplied by 0.1 after epochs 2, 4, 6, 8;
            10 epochs, batch 64, shuffled.
            Both use light augmentation: random crop with padding 3 (black
            border) and a random horizontal flip.
  score     (§3.3) y^ = argmax M(x), c_B = softmax(B(x))[y^],
            c_A = softmax(M'(x))[y^], gamma 0.5, eps 1e-8,
            s = min(c_A / (gamma * max(c_B, eps)), (1 - c_B) / max(gamma - c_A, eps));
            all three models in eval mode when scoring. Reject when s < tau.
  tau       (§3.4) over the held-out calibration frames that M classifies
            correctly (n of them), sorted ascending: the j-th smallest score,
            j = floor(FPR * (n + 1)), FPR 1 % (the split-conformal rule;
            the 0-based index floor(FPR * n) of the original notes is one order statistic
            higher when FPR * n is not an integer).
  metrics   (§3.5) on the zoo's 1,000-frame clean evaluation slice and the
            model's triggered copy of it:
              CA            = (M correct) / N_clean
              CA w/ guard   = (M correct and accepted) / N_clean
              ASR           = (true != target and M(x~) = target) / N(true != target)
                              (an all-to-all model, target null: target = (true + 1) mod K
                              per frame, over all frames; likewise below)
              ASR w/ guard  = (... and accepted) / N(true != target)
              AUROC         of -s over {clean and M correct} (negatives) and
                            {triggered and true != target and M(x~) = target}
                            (positives), ties counted one half
              CA drop       = CA - CA w/ guard
              realised FPR  = rejected / (clean and M correct)
            plus diagnostics: B's and M''s accuracy on the held-out frames
            (true labels; B also on its shifted labels), the AUROC of B alone
            (c_B) and M' alone (-c_A), and M''s ASR.

Independence: this script shares NO code with the Rust converter/runtime
(converter/, runtime/, src/). From lab/zoo/make_zoo.py it imports only
the architecture constructor `build(arch, batchnorm)`. The weights come from
each model's BN-kept TorchScript export <name>.bn.onnx (exported with
do_constant_folding=False, training=PRESERVE, so its initializers carry the
state_dict names); the exporter's de-duplication of identical initializers
(an Identity node whose output is the second name) is followed explicitly,
and BatchNorm's num_batches_tracked (not exported; unused with a momentum)
is set to 0. Each Conv's stride/padding/dilation/group is compared with the
graph's: an export made before a constructor change (same weight shapes,
other strides) gets the graph's attributes, with a note. The module is
loaded with strict=True and refused unless its eval-mode logits on the
first frames of the clean slice match the manifest's reference_logits to
max |delta| < 1e-3 (this also refuses a model caught mid-rebuild).

When B or M' ends with non-finite weights under the fixed recipe (SGD at
0.1 can diverge on a model without normalisation), the model is reported as
diverged with its per-epoch losses and no guard figures -- no NaN threshold.

Usage:
  /work/torchenv/bin/python lab/zoo/reference.py \
      [--zoo models/zoo] [--only NAME ...] [--lr-expert 1e-4] [--lr-aux 0.1] \
      [--out docs/zoo-reference]      # writes docs/zoo-reference.{json,md}
      [--reuse docs/zoo-reference.json]   # skip models whose files and settings are unchanged

One thread (--threads), models one after another, seeded (--seed).
"""

import argparse
import copy
import glob
import gzip
import hashlib
import json
import math
import os
import struct
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from make_zoo import build  # noqa: E402  (the architecture constructor only)

K = 10
RESULT_FORMAT = 2  # bump when a result record changes (invalidates --reuse)
GAMMA = 0.5
EPS = 1e-8


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------


def read_idx_gz(path):
    """IDX file (gzip): magic 0 0 type ndim, ndim big-endian uint32 dims, uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data for dims {dims}")
    return data.reshape(dims)


class Norm:
    def __init__(self, spec):
        self.scale = float(spec["scale"])
        self.mean = float(spec["mean"][0])
        self.std = float(spec["std"][0])

    def pixels(self, u8):
        """uint8 [N, H, W] -> float pixels in [0, 1] (before the mean/std step), [N, 1, H, W]."""
        return torch.from_numpy(np.array(u8, copy=True)).float().unsqueeze(1) * self.scale

    def __call__(self, px):
        return (px - self.mean) / self.std


def augment(px, gen, pad=3):
    """Random crop with `pad` pixels of black border + random horizontal flip, on pixel-space batches."""
    n, _, h, w = px.shape
    padded = F.pad(px, (pad, pad, pad, pad), value=0.0)  # [n, 1, h + 2p, w + 2p]
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, 1, h, w + 2 * pad)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, 1, h, w)
    out = torch.gather(torch.gather(padded, 2, rows), 3, cols)  # rows, then columns
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)


# --------------------------------------------------------------------------
# model loading
# --------------------------------------------------------------------------


def onnx_weights(path):
    """(name -> numpy array: the initializers, plus names an Identity node gives to one of them;
    the Identity aliases; the Conv nodes' attributes keyed by their weight's name)."""
    g = onnx.load(path).graph
    convs = {}
    for n in g.node:
        if n.op_type == "Conv":
            at = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
            convs[n.input[1]] = at
    w = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    aliases = {}
    changed = True
    while changed:  # follow Identity chains
        changed = False
        for n in g.node:
            if n.op_type == "Identity" and n.input[0] in w and n.output[0] not in w:
                w[n.output[0]] = w[n.input[0]]
                aliases[n.output[0]] = n.input[0]
                changed = True
    return w, aliases, convs


def load_model(info, zoo_dir, norm, clean_u8, tol=1e-3):
    """Returns (module in eval mode, notes) or raises RuntimeError with the reason."""
    arch, bn = info["architecture"], bool(info["batchnorm"])
    # make_zoo's ZOO entry carries the batchnorm flag; info.json records mobilenetv2 as batchnorm=True,
    # which its constructor ignores anyway.
    model = build(arch, bn)
    path = os.path.join(zoo_dir, info["files"]["bn"])
    w, aliases, convs = onnx_weights(path)
    notes = []
    # The graph's Conv attributes must be the module's: an export made before a change of the
    # constructor's strides/paddings has the same weight shapes but computes something else.
    # Adopt the graph's attributes where they differ (and say so); the logit check below decides.
    mods = dict(model.named_modules())
    for wname, at in convs.items():
        mod = mods.get(wname[: -len(".weight")]) if wname.endswith(".weight") else None
        if not isinstance(mod, torch.nn.Conv2d):
            continue
        want = dict(stride=tuple(at.get("strides", [1, 1])), dilation=tuple(at.get("dilations", [1, 1])),
                    groups=int(at.get("group", 1)))
        pads = list(at.get("pads", [0, 0, 0, 0]))
        if pads[0] != pads[2] or pads[1] != pads[3] or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise RuntimeError(f"{path}: Conv on {wname} has asymmetric/auto padding {pads}")
        want["padding"] = (pads[0], pads[1])
        have = dict(stride=tuple(mod.stride), dilation=tuple(mod.dilation), groups=mod.groups,
                    padding=tuple(mod.padding) if not isinstance(mod.padding, str) else mod.padding)
        diff = {k: (have[k], want[k]) for k in want if have[k] != want[k]}
        if diff:
            if "groups" in diff:
                raise RuntimeError(f"{path}: Conv on {wname} has groups {want['groups']}, the module {mod.groups}")
            mod.stride, mod.dilation, mod.padding = want["stride"], want["dilation"], want["padding"]
            notes.append(f"{wname[:-7]}: the export's Conv attributes differ from make_zoo.build's "
                         + ", ".join(f"{k} {h}->{v}" for k, (h, v) in diff.items()) + " (the export's adopted)")
    sd = model.state_dict()
    new, missing = {}, []
    for k, v in sd.items():
        if k in w:
            a = torch.from_numpy(np.array(w[k]))
            if tuple(a.shape) != tuple(v.shape):
                raise RuntimeError(f"{path}: {k} has shape {tuple(a.shape)}, the module {tuple(v.shape)}")
            new[k] = a.to(v.dtype)
        elif k.endswith("num_batches_tracked"):
            new[k] = torch.zeros_like(v)
        else:
            missing.append(k)
    if missing:
        raise RuntimeError(f"{path}: no tensor for {missing}")
    used_alias = [f"{k}<-{aliases[k]}" for k in sd if k in aliases]
    if used_alias:
        notes.append("exporter-deduplicated tensors taken through Identity: " + ", ".join(used_alias))
    extra = [k for k in w if k not in sd and k not in aliases]
    if extra:
        notes.append(f"ONNX tensors not in the state_dict (ignored): {extra}")
    model.load_state_dict(new, strict=True)
    model.eval()
    ref = np.array(info["reference_logits"], dtype=np.float64)
    with torch.no_grad():
        got = model(norm(norm.pixels(clean_u8[: len(ref)]))).double().numpy()
    d = float(np.abs(got - ref).max())
    if not d < tol:
        raise RuntimeError(f"{info['name']}: eval-mode logits differ from reference_logits by {d:.3g} (>= {tol})")
    return model, notes, d


# --------------------------------------------------------------------------
# fine-tuning
# --------------------------------------------------------------------------


def finetune(model, px, labels, opt, epochs, batch, gen, norm, sched=None):
    """Returns (model in eval mode, mean training loss per epoch)."""
    model.train()
    n = len(px)
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        tot = 0.0
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            xb = norm(augment(px[idx], gen))
            loss = F.cross_entropy(model(xb), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
        losses.append(tot / n)
        if sched is not None:
            sched.step()
    return model.eval(), losses


def finite(model):
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def train_expert(m, px, y, lr, gen, norm):
    b = copy.deepcopy(m)
    opt = torch.optim.Adam(b.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    return finetune(b, px, (y + 1) % K, opt, epochs=1, batch=128, gen=gen, norm=norm)


def train_aux(m, px, y, lr, gen, norm):
    a = copy.deepcopy(m)
    opt = torch.optim.SGD(a.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4, 6, 8], gamma=0.1)
    return finetune(a, px, y, opt, epochs=10, batch=64, gen=gen, norm=norm, sched=sched)


# --------------------------------------------------------------------------
# scoring and metrics
# --------------------------------------------------------------------------


@torch.no_grad()
def probs(model, px, norm, bs=500):
    model.eval()
    return torch.cat([F.softmax(model(norm(px[i : i + bs])).double(), 1) for i in range(0, len(px), bs)]).numpy()


def score(pm, pb, pa, gamma=GAMMA, eps=EPS):
    yhat = pm.argmax(1)
    r = np.arange(len(yhat))
    cb, ca = pb[r, yhat], pa[r, yhat]
    s = np.minimum(ca / (gamma * np.maximum(cb, eps)), (1.0 - cb) / np.maximum(gamma - ca, eps))
    return s, yhat, cb, ca


def threshold(cal_scores, fpr):
    if not np.isfinite(cal_scores).all():
        raise RuntimeError("non-finite calibration score")
    n = len(cal_scores)
    j = int(math.floor(fpr * (n + 1) + 1e-9))
    if j < 1:
        raise RuntimeError(f"{n} calibration frames cannot calibrate FPR {fpr}")
    return float(np.sort(cal_scores)[j - 1]), j, n


def auroc(pos, neg):
    """P(pos > neg) + 0.5 P(pos == neg), by average ranks (Mann-Whitney U)."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if len(pos) == 0 or len(neg) == 0 or not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        return None
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    sv = allv[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(sv):
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


# --------------------------------------------------------------------------
# one model
# --------------------------------------------------------------------------


def model_fingerprint(info, zoo_dir):
    """sha256 of everything a model's result depends on in the zoo: info.json, the BN-kept export, its triggered slice."""
    h = {}
    paths = [os.path.join(info["name"], "info.json"), info["files"]["bn"]]
    if info.get("files_triggered"):
        paths += [info["files_triggered"]["images"], info["files_triggered"]["labels"]]
    for rel in paths:
        with open(os.path.join(zoo_dir, rel), "rb") as f:
            h[rel] = hashlib.sha256(f.read()).hexdigest()
    return h


def run_one(info, a, zoo_dir, norm, data):
    t0 = time.time()
    name = info["name"]
    torch.manual_seed(a.seed)
    m, notes, dlog = load_model(info, zoo_dir, norm, data["ev_x"])
    px_ft, y_ft, px_cal, y_cal = data["ft_px"], data["ft_y"], data["cal_px"], data["cal_y"]

    b, b_loss = train_expert(m, px_ft, y_ft, a.lr_expert, torch.Generator().manual_seed(a.seed + 1), norm)
    aux, a_loss = train_aux(m, px_ft, y_ft, a.lr_aux, torch.Generator().manual_seed(a.seed + 2), norm)
    t_train = time.time() - t0
    diverged = [k for k, mod in (("B", b), ("M′", aux)) if not finite(mod)]

    yc = y_cal.numpy()
    pm_c, pb_c, pa_c = probs(m, px_cal, norm), probs(b, px_cal, norm), probs(aux, px_cal, norm)
    s_c, yh_c, _, _ = score(pm_c, pb_c, pa_c, a.gamma)
    ok_c = yh_c == yc
    if not diverged and not np.isfinite(s_c).all():
        diverged = ["score"]
    if diverged:
        # the fixed recipe gives no usable guard for this model: keep the diagnostics, no guard metrics
        tau, j, n_cal = None, None, int(ok_c.sum())
    else:
        tau, j, n_cal = threshold(s_c[ok_c], a.fpr)

    yev = data["ev_y"]
    px_ev = data["ev_px"]
    pm, pb, pa = probs(m, px_ev, norm), probs(b, px_ev, norm), probs(aux, px_ev, norm)
    s, yh, cb, ca_ = score(pm, pb, pa, a.gamma)
    correct = yh == yev
    acc = s >= tau if tau is not None else None
    r = dict(
        name=name, part=info["part"], architecture=info["architecture"], attack=info["attack"],
        target=info["target"], max_abs_delta_reference_logits=dlog, load_notes=notes,
        tau=tau, calibration_index=j, calibration_n=n_cal,
        model_holdout_acc=float(ok_c.mean()),
        expert_holdout_acc=None if "B" in diverged else float((pb_c.argmax(1) == yc).mean()),
        expert_holdout_shifted_acc=None if "B" in diverged else float((pb_c.argmax(1) == (yc + 1) % K).mean()),
        aux_holdout_acc=None if "M′" in diverged else float((pa_c.argmax(1) == yc).mean()),
        diverged=diverged or None, expert_epoch_loss=b_loss, aux_epoch_loss=a_loss,
        ca=float(correct.mean()), ca_guard=None if acc is None else float((correct & acc).mean()),
        fpr=None if acc is None else float((~acc[correct]).mean()),
        fpr_all_clean=None if acc is None else float((~acc).mean()),
        asr=None, asr_guard=None, asr_aux=None, auroc=None, auroc_expert=None, auroc_aux=None,
        n_pos=None, n_neg=int(correct.sum()),
    )
    r["ca_drop"] = None if acc is None else r["ca"] - r["ca_guard"]
    if diverged:
        r["load_notes"].append(
            f"{', '.join(diverged)} diverged (non-finite weights or scores) under the fixed recipe; per-epoch "
            f"training loss B {[round(x, 3) for x in b_loss]}, M′ {[round(x, 3) for x in a_loss]}: no guard")
    r["zoo_clean_accuracy"], r["zoo_asr"] = info.get("clean_accuracy"), info.get("asr")
    if info["attack"] is not None:
        tx = read_idx_gz(os.path.join(zoo_dir, info["files_triggered"]["images"]))
        ty = read_idx_gz(os.path.join(zoo_dir, info["files_triggered"]["labels"])).astype(np.int64)
        if not np.array_equal(ty, yev):
            raise RuntimeError(f"{name}: triggered labels differ from the clean slice's")
        tpx = norm.pixels(tx)
        qm, qb, qa = probs(m, tpx, norm), probs(b, tpx, norm), probs(aux, tpx, norm)
        st, yht, cbt, cat = score(qm, qb, qa, a.gamma)
        if info.get("attack_mode") == "all-to-all" or info["target"] is None:
            # all-to-all: every triggered frame counts, its target is (y + 1) mod K
            tgt = (yev + 1) % K
            keep = np.ones(len(yev), dtype=bool)
        else:
            tgt = int(info["target"])
            keep = yev != tgt
        hit = keep & (yht == tgt)
        pos = hit
        r.update(
            asr=float(hit.sum() / keep.sum()),
            asr_guard=None if tau is None else float((hit & (st >= tau)).sum() / keep.sum()),
            asr_aux=None if "M′" in diverged else float((keep & (qa.argmax(1) == tgt)).sum() / keep.sum()),
            auroc=auroc(-st[pos], -s[correct]),
            auroc_expert=auroc(cbt[pos], cb[correct]),
            auroc_aux=auroc(-cat[pos], -ca_[correct]),
            n_pos=int(pos.sum()),
        )
    for k, zk in (("ca", "zoo_clean_accuracy"), ("asr", "zoo_asr")):
        if r[zk] is not None and abs(r[k] - r[zk]) > 1e-9:
            r["load_notes"].append(f"{k} {r[k]:.4f} here, {r[zk]:.4f} in the manifest")
    r["seconds"] = round(time.time() - t0, 1)
    r["train_seconds"] = round(t_train, 1)
    return r


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


def pct(v, d=1):
    return "—" if v is None else f"{100 * v:.{d}f}"


def markdown(results, failed, a, zoo_dir):
    L = ["# Zoo reference: plain-PyTorch BaDExpert (paper's fixed rates)", "",
         "Produced by `lab/zoo/reference.py` — an independent PyTorch implementation of docs/design.md "
         "§3.1–3.5 that shares no code with the Rust converter/runtime (it imports only the "
         "architecture constructor `build` from `make_zoo.py`; weights from each `<name>.bn.onnx`, "
         "checked against the manifest's reference logits).", "",
         f"Settings: B = copy of M, Adam lr {a.lr_expert:g}, 1 epoch, batch 128, labels (y+1) mod 10; "
         f"M′ = copy of M, SGD Nesterov 0.9, wd 1e-4, lr {a.lr_aux:g} ×0.1 after epochs 2/4/6/8, 10 epochs, "
         f"batch 64; both train mode, crop (pad 3) + horizontal flip. Reserve 2,000 → 1,600 fine-tune / 400 "
         f"held-out calibration (split seed {a.split_seed}); γ {a.gamma}, target FPR {100 * a.fpr:g} %, τ = "
         f"⌊FPR·(n+1)⌋-th smallest held-out score of the frames M gets right. Evaluation: the zoo's "
         f"1,000-frame clean slice and each model's triggered copy. Seed {a.seed}, {a.threads} thread(s).", "",
         "Columns: CA and CA drop (CA − CA with guard), ASR without / with guard, AUROC (−s; clean∧M-correct "
         "vs triggered∧true≠target∧M(x̃)=target), realised FPR (rejected clean frames M gets right), held-out "
         "accuracy (400 frames, true labels) of M, B and M′, and as diagnostics AUROC of B alone (c_B) and "
         "M′ alone (−c_A) and M′'s ASR. All figures in %. A model marked *diverged* got non-finite "
         "weights under the fixed recipe: no threshold, no guard figures (—).", ""]
    for part in ("dev", "test"):
        rows = [r for r in results if r["part"] == part]
        if not rows:
            continue
        L += [f"## Part: {part}", "",
              "| model | arch | attack | CA | CA drop | ASR | ASR w/ guard | AUROC | realised FPR | M held-out | B held-out | M′ held-out | AUROC B alone | AUROC M′ alone | M′ ASR |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            L.append(
                f"| {r['name']}{' (' + ', '.join(r['diverged']) + ' diverged)' if r.get('diverged') else ''} | "
                f"{r['architecture']} | {r['attack'] or 'clean'} | {pct(r['ca'])} | "
                f"{pct(r['ca_drop'])} | {pct(r['asr'])} | {pct(r['asr_guard'])} | "
                f"{pct(r['auroc'], 2)} | {pct(r['fpr'], 2)} | "
                f"{pct(r['model_holdout_acc'])} | {pct(r['expert_holdout_acc'])} | {pct(r['aux_holdout_acc'])} | "
                f"{pct(r['auroc_expert'], 2)} | "
                f"{pct(r['auroc_aux'], 2)} | {pct(r['asr_aux'])} |")
        L.append("")
    if failed:
        L += ["## Not evaluated", ""] + [f"- `{n}`: {why}" for n, why in failed] + [""]
    notes = [(r["name"], n) for r in results for n in r["load_notes"]]
    if notes:
        L += ["## Loading notes", ""] + [f"- `{n}`: {t}" for n, t in notes] + [""]
    L += ["Per model the JSON also records the per-epoch training losses of B and M′, τ, the calibration order statistic j of n, max |Δ| against the "
          "reference logits, B's accuracy on its shifted labels, the clean rejection rate over all frames, and "
          "timings.", ""]
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoo", default=os.path.join(ROOT, "models", "zoo"))
    ap.add_argument("--only", nargs="*", help="evaluate only these models")
    ap.add_argument("--lr-expert", type=float, default=1e-4)
    ap.add_argument("--lr-aux", type=float, default=0.1)
    ap.add_argument("--fpr", type=float, default=0.01)
    ap.add_argument("--gamma", type=float, default=GAMMA)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=20240501)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reuse", metavar="PREV.json",
                    help="take a model's result from an earlier run's JSON when the settings, the shared files and "
                         "the model's files (sha256) are the same")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "zoo-reference"),
                    help="output path without extension: writes OUT.json and OUT.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    zoo_dir = os.path.normpath(a.zoo)
    with open(os.path.join(zoo_dir, "zoo.json")) as f:
        zoo = json.load(f)
    norm = Norm(zoo["normalization"])
    sh = zoo["shared"]
    infos = []
    for p in sorted(glob.glob(os.path.join(zoo_dir, "*", "info.json"))):
        with open(p) as f:
            infos.append(json.load(f))
    if a.only:
        known = {i["name"] for i in infos}
        for n in a.only:
            if n not in known:
                sys.exit(f"unknown model {n!r} (have {sorted(known)})")
        infos = [i for i in infos if i["name"] in a.only]
    infos.sort(key=lambda i: ({"dev": 0, "test": 1}.get(i["part"], 2), i["name"]))

    rx = read_idx_gz(os.path.join(zoo_dir, sh["reserve_images"]))
    ry = read_idx_gz(os.path.join(zoo_dir, sh["reserve_labels"])).astype(np.int64)
    ex = read_idx_gz(os.path.join(zoo_dir, sh["eval_clean_images"]))
    ey = read_idx_gz(os.path.join(zoo_dir, sh["eval_clean_labels"])).astype(np.int64)
    shared_fp = {}
    for k in ("reserve_images", "reserve_labels", "eval_clean_images", "eval_clean_labels"):
        with open(os.path.join(zoo_dir, sh[k]), "rb") as f:
            shared_fp[sh[k]] = hashlib.sha256(f.read()).hexdigest()
    perm = np.random.RandomState(a.split_seed).permutation(len(rx))
    n_ft = int(round(0.8 * len(rx)))
    ft, cal = perm[:n_ft], perm[n_ft:]
    data = dict(ft_px=norm.pixels(rx[ft]), ft_y=torch.from_numpy(ry[ft]), cal_px=norm.pixels(rx[cal]),
                cal_y=torch.from_numpy(ry[cal]), ev_x=ex, ev_px=norm.pixels(ex), ev_y=ey)

    settings = dict(result_format=RESULT_FORMAT, lr_expert=a.lr_expert, lr_aux=a.lr_aux, fpr=a.fpr, gamma=a.gamma, eps=EPS, seed=a.seed,
                    split_seed=a.split_seed, finetune_n=len(ft), calibration_n=len(cal), threads=a.threads,
                    torch=torch.__version__)
    previous = {}
    if a.reuse:
        if os.path.exists(a.reuse):
            with open(a.reuse) as f:
                prev = json.load(f)
            if prev.get("settings") == settings and prev.get("shared") == shared_fp:
                previous = {r["name"]: r for r in prev["results"]}
            else:
                print(f"{a.reuse}: other settings or shared files, nothing reused", flush=True)
        else:
            print(f"{a.reuse}: not found, nothing reused", flush=True)

    results, failed = [], []
    for info in infos:
        try:
            fp = model_fingerprint(info, zoo_dir)
            if info["name"] in previous and previous[info["name"]].get("fingerprint") == fp:
                results.append(previous[info["name"]])
                print(f"{info['name']}: unchanged since {a.reuse}, result reused", flush=True)
                continue
            r = run_one(info, a, zoo_dir, norm, data)
            r["fingerprint"] = fp
        except Exception as e:  # report, go on with the next model
            failed.append((info["name"], f"{type(e).__name__}: {e}"))
            print(f"{info['name']}: FAILED {e}", flush=True)
            continue
        results.append(r)
        print(f"{r['name']}: CA {pct(r['ca'])} drop {pct(r['ca_drop'])} ASR {pct(r['asr'])} -> {pct(r['asr_guard'])} "
              f"AUROC {r['auroc']} FPR {pct(r['fpr'], 2)} | held-out M {pct(r['model_holdout_acc'])} "
              f"B {pct(r['expert_holdout_acc'])} M' {pct(r['aux_holdout_acc'])} | {r['seconds']}s", flush=True)

    out = dict(
        description="plain-PyTorch BaDExpert reference on the model zoo (lab/zoo/reference.py)",
        settings=settings, shared=shared_fp,
        results=results, failed=[dict(name=n, reason=w) for n, w in failed],
    )
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".json", "w") as f:
        json.dump(out, f, indent=1)
    with open(a.out + ".md", "w") as f:
        f.write(markdown(results, failed, a, zoo_dir))
    print(f"wrote {a.out}.json and {a.out}.md ({len(results)} models, {len(failed)} failed)")


if __name__ == "__main__":
    main()
