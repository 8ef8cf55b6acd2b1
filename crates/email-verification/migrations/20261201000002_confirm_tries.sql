-- Confirm tries per signup attempt, over all its links: a resend is a new link for the same attempt, not five more
-- guesses at its password. Kept apart from `tokens`, which are archived a week after they expire: a sum over them
-- would forget the tries of archived links while the attempt can still be confirmed (its password lives 30 days).
-- Removed with the account, or once it is verified (no attempt of it confirms again).
CREATE TABLE confirm_tries (
    signup_id uuid    PRIMARY KEY,
    user_id   uuid    NOT NULL,
    tries     integer NOT NULL CHECK (tries >= 0)
);
CREATE INDEX confirm_tries_user ON confirm_tries (user_id);

-- The tries already counted on the links of attempts still pending.
INSERT INTO confirm_tries (signup_id, user_id, tries)
SELECT m.signup_id, m.user_id, sum(t.confirm_attempts)
FROM tokens t JOIN mails m ON m.id = t.mail_id JOIN accounts a ON a.user_id = m.user_id
WHERE m.signup_id IS NOT NULL AND a.verified_at IS NULL
GROUP BY m.signup_id, m.user_id
HAVING sum(t.confirm_attempts) > 0;
