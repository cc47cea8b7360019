//! Scenarios built in code carry every table they were given, and a run's
//! workloads merge in submission order.

use std::time::Duration;

use cpc_fault::{ExpectedBounds, FaultPlan, Probability, RemoteOptions, Schedule};
use cpc_sim::{Arrival, CrashPlan, OperationMix, PullPlan, Scenario};

#[test]
fn the_builder_sets_every_table_it_is_given() {
    let faults = FaultPlan {
        drop: Probability::new(0.1).unwrap(),
        ..FaultPlan::none()
    };
    let remote = RemoteOptions {
        dedupe: false,
        ..RemoteOptions::default()
    };
    let schedule = Schedule::builder()
        .offline(Duration::from_secs(1), Duration::from_secs(2))
        .build()
        .unwrap();
    let crash = CrashPlan {
        random: 2,
        ..CrashPlan::default()
    };
    let expect = ExpectedBounds {
        max_priority_inversions: 3,
        ..ExpectedBounds::default()
    };
    let pull = PullPlan {
        enabled: true,
        page: 50,
        ..PullPlan::default()
    };
    let s = Scenario::builder("built")
        .description("every table")
        .duration(Duration::from_secs(90))
        .faults(faults.clone())
        .remote(remote.clone())
        .schedule(schedule.clone())
        .crash(crash.clone())
        .expect(expect.clone())
        .pull(pull.clone())
        .build()
        .unwrap();
    assert_eq!(s.description, "every table");
    assert_eq!(s.duration, Duration::from_secs(90));
    assert_eq!(
        (&s.faults, &s.remote, &s.schedule),
        (&faults, &remote, &schedule)
    );
    assert_eq!((&s.crash, &s.expect, &s.pull), (&crash, &expect, &pull));
    // What the builder made reads back from its own TOML.
    assert_eq!(
        Scenario::from_toml_str(&s.to_toml_string().unwrap()).unwrap(),
        s
    );
    // The builder validates what it was given.
    assert!(Scenario::builder("zero")
        .duration(Duration::ZERO)
        .build()
        .is_err());
}

#[test]
fn workloads_merge_every_device_in_submission_order() {
    let ops = OperationMix {
        per_device: 20,
        arrival: Arrival::Poisson {
            rate: 2.0,
            start: Duration::ZERO,
        },
        ..OperationMix::default()
    };
    let s = Scenario::builder("merged")
        .devices(3)
        .ops(ops)
        .build()
        .unwrap();
    let all = s.workloads().unwrap();
    assert_eq!(all.len(), 60);
    assert!(all
        .windows(2)
        .all(|w| (w[0].at, w[0].device) <= (w[1].at, w[1].device)));
    for device in 0..3 {
        let own: Vec<_> = all.iter().filter(|p| p.device == device).cloned().collect();
        assert_eq!(own, s.workload(device).unwrap());
    }
}
