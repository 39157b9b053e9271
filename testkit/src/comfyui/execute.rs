//! Execution: the prompt worker (one prompt at a time, FIFO), `PromptExecutor.execute_async`
//! with its websocket frames, history entry and error handling, and `ExecutionList`, which picks
//! the node that runs next.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::cache::{self, CacheEntry};
use super::graph::{Graph, GraphNode, link};
use super::nodes::{self, Artifact, Evaluation, NodeFailure, node_error};
use super::python::py_repr;
use super::{QueueItem, ServerState, Shared};

/// ComfyUI's `MAXIMUM_HISTORY_SIZE`.
const MAXIMUM_HISTORY_SIZE: usize = 10_000;

/// Runs the queued prompts, one at a time, until the server is killed.
pub(super) async fn prompt_worker(shared: Arc<Shared>) {
    loop {
        let item = loop {
            let next = {
                let mut state = shared.state();
                if state.pending.is_empty() {
                    None
                } else {
                    let item = state.pending.remove(0);
                    state.running = Some(item.clone());
                    state.queue_updated();
                    Some(item)
                }
            };
            if let Some(item) = next {
                break item;
            }
            tokio::select! {
                () = shared.queued.notified() => {}
                () = shared.cancel.cancelled() => return,
            }
        };
        let Some(finished) = Execution::run(&shared, &item).await else {
            return;
        };
        let mut state = shared.state();
        state.running = None;
        state.last_node_id = None;
        state.history.retain(|(id, _)| *id != item.prompt_id);
        state
            .history
            .push((item.prompt_id.clone(), finished.history));
        let excess = state.history.len().saturating_sub(MAXIMUM_HISTORY_SIZE);
        state.history.drain(..excess);
        if finished.success {
            state.completed += 1;
        }
        state.queue_updated();
        if let Some(client) = item.client_id() {
            let data = json!({ "node": null, "prompt_id": item.prompt_id });
            state.send("executing", data, Some(&client));
        }
    }
}

struct Finished {
    success: bool,
    history: Value,
}

/// One node's entry in `progress_state`.
struct NodeProgress {
    value: Value,
    max: Value,
    state: &'static str,
}

struct Execution<'a> {
    shared: &'a Arc<Shared>,
    item: &'a QueueItem,
    client: Option<String>,
    /// `status_messages`, for the history.
    messages: Vec<Value>,
    /// Nodes that started (or finished from the cache), in order.
    progress: Vec<(String, NodeProgress)>,
    values: HashMap<String, Vec<Artifact>>,
    signatures: HashMap<String, String>,
    executed: Vec<String>,
    ui_outputs: Vec<(String, Value)>,
}

impl<'a> Execution<'a> {
    /// Runs `item` to its end; `None` when the server was killed on the way.
    async fn run(shared: &'a Arc<Shared>, item: &'a QueueItem) -> Option<Finished> {
        let mut run = Execution {
            shared,
            item,
            client: item.client_id(),
            messages: Vec::new(),
            progress: Vec::new(),
            values: HashMap::new(),
            signatures: HashMap::new(),
            executed: Vec::new(),
            ui_outputs: Vec::new(),
        };
        let prompt_id = item.prompt_id.clone();
        let graph = &item.graph;
        let outputs_of = |id: &str| -> bool {
            graph
                .node(id)
                .and_then(|node| shared.definitions.get(node.class()))
                .is_some_and(|definition| definition["output_node"] == true)
        };

        let mut execution_list = {
            let mut state = shared.state();
            state.interrupt_requested = false;
            state.current_client = run.client.clone();
            run.add_message(
                &state,
                "execution_start",
                json!({ "prompt_id": prompt_id }),
                false,
            );

            // The classic cache: keep what this prompt can use, then look up each node.
            let lookup = cache::prepare(&mut state, graph);
            let mut cached = Vec::new();
            for (node_id, outputs) in lookup.cached {
                run.values.insert(node_id.clone(), outputs);
                cached.push(node_id);
            }
            run.signatures = lookup.signatures;
            let data = json!({ "nodes": cached, "prompt_id": prompt_id });
            run.add_message(&state, "execution_cached", data, false);

            let cached: HashSet<String> = cached.into_iter().collect();
            let mut list = ExecutionList::new(graph, cached);
            for output in &item.outputs {
                list.add_node(output);
            }
            list
        };

        let mut success = false;
        loop {
            if execution_list.pending.is_empty() {
                success = true;
                let state = shared.state();
                run.add_message(
                    &state,
                    "execution_success",
                    json!({ "prompt_id": prompt_id }),
                    false,
                );
                break;
            }
            let node_id = match execution_list.stage(&outputs_of) {
                Ok(node_id) => node_id,
                Err(blamed) => {
                    let failure = NodeFailure::Error {
                        exception_type: "graph.DependencyCycleError".to_owned(),
                        exception_message: "Dependency cycle detected".to_owned(),
                        traceback: Vec::new(),
                    };
                    run.handle_error(&blamed, failure);
                    break;
                }
            };
            match run.execute(&node_id).await {
                Ok(()) => execution_list.complete(&node_id),
                Err(NodeFailure::Killed) => return None,
                Err(failure) => {
                    run.handle_error(&node_id, failure);
                    break;
                }
            }
        }

        let mut outputs = Map::new();
        let mut meta = Map::new();
        for (node_id, ui) in &run.ui_outputs {
            outputs.insert(node_id.clone(), ui.clone());
            meta.insert(
                node_id.clone(),
                json!({
                    "node_id": node_id,
                    "display_node": node_id,
                    "parent_node": null,
                    "real_node_id": node_id,
                }),
            );
        }
        let history = json!({
            "prompt": item.tuple(),
            "outputs": outputs,
            "status": {
                "status_str": if success { "success" } else { "error" },
                "completed": success,
                "messages": run.messages,
            },
            "meta": meta,
        });
        Some(Finished { success, history })
    }

    /// `PromptExecutor.add_message`: recorded for the history, sent to the client (or to
    /// everyone when `broadcast`) when there is one.
    fn add_message(&mut self, state: &ServerState, event: &str, mut data: Value, broadcast: bool) {
        data["timestamp"] = json!(now_ms());
        self.messages.push(json!([event, data]));
        if self.client.is_some() || broadcast {
            state.send(event, data, self.client.as_deref());
        }
    }

    /// Sets `node`'s progress and sends `progress_state` (to the client; to everyone without one).
    fn set_progress(&mut self, state: &ServerState, node: &str, progress: NodeProgress) {
        match self.progress.iter_mut().find(|(id, _)| id == node) {
            Some(entry) => entry.1 = progress,
            None => self.progress.push((node.to_owned(), progress)),
        }
        let prompt_id = &self.item.prompt_id;
        let nodes: Map<String, Value> = self
            .progress
            .iter()
            .map(|(id, progress)| {
                let entry = json!({
                    "value": progress.value,
                    "max": progress.max,
                    "state": progress.state,
                    "node_id": id,
                    "prompt_id": prompt_id,
                    "display_node_id": id,
                    "parent_node_id": null,
                    "real_node_id": id,
                });
                (id.clone(), entry)
            })
            .collect();
        let data = json!({ "prompt_id": prompt_id, "nodes": nodes });
        state.send("progress_state", data, self.client.as_deref());
    }

    fn finish_progress(&mut self, state: &ServerState, node: &str) {
        let max = self
            .progress
            .iter()
            .find(|(id, _)| id == node)
            .map_or(json!(1), |(_, progress)| progress.max.clone());
        let progress = NodeProgress {
            value: max.clone(),
            max,
            state: "finished",
        };
        self.set_progress(state, node, progress);
    }

    /// `execution.execute` for one node.
    async fn execute(&mut self, node_id: &str) -> Result<(), NodeFailure> {
        let shared = self.shared;
        let graph = &self.item.graph;
        let node = graph
            .node(node_id)
            .ok_or_else(|| node_error("KeyError", py_repr(&json!(node_id)), &[]))?;
        let signature = self.signatures.get(node_id).cloned().unwrap_or_default();

        // Cached (an output node whose inputs did not change, or a twin of a node that ran).
        let cached = shared.state().cache.get(&signature).cloned();
        if let Some(entry) = cached {
            let state = shared.state();
            if let Some(client) = &self.client {
                let data = json!({
                    "node": node_id,
                    "display_node": node_id,
                    "output": entry.ui.clone().unwrap_or(Value::Null),
                    "prompt_id": self.item.prompt_id,
                });
                state.send("executed", data, Some(client));
            }
            if let Some(ui) = entry.ui {
                self.ui_outputs.push((node_id.to_owned(), ui));
            }
            self.finish_progress(&state, node_id);
            self.values.insert(node_id.to_owned(), entry.outputs);
            return Ok(());
        }

        {
            let mut state = shared.state();
            let running = NodeProgress {
                value: json!(0.0),
                max: json!(1.0),
                state: "running",
            };
            self.set_progress(&state, node_id, running);
            if let Some(client) = &self.client {
                state.last_node_id = Some(node_id.to_owned());
                let data = json!({
                    "node": node_id,
                    "display_node": node_id,
                    "prompt_id": self.item.prompt_id,
                });
                state.send("executing", data, Some(client));
            }
        }

        let (outputs, ui) = self.evaluate(node).await?;

        let mut state = shared.state();
        if let Some(ui) = &ui {
            self.ui_outputs.push((node_id.to_owned(), ui.clone()));
            if let Some(client) = &self.client {
                let data = json!({
                    "node": node_id,
                    "display_node": node_id,
                    "output": ui,
                    "prompt_id": self.item.prompt_id,
                });
                state.send("executed", data, Some(client));
            }
        }
        self.finish_progress(&state, node_id);
        self.executed.push(node_id.to_owned());
        state.cache.insert(
            signature,
            CacheEntry {
                outputs: outputs.clone(),
                ui,
            },
        );
        self.values.insert(node_id.to_owned(), outputs);
        Ok(())
    }

    /// `PromptExecutor.handle_execution_error`.
    fn handle_error(&mut self, node_id: &str, failure: NodeFailure) {
        let state = self.shared.state();
        let node = self.item.graph.node(node_id);
        let node_type = node.map(|node| node.class().to_owned()).unwrap_or_default();
        match failure {
            NodeFailure::Interrupted | NodeFailure::Killed => {
                let data = json!({
                    "prompt_id": self.item.prompt_id,
                    "node_id": node_id,
                    "node_type": node_type,
                    "executed": self.executed,
                });
                self.add_message(&state, "execution_interrupted", data, true);
            }
            NodeFailure::Error {
                exception_type,
                exception_message,
                traceback,
            } => {
                let mut current_inputs = Map::new();
                for (name, value) in node
                    .and_then(|node| node.inputs.as_ref())
                    .into_iter()
                    .flatten()
                {
                    let shown = match link(value) {
                        Some((from, slot)) => json!(format!("<output {slot} of node {from}>")),
                        None => value.clone(),
                    };
                    current_inputs.insert(name.clone(), json!([shown]));
                }
                let current_outputs: Vec<&String> =
                    self.item.graph.nodes.iter().map(|node| &node.id).collect();
                let data = json!({
                    "prompt_id": self.item.prompt_id,
                    "node_id": node_id,
                    "node_type": node_type,
                    "executed": self.executed,
                    "exception_message": exception_message,
                    "exception_type": exception_type,
                    "traceback": traceback,
                    "current_inputs": current_inputs,
                    "current_outputs": current_outputs,
                });
                self.add_message(&state, "execution_error", data, false);
            }
        }
    }

    /// What the node computes ([`nodes::evaluate`]), its progress reported on the way, and
    /// the images it saves.
    async fn evaluate(
        &mut self,
        node: &GraphNode,
    ) -> Result<(Vec<Artifact>, Option<Value>), NodeFailure> {
        match nodes::evaluate(self.shared, node, &self.values)? {
            Evaluation::Outputs { steps, outputs } => {
                for step in 1..=steps {
                    self.step(&node.id, step, steps).await?;
                }
                Ok((outputs, None))
            }
            Evaluation::Save(images) => {
                let ui = nodes::save_images(self.shared, self.item, node, images).await?;
                Ok((Vec::new(), Some(ui)))
            }
        }
    }

    /// One sampler step (or upscaler tile): its time, then `progress_state` and `progress`, then
    /// a stop while held.
    async fn step(&mut self, node_id: &str, value: u32, max: u32) -> Result<(), NodeFailure> {
        let shared = self.shared;
        let mut control = shared.control.subscribe();
        let delay = tokio::time::sleep(shared.options.step_delay);
        tokio::pin!(delay);
        loop {
            control.borrow_and_update();
            if shared.state().interrupt_requested {
                return Err(NodeFailure::Interrupted);
            }
            tokio::select! {
                () = &mut delay => break,
                changed = control.changed() => if changed.is_err() {
                    return Err(NodeFailure::Killed);
                },
                () = shared.cancel.cancelled() => return Err(NodeFailure::Killed),
            }
        }
        {
            let state = shared.state();
            if state.interrupt_requested {
                return Err(NodeFailure::Interrupted);
            }
            let progress = NodeProgress {
                value: json!(value),
                max: json!(max),
                state: "running",
            };
            self.set_progress(&state, node_id, progress);
            let data = json!({
                "value": value,
                "max": max,
                "prompt_id": self.item.prompt_id,
                "node": node_id,
            });
            state.send("progress", data, self.client.as_deref());
        }
        loop {
            control.borrow_and_update();
            {
                let state = shared.state();
                if state.interrupt_requested {
                    return Err(NodeFailure::Interrupted);
                }
                if !state.hold {
                    return Ok(());
                }
            }
            tokio::select! {
                changed = control.changed() => if changed.is_err() {
                    return Err(NodeFailure::Killed);
                },
                () = shared.cancel.cancelled() => return Err(NodeFailure::Killed),
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default()
}

/// `comfy_execution.graph.ExecutionList`: which node runs next.
struct ExecutionList<'g> {
    graph: &'g Graph,
    cached: HashSet<String>,
    /// `pendingNodes`, in insertion order.
    pending: Vec<String>,
    block_count: HashMap<String, usize>,
    /// `blocking[a]`: the nodes waiting for `a`, in order.
    blocking: HashMap<String, Vec<String>>,
}

impl<'g> ExecutionList<'g> {
    fn new(graph: &'g Graph, cached: HashSet<String>) -> Self {
        Self {
            graph,
            cached,
            pending: Vec::new(),
            block_count: HashMap::new(),
            blocking: HashMap::new(),
        }
    }

    /// `TopologicalSort.add_node`: the node and its uncached ancestors, depth first.
    fn add_node(&mut self, id: &str) {
        let mut stack = vec![id.to_owned()];
        let mut links = Vec::new();
        while let Some(unique_id) = stack.pop() {
            if self.pending.contains(&unique_id) {
                continue;
            }
            self.pending.push(unique_id.clone());
            self.block_count.insert(unique_id.clone(), 0);
            self.blocking.insert(unique_id.clone(), Vec::new());
            let Some(node) = self.graph.node(&unique_id) else {
                continue;
            };
            for (_, value) in node.inputs.iter().flatten() {
                if let Some((from, _)) = link(value) {
                    if !self.cached.contains(from) {
                        stack.push(from.to_owned());
                    }
                    links.push((from.to_owned(), unique_id.clone()));
                }
            }
        }
        for (from, to) in links {
            if self.cached.contains(&from) {
                continue;
            }
            self.add_node(&from);
            let blocked = self.blocking.entry(from).or_default();
            if !blocked.contains(&to) {
                blocked.push(to.clone());
                *self.block_count.entry(to).or_default() += 1;
            }
        }
    }

    /// `stage_node_execution` with `ux_friendly_pick_node`; `Err(node)` blames a node of a cycle.
    fn stage(&self, is_output: &dyn Fn(&str) -> bool) -> Result<String, String> {
        let available: Vec<&String> = self
            .pending
            .iter()
            .filter(|id| self.block_count.get(*id).copied().unwrap_or(0) == 0)
            .collect();
        let Some(first) = available.first() else {
            return Err(self.pending.first().cloned().unwrap_or_default());
        };
        let blocking = |id: &str| self.blocking.get(id).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(id) = available.iter().find(|id| is_output(id)) {
            return Ok((*id).clone());
        }
        if let Some(id) = available
            .iter()
            .find(|id| blocking(id).iter().any(|b| is_output(b)))
        {
            return Ok((*id).clone());
        }
        if let Some(id) = available.iter().find(|id| {
            blocking(id)
                .iter()
                .any(|b| blocking(b).iter().any(|c| is_output(c)))
        }) {
            return Ok((*id).clone());
        }
        Ok((*first).clone())
    }

    /// `complete_node_execution`.
    fn complete(&mut self, id: &str) {
        self.pending.retain(|pending| pending != id);
        for blocked in self.blocking.remove(id).unwrap_or_default() {
            if let Some(count) = self.block_count.get_mut(&blocked) {
                *count = count.saturating_sub(1);
            }
        }
    }
}
