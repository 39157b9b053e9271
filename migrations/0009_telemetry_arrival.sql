-- Telemetry is ordered by arrival (the TELEMETRY stream's sequence); the agent's clock is kept
-- only as data, with how far it was off when the sample arrived.
ALTER TABLE node_telemetry ADD COLUMN received_at timestamptz;
ALTER TABLE node_telemetry ADD COLUMN clock_skew_ms bigint;
