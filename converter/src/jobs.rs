//! Work items shared out over a few threads, each thread with a share of
//! libtorch's intra-op threads: the scan's unlearning runs and its
//! per-label trigger inversions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::Result;

/// Runs `work(&mut state, i)` for every i in `0..count` on `jobs` threads
/// (at most `count`), each with its own `state` from `init` (e.g. a model
/// copy) and a share of libtorch's threads, restored afterwards. Returns the
/// results in the order of i, or the error of the lowest i that failed; a
/// thread stops at its first error, the others go on.
pub(crate) fn share_out<S, T: Send>(
    count: usize,
    jobs: usize,
    init: impl Fn() -> Result<S> + Sync,
    work: impl Fn(&mut S, usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let jobs = jobs.clamp(1, count.max(1));
    let threads = tch::get_num_threads();
    if jobs > 1 {
        tch::set_num_threads((threads / jobs as i32).max(1));
    }
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, Result<T>)>> = Mutex::new(Vec::new());
    let push = |i: usize, result: Result<T>| done.lock().unwrap_or_else(|p| p.into_inner()).push((i, result));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                let mut state = match init() {
                    Ok(state) => state,
                    // Sorted after every item: an item's own error is reported first.
                    Err(e) => return push(count, Err(e)),
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let result = work(&mut state, i);
                    let failed = result.is_err();
                    push(i, result);
                    if failed {
                        break;
                    }
                }
            });
        }
    });
    if jobs > 1 {
        tch::set_num_threads(threads);
    }
    let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn results_come_in_order_and_the_lowest_failure_is_reported() {
        let squares = share_out(7, 3, || Ok(()), |_, i| Ok(i * i)).unwrap();
        assert_eq!(squares, vec![0, 1, 4, 9, 16, 25, 36]);
        let failed = share_out(
            7,
            2,
            || Ok(()),
            |_, i| if i % 3 == 2 { Err(Error::Invalid(format!("item {i}"))) } else { Ok(i) },
        );
        assert!(matches!(failed, Err(Error::Invalid(m)) if m == "item 2"));
        let no_state = share_out(3, 2, || Err::<(), _>(Error::Invalid("no model".into())), |_, i| Ok(i));
        assert!(matches!(no_state, Err(Error::Invalid(m)) if m == "no model"));
    }
}
