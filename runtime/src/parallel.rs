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
use crate::camera::CameraFrame;
use crate::guard::{FrameGuard, PixelLayout, Verdict};
use crate::guard_core::{run_plan, GuardCore};
use crate::manifest::Decision;
use crate::{Error, Result};

enum Status {
    Idle,
    Pending(Arc<Tensor>),
    Running,
    Done,
    Failed(Error),
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
    core: GuardCore,
    /// Models the calling thread runs, M first: (role index, state).
    local: Vec<(usize, TypedSimpleState)>,
    /// Models on worker threads: (role index, worker).
    workers: Vec<(usize, Worker)>,
    /// The latest logits of M, B and M′.
    logits: [Vec<f32>; 3],
}

fn work(plan: Plan, model: &'static str, shared: Arc<Shared>, classes: usize) {
    let mut state = match plan.spawn() {
        Ok(s) => Some(s),
        Err(e) => {
            shared.lock().status = Status::Failed(Error::Inference { model, reason: format!("cannot start: {e}") });
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
            None => Err(Error::Inference { model, reason: "the thread's tract state could not be made".into() }),
            Some(state) => run_plan(state, model, TValue::from_const(input), &mut local),
        };
        // The input and outputs are dropped: the caller may write the next frame in place.
        let mut slot = shared.lock();
        slot.status = match outcome {
            Ok(()) => {
                slot.logits.copy_from_slice(&local);
                Status::Done
            }
            Err(e) => Status::Failed(e),
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
        let core = GuardCore::new(bundle, "ParallelGuard", true)?;
        let on_workers: &[usize] = match threads {
            3 => &[1, 2],
            2 => &[1],
            _ => return Err(Error::Invalid(format!("ParallelGuard runs on 2 or 3 threads, not {threads}"))),
        };
        let classes = core.classes();
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
                .spawn(move || work(plan, name, for_thread, classes))
                .map_err(|e| Error::Invalid(format!("cannot start the {name} thread: {e}")))?;
            workers.push((k, Worker { shared, thread: Some(thread) }));
        }
        let mut local = Vec::new();
        for k in (0..3).filter(|k| !on_workers.contains(k)) {
            local.push((k, bundle.spawn(Role::ALL[k])?));
        }
        Ok(ParallelGuard { core, local, workers, logits: std::array::from_fn(|_| vec![0.0; classes]) })
    }

    /// Threads in use, the calling one included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Guards one u8 frame.
    pub fn guard(&mut self, frame: &[u8], layout: PixelLayout) -> Result<Verdict> {
        self.core.load(0, frame, layout)?;
        self.run()
    }

    /// Guards one camera frame (any size and format; [`crate::camera`]).
    pub fn guard_camera(&mut self, frame: &CameraFrame) -> Result<Verdict> {
        self.core.load_camera(0, frame)?;
        self.run()
    }

    fn run(&mut self) -> Result<Verdict> {
        for (_, w) in &self.workers {
            w.shared.lock().status = Status::Pending(self.core.input_tensor().clone());
            w.shared.changed.notify_all();
        }
        let mut failure = None;
        for (k, state) in &mut self.local {
            if let Err(e) = run_plan(state, Role::ALL[*k].name(), self.core.input(), &mut self.logits[*k]) {
                failure = failure.or(Some(e));
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
                Status::Failed(e) => failure = failure.or(Some(e)),
                _ => {
                    failure = failure.or(Some(Error::Inference { model: name, reason: "worker thread stopped".into() }))
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let [m, b, a] = &self.logits;
        Ok(self.core.verdict(0, [m, b, a]))
    }

    /// Number of classes, as in the manifest.
    pub fn classes(&self) -> usize {
        self.core.classes()
    }

    /// The decision rule in use.
    pub fn decision(&self) -> &Decision {
        self.core.decision()
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

impl FrameGuard for ParallelGuard {
    fn guard(&mut self, frame: &[u8], layout: PixelLayout) -> Result<Verdict> {
        ParallelGuard::guard(self, frame, layout)
    }

    fn guard_camera(&mut self, frame: &CameraFrame) -> Result<Verdict> {
        ParallelGuard::guard_camera(self, frame)
    }

    fn decision(&self) -> &Decision {
        ParallelGuard::decision(self)
    }
}
