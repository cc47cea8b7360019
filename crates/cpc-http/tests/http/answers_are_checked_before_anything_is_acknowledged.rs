//! A 200 is "one verdict per operation", checked as a whole (§6.5): matched
//! by id, never by position; any mismatch acknowledges nothing.

use cpc_core::{PushOutcome, TransportError};
use cpc_protocol::{Applied, Hex64, OpId, OpOutcome, Outcome, Position, PushResponse};
use wiremock::{Request, ResponseTemplate};

use crate::support::PushOps as _;
use crate::support::{self, applied_answer, on_push, ops, transport};

/// Answers every push with `edit(the answer that applies everything)`.
fn answering(edit: fn(&mut PushResponse)) -> impl Fn(&Request) -> ResponseTemplate {
    move |request: &Request| {
        let push = cpc_protocol::parse_push(&request.body, &Default::default()).unwrap();
        let mut answer = applied_answer(&push);
        edit(&mut answer);
        ResponseTemplate::new(200)
            .set_body_raw(serde_json::to_vec(&answer).unwrap(), "application/json")
    }
}

fn protocol_error(result: Result<Vec<cpc_core::OpOutcome>, TransportError>) -> String {
    match result {
        Err(TransportError::Protocol(text)) => text,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_answer_in_another_order_is_matched_by_id() {
    let server = support::server().await;
    // The stand-in answers in reverse order.
    on_push(&server, answering(|_| {})).await;
    let batch = ops(3);
    let outcomes = transport(&server).push_ops(&batch).await.unwrap();
    let matched = cpc_core::match_outcomes(&batch, outcomes).unwrap();
    // `ops` sets base_version = i: each op got its own version back.
    assert_eq!(
        matched,
        vec![
            PushOutcome::Applied { version: 1 },
            PushOutcome::Applied { version: 2 },
            PushOutcome::Applied { version: 3 },
        ]
    );
}

#[tokio::test]
async fn an_answer_naming_an_unknown_id_is_a_protocol_error() {
    let server = support::server().await;
    on_push(
        &server,
        answering(|a| a.outcomes[0].op = OpId(a.outcomes[0].op.0 ^ 1)),
    )
    .await;
    let text = protocol_error(transport(&server).push_ops(&ops(2)).await);
    assert!(text.contains("not sent"), "{text}");
}

#[tokio::test]
async fn an_answer_leaving_an_operation_out_is_a_protocol_error() {
    let server = support::server().await;
    on_push(&server, answering(|a| drop(a.outcomes.pop()))).await;
    let text = protocol_error(transport(&server).push_ops(&ops(3)).await);
    assert!(text.contains("2 outcomes for 3 operations"), "{text}");
}

#[tokio::test]
async fn an_answer_naming_one_operation_twice_is_a_protocol_error() {
    let server = support::server().await;
    on_push(&server, answering(|a| a.outcomes[1].op = a.outcomes[0].op)).await;
    let text = protocol_error(transport(&server).push_ops(&ops(2)).await);
    assert!(text.contains("twice"), "{text}");
}

#[tokio::test]
async fn a_200_that_is_html_is_a_protocol_error() {
    let server = support::server().await;
    let portal = "<html><body><form>Log in to the hotel Wi-Fi</form></body></html>";
    on_push(
        &server,
        ResponseTemplate::new(200).set_body_raw(portal, "text/html"),
    )
    .await;
    let text = protocol_error(transport(&server).push_ops(&ops(1)).await);
    assert!(text.contains("not application/json"), "{text}");
}

#[tokio::test]
async fn a_200_json_that_is_not_a_push_answer_is_a_protocol_error_without_its_content() {
    let server = support::server().await;
    // The server echoes a payload where a number belongs: the error must
    // say where, not what.
    let body = r#"{"outcomes":[{"op":"01KDVH35M00000002Y98FGS6SQ","applied":{"version":"secret-payload-0","seq":1}}],"head":{"store_id":"s","seq":1,"fp":"0000000000000001"}}"#;
    on_push(
        &server,
        ResponseTemplate::new(200).set_body_raw(body, "application/json"),
    )
    .await;
    let text = protocol_error(transport(&server).push_ops(&ops(1)).await);
    assert!(text.contains("line 1"), "{text}");
    assert!(
        !text.contains("secret"),
        "the error quotes the answer: {text}"
    );
}

#[tokio::test]
async fn every_outcome_kind_reaches_the_engine() {
    let server = support::server().await;
    on_push(
        &server,
        answering(|a| {
            let ids: Vec<OpId> = a.outcomes.iter().map(|o| o.op).collect();
            a.outcomes = vec![
                OpOutcome {
                    op: ids[0],
                    outcome: Outcome::Rejected {
                        code: "payload_too_large".into(),
                        message: "over 1048576 bytes".into(),
                    },
                },
                OpOutcome {
                    op: ids[1],
                    outcome: Outcome::RetryLater {
                        after_ms: 99_999_999,
                    },
                },
                OpOutcome {
                    op: ids[2],
                    outcome: Outcome::AlreadyApplied(Applied { version: 5, seq: 2 }),
                },
            ];
            a.head = Position {
                store_id: "s".into(),
                seq: 9,
                fp: Hex64(3),
            };
        }),
    )
    .await;
    let batch = ops(3);
    let outcomes = transport(&server).push_ops(&batch).await.unwrap();
    // The stand-in answered in reverse: ids[0] is the last operation.
    let matched = cpc_core::match_outcomes(&batch, outcomes).unwrap();
    assert_eq!(matched[0], PushOutcome::AlreadyApplied { version: 5 });
    assert_eq!(
        matched[1],
        PushOutcome::RetryLater {
            after: Some(std::time::Duration::from_secs(3600))
        }
    );
    assert_eq!(
        matched[2],
        PushOutcome::Rejected {
            reason: "payload_too_large: over 1048576 bytes".into()
        }
    );
}
