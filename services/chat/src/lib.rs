//! What every chat platform shares: commands parsed from chat, the per-server rules and limits,
//! turning a command into a render job, and following that job back into the conversation.
//!
//! A platform service (Discord, Twitch) does only the talking: it receives messages, publishes
//! each as an [`Incoming`] on the WORK stream (message id as `Nats-Msg-Id`), and implements
//! [`Replier`]. The [`intake`] consumer decides (events on the `chat_command` aggregate, a render
//! job, an immediate reply); the [`follower`] watches the render jobs chat started and reports
//! their progress and result through the same [`Replier`].

pub mod command;
pub mod follower;
pub mod intake;
pub mod limits;
pub mod reply;

pub use command::{Incoming, hand_over, imagine, parse_imagine, parse_prefixed};
pub use follower::Follower;
pub use intake::{Intake, IntakeConfig};
pub use limits::{Limited, Limits};
pub use reply::{Replier, Reply, ReplyError, Stage};
