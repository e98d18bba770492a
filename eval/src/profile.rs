//! Where a plan spends its time: every node of the optimized plan timed over
//! many runs, then grouped by operator, so a slow guard can be traced to the
//! op that costs most (tract's own per-node profile, without tract-cli).
//!
//! Plans can be timed alone (each plan's runs back to back) or in turn (M, B,
//! M′, M, B, M′, … as the guard runs them). The two differ where the three
//! models evict each other's weights from the caches: that difference is what
//! makes the guard cost more than three times one model.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tract_core::internal::*;

use badexpert_runtime::advanced::{self, Plan};
use badexpert_runtime::{Error, GuardBundle, Result, Role};

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
    /// The costliest single nodes: name, op, µs per run.
    pub top_nodes: Vec<(String, String, f64)>,
}

/// How the plans' runs are ordered while they are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// All runs of one plan, then all runs of the next.
    Alone,
    /// One run of each plan in turn, as the sequential guard runs them.
    InTurn,
}

/// Profiles each of the bundle's three plans over `runs` runs on a zero frame
/// (timing does not depend on pixel values for these dense networks).
pub fn profile(bundle: &GuardBundle, runs: usize, schedule: Schedule, top_nodes: usize) -> Result<Vec<PlanProfile>> {
    let runs = runs.max(1);
    let mut timers = Role::ALL
        .iter()
        .map(|&role| NodeTimer::new(advanced::plan(bundle, role), role.name()))
        .collect::<Result<Vec<_>>>()?;
    match schedule {
        Schedule::Alone => {
            for timer in &mut timers {
                timer.warm_up(runs / 10 + 1)?;
                for _ in 0..runs {
                    timer.run()?;
                }
            }
        }
        Schedule::InTurn => {
            for timer in &mut timers {
                timer.warm_up(runs / 10 + 1)?;
            }
            for _ in 0..runs {
                for timer in &mut timers {
                    timer.run()?;
                }
            }
        }
    }
    Ok(timers.iter().map(|t| t.profile(runs, top_nodes)).collect())
}

/// One plan's state, a zero input and the time accumulated in each node.
struct NodeTimer<'p> {
    plan: &'p Plan,
    name: &'static str,
    state: TypedSimpleState,
    input: TValue,
    per_node: Vec<Duration>,
    total: Duration,
}

impl<'p> NodeTimer<'p> {
    fn new(plan: &'p Plan, name: &'static str) -> Result<Self> {
        let fail = |e: TractError| Error::Inference { model: name, reason: format!("{e:#}") };
        let fact = plan.model().input_fact(0).map_err(fail)?;
        let shape =
            fact.shape.as_concrete().ok_or_else(|| Error::Invalid(format!("{name} has a symbolic input shape")))?;
        let input = Tensor::zero::<f32>(shape).map_err(fail)?.into_tvalue();
        let state = plan.spawn().map_err(fail)?;
        let per_node = vec![Duration::ZERO; plan.model().nodes().len()];
        Ok(NodeTimer { plan, name, state, input, per_node, total: Duration::ZERO })
    }

    fn fail(&self, e: TractError) -> Error {
        Error::Inference { model: self.name, reason: format!("{e:#}") }
    }

    fn warm_up(&mut self, runs: usize) -> Result<()> {
        for _ in 0..runs {
            self.state.run(tvec![self.input.clone()]).map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        let per_node = &mut self.per_node;
        let start = Instant::now();
        let outcome = self.state.run_plan_with_eval(tvec![self.input.clone()], |ctx, op_state, node, inputs| {
            let t = Instant::now();
            let out = tract_core::plan::eval(ctx, op_state, node, inputs);
            per_node[node.id] += t.elapsed();
            out
        });
        self.total += start.elapsed();
        outcome.map(drop).map_err(|e| self.fail(e))
    }

    fn profile(&self, runs: usize, top_nodes: usize) -> PlanProfile {
        let model = self.plan.model();
        let us = |d: Duration| d.as_secs_f64() * 1e6 / runs as f64;
        let mut nodes_total = Duration::ZERO;
        let mut by_op: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
        let mut nodes: Vec<(String, String, f64)> = Vec::new();
        for node in model.nodes() {
            if node.op_is::<tract_core::ops::source::TypedSource>() {
                continue;
            }
            let name = node.op().name().to_string();
            let entry = by_op.entry(name.clone()).or_default();
            entry.0 += 1;
            entry.1 += self.per_node[node.id];
            nodes_total += self.per_node[node.id];
            nodes.push((node.name.clone(), name, us(self.per_node[node.id])));
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
        nodes.truncate(top_nodes);
        PlanProfile {
            role: self.name,
            runs,
            nodes_us: us(nodes_total),
            total_us: us(self.total),
            ops,
            top_nodes: nodes,
        }
    }
}
