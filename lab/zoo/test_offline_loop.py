#!/usr/bin/env python3
"""The offline loop (offline_loop.py) on a tiny cache written here, where
every figure can be worked out by hand. Run: python3 -m unittest
lab/zoo/test_offline_loop.py (tests/offline_loop.rs runs it in the suite)."""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import offline_loop as ol  # noqa: E402

TARGET = 0


def write_cache(root, rates, seed, cal, clean, trig, model="toy"):
    """One conversion's cache: each slice a list of (label, class, c_B, c_A)."""
    d = os.path.join(root, f"{model}.bn.{rates}.s{seed}")
    os.makedirs(d)
    sl = lambda rows: dict(labels=[r[0] for r in rows], rows=[[r[1], r[2], r[3]] for r in rows])
    record = dict(model=model, part="dev", architecture="cnn", attack="badnet", target=TARGET, export="bn",
                  rates=rates, seed=seed, split_seed=0,
                  slices=dict(calibration=sl(cal), clean=sl(clean), triggered=sl(trig)))
    with open(os.path.join(d, "cache.json"), "w") as f:
        json.dump(record, f)


def clean_rows(n, shift=0.0):
    """Correctly classified clean frames of class 1: B has forgotten them, M′ agrees."""
    return [(1, 1, 0.05 + 0.001 * i + shift, 0.9) for i in range(n)]


class OfflineLoop(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        root = self.tmp.name
        # Triggered frames of class 2 sent to the target: B agrees with M, M′ does not,
        # except frame 0, which slips through pair 0 (B forgot it, M′ agrees) but not pair 1.
        trig0 = [(2, TARGET, 0.05, 0.9)] + [(2, TARGET, 0.95, 0.05)] * 9 + [(TARGET, TARGET, 0.95, 0.05)]
        trig1 = [(2, TARGET, 0.95, 0.05)] * 10 + [(TARGET, TARGET, 0.95, 0.05)]
        # A clean frame M misclassifies, and one the guard could not score (class null).
        clean = clean_rows(98) + [(1, 3, 0.5, 0.5), (1, None, None, None)]
        write_cache(root, "paper", 0, clean_rows(99), clean, trig0)
        write_cache(root, "paper", 1, clean_rows(99, 0.01), clean, trig1)
        write_cache(root, "e3e-4_a0.01", 0, clean_rows(99), clean, trig1)

    def tearDown(self):
        self.tmp.cleanup()

    def test_threshold_and_auroc_follow_the_runtime(self):
        # j = floor(0.01 · 100) = 1: τ is the smallest of 99 calibration scores.
        self.assertEqual(ol.threshold_at_fpr(list(range(1, 100)), 0.01), 1)
        self.assertEqual(ol.auroc([1, 2, 3], [0, 0]), 1.0)
        self.assertEqual(ol.auroc([1, 2, 3], [2]), 1 - 1.5 / 3)

    def test_single_pairs_and_seed_ensembles(self):
        r = ol.evaluate(self.tmp.name, rates={"paper"})["toy.bn.paper"]
        s0, s1 = r["single s0"], r["single s1"]
        # Ten non-target triggered frames, all sent to the target; frame 0 passes pair 0 only.
        self.assertEqual((s0["asr"], s1["asr"]), (1.0, 1.0))
        self.assertAlmostEqual(s0["asr_defended"], 0.1)
        self.assertEqual(s1["asr_defended"], 0.0)
        # 98 correct clean frames of 100; none rejected at the calibration's own τ … but the
        # unscorable frame is rejected (fail closed) and the misclassified one does not count.
        self.assertEqual(s0["fpr"], 0.0)
        self.assertAlmostEqual(s0["ca"], 0.98)
        self.assertEqual(s0["ca_drop"], 0.0)
        self.assertEqual(s0["models_per_frame"], 3)
        # Averaging c_B over the pairs (0.05 and 0.95) puts frame 0 far below every clean frame.
        self.assertEqual(r["mean-conf"]["asr_defended"], 0.0)
        self.assertEqual(r["mean-conf"]["models_per_frame"], 5)
        self.assertEqual(r["mean-conf"]["auroc"], 1.0)

    def test_the_grid_crosses_b_and_m_prime_of_different_conversions(self):
        g = ol.grid(self.tmp.name)["toy"]
        # B rates 1e-4 (paper) and 3e-4; M′ rates 0.01 and 0.1 (paper): four cells from three conversions.
        self.assertEqual(sorted(g), ["B 1e-4 / M′ 0.01", "B 1e-4 / M′ 0.1", "B 3e-4 / M′ 0.01", "B 3e-4 / M′ 0.1"])
        self.assertEqual(g["B 1e-4 / M′ 0.1"]["seeds"], [0, 1])
        self.assertIn("averaged", g["B 1e-4 / M′ 0.1"])
        self.assertEqual(g["B 3e-4 / M′ 0.1"]["seeds"], [0])
        # B of e3e-4 (seed 0) never forgets frame 0; M′ of the paper pair 0 does agree on it: it passes
        # only if both say "clean", so here it is caught.
        self.assertEqual(g["B 3e-4 / M′ 0.1"]["single"][0]["asr_defended"], 0.0)
        # B of paper seed 0 forgot frame 0 and M′ of e3e-4 (0.05) does not agree: caught too.
        self.assertEqual(g["B 1e-4 / M′ 0.01"]["single"][0]["asr_defended"], 0.0)
        # An M′ with the cosine schedule is a rate of its own, after the paper's schedule's.
        clean = clean_rows(98) + [(1, 3, 0.5, 0.5), (1, None, None, None)]
        trig = [(2, TARGET, 0.95, 0.05)] * 10 + [(TARGET, TARGET, 0.95, 0.05)]
        write_cache(self.tmp.name, "e1e-4_c0.03", 0, clean_rows(99), clean, trig)
        g = ol.grid(self.tmp.name)["toy"]
        self.assertEqual(list(g)[:3], ["B 1e-4 / M′ 0.01", "B 1e-4 / M′ 0.1", "B 1e-4 / M′ c0.03"])

    def test_compare_puts_the_same_conversion_of_two_caches_side_by_side(self):
        other = os.path.join(self.tmp.name, "other")
        # The same conversion with an M′ that also sees frame 0 as suspect.
        trig = [(2, TARGET, 0.05, 0.05)] + [(2, TARGET, 0.95, 0.05)] * 9 + [(TARGET, TARGET, 0.95, 0.05)]
        clean = clean_rows(98) + [(1, 3, 0.5, 0.5), (1, None, None, None)]
        write_cache(other, "paper", 0, clean_rows(99), clean, trig)
        write_cache(other, "e1e-4_a0.03", 1, clean_rows(99), clean, trig)
        for d in (self.tmp.name, other):
            for name in os.listdir(d):
                path = os.path.join(d, name, "cache.json")
                if os.path.exists(path):
                    with open(path) as f:
                        r = json.load(f)
                    r["auxiliary"] = dict(holdout_accuracy=0.5)
                    with open(path, "w") as f:
                        json.dump(r, f)
        c = ol.compare(self.tmp.name, other)
        self.assertEqual(list(c), ["toy.bn.paper.s0"])
        self.assertAlmostEqual(c["toy.bn.paper.s0"]["base"]["asr_defended"], 0.1)
        self.assertEqual(c["toy.bn.paper.s0"]["other"]["asr_defended"], 0.0)
        # Another rate set is compared with the base's rate set of the same seed.
        c = ol.compare(self.tmp.name, other, base_rates="paper")
        self.assertEqual(sorted(c), ["toy.bn.e1e-4_a0.03.s1", "toy.bn.paper.s0"])
        self.assertEqual(c["toy.bn.e1e-4_a0.03.s1"]["base"]["asr_defended"], 0.0)
        self.assertIn("meets 0", ol.compare_summary("base", [c["toy.bn.paper.s0"]["base"]]))

    def test_seed_cross_pairs_every_b_seed_with_every_m_prime_seed(self):
        c = ol.seed_cross(self.tmp.name, "1e-4", "0.1")
        # B seed 0's frame 0 slips through (c_B 0.05) whatever M′; B seed 1 catches it.
        self.assertEqual(len(c["toy"]), 2)
        self.assertAlmostEqual(c["toy"][0][0], 0.1)
        self.assertEqual(c["toy"][1][0], 0.0)

    def test_rate_names(self):
        self.assertEqual(ol.rate_parts("paper"), ("1e-4", "0.1"))
        self.assertEqual(ol.rate_parts("e3e-5_a0.03"), ("3e-5", "0.03"))
        self.assertEqual(ol.rate_parts("e1e-4_c0.03"), ("1e-4", "c0.03"))

    def test_canaries_pick_the_cell_that_catches_them(self):
        canaries = os.path.join(self.tmp.name, "canaries")
        clean = clean_rows(98) + [(1, 3, 0.5, 0.5), (1, None, None, None)]
        # The paper pair lets every canary-triggered frame through (B forgot it, M′ agrees) …
        slips = [(2, TARGET, 0.05, 0.9)] * 10
        write_cache(canaries, "paper", 0, clean_rows(99), clean, slips, model="toy+badnet")
        # … the other conversion's B and M′ each catch them.
        write_cache(canaries, "e3e-4_a0.01", 0, clean_rows(99), clean, [(2, TARGET, 0.95, 0.05)] * 10,
                    model="toy+badnet")
        # A canary the copy did not learn (its frames stay in their class) is left out.
        write_cache(canaries, "paper", 0, clean_rows(99), clean, [(2, 2, 0.95, 0.05)] * 10, model="toy+blend")
        r = ol.canary_choice(self.tmp.name, canaries)["toy"]
        self.assertEqual(r["canaries_used"], 1)
        self.assertEqual(r["canaries"]["B 1e-4 / M′ 0.1"][0]["asr_defended"], 1.0)
        self.assertNotEqual(r["chosen"], "B 1e-4 / M′ 0.1")
        self.assertEqual(r["canaries"][r["chosen"]][0]["asr_defended"], 0.0)
        # Judged on the model itself on the seeds both cells have (the other rates have seed 0 only).
        self.assertEqual(r["seeds"], [0])
        self.assertEqual([p["asr_defended"] for p in r["chosen_pairs"]], [0.0])
        self.assertAlmostEqual(r["paper_pairs"][0]["asr_defended"], 0.1)

    def test_target_split_matches_the_converter(self):
        # The cases of converter/src/calibration.rs's unit tests, same figures.
        scored = [(0, float(i)) for i in range(100)] + [(1 + i % 9, float(i)) for i in range(900)]
        self.assertEqual(ol.split_thresholds(scored, 0.01, 0, 0.7), (2.0, 6.0))
        capped = [(0, float(i)) for i in range(100)] + [(1 + i % 9, float(i)) for i in range(200)]
        self.assertEqual(ol.split_thresholds(capped, 0.01, 0, 0.9)[0], 0.0)
        lone = [(1 + i % 9, float(i)) for i in range(1000)] + [(0, 5.0)]
        self.assertIsNone(ol.split_thresholds(lone, 0.01, 0, 0.7))
        self.assertIsNotNone(ol.split_thresholds(lone, 0.01, 3, 0.7))


if __name__ == "__main__":
    unittest.main()
