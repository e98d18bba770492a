//! Where a plan spends its time: every node of the optimized plan timed over
//! many runs, then grouped by operator, so a slow guard can be traced to the
//! op that costs most (tract's own per-node profile, without tract-cli).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tract_core::internal::*;

use crate::{Error, GuardBundle, Plan, Result, Role};

/// Time spent in one operator kind, summed over its nodes.
#[derive(Debug, Clone, Serialize)]
pub struct OpCost {
    /// tract's operator name in the optimized plan (e.g. `Conv`, `OptMatMul`).
    pub op: String,
    pub nodes: usize,
    /// Mean µs per run, all nodes of this kind together.
    pub us_per_run: f64,
    /// Share of the plan's node time.
    pub share: f64,
}

/// Per-node profile of one plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanProfile {
    pub role: &'static str,
    pub runs: usize,
    /// Mean µs per run inside nodes.
    pub nodes_us: f64,
    /// Mean µs per run of the whole `run` call (nodes plus tract's bookkeeping).
    pub total_us: f64,
    /// Costliest first.
    pub ops: Vec<OpCost>,
    /// The five costliest single nodes: name, op, µs per run.
    pub top_nodes: Vec<(String, String, f64)>,
}

/// Profiles each of the bundle's three plans over `runs` runs on a zero frame
/// (timing does not depend on pixel values for these dense networks).
pub fn profile(bundle: &GuardBundle, runs: usize) -> Result<Vec<PlanProfile>> {
    Role::ALL.iter().map(|&role| profile_plan(bundle.plan(role), role.name(), runs)).collect()
}

/// Profiles one plan over `runs` runs on a zero input of its input shape.
pub fn profile_plan(plan: &Plan, name: &'static str, runs: usize) -> Result<PlanProfile> {
    let runs = runs.max(1);
    let fail = |e: TractError| Error::Inference { model: name, reason: format!("{e:#}") };
    let fact = plan.model().input_fact(0).map_err(fail)?;
    let shape = fact.shape.as_concrete().ok_or_else(|| Error::Invalid(format!("{name} has a symbolic input shape")))?;
    let input = Tensor::zero::<f32>(shape).map_err(fail)?.into_tvalue();
    let mut state = plan.spawn().map_err(fail)?;
    for _ in 0..runs / 10 + 1 {
        state.run(tvec![input.clone()]).map_err(fail)?;
    }
    let model = plan.model();
    let mut per_node = vec![Duration::ZERO; model.nodes().len()];
    let start = Instant::now();
    for _ in 0..runs {
        state
            .run_plan_with_eval(tvec![input.clone()], |ctx, op_state, node, inputs| {
                let t = Instant::now();
                let out = tract_core::plan::eval(ctx, op_state, node, inputs);
                per_node[node.id] += t.elapsed();
                out
            })
            .map_err(fail)?;
    }
    let total = start.elapsed();
    let us = |d: Duration| d.as_secs_f64() * 1e6 / runs as f64;
    let nodes_total: Duration = per_node.iter().sum();
    let mut by_op: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    let mut nodes: Vec<(String, String, f64)> = Vec::new();
    for node in model.nodes() {
        if node.op_is::<tract_core::ops::source::TypedSource>() {
            continue;
        }
        let name = node.op().name().to_string();
        let entry = by_op.entry(name.clone()).or_default();
        entry.0 += 1;
        entry.1 += per_node[node.id];
        nodes.push((node.name.clone(), name, us(per_node[node.id])));
    }
    let mut ops: Vec<OpCost> = by_op
        .into_iter()
        .map(|(op, (n, d))| OpCost {
            op,
            nodes: n,
            us_per_run: us(d),
            share: d.as_secs_f64() / nodes_total.as_secs_f64().max(f64::MIN_POSITIVE),
        })
        .collect();
    ops.sort_by(|a, b| b.us_per_run.total_cmp(&a.us_per_run));
    nodes.sort_by(|a, b| b.2.total_cmp(&a.2));
    nodes.truncate(5);
    Ok(PlanProfile { role: name, runs, nodes_us: us(nodes_total), total_us: us(total), ops, top_nodes: nodes })
}
