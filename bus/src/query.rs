//! Questions answered at once (request/reply, JSON both ways): what is not worth a stream.
//! The control plane asks one node (the last lines of a container's log) on
//! `nebula.query.<node>.<kind>`, which only the control plane may publish to and only that
//! node's agent may read; a node asks the control plane (the secrets a container command needs)
//! on `nebula.ask.<node>.<kind>`, where only that node may publish, so the answerer knows who
//! asks. Answers go to the asker's own reply inbox only.

use std::future::Future;
use std::time::Duration;

use futures::Stream;

use async_nats::RequestErrorKind;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{Bus, BusError, BusErrorKind};

/// Questions one node answers at once.
const CONCURRENCY: usize = 4;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer<R> {
    Ok(R),
    /// The node could not answer (its own words).
    Error(String),
}

impl Bus {
    /// Asks node `node` a question of `kind` and waits `within` for its answer. The node's own
    /// refusal comes back as [`BusErrorKind::Refused`] with its words; no agent listening is
    /// [`BusErrorKind::NotFound`]; silence is [`BusErrorKind::Timeout`].
    pub async fn ask<Q: Serialize, R: DeserializeOwned>(
        &self,
        node: &str,
        kind: &str,
        question: &Q,
        within: Duration,
    ) -> Result<R, BusError> {
        let subject = events::subjects::node_query(node, kind);
        let who = format!("node {node}");
        let missing = format!("no agent on node {node} answers (is it running?)");
        self.request(subject, &who, &missing, question, within)
            .await
    }

    /// Asks the control plane a question of `kind` as node `node` (the only node this
    /// connection may ask as) and waits `within` for its answer, with [`Bus::ask`]'s errors.
    pub async fn ask_control<Q: Serialize, R: DeserializeOwned>(
        &self,
        node: &str,
        kind: &str,
        question: &Q,
        within: Duration,
    ) -> Result<R, BusError> {
        let subject = events::subjects::node_ask(node, kind);
        let missing = format!(
            "the control plane does not answer {kind} questions (is its dispatcher running?)"
        );
        self.request(subject, "the control plane", &missing, question, within)
            .await
    }

    async fn request<Q: Serialize, R: DeserializeOwned>(
        &self,
        subject: String,
        who: &str,
        missing: &str,
        question: &Q,
        within: Duration,
    ) -> Result<R, BusError> {
        let payload = serde_json::to_vec(question)
            .map_err(|err| BusError::msg(BusErrorKind::Decode, err.to_string()))?;
        let asked =
            tokio::time::timeout(within, self.client.request(subject, payload.into())).await;
        let message = match asked {
            Err(_) => {
                return Err(BusError::msg(
                    BusErrorKind::Timeout,
                    format!("{who} did not answer within {} s", within.as_secs()),
                ));
            }
            Ok(Err(err)) if err.kind() == RequestErrorKind::NoResponders => {
                return Err(BusError::msg(BusErrorKind::NotFound, missing.to_owned()));
            }
            Ok(Err(err)) => return Err(BusError::with_source(BusErrorKind::Connect, err)),
            Ok(Ok(message)) => message,
        };
        match serde_json::from_slice::<Answer<R>>(&message.payload) {
            Ok(Answer::Ok(answer)) => Ok(answer),
            Ok(Answer::Error(why)) => Err(BusError::msg(BusErrorKind::Refused, why)),
            Err(err) => Err(BusError::msg(
                BusErrorKind::Decode,
                format!("unreadable answer from {who}: {err}"),
            )),
        }
    }

    /// Answers this node's questions of `kind` with `handler` until `cancel` fires. A question
    /// that does not read, and a handler's error, are answered as errors.
    pub async fn answer<Q, R, F, Fut>(
        &self,
        node: &str,
        kind: &str,
        cancel: CancellationToken,
        handler: F,
    ) -> Result<(), BusError>
    where
        Q: DeserializeOwned,
        R: Serialize,
        F: Fn(Q) -> Fut,
        Fut: Future<Output = Result<R, String>>,
    {
        let subject = events::subjects::node_query(node, kind);
        self.serve(subject, kind, cancel, |_, question| handler(question))
            .await
    }

    /// Answers every node's questions of `kind` to the control plane with `handler`, which
    /// is told the asking node, until `cancel` fires.
    pub async fn answer_nodes<Q, R, F, Fut>(
        &self,
        kind: &str,
        cancel: CancellationToken,
        handler: F,
    ) -> Result<(), BusError>
    where
        Q: DeserializeOwned,
        R: Serialize,
        F: Fn(String, Q) -> Fut,
        Fut: Future<Output = Result<R, String>>,
    {
        let subject = events::subjects::node_asks_of_kind(kind);
        self.serve(subject, kind, cancel, handler).await
    }

    async fn serve<Q, R, F, Fut>(
        &self,
        subject: String,
        kind: &str,
        cancel: CancellationToken,
        handler: F,
    ) -> Result<(), BusError>
    where
        Q: DeserializeOwned,
        R: Serialize,
        F: Fn(String, Q) -> Fut,
        Fut: Future<Output = Result<R, String>>,
    {
        let subscription = self
            .client
            .subscribe(subject)
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Connect, err))?;
        let handler = &handler;
        subscription
            .take_until(cancel.cancelled())
            .for_each_concurrent(CONCURRENCY, |message| async move {
                let Some(reply) = message.reply.clone() else {
                    return; // not a question: nobody to answer
                };
                let asker = events::subjects::asking_node(&message.subject)
                    .unwrap_or_default()
                    .to_owned();
                let answer = match serde_json::from_slice::<Q>(&message.payload) {
                    Ok(question) => match handler(asker, question).await {
                        Ok(answer) => Answer::Ok(answer),
                        Err(why) => Answer::Error(why),
                    },
                    Err(err) => Answer::Error(format!("the question does not read: {err}")),
                };
                let payload = serde_json::to_vec(&answer).unwrap_or_default();
                if let Err(err) = self.client.publish(reply, payload.into()).await {
                    tracing::warn!(kind, error = %err, "an answer was not sent");
                }
            })
            .await;
        Ok(())
    }

    /// Sends one followed-log message to `nebula.logs.<node>.<follow_id>` (core NATS: a
    /// message nobody listens for is gone, which is what a log tail wants).
    pub async fn send_log<T: Serialize>(
        &self,
        node: &str,
        follow_id: &str,
        message: &T,
    ) -> Result<(), BusError> {
        let payload = serde_json::to_vec(message)
            .map_err(|err| BusError::msg(BusErrorKind::Decode, err.to_string()))?;
        self.client
            .publish(
                events::subjects::log_follow(node, follow_id),
                payload.into(),
            )
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Connect, err))
    }

    /// The messages sent to `nebula.logs.<node>.<follow_id>`, decoded (ones that do not read are
    /// skipped), from now on.
    pub async fn follow_log<T: DeserializeOwned + Send + 'static>(
        &self,
        node: &str,
        follow_id: &str,
    ) -> Result<impl Stream<Item = T> + Send + use<T>, BusError> {
        let subscription = self
            .client
            .subscribe(events::subjects::log_follow(node, follow_id))
            .await
            .map_err(|err| BusError::with_source(BusErrorKind::Connect, err))?;
        Ok(subscription
            .filter_map(|message| async move { serde_json::from_slice(&message.payload).ok() }))
    }
}
