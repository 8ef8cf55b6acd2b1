-- Users removed by UserDeleted, so that a late or replayed event about them can never mail them again.
CREATE TABLE deleted_users (
    user_id    uuid        PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

-- archive: tokens by age, the mail a token belongs to, and finished mail by age.
CREATE INDEX tokens_created ON tokens (created_at);
CREATE INDEX tokens_mail ON tokens (mail_id);
CREATE INDEX mails_finished_created ON mails (created_at) WHERE status <> 'pending';
-- archive drops counters whose window ended long ago.
CREATE INDEX send_limits_window ON send_limits (window_started_at);
