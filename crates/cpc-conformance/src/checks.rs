//! The checks, by name. One list gives both the public names
//! ([`CHECKS`]) and the dispatch, so they cannot drift apart; the list's
//! order is the run order (the restart comes last: it replaces the
//! server's connections).

mod auth;
mod basics;
mod durability;
mod limits;
mod log;
mod malformed;
mod names;
mod pull;
mod push;

use crate::harness::{Checked, Ctx};

macro_rules! checks {
    ($($name:literal => $check:path,)*) => {
        /// Every check's stable name, in run order.
        pub const CHECKS: &[&str] = &[$($name),*];

        /// Runs check `name`; `None` when there is no such check.
        pub(crate) async fn dispatch(name: &str, cx: &Ctx<'_>) -> Option<Checked> {
            Some(match name {
                $($name => $check(cx).await,)*
                _ => return None,
            })
        }
    };
}

checks! {
    "health" => basics::health,
    "info" => basics::info,
    "no-store-on-every-answer" => basics::no_store_on_every_answer,
    "problem-shape" => basics::problem_shape,
    "method-not-allowed" => basics::method_not_allowed,
    "unauthorized-missing-token" => auth::missing_token,
    "unauthorized-wrong-token" => auth::wrong_token,
    "bearer-scheme-case-insensitive" => auth::bearer_scheme_case_insensitive,
    "forbidden-client" => auth::forbidden_client,
    "unsupported-version-body" => auth::unsupported_version_body,
    "unsupported-version-path" => auth::unsupported_version_path,
    "bad-request-malformed-json" => malformed::malformed_json,
    "bad-request-wrong-type" => malformed::wrong_type,
    "bad-request-unknown-member" => malformed::unknown_member,
    "bad-request-missing-member" => malformed::missing_member,
    "bad-request-duplicate-member" => malformed::duplicate_member,
    "bad-request-bad-base64" => malformed::bad_base64,
    "bad-request-non-canonical-op-id" => malformed::non_canonical_op_id,
    "bad-request-repeated-op-id" => malformed::repeated_op_id,
    "bad-request-empty-ops" => malformed::empty_ops,
    "bad-request-array-for-object" => malformed::array_for_object,
    "bad-request-integer-form" => malformed::integer_form,
    "bad-request-u0000-in-names" => names::u0000_in_names,
    "unsupported-media-type" => limits::unsupported_media_type,
    "json-charset-accepted" => limits::json_charset_accepted,
    "too-large-body" => limits::too_large_body,
    "too-large-batch" => limits::too_large_batch,
    "payload-too-large" => limits::payload_too_large,
    "outcomes-name-every-op" => push::outcomes_name_every_op,
    "known-and-low-water-accepted" => push::known_and_low_water_accepted,
    "known-diverged" => push::known_diverged,
    "replay-already-applied" => push::replay_already_applied,
    "op-id-reused" => push::op_id_reused,
    "create-if-absent" => push::create_if_absent,
    "conflict-stale-base" => push::conflict_stale_base,
    "conflict-base-ahead" => push::conflict_base_ahead,
    "conflict-never-written" => push::conflict_never_written,
    "conflict-not-cached" => push::conflict_not_cached,
    "retry-later-behind-conflict" => push::retry_later_behind_conflict,
    "same-entity-order" => push::same_entity_order,
    "delete-tombstone" => push::delete_tombstone,
    "head-position" => log::head_position,
    "seq-in-batch-consecutive" => log::seq_in_batch_consecutive,
    "seq-concurrent-pushes" => log::seq_concurrent_pushes,
    "pull-snapshot" => pull::pull_snapshot,
    "pull-changes-after-cursor" => pull::pull_changes_after_cursor,
    "pull-long-poll-wakes" => pull::pull_long_poll_wakes,
    "pull-foreign-cursor-resets" => pull::pull_foreign_cursor_resets,
    "pull-known-diverged" => pull::pull_known_diverged,
    "pull-out-of-range" => pull::pull_out_of_range,
    "durable-after-restart" => durability::durable_after_restart,
}

#[cfg(test)]
mod tests {
    use super::CHECKS;

    #[test]
    fn names_are_unique_and_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for name in CHECKS {
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !name.starts_with('-')
                    && !name.ends_with('-')
                    && !name.contains("--"),
                "{name} is not kebab-case"
            );
        }
        assert_eq!(CHECKS.last(), Some(&"durable-after-restart"));
    }
}
