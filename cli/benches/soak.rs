//! Soak run of `badexpert-guard stream` (not a timed test): 100,000 frames
//! of 320×240 RGB (through the resize path) into the demo bundle with
//! `--block`; the process's resident memory after the first tenth of the
//! frames (warm-up) and after the last frame must agree within 2 MiB.
//! `cargo bench -p badexpert-guard --bench soak` (SOAK_FRAMES to change the count).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("Linux /proc");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `--list` probes: nothing to list
    }
    let frames: usize = std::env::var("SOAK_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let warm_up = frames / 10;
    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist/bundle");
    let mut child = Command::new(env!("CARGO_BIN_EXE_badexpert-guard"))
        .args(["stream", "--bundle"])
        .arg(&bundle)
        .args(["--format", "rgb24", "--width", "320", "--height", "240", "--block", "--stats-every", "30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut frame: Vec<u8> = (0..320 * 240 * 3).map(|i| (i * 31 % 251) as u8).collect();
    let start = std::time::Instant::now();
    let mut after_warm_up = 0;
    for i in 0..frames {
        let at = i % frame.len();
        frame[at] = (i % 256) as u8; // every frame differs
        stdin.write_all(&frame).unwrap();
        if i + 1 == warm_up {
            std::thread::sleep(std::time::Duration::from_millis(200));
            after_warm_up = rss_kib(pid);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let at_end = rss_kib(pid);
    drop(stdin);
    let status = child.wait().unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let change = at_end as i64 - after_warm_up as i64;
    println!(
        "soak: {frames} frames in {seconds:.0} s ({:.0} µs per frame); RSS {after_warm_up} KiB after {warm_up} frames, {at_end} KiB at the end ({change:+} KiB)",
        1e6 * seconds / frames as f64
    );
    assert!(status.success(), "stream exited with {status}");
    assert!(change.abs() <= 2048, "resident memory moved by {change:+} KiB over the soak (limit 2 MiB)");
}
