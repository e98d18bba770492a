#!/usr/bin/env python3
"""Builds docs/zoo.md's result tables from evaluate.py results (JSON files given as arguments)
beside the plain-PyTorch reference (docs/zoo-reference.json).

Usage: python3 lab/zoo/tables.py docs/zoo-results/dev-default-g08.json docs/zoo-results/dev-paper.json docs/zoo-results/test-default-g08.json docs/zoo-results/test-paper.json
"""
import os
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import json, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate import is_vit, meets_bar as meets, pct, verdict
rows = []
for p in sys.argv[1:]:
    rows += json.load(open(p))
# Rows at the paper's fixed rates become a column beside the defaults' rows.
paper = {(r["model"], r["export"]): r for r in rows if r["rates"] == "paper"}
rows = [r for r in rows if r["rates"] != "paper"]
def paper_cell(r):
    q = paper.get((r["model"], r["export"]))
    if q is None: return "—"
    if "error" in q: return f"error: {q['error']}"
    auroc = f"{q['auroc']:.4f}" if q.get("auroc") is not None else "—"
    return f"{auroc} / {pct(q.get('asr_defended'))} / {pct(q['ca_drop'])} / {pct(q['fpr'])}"
ref = {r["name"]: r for r in json.load(open(os.path.join(ROOT, "docs/zoo-reference.json")))["results"]}
def drawn(rs):
    d = [r["fpr_expected"] for r in rs if r.get("fpr_expected") is not None]
    return f", over calibration draws {pct(sum(d)/len(d))} % (max {pct(max(d))})" if len(d) == len(rs) else ""
def summary(what, allr):
    cnn = [r for r in allr if not (r["attack"] and is_vit(r))]
    return (f"{what}: {sum(map(meets, cnn))}/{len(cnn)} CNN and clean exports meet the bar; over all {len(allr)} exports "
            f"mean CA drop {pct(sum(r['ca_drop'] for r in allr)/len(allr))} pt (max {pct(max(r['ca_drop'] for r in allr))}), "
            f"mean realised FPR {pct(sum(r['fpr'] for r in allr)/len(allr))} % (max {pct(max(r['fpr'] for r in allr))})" + drawn(allr) + ".")
out = []
for part in ("dev", "test"):
    out += [f"### {part} part", "",
            "| model | export | B lr | M′ lr | BN restored | CA | CA drop | FPR | FPR over draws | ASR | ASR guard | AUROC | bar | our converter, paper's rates and γ 0.5: AUROC / ASR guard / CA drop / FPR | reference (paper's rates, PyTorch): AUROC / ASR guard / CA drop / FPR |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    sel = [r for r in rows if r["part"] == part]
    order = json.load(open(os.path.join(ROOT, "models/zoo/zoo.json")))["parts"][part]
    sel.sort(key=lambda r: (order.index(r["model"]), ["folded", "bn", "dynamo"].index(r["export"])))
    for r in sel:
        f = ref.get(r["model"])
        if f is None: rs = "—"
        elif f.get("diverged"): rs = "M′ diverged: no guard"
        elif r["attack"]: rs = f"{f['auroc']:.4f} / {pct(f['asr_guard'])} / {pct(f['ca_drop'])} / {pct(f['fpr'])}"
        else: rs = f"— / — / {pct(f['ca_drop'])} / {pct(f['fpr'])}"
        if "error" in r:
            out.append(f"| {r['model']} | {r['export']} | | | | | | | | | | | **error** {r['error']} | {paper_cell(r)} | {rs} |"); continue
        bar = verdict(r)
        auroc = f"{r['auroc']:.4f}" if r.get("auroc") is not None else "—"
        out.append(f"| {r['model']} | {r['export']} | {r['expert_lr']:.0e} | {r['aux_lr']:g} | {r['restored_norms']} | {pct(r['ca'])} | {pct(r['ca_drop'])} | {pct(r['fpr'])} | {pct(r.get('fpr_expected'))} | {pct(r.get('asr'))} | {pct(r.get('asr_defended'))} | {auroc} | {bar} | {paper_cell(r)} | {rs} |")
    allr = [r for r in sel if "error" not in r]
    if allr:
        out += ["", summary(f"{part} part", allr), ""]
    pp = [q for q in paper.values() if q["part"] == part and "error" not in q]
    if pp:
        out += [summary(f"{part} part at the paper's fixed rates (our converter)", pp), ""]
print("\n".join(out))
