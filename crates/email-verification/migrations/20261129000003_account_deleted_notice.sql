-- An account deleted by its owner gets one last mail, tied to no user: the account's own rows are forgotten. A
-- changed password gets a notice.
ALTER TABLE mails ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE mails DROP CONSTRAINT mails_kind_check;
ALTER TABLE mails ADD CONSTRAINT mails_kind_check
    CHECK (kind IN ('verification', 'existing_account_notice', 'account_deleted', 'password_changed'));
