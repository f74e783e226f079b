//! Deterministic crash points for the crash-safety tests.
//!
//! With `CNET_TEST_CRASH_AT=<point>` in its environment, cnet aborts (SIGABRT,
//! as abruptly as a `kill -9`) when it reaches that named step of a command.
//! The tests crash every step of every mutating command once and prove that
//! the next command repairs what was left. Without the variable a point costs
//! one environment lookup.

/// The environment variable naming the step to crash at.
pub const ENV: &str = "CNET_TEST_CRASH_AT";

/// Every crash point, `<command>:<step>`, in the order a command reaches them.
pub const POINTS: &[&str] = &[
    "run:journaled",
    "run:netns",
    "run:veth",
    "run:ports",
    "run:started",
    "rm:journaled",
    "rm:killed",
    "rm:unpublished",
    "rm:detached",
    "port-add:journaled",
    "port-add:published",
    "port-rm:journaled",
    "port-rm:unpublished",
    "network-create:journaled",
    "network-create:bridge",
    "network-connect:journaled",
    "network-connect:attached",
    "network-disconnect:journaled",
    "network-disconnect:detached",
    "network-rm:journaled",
    "network-rm:bridge-deleted",
    "filter-add:journaled",
    "filter-add:synced",
    "filter-rm:journaled",
    "filter-rm:synced",
];

/// Aborts the process if `CNET_TEST_CRASH_AT` names `point`.
pub fn point(point: &'static str) {
    debug_assert!(POINTS.contains(&point), "unlisted crash point {point}");
    if std::env::var_os(ENV).is_some_and(|v| v == point) {
        eprintln!("cnet: crashing at {point} ({ENV})");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::POINTS;

    /// Every listed point is reached somewhere in the source, exactly once,
    /// and every point in the source is listed.
    #[test]
    fn the_list_matches_the_source() {
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        let mut found = Vec::new();
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") && !path.ends_with("crash.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for part in text.split("crash::point(\"").skip(1) {
                        found.push(part.split('"').next().unwrap().to_string());
                    }
                }
            }
        }
        for p in POINTS {
            assert_eq!(
                found.iter().filter(|f| f == p).count(),
                1,
                "crash point {p} must appear exactly once in the source"
            );
        }
        for f in &found {
            assert!(
                POINTS.contains(&f.as_str()),
                "crash point {f} is not listed"
            );
        }
    }
}
