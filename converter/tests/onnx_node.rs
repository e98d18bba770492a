//! The interpreter against ONNX's own backend node tests (onnx 1.17.0's
//! `onnx/backend/test/data/node/<case>/`: a model, its inputs and expected
//! outputs), as `scripts/env.sh`'s `install_onnx_node_tests` unpacks them.
//!
//! Fine-tuning runs every model through the ONNX → libtorch interpreter, so
//! an operator it computes slightly wrong would yield a wrong B and M′ with
//! no error anywhere. Every case must end one of three ways:
//! - *outside*: an operator we do not support, refused as unsupported;
//! - *refused*: a clear error at load or at the forward pass (an attribute,
//!   a data type or a shape we do not handle);
//! - *passed*: the first output matches within the stated tolerance.
//!
//! A wrong output, a wrong shape or a panic fails the test. The interpreter
//! takes one data input (a classifier's frames), so a case's other inputs are
//! given to it as initializers holding the case's values, and only the first
//! output is compared (the secondary outputs of BatchNormalization, Dropout
//! or LayerNormalization are not produced). Doubles are computed as f32 and
//! integers as i64 (`tensor_from_proto`), so values are compared as f64:
//! |got − want| ≤ ATOL + RTOL·|want|, NaN where NaN is expected.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use badexpert_converter::onnx::{pb, read_model, tensor_from_proto, TchGraph};
use badexpert_converter::Error;
use prost::Message;
use tch::{Device, Kind, Tensor};

/// onnx's own backend runner compares with rtol 1e-3 and atol 1e-7; f32
/// arithmetic where the reference used doubles needs a little more headroom
/// near zero.
const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Passed,
    Refused,
    Outside,
    Failed,
}

fn node_dir() -> PathBuf {
    match std::env::var_os("BADEXPERT_ONNX_NODE_TESTS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("BADEXPERT_CACHE").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/badexpert")
            });
            cache.join("onnx-node-tests-1.17.0/node")
        }
    }
}

fn read_tensor(path: &Path) -> Result<pb::TensorProto, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    pb::TensorProto::decode(bytes.as_slice()).map_err(|e| format!("{}: {e}", path.display()))
}

/// `input_0.pb`, `input_1.pb`, … (or `output_*`) of a case's first data set.
fn numbered(dir: &Path, stem: &str) -> Vec<PathBuf> {
    (0..).map(|i| dir.join(format!("{stem}_{i}.pb"))).take_while(|p| p.exists()).collect()
}

/// The case's operator, for the report: the op type of a one-node model,
/// "<first op> (function expanded)" otherwise.
fn operator_of(model: &pb::ModelProto) -> String {
    let nodes: Vec<&str> = model
        .graph
        .as_ref()
        .map(|g| g.node.iter().map(|n| n.op_type.as_str()).filter(|&op| op != "Constant").collect())
        .unwrap_or_default();
    match nodes[..] {
        [one] => one.to_string(),
        [] => "Constant".to_string(),
        [first, ..] => format!("{first} (function expanded)"),
    }
}

fn values(t: &Tensor) -> Result<Vec<f64>, String> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Double).contiguous().flatten(0, -1);
    Vec::<f64>::try_from(&t).map_err(|e| e.to_string())
}

/// Runs one case: its operator, how it ended and why.
fn run_case(case: &Path) -> (String, Outcome, String) {
    let mut op = String::from("(unreadable model)");
    match check_case(case, &mut op) {
        Ok((outcome, why)) => (op, outcome, why),
        Err(why) => (op, Outcome::Failed, why),
    }
}

/// `Err` explains a failure.
fn check_case(case: &Path, op_of_case: &mut String) -> Result<(Outcome, String), String> {
    let data = case.join("test_data_set_0");
    let mut model = match read_model(&case.join("model.onnx")) {
        Ok(m) => m,
        Err(e) => return Ok((Outcome::Refused, e.to_string())),
    };
    let op = operator_of(&model);
    *op_of_case = op.clone();
    let inputs = numbered(&data, "input");
    let outputs = numbered(&data, "output");
    let Some(expected) = outputs.first() else {
        return Ok((Outcome::Refused, "the case has no expected output".into()));
    };
    if let Err(Error::Unsupported(ops)) = TchGraph::from_proto(model.clone(), Device::Cpu) {
        return Ok((Outcome::Outside, ops.join("; ")));
    }
    let graph = model.graph.as_mut().ok_or("no graph")?;
    let tensor_typed = |v: &pb::ValueInfoProto| {
        matches!(v.r#type.as_ref().and_then(|t| t.value.as_ref()), Some(pb::type_proto::Value::TensorType(_)))
    };
    if let Some(v) = graph.input.iter().chain(&graph.output).find(|v| !tensor_typed(v)) {
        // Sequences and optionals cannot even be handed to the interpreter.
        return Ok((Outcome::Refused, format!("{:?} is not a tensor", v.name)));
    }
    // The first input stays the data input; the others become initializers.
    let declared: Vec<String> = graph.input.iter().map(|i| i.name.clone()).collect();
    let mut data_input = None;
    for (i, (name, path)) in declared.iter().zip(&inputs).enumerate() {
        let mut t = read_tensor(path)?;
        if i == 0 {
            data_input = Some(t);
        } else {
            t.name = name.clone();
            graph.initializer.push(t);
        }
    }
    let graph_result = TchGraph::from_proto(model, Device::Cpu);
    let graph = match graph_result {
        Ok(g) => g,
        Err(Error::Unsupported(ops)) => return Ok((Outcome::Outside, ops.join("; "))),
        Err(e) => return Ok((Outcome::Refused, e.to_string())),
    };
    let Some(x) = data_input else {
        return Ok((Outcome::Refused, "no input to feed".into()));
    };
    let x = match tensor_from_proto(&x) {
        Ok(x) => x,
        Err(e) => return Ok((Outcome::Refused, e.to_string())),
    };
    let want = match tensor_from_proto(&read_tensor(expected)?) {
        Ok(w) => w,
        // The interpreter produced something we cannot check: it must not claim a result.
        Err(e) => return Err(format!("expected output unreadable ({e}) but the model loaded")),
    };
    let got = match graph.forward(&x, false) {
        Ok(y) => y,
        Err(e) => return Ok((Outcome::Refused, e.to_string())),
    };
    if got.size() != want.size() {
        return Err(format!("{op}: shape {:?}, expected {:?}", got.size(), want.size()));
    }
    let (g, w) = (values(&got)?, values(&want)?);
    for (i, (g, w)) in g.iter().zip(&w).enumerate() {
        let ok = if w.is_nan() { g.is_nan() } else { (g - w).abs() <= ATOL + RTOL * w.abs() || g == w };
        if !ok {
            return Err(format!("{op}: element {i} is {g}, expected {w}"));
        }
    }
    Ok((Outcome::Passed, String::new()))
}

#[test]
fn every_node_test_of_a_supported_operator_passes_or_is_refused() {
    let dir = node_dir();
    let mut cases: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => {
            entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("model.onnx").exists()).collect()
        }
        Err(e) => panic!(
            "ONNX's node tests are not at {} ({e}): run `source scripts/env.sh && install_onnx_node_tests` \
             (scripts/test.sh does) or set BADEXPERT_ONNX_NODE_TESTS",
            dir.display()
        ),
    };
    cases.sort();
    assert!(cases.len() > 1000, "only {} cases under {}", cases.len(), dir.display());
    tch::set_num_threads(1);
    let mut per_op: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut refusals = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let result = std::panic::catch_unwind(|| run_case(case));
        let (op, outcome, why) = match result {
            Ok(r) => r,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                ("(panicked)".to_string(), Outcome::Failed, format!("panic: {msg}"))
            }
        };
        match outcome {
            Outcome::Failed => failures.push(format!("{name}: {why}")),
            Outcome::Refused => refusals.push(format!("{name}: {why}")),
            _ => {}
        }
        if outcome != Outcome::Outside {
            per_op.entry(op).or_default()[outcome as usize] += 1;
        }
    }
    let mut report = String::from("| operator | passed | refused | failed |\n|---|---|---|---|\n");
    let mut totals = [0usize; 4];
    for (op, counts) in &per_op {
        let _ = writeln!(report, "| {op} | {} | {} | {} |", counts[0], counts[1], counts[3]);
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
        }
    }
    let outside = cases.len() - totals.iter().sum::<usize>();
    let _ = writeln!(report, "| **all** | {} | {} | {} |", totals[0], totals[1], totals[3]);
    let _ = writeln!(report, "\n{outside} of {} cases use an operator outside the supported set.", cases.len());
    println!("{report}");
    println!("refused:\n{}", refusals.join("\n"));
    if let Ok(out) = std::env::var("BADEXPERT_ONNX_NODE_REPORT") {
        let _ = std::fs::write(out, format!("{report}\nrefused:\n{}\n", refusals.join("\n")));
    }
    assert!(totals[0] > 0, "no case passed: the harness is broken");
    assert!(
        failures.is_empty(),
        "{} case(s) computed a wrong output or panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
