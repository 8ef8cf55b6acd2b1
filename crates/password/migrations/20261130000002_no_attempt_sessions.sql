-- Sessions open only for verified accounts: an unverified account's signup password proves nothing until its link
-- is confirmed. The sessions an earlier release opened with such a password (signup_id set) end here; signup-api
-- also refuses any that a replica of that release opens during a rolling deploy (`attempt_bound`).
DELETE FROM sessions WHERE signup_id IS NOT NULL;
