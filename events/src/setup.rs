//! The first-run wizard's progress (`setup`, one aggregate, id [`SETUP_ID`]): each step an
//! admin finished (with a short note: the node named, the domain added — never a secret), and
//! whether the wizard was put away (it can be opened again).

use serde::{Deserialize, Serialize};

use crate::DomainEvent;

pub const SETUP_ID: &str = "site";

/// The wizard's steps, in order.
pub const SETUP_STEPS: [&str; 6] = [
    "sign_in",
    "name_node",
    "add_node",
    "tokens",
    "domain",
    "first_render",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SetupEvent {
    #[serde(rename = "setup.step_done")]
    StepDone { step: String, detail: String },
    #[serde(rename = "setup.dismissed")]
    Dismissed {},
    #[serde(rename = "setup.reopened")]
    Reopened {},
}

impl DomainEvent for SetupEvent {
    const AGGREGATE_TYPE: &'static str = "setup";
    const SCHEMA_VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] =
        &["setup.step_done", "setup.dismissed", "setup.reopened"];

    fn event_type(&self) -> &'static str {
        match self {
            SetupEvent::StepDone { .. } => "setup.step_done",
            SetupEvent::Dismissed {} => "setup.dismissed",
            SetupEvent::Reopened {} => "setup.reopened",
        }
    }
}
