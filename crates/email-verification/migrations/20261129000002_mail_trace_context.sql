-- A queued mail remembers the trace of the event that queued it, so its SMTP send continues that trace.
ALTER TABLE mails ADD COLUMN traceparent text, ADD COLUMN tracestate text;
