//! The behaviour of `cpc-http` against stand-in servers on loopback (real
//! sockets: wiremock, and a raw TCP server where wiremock cannot misbehave
//! enough). Each file is named for what it proves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod answers_are_checked_before_anything_is_acknowledged;
mod answers_are_read_with_a_byte_cap;
mod config_refuses_plain_http_off_loopback;
mod every_request_carries_a_fresh_request_id;
mod failover_moves_to_another_instance_and_stays;
mod health_probe_tells_a_server_from_a_portal;
mod large_batches_are_split;
mod pull_pages_are_checked_before_anything_is_applied;
mod refusals_map_to_transport_errors;
mod the_request_is_a_valid_v1_push;
mod unauthorized_is_refreshed_once_then_reported;

mod support;
