//! The pure first step of a batch's outcome: what the remote's answer means
//! for each operation and for the batch, before any policy (backoff, retry
//! budget, resolver) or worker state (conflict streaks, suspects, the
//! link's failure streak) is consulted. No I/O, no clock, no runtime, so
//! each rule is unit-tested on its own; [`Inner::plan`] applies the
//! verdicts.

use super::*;
use cpc_core::{OpOutcome, RemoteRecord};

/// What the answer means for one operation.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    /// The remote holds it (`replay`: it held it before this push), at
    /// `seq` of its change log when it said.
    Delivered {
        version: u64,
        replay: bool,
        seq: Option<u64>,
    },
    /// The remote asked for this operation to be tried again later. Never
    /// counted towards its dead letter: the remote says when, not what is
    /// wrong (a remote shedding load per operation for hours must not bury
    /// the queue).
    RetryLater { after: Option<Duration> },
    /// Refused for good (the reason bounded in length).
    Rejected { reason: String },
    /// The remote holds another version: for the resolver. A remote record
    /// over the store's payload limit is resolved all the same (in memory);
    /// only its body is left out of what is stored.
    Conflict { remote: RemoteRecord },
}

/// What the answer means for the whole batch.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum BatchVerdict {
    /// Answered per operation, one verdict per operation in batch order.
    Answered(Vec<Verdict>),
    /// The remote refused to talk (credentials, or a protocol version it
    /// does not serve): every claim goes back uncounted and sending pauses
    /// until the application resumes it.
    Paused(TransportError),
    /// Nothing in the batch is known to be applied: every operation is
    /// retried with this failure.
    Failed {
        error: TransportError,
        /// The server's delay hint (429 Retry-After), a floor.
        hint: Option<Duration>,
        /// What the retries cost from the budget.
        cause: RetryCause,
        /// Whether one operation of the batch may have caused the failure
        /// (a 5xx, a malformed answer, a panic): the batch's operations
        /// become suspects, sent in smaller batches next.
        suspect: bool,
        /// Whether the failure may count towards the operation's dead
        /// letter: only a suspect failure of a batch of one, never a
        /// gateway or availability status (`502`–`504`); it counts only if
        /// the remote is meanwhile accepting others (`Suspects::lone_failure`).
        may_count: bool,
    },
}

/// Judges a push result (outcomes already matched to `ops` by id).
pub(super) fn judge(
    ops: &[Operation],
    pushed: std::result::Result<Vec<OpOutcome>, TransportError>,
) -> BatchVerdict {
    match pushed {
        Ok(outcomes) => BatchVerdict::Answered(
            outcomes
                .into_iter()
                .map(|o| judge_one(o.outcome, o.seq))
                .collect(),
        ),
        Err(error @ (TransportError::Unauthorized | TransportError::Incompatible(_))) => {
            BatchVerdict::Paused(error)
        }
        Err(error) => {
            let hint = match &error {
                TransportError::RateLimited { retry_after } => *retry_after,
                _ => None,
            };
            let cause = match &error {
                TransportError::Timeout => RetryCause::Timeout,
                _ => RetryCause::Error,
            };
            let suspect = may_be_caused_by_an_operation(&error);
            BatchVerdict::Failed {
                may_count: may_count(&error) && ops.len() == 1,
                error,
                hint,
                cause,
                suspect,
            }
        }
    }
}

fn judge_one(outcome: PushOutcome, seq: Option<u64>) -> Verdict {
    match outcome {
        PushOutcome::Applied { version } => Verdict::Delivered {
            version,
            replay: false,
            seq,
        },
        PushOutcome::AlreadyApplied { version } => Verdict::Delivered {
            version,
            replay: true,
            seq,
        },
        PushOutcome::RetryLater { after } => Verdict::RetryLater { after },
        PushOutcome::Rejected { reason } => Verdict::Rejected {
            reason: bounded(reason),
        },
        PushOutcome::Conflict { remote } => Verdict::Conflict { remote },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpc_core::{EntityKey, HlcTimestamp, NodeId, OperationKind};

    fn ops(n: u64) -> Vec<Operation> {
        let mut rng = StdRng::seed_from_u64(7);
        (0..n)
            .map(|i| {
                Operation::builder(EntityKey::new("t", "e"), OperationKind::Update)
                    .payload(vec![1])
                    .build_at(HlcTimestamp::new(1_000 + i, 0, NodeId(1)), &mut rng)
            })
            .collect()
    }

    fn remote(len: usize) -> RemoteRecord {
        RemoteRecord {
            version: 9,
            payload: Some(vec![0; len]),
            timestamp: HlcTimestamp::new(5, 0, NodeId(2)),
            node: NodeId(2),
        }
    }

    /// Outcomes as a transport answers them (ids are not looked at here).
    fn wrap(outcomes: Vec<PushOutcome>) -> Vec<OpOutcome> {
        outcomes
            .into_iter()
            .map(|o| OpOutcome::new(cpc_core::OperationId::from_u128(1), o))
            .collect()
    }

    #[test]
    fn each_outcome_becomes_its_verdict_in_batch_order() {
        let answer = vec![
            PushOutcome::Applied { version: 3 },
            PushOutcome::AlreadyApplied { version: 4 },
            PushOutcome::RetryLater {
                after: Some(Duration::from_secs(2)),
            },
            PushOutcome::Rejected {
                reason: "no".into(),
            },
            PushOutcome::Conflict { remote: remote(8) },
        ];
        let mut answer = wrap(answer);
        answer[0].seq = Some(11);
        let verdict = judge(&ops(5), Ok(answer));
        assert_eq!(
            verdict,
            BatchVerdict::Answered(vec![
                Verdict::Delivered {
                    version: 3,
                    replay: false,
                    seq: Some(11),
                },
                Verdict::Delivered {
                    version: 4,
                    replay: true,
                    seq: None,
                },
                Verdict::RetryLater {
                    after: Some(Duration::from_secs(2))
                },
                Verdict::Rejected {
                    reason: "no".into()
                },
                Verdict::Conflict { remote: remote(8) },
            ])
        );
    }

    #[test]
    fn a_long_rejection_reason_is_bounded() {
        let answer = vec![PushOutcome::Rejected {
            reason: "x".repeat(MAX_REMOTE_TEXT * 4),
        }];
        let BatchVerdict::Answered(v) = judge(&ops(1), Ok(wrap(answer))) else {
            panic!("an answered batch");
        };
        let Verdict::Rejected { reason } = &v[0] else {
            panic!("a rejection");
        };
        assert!(reason.chars().count() < MAX_REMOTE_TEXT + 20);
        assert!(reason.ends_with("[truncated]"));
    }

    #[test]
    fn only_a_suspect_failure_of_a_batch_of_one_may_count() {
        let server = |status| TransportError::Server { status };
        let one = judge(&ops(1), Err(server(500)));
        let many = judge(&ops(3), Err(server(500)));
        let offline = judge(&ops(1), Err(TransportError::Offline));
        let unavailable = judge(&ops(1), Err(server(503)));
        assert!(matches!(
            one,
            BatchVerdict::Failed {
                suspect: true,
                may_count: true,
                ..
            }
        ));
        assert!(matches!(
            many,
            BatchVerdict::Failed {
                suspect: true,
                may_count: false,
                ..
            }
        ));
        assert!(matches!(
            offline,
            BatchVerdict::Failed {
                suspect: false,
                may_count: false,
                ..
            }
        ));
        assert!(matches!(
            unavailable,
            BatchVerdict::Failed {
                suspect: true,
                may_count: false,
                ..
            }
        ));
    }

    #[test]
    fn a_rate_limit_carries_its_hint_and_a_timeout_its_budget_cause() {
        let limited = judge(
            &ops(2),
            Err(TransportError::RateLimited {
                retry_after: Some(Duration::from_secs(30)),
            }),
        );
        assert!(matches!(
            limited,
            BatchVerdict::Failed {
                hint: Some(h),
                cause: RetryCause::Error,
                ..
            } if h == Duration::from_secs(30)
        ));
        let timeout = judge(&ops(2), Err(TransportError::Timeout));
        assert!(matches!(
            timeout,
            BatchVerdict::Failed {
                hint: None,
                cause: RetryCause::Timeout,
                ..
            }
        ));
    }

    #[test]
    fn unauthorized_and_incompatible_pause_instead_of_retrying() {
        assert_eq!(
            judge(&ops(4), Err(TransportError::Unauthorized)),
            BatchVerdict::Paused(TransportError::Unauthorized)
        );
        let v2 = TransportError::Incompatible("v2 only".into());
        assert_eq!(judge(&ops(1), Err(v2.clone())), BatchVerdict::Paused(v2));
    }
}
