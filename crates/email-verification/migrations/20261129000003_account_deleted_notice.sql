-- An account deleted by its owner gets one last mail, tied to no user: the account's own rows are forgotten. A
-- changed password gets a notice; a forgotten one a reset link (its token issued when the mail is sent, like a
-- verification link's), or, for an account not verified yet, a notice to sign up again.
ALTER TABLE mails ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE mails DROP CONSTRAINT mails_kind_check;
ALTER TABLE mails ADD CONSTRAINT mails_kind_check
    CHECK (kind IN ('verification', 'existing_account_notice', 'account_deleted', 'password_changed',
                    'password_reset', 'reset_not_verified'));
