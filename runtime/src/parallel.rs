//! The guard with M, B and M′ on three threads: one shared plan per model,
//! one tract state per thread, the frame preprocessed once. On a multi-core
//! board (Pi 4/5, Jetson) a frame then costs about one model's latency
//! instead of three. Threads exchange the frame and the logits through
//! preallocated slots (mutex + condvar), so the steady state allocates
//! nothing in our code, as with [`Guard`](crate::Guard).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tract_core::internal::*;

use crate::bundle::{GuardBundle, Plan, Role};
use crate::guard::{check_logits, decide, input_slice, output_f32, PixelLayout, Verdict};
use crate::manifest::Decision;
use crate::preprocess::Preprocessor;
use crate::score::{argmax, softmax_at, Confidences};
use crate::{Error, Result};


enum Status {
    Idle,
    Pending(Arc<Tensor>),
    Running,
    Done,
    Failed(String),
    Shutdown,
}

struct Slot {
    status: Status,
    logits: Vec<f32>,
}

struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A worker that panicked poisons the lock; its slot is still readable.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Worker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Guards frames one at a time, running the three models concurrently.
pub struct ParallelGuard {
    pre: Preprocessor,
    decision: Decision,
    classes: usize,
    input: Arc<Tensor>,
    workers: Vec<Worker>,
}

fn work(plan: Plan, shared: Arc<Shared>, classes: usize) {
    let mut state = match plan.spawn() {
        Ok(s) => Some(s),
        Err(e) => {
            shared.lock().status = Status::Failed(format!("cannot start: {e}"));
            None
        }
    };
    let mut local = vec![0f32; classes];
    loop {
        let input = {
            let mut slot = shared.lock();
            loop {
                match std::mem::replace(&mut slot.status, Status::Running) {
                    Status::Pending(input) => break input,
                    Status::Shutdown => return,
                    other => {
                        slot.status = other;
                        slot = shared.changed.wait(slot).unwrap_or_else(|p| p.into_inner());
                    }
                }
            }
        };
        let outcome = match state.as_mut() {
            None => Err("the thread's tract state could not be made".to_string()),
            Some(state) => state.run(tvec![TValue::from_const(input)]).map_err(|e| format!("{e:#}")).and_then(|out| {
                let logits = output_f32(&out[0]).map_err(|e| e.to_string())?;
                check_logits(logits, classes)?;
                local.copy_from_slice(logits);
                Ok(())
            }),
        };
        // The input and outputs are dropped: the caller may write the next frame in place.
        let mut slot = shared.lock();
        slot.status = match outcome {
            Ok(()) => {
                slot.logits.copy_from_slice(&local);
                Status::Done
            }
            Err(reason) => Status::Failed(reason),
        };
        shared.changed.notify_all();
    }
}

impl ParallelGuard {
    /// Starts three threads for a bundle opened with batch size 1.
    pub fn new(bundle: &GuardBundle) -> Result<ParallelGuard> {
        if bundle.batch() != 1 {
            return Err(Error::Invalid(format!("ParallelGuard takes frames one at a time; the bundle was opened for batch {}", bundle.batch())));
        }
        let m = bundle.manifest();
        let (shape, classes) = (m.input.shape, m.classes.len());
        let plans = [bundle.model.clone(), bundle.expert.clone(), bundle.auxiliary.clone()];
        let mut workers = Vec::with_capacity(3);
        for (plan, name) in plans.into_iter().zip(Role::ALL.map(Role::name)) {
            let shared = Arc::new(Shared { slot: Mutex::new(Slot { status: Status::Idle, logits: vec![0.0; classes] }), changed: Condvar::new() });
            let for_thread = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("badexpert-{name}"))
                .spawn(move || work(plan, for_thread, classes))
                .map_err(|e| Error::Invalid(format!("cannot start the {name} thread: {e}")))?;
            workers.push(Worker { shared, thread: Some(thread) });
        }
        Ok(ParallelGuard {
            pre: Preprocessor::new(&m.normalization, shape)?,
            decision: m.decision.clone(),
            classes,
            input: crate::guard::input_tensor(1, shape)?,
            workers,
        })
    }

    /// Guards one u8 frame.
    pub fn guard(&mut self, frame: &[u8], layout: PixelLayout) -> Result<Verdict> {
        self.pre.load(frame, layout, input_slice(&mut self.input))?;
        for w in &self.workers {
            w.shared.lock().status = Status::Pending(self.input.clone());
            w.shared.changed.notify_all();
        }
        // Wait for all three (even after a failure, so no thread still holds the input).
        let mut failure = None;
        let mut class = 0;
        for (k, w) in self.workers.iter().enumerate() {
            let mut slot = w.shared.lock();
            while matches!(slot.status, Status::Pending(_) | Status::Running) {
                slot = w.shared.changed.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
            match std::mem::replace(&mut slot.status, Status::Idle) {
                Status::Done if k == 0 => class = argmax(&slot.logits),
                Status::Done => {} // B's and M′'s logits are read below, once ŷ is known
                Status::Failed(reason) => failure = failure.or(Some(Error::Inference { model: Role::ALL[k].name(), reason })),
                _ => failure = failure.or(Some(Error::Inference { model: Role::ALL[k].name(), reason: "worker thread stopped".into() })),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let confidence = |k: usize| softmax_at(&self.workers[k].shared.lock().logits, class);
        Ok(decide(&self.decision, class, Confidences { expert: confidence(1), auxiliary: confidence(2) }))
    }

    /// Number of classes, as in the manifest.
    pub fn classes(&self) -> usize {
        self.classes
    }
}

impl Drop for ParallelGuard {
    fn drop(&mut self) {
        for w in &self.workers {
            w.shared.lock().status = Status::Shutdown;
            w.shared.changed.notify_all();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}
