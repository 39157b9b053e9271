//! Chat text into commands, and `imagine` arguments into render parameters.

use std::collections::BTreeMap;
use std::time::Duration;

use bus::Bus;
use common::Backoff;
use events::chat::{COMMANDS, CommandReceived, Platform, command_id};
use events::render::RenderParams;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// A chat command as a platform service received it, on its way to the intake (over the WORK
/// stream, so a crash between receiving and deciding loses nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    #[serde(flatten)]
    pub command: CommandReceived,
    /// Platform data the reply needs but the event log should not keep (a Discord interaction
    /// token, valid 15 minutes), held in Redis by the intake for that long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_token: Option<String>,
}

impl Incoming {
    /// The WORK subject a platform's incoming commands travel on.
    pub fn subject(platform: Platform) -> String {
        events::subjects::chat_work(platform.as_str())
    }
}

/// Publishes a command for the intake (the platform's message id as `Nats-Msg-Id`); keeps trying
/// while NATS is away (chat cannot be asked for a message again), for up to a minute. Returns
/// whether it was handed over; a command that was not is counted in `nebula_chat_dropped_total`.
pub async fn hand_over(bus: &Bus, incoming: &Incoming, cancel: &CancellationToken) -> bool {
    let platform = incoming.command.platform;
    let id = command_id(platform, &incoming.command.message_id);
    let payload = match serde_json::to_vec(incoming) {
        Ok(payload) => bytes::Bytes::from(payload),
        Err(err) => {
            tracing::error!(error = %err, "chat command not encodable");
            return false;
        }
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let published = bus
            .publish_raw(
                Incoming::subject(platform),
                &id,
                Vec::new(),
                payload.clone(),
            )
            .await;
        match published {
            Ok(_) => return true,
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%id, error = %err, "chat command not yet handed over; retrying");
            }
            Err(err) => {
                bus.metrics().add(
                    "nebula_chat_dropped_total",
                    &[("platform", platform.as_str())],
                    1.0,
                );
                tracing::error!(%id, error = %err, "chat command dropped: the bus stayed away");
                return false;
            }
        }
        if !backoff.wait(cancel).await {
            return false;
        }
    }
}

/// `"!imagine a red fox"` with prefix `"!"` → `("imagine", "a red fox")`; `None` for anything
/// that is not one of [`COMMANDS`].
pub fn parse_prefixed(text: &str, prefix: &str) -> Option<(String, String)> {
    let rest = text.trim().strip_prefix(prefix)?;
    let (word, args) = match rest.split_once(char::is_whitespace) {
        Some((word, args)) => (word, args.trim()),
        None => (rest, ""),
    };
    let word = word.to_ascii_lowercase();
    COMMANDS
        .contains(&word.as_str())
        .then(|| (word, args.to_owned()))
}

/// `imagine` arguments: the prompt, then optional flags `--seed N`, `--steps N`, `--size WxH`,
/// `--cfg X` and `--no <negative prompt…>` (the rest of the text). Without `--seed` the image
/// gets `seed` (the intake derives one from the message, so each command draws a new image and
/// a retry of the same command the same one).
pub fn parse_imagine(args: &str, seed: u64) -> Result<RenderParams, String> {
    let mut options = BTreeMap::new();
    let mut prompt = Vec::new();
    let mut words = args.split_whitespace();
    while let Some(word) = words.next() {
        match word {
            "--no" => {
                options.insert(
                    "negative".to_owned(),
                    words.by_ref().collect::<Vec<_>>().join(" "),
                );
            }
            "--seed" | "--steps" | "--cfg" | "--size" => {
                let value = words
                    .next()
                    .ok_or_else(|| format!("{word} needs a value"))?;
                options.insert(word[2..].to_owned(), value.to_owned());
            }
            flag if flag.starts_with("--") => {
                return Err(format!(
                    "unknown option {flag}: use --seed, --steps, --size, --cfg or --no"
                ));
            }
            word => prompt.push(word),
        }
    }
    options.insert("prompt".to_owned(), prompt.join(" "));
    imagine(&options, seed)
}

/// `imagine` from named options (`prompt`, `negative`, `seed`, `steps`, `size`, `cfg`), each
/// taken as it is: a slash command's, or what [`parse_imagine`] read from typed text.
pub fn imagine(options: &BTreeMap<String, String>, seed: u64) -> Result<RenderParams, String> {
    let mut params = RenderParams {
        seed,
        ..RenderParams::default()
    };
    for (name, raw) in options {
        let raw = raw.trim();
        match name.as_str() {
            "prompt" => params.prompt = raw.to_owned(),
            "negative" => params.negative_prompt = raw.to_owned(),
            "seed" => {
                params.seed = raw
                    .parse()
                    .map_err(|_| format!("--seed must be a whole number, got {raw:?}"))?;
            }
            "steps" => {
                params.steps = raw
                    .parse()
                    .map_err(|_| format!("--steps must be a whole number, got {raw:?}"))?;
            }
            "cfg" => {
                params.cfg = raw
                    .parse()
                    .map_err(|_| format!("--cfg must be a number, got {raw:?}"))?;
            }
            "size" => {
                let (w, h) = raw
                    .split_once(['x', 'X'])
                    .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)))
                    .ok_or_else(|| format!("--size must look like 768x512, got {raw:?}"))?;
                params.width = w;
                params.height = h;
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if params.prompt.is_empty() {
        return Err("say what to imagine, e.g. `imagine a lighthouse at dusk`".into());
    }
    if params.prompt.chars().count() > 1000 {
        return Err("the prompt is too long (1000 characters at most)".into());
    }
    params.validate(events::render::RenderMode::Txt2img)?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_commands() {
        assert_eq!(
            parse_prefixed("  !Imagine a red fox ", "!"),
            Some(("imagine".into(), "a red fox".into()))
        );
        assert_eq!(
            parse_prefixed("!status", "!"),
            Some(("status".into(), String::new()))
        );
        assert_eq!(parse_prefixed("!dance", "!"), None);
        assert_eq!(parse_prefixed("imagine this", "!"), None);
    }

    #[test]
    fn imagine_arguments() {
        let params = parse_imagine(
            "a red fox --seed 42 --size 768x512 --steps 8 --no blurry, dark",
            9,
        )
        .unwrap();
        assert_eq!(params.prompt, "a red fox");
        assert_eq!(params.seed, 42);
        assert_eq!((params.width, params.height), (768, 512));
        assert_eq!(params.steps, 8);
        assert_eq!(params.negative_prompt, "blurry, dark");
        assert_eq!(parse_imagine("a red fox", 9).unwrap().seed, 9);
        // Named options are taken whole: a prompt may say `--no`.
        let options: BTreeMap<String, String> = [
            ("prompt", "a cat --no dog"),
            ("seed", "7"),
            ("size", "768 x 512"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let params = imagine(&options, 9).unwrap();
        assert_eq!(params.prompt, "a cat --no dog");
        assert_eq!((params.seed, params.width, params.height), (7, 768, 512));
        assert!(params.negative_prompt.is_empty());
        assert!(
            parse_imagine("", 9)
                .unwrap_err()
                .contains("what to imagine")
        );
        assert!(
            parse_imagine("fox --seed x", 9)
                .unwrap_err()
                .contains("--seed")
        );
        assert!(
            parse_imagine("fox --size 10x10", 9)
                .unwrap_err()
                .contains("width")
        );
        assert!(
            parse_imagine("fox --wat 1", 9)
                .unwrap_err()
                .contains("unknown option")
        );
    }
}
