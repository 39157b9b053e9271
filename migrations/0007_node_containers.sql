-- Each node's containers as its agent last listed them (telemetry `containers`, latest by
-- arrival): state, health, ports, compose labels, CPU, memory, network.
CREATE TABLE node_containers (
    node_id      text PRIMARY KEY,
    docker       text NOT NULL,
    containers   jsonb NOT NULL,
    sampled_at   timestamptz NOT NULL,
    received_seq bigint NOT NULL
);
