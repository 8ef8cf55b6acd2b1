-- The W3C tracestate of the request that caused an event travels with its traceparent.
ALTER TABLE outbox ADD COLUMN tracestate text;
