//! The first-run wizard's progress: steps done (again, when redone), put away, reopened.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::setup::{SETUP_STEPS, SetupEvent};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SetupCommand {
    CompleteStep { step: String, detail: String },
    Dismiss,
    Reopen,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SetupError {
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Setup {
    /// Each step done, with its note (the last one when redone).
    pub done: std::collections::BTreeMap<String, String>,
    pub dismissed: bool,
}

impl Setup {
    /// The first step not done yet, in the wizard's order.
    pub fn next(&self) -> Option<&'static str> {
        SETUP_STEPS
            .into_iter()
            .find(|s| !self.done.contains_key(*s))
    }
}

impl Aggregate for Setup {
    const TYPE: &'static str = "setup";
    type Command = SetupCommand;
    type Event = Event<SetupEvent>;
    type Error = SetupError;
    type Services = ();

    async fn handle(
        &mut self,
        command: SetupCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), SetupError> {
        let event = match command {
            SetupCommand::CompleteStep { step, detail } => {
                if !SETUP_STEPS.contains(&step.as_str()) {
                    return Err(SetupError::Invalid(format!(
                        "there is no step {step:?}; the steps are {}",
                        SETUP_STEPS.join(", ")
                    )));
                }
                if detail.len() > 200 {
                    return Err(SetupError::Invalid(
                        "a step's note is at most 200 bytes".to_owned(),
                    ));
                }
                SetupEvent::StepDone { step, detail }
            }
            SetupCommand::Dismiss => SetupEvent::Dismissed {},
            SetupCommand::Reopen => SetupEvent::Reopened {},
        };
        sink.write(Event(event), self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event<SetupEvent>) {
        match event.0 {
            SetupEvent::StepDone { step, detail } => {
                self.done.insert(step, detail);
            }
            SetupEvent::Dismissed {} => self.dismissed = true,
            SetupEvent::Reopened {} => self.dismissed = false,
        }
    }
}
