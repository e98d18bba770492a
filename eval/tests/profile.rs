//! `badexpert-guard profile`: every plan timed node by node, alone or in
//! turn as the guard runs them, with badexpert's kernels or tract's ops only.

use std::path::Path;

use badexpert_eval::profile::{profile, Schedule};
use badexpert_runtime::{GuardBundle, LoadOptions};

fn demo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist")
}

#[test]
fn the_profile_times_every_plan_alone_and_in_turn() {
    for tract_only in [false, true] {
        let options = LoadOptions { own_kernels: !tract_only, ..Default::default() };
        let bundle = GuardBundle::open_with(demo().join("bundle"), options).unwrap();
        for schedule in [Schedule::Alone, Schedule::InTurn] {
            let plans = profile(&bundle, 5, schedule, 3).unwrap();
            assert_eq!(plans.iter().map(|p| p.role).collect::<Vec<_>>(), ["model", "expert", "auxiliary"]);
            for p in &plans {
                assert_eq!(p.runs, 5);
                assert!(
                    p.nodes_us > 0.0 && p.total_us >= p.nodes_us,
                    "{schedule:?} {}: {} µs in nodes of {} µs",
                    p.role,
                    p.nodes_us,
                    p.total_us
                );
                assert_eq!(p.top_nodes.len(), 3);
                let shares: f64 = p.ops.iter().map(|o| o.share).sum();
                assert!((shares - 1.0).abs() < 1e-6, "{schedule:?} {}: shares sum to {shares}", p.role);
                // The plan that ran is the one asked for: our convolutions, or tract's only.
                let ours = p.ops.iter().any(|o| o.op == "PackedConv" || o.op == "InputConv");
                assert_eq!(
                    ours,
                    !tract_only,
                    "{schedule:?} {}: {:?}",
                    p.role,
                    p.ops.iter().map(|o| &o.op).collect::<Vec<_>>()
                );
            }
        }
    }
}
