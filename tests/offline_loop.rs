//! Issue 30's offline loop (`lab/zoo/offline_loop.py`) on a tiny cache
//! its Python test writes, with figures worked out by hand: the loop that
//! chooses detection rules must itself be right.

use std::path::Path;
use std::process::Command;

#[test]
fn the_offline_loop_scores_a_tiny_cache_as_worked_out_by_hand() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new("python3")
        .args(["-W", "error", "-m", "unittest", "-v", "lab/zoo/test_offline_loop.py"])
        .current_dir(root)
        .output()
        .expect("python3 runs (scripts/env.sh needs it too)");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("Ran 8 tests") && log.contains("OK"), "{log}");
}
