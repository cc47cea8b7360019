//! `cargo xtask simulate`: being built (see issue 9); the harness lands here.

use crate::XtaskError;

pub fn main(_args: &[String]) -> Result<(), XtaskError> {
    Err(XtaskError::StepFailed("simulate is not built yet".into()))
}
