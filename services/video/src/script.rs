//! A script written by the local LLM from a topic: one chat request to Ollama (`/api/chat`,
//! `stream: false`), the persona's description and the video's length and shape in the prompt,
//! paragraphs asked for (a paragraph a scene).

use std::time::Duration;

use events::video::ProjectRequested;
use serde_json::{Value, json};

/// How long the model may take to write.
const WRITE_WITHIN: Duration = Duration::from_secs(300);

/// The system and user messages for `requested`'s script.
pub(crate) fn messages(requested: &ProjectRequested) -> Vec<Value> {
    let topic = requested.topic.as_deref().unwrap_or_default();
    let scenes = (requested.target_secs / 6).clamp(1, 12);
    let mut ask = format!(
        "Write the narration of a {}-second {} video about: {topic}\n\
         Write {scenes} short paragraphs, one per scene, separated by a blank line: plain spoken \
         sentences only, no titles, no scene numbers, no stage directions.",
        requested.target_secs,
        requested.format.as_str()
    );
    if let Some(persona) = requested
        .persona
        .as_ref()
        .filter(|p| !p.description.trim().is_empty())
    {
        ask.push_str(&format!(
            "\nThe narrator is {}: {}",
            persona.name,
            persona.description.trim()
        ));
    }
    vec![
        json!({"role": "system", "content": "You write short narration scripts for videos."}),
        json!({"role": "user", "content": ask}),
    ]
}

/// The script `model` at `url` writes for `requested`, or why there is none.
pub(crate) async fn write(
    url: &str,
    model: &str,
    requested: &ProjectRequested,
) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(WRITE_WITHIN)
        .build()
        .map_err(|err| err.to_string())?;
    let body = json!({
        "model": model,
        "messages": messages(requested),
        "stream": false,
        "options": { "temperature": 0.7 },
    });
    let endpoint = format!("{}/api/chat", url.trim_end_matches('/'));
    let response = client
        .post(&endpoint)
        .json(&body)
        .send()
        .await
        .map_err(|err| format!("Ollama at {url} could not be reached: {err}"))?;
    let status = response.status();
    let answer: Value = response
        .json()
        .await
        .map_err(|err| format!("Ollama at {url} answered {status} with no JSON: {err}"))?;
    if !status.is_success() {
        let error = answer["error"].as_str().unwrap_or("no reason given");
        return Err(format!(
            "Ollama at {url} refused ({status}): {error} (ollama pull {model}?)"
        ));
    }
    let script = answer["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if !script.chars().any(char::is_alphanumeric) {
        return Err(format!("{model} wrote nothing"));
    }
    if script.len() > events::video::SCRIPT_MAX_BYTES {
        return Err(format!(
            "{model} wrote {} bytes; a script is at most {}",
            script.len(),
            events::video::SCRIPT_MAX_BYTES
        ));
    }
    Ok(script)
}
