//! The reference client's failure when its device tasks never finish.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use cpc_sim::{run_reference, ReferenceOptions, Scenario, ScenarioError};

/// The reference client's device tasks run on the runtime that polled it
/// first. When that runtime shuts down before they finish, they are
/// cancelled, not panicked: `run_reference` answers `ScenarioError::Driver` for
/// the first device instead of a report.
#[test]
fn a_device_task_cancelled_by_its_runtimes_shutdown_is_a_driver_error() {
    let scenario = Scenario::builder("cancelled").devices(2).build().unwrap();
    let options = ReferenceOptions::default();
    let mut run = Box::pin(run_reference(&scenario, &options));
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    {
        let _in_first = first.enter();
        let mut cx = Context::from_waker(Waker::noop());
        // Spawns both device tasks, then waits on device 0's.
        assert!(matches!(run.as_mut().poll(&mut cx), Poll::Pending));
    }
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let err = second.block_on(run).unwrap_err();
    let reason = match &err {
        ScenarioError::Driver { device, reason } => {
            assert_eq!(*device, 0);
            assert!(reason.contains("cancelled"), "{reason}");
            reason.clone()
        }
        other => panic!("expected Driver, got {other:?}"),
    };
    assert_eq!(
        err.to_string(),
        format!("reference client task of device 0 failed: {reason}")
    );
}
