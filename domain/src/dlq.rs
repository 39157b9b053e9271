//! The dead-letter aggregate: one per dead-lettered message, so sending it back happens once.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use events::dlq::{DeadLetterEvent, DeadLetterReplayed};
use serde::{Deserialize, Serialize};

use crate::Event;

#[derive(Debug, Clone)]
pub enum DeadLetterCommand {
    /// Record that the letter was republished where it came from.
    RecordReplay(DeadLetterReplayed),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadLetterError {
    #[error("this dead letter was already replayed (as sequence {0} of its stream)")]
    AlreadyReplayed(u64),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The sequence it was republished as, once it was.
    pub replayed_seq: Option<u64>,
}

impl Aggregate for DeadLetter {
    const TYPE: &'static str = "dead_letter";
    type Command = DeadLetterCommand;
    type Event = Event<DeadLetterEvent>;
    type Error = DeadLetterError;
    type Services = ();

    async fn handle(
        &mut self,
        command: DeadLetterCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DeadLetterError> {
        match command {
            DeadLetterCommand::RecordReplay(replayed) => {
                if let Some(seq) = self.replayed_seq {
                    return Err(DeadLetterError::AlreadyReplayed(seq));
                }
                sink.write(Event(DeadLetterEvent::Replayed(replayed)), self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Event<DeadLetterEvent>) {
        match event.0 {
            DeadLetterEvent::Replayed(replayed) => self.replayed_seq = Some(replayed.replayed_seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn replayed(seq: u64) -> DeadLetterReplayed {
        DeadLetterReplayed {
            origin: "render-gpu-1".into(),
            origin_stream: "WORK".into(),
            origin_subject: events::subjects::work("render.gpu-1"),
            origin_seq: 40,
            reason: "not JSON".into(),
            dlq_seq: 3,
            replayed_seq: seq,
        }
    }

    #[test]
    fn a_letter_is_sent_back_once() {
        TestFramework::<DeadLetter>::with(())
            .given_no_previous_events()
            .when(DeadLetterCommand::RecordReplay(replayed(41)))
            .then_expect_events(vec![Event(DeadLetterEvent::Replayed(replayed(41)))]);
        TestFramework::<DeadLetter>::with(())
            .given(vec![Event(DeadLetterEvent::Replayed(replayed(41)))])
            .when(DeadLetterCommand::RecordReplay(replayed(42)))
            .then_expect_error(DeadLetterError::AlreadyReplayed(41));
    }
}
