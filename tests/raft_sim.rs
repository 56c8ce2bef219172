//! The deterministic simulation of the ledger on Raft (`consensus::sim`): thousands of
//! seeded runs of 3- and 5-node groups under message delay, loss, duplication and
//! reordering, partitions (symmetric, asymmetric, flapping), crashes with restart from disk,
//! and frozen nodes; each run ends healed and is checked (see `consensus::sim::checker`).
//!
//! A failing seed prints itself; replay it exactly with
//! `SIM_SEED=<seed> cargo test --release --test raft_sim replay_one_seed -- --ignored --nocapture`
//! (with `SIM_DEBUG=1`, it prints the elections, faults and membership changes as they happen).
//! One seed in three also adds a spare node as a learner, promotes it and removes a voter.
//! More seeds: `SIM_SEEDS=100000 cargo test --release --test raft_sim many_seeds -- --ignored`.

use converge_ledger::consensus::sim::{run, PlantedBug, SimConfig, SimReport};

/// Seeds per default-suite test; two tests share the two cores.
const DEFAULT_SEEDS: u64 = 1000;

fn seeds() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEEDS)
}

fn assert_clean(r: &SimReport) {
    assert!(
        r.violations.is_empty(),
        "seed {} broke the ledger's promises ({} acks, {} attempts, {} elections):\n{}\n\
         replay: SIM_SEED={} cargo test --release --test raft_sim replay_one_seed -- --ignored --nocapture",
        r.seed,
        r.acked,
        r.attempts,
        r.elections,
        r.violations
            .iter()
            .take(10)
            .map(|v| format!("  {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
        r.seed
    );
}

fn run_range(first: u64, count: u64) -> (usize, usize) {
    let (mut acked, mut elections) = (0, 0);
    for seed in first..first + count {
        let r = std::panic::catch_unwind(|| run(SimConfig::for_seed(seed))).unwrap_or_else(|_| {
            panic!(
                "seed {seed} panicked; replay: SIM_SEED={seed} cargo test --release --test raft_sim replay_one_seed -- --ignored --nocapture"
            )
        });
        assert_clean(&r);
        acked += r.acked;
        elections += r.elections;
    }
    (acked, elections)
}

#[test]
fn seeds_0_to_999_keep_every_promise() {
    let n = seeds();
    let (acked, elections) = run_range(0, n);
    eprintln!("{n} seeds: {acked} acknowledged appends, {elections} elections");
    assert!(
        acked as u64 > n * 10,
        "the runs made too little progress to test anything"
    );
}

#[test]
fn seeds_1000000_to_1000999_keep_every_promise() {
    let n = seeds();
    let (acked, elections) = run_range(1_000_000, n);
    eprintln!("{n} seeds: {acked} acknowledged appends, {elections} elections");
    assert!(
        acked as u64 > n * 10,
        "the runs made too little progress to test anything"
    );
}

/// The same runs with the server's durable Raft log (`RaftLogStore`, on in-memory redb,
/// reopened at every restart) as every member's disk.
#[test]
fn seeds_2000000_to_2000099_keep_every_promise_on_the_redb_raft_log() {
    let n = (seeds() / 10).max(1);
    for seed in 2_000_000..2_000_000 + n {
        let r = run(SimConfig {
            redb_log: true,
            ..SimConfig::for_seed(seed)
        });
        assert_clean(&r);
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [7, 12_345] {
        let a = run(SimConfig::for_seed(seed));
        let b = run(SimConfig::for_seed(seed));
        assert_eq!((a.trace, a.acked, a.events), (b.trace, b.acked, b.events));
    }
    let a = run(SimConfig::for_seed(1));
    let b = run(SimConfig::for_seed(2));
    assert_ne!(a.trace, b.trace, "different seeds must give different runs");
}

#[test]
fn without_faults_a_group_acknowledges_steadily_and_converges() {
    for nodes in [3, 5] {
        let r = run(SimConfig {
            nodes,
            faults: false,
            ..SimConfig::for_seed(99)
        });
        assert_clean(&r);
        assert!(r.acked > 200, "{nodes} nodes acked only {}", r.acked);
        assert!(r.elections >= 1);
    }
}

#[test]
fn the_checker_catches_a_leader_that_acknowledges_before_commit() {
    let caught = (0..300).find_map(|seed| {
        let r = run(SimConfig {
            bug: Some(PlantedBug::AckBeforeCommit),
            ..SimConfig::for_seed(seed)
        });
        (!r.violations.is_empty()).then_some(r)
    });
    let r = caught.expect("300 seeds with acks before commit and no violation found");
    eprintln!("seed {} caught: {}", r.seed, r.violations[0]);
}

#[test]
#[ignore = "replays one seed: SIM_SEED=<seed>"]
fn replay_one_seed() {
    let seed: u64 = std::env::var("SIM_SEED")
        .expect("set SIM_SEED to the seed to replay")
        .parse()
        .expect("SIM_SEED is a u64");
    let r = run(SimConfig::for_seed(seed));
    eprintln!("{r:#?}");
    assert_clean(&r);
}

#[test]
#[ignore = "long: SIM_SEEDS=<count> seeds from SIM_FIRST (default 0)"]
fn many_seeds() {
    let first = std::env::var("SIM_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let started = std::time::Instant::now();
    let (acked, elections) = run_range(first, seeds());
    eprintln!(
        "{} seeds in {:?}: {acked} acks, {elections} elections",
        seeds(),
        started.elapsed()
    );
}
