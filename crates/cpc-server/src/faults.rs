//! Deliberately broken modes (feature `test-faults`, never in a real
//! deployment): each fault breaks one MUST of docs/protocol.md, so that a
//! conformance suite can prove it notices (`cpc-conformance`'s tests).
//! The type is the shared rules' (`cpc_remote::Faults`): the push rules
//! break theirs there, this crate its HTTP layer's, its writer's and its
//! page reads'.

pub use cpc_remote::Faults;
