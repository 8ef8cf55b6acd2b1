-- A resend names the signup attempt whose link it wants (its signup's answer gave the id), so email-verification
-- must know every attempt of a pending account, not only its newest: a row in `confirm_tries` is now made, with no
-- tries, when an attempt's UserSignedUp is applied (whether or not its mail was within the budget), and a resend
-- mails only an attempt that has one, in that attempt's language (the account's follows its newest attempt, which
-- may be a stranger's). Rows are still removed with the account, or once it is verified.
ALTER TABLE confirm_tries ADD COLUMN locale text NOT NULL DEFAULT '';

-- The attempts of accounts pending now: every one a verification mail was queued for, in that mail's language, and
-- each account's newest, in the account's (which is the newest attempt's).
INSERT INTO confirm_tries (signup_id, user_id, tries, locale)
SELECT DISTINCT ON (m.signup_id) m.signup_id, m.user_id, 0, m.locale
FROM mails m JOIN accounts a ON a.user_id = m.user_id
WHERE m.kind = 'verification' AND m.signup_id IS NOT NULL AND a.verified_at IS NULL
ORDER BY m.signup_id, m.created_at
ON CONFLICT (signup_id) DO UPDATE SET locale = excluded.locale;

INSERT INTO confirm_tries (signup_id, user_id, tries, locale)
SELECT signup_id, user_id, 0, locale FROM accounts WHERE verified_at IS NULL
ON CONFLICT (signup_id) DO UPDATE SET locale = excluded.locale;
