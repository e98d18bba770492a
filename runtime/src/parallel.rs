//! The guard with M, B and M′ run concurrently: one shared plan per model,
//! one tract state per thread, the frame preprocessed once. With three
//! threads (the calling one runs M, two workers run B and M′) a frame costs
//! about one model's latency on a board with ≥ 3 cores (Pi 4/5, Jetson);
//! with two (the caller runs M then M′, one worker runs B) about two models'
//! on a dual-core. Threads exchange the frame and the logits through
//! preallocated slots (mutex + condvar), so the steady state allocates
//! nothing in our code, as with [`Guard`](crate::Guard).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tract_core::internal::*;

use crate::bundle::{GuardBundle, Plan, Role};
use crate::guard::{decide, input_slice, with_logits, PixelLayout, Verdict};
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
    /// Models the calling thread runs, M first: (role index, state).
    local: Vec<(usize, TypedSimpleState)>,
    /// Models on worker threads: (role index, worker).
    workers: Vec<(usize, Worker)>,
    /// The latest logits of M, B and M′.
    logits: [Vec<f32>; 3],
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
            Some(state) => {
                with_logits(state, TValue::from_const(input), classes, |logits| local.copy_from_slice(logits))
            }
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
    /// A parallel guard with as many threads as help here: three on a CPU
    /// with three or more cores, two otherwise.
    pub fn new(bundle: &GuardBundle) -> Result<ParallelGuard> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self::with_threads(bundle, cores.clamp(2, 3))
    }

    /// A parallel guard on `threads` threads, the calling one included: 3
    /// (M here, B and M′ on workers) or 2 (M then M′ here, B on a worker).
    /// The bundle must be opened with batch size 1.
    pub fn with_threads(bundle: &GuardBundle, threads: usize) -> Result<ParallelGuard> {
        if bundle.batch() != 1 {
            return Err(Error::Invalid(format!(
                "ParallelGuard takes frames one at a time; the bundle was opened for batch {}",
                bundle.batch()
            )));
        }
        let on_workers: &[usize] = match threads {
            3 => &[1, 2],
            2 => &[1],
            _ => return Err(Error::Invalid(format!("ParallelGuard runs on 2 or 3 threads, not {threads}"))),
        };
        let m = bundle.manifest();
        let (shape, classes) = (m.input.shape, m.classes.len());
        let mut workers = Vec::with_capacity(on_workers.len());
        for &k in on_workers {
            let (plan, name) = (bundle.plan(Role::ALL[k]).clone(), Role::ALL[k].name());
            let shared = Arc::new(Shared {
                slot: Mutex::new(Slot { status: Status::Idle, logits: vec![0.0; classes] }),
                changed: Condvar::new(),
            });
            let for_thread = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("badexpert-{name}"))
                .spawn(move || work(plan, for_thread, classes))
                .map_err(|e| Error::Invalid(format!("cannot start the {name} thread: {e}")))?;
            workers.push((k, Worker { shared, thread: Some(thread) }));
        }
        let mut local = Vec::new();
        for k in (0..3).filter(|k| !on_workers.contains(k)) {
            local.push((k, bundle.spawn(Role::ALL[k])?));
        }
        Ok(ParallelGuard {
            pre: Preprocessor::new(&m.normalization, shape)?,
            decision: m.decision.clone(),
            classes,
            input: crate::guard::input_tensor(1, shape)?,
            local,
            workers,
            logits: std::array::from_fn(|_| vec![0.0; classes]),
        })
    }

    /// Threads in use, the calling one included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Guards one u8 frame.
    pub fn guard(&mut self, frame: &[u8], layout: PixelLayout) -> Result<Verdict> {
        self.pre.load(frame, layout, input_slice(&mut self.input))?;
        for (_, w) in &self.workers {
            w.shared.lock().status = Status::Pending(self.input.clone());
            w.shared.changed.notify_all();
        }
        let mut failure = None;
        for (k, state) in &mut self.local {
            let out = &mut self.logits[*k];
            if let Err(reason) =
                with_logits(state, TValue::from_const(self.input.clone()), self.classes, |l| out.copy_from_slice(l))
            {
                failure = failure.or(Some(Error::Inference { model: Role::ALL[*k].name(), reason }));
            }
        }
        // Wait for every worker (even after a failure, so no thread still holds the input).
        for (k, w) in &self.workers {
            let mut slot = w.shared.lock();
            while matches!(slot.status, Status::Pending(_) | Status::Running) {
                slot = w.shared.changed.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
            let name = Role::ALL[*k].name();
            match std::mem::replace(&mut slot.status, Status::Idle) {
                Status::Done => self.logits[*k].copy_from_slice(&slot.logits),
                Status::Failed(reason) => failure = failure.or(Some(Error::Inference { model: name, reason })),
                _ => {
                    failure = failure.or(Some(Error::Inference { model: name, reason: "worker thread stopped".into() }))
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let class = argmax(&self.logits[0]);
        let confidences =
            Confidences { expert: softmax_at(&self.logits[1], class), auxiliary: softmax_at(&self.logits[2], class) };
        Ok(decide(&self.decision, class, confidences))
    }

    /// Number of classes, as in the manifest.
    pub fn classes(&self) -> usize {
        self.classes
    }
}

impl Drop for ParallelGuard {
    fn drop(&mut self) {
        for (_, w) in &self.workers {
            w.shared.lock().status = Status::Shutdown;
            w.shared.changed.notify_all();
        }
        for (_, w) in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl crate::FrameGuard for ParallelGuard {
    fn guard(&mut self, frame: &[u8], layout: PixelLayout) -> Result<Verdict> {
        ParallelGuard::guard(self, frame, layout)
    }
}
