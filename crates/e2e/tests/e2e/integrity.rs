//! Account integrity, tried as an attacker would, through the public API of the real stack: pre-hijacking a
//! pending account, holding a link without its password, racing a right and a wrong password, mail-bombing an
//! address, and learning about non-members through friend suggestions. Each test replays one attack.

use std::collections::HashSet;

use e2e::{
    poll::eventually,
    smtp::Received,
    stack::{DELIVERY_TIMEOUT, Options, Stack},
};
use proto::{password::v1::CreateSessionRequest, user_metadata::v1::GetUserByEmailRequest};
use serde_json::{Value, json};

const VICTIM_PASSWORD: &str = "the victim's own quiet passphrase";
const ATTACKER_PASSWORD: &str = "an attacker's chosen passphrase";

fn unique_email(label: &str) -> String {
    format!("{label}-{}@example.com", uuid::Uuid::now_v7().simple())
}

async fn started(options: Options) -> anyhow::Result<Stack> {
    let mut stack = Stack::start_with(options).await?;
    stack.wait_ready().await?;
    Ok(stack)
}

async fn sign_up(stack: &Stack, email: &str, password: &str, name: &str) -> anyhow::Result<Value> {
    let body = json!({ "email": email, "password": password, "display_name": name });
    let response = stack.signup(&body, None).await?;
    anyhow::ensure!(response.status() == 202, "signup answered {}", response.status());
    Ok(response.json().await?)
}

/// The mail to `email` that arrives next, after the `seen` ones: its link's token.
async fn next_link(stack: &Stack, email: &str, seen: &mut HashSet<String>) -> anyhow::Result<String> {
    let count = seen.len() + 1;
    let mails = stack.smtp.wait_for(email, count, DELIVERY_TIMEOUT).await?;
    let fresh: Vec<&Received> =
        mails.iter().filter(|m| !seen.contains(&m.header("Message-ID").unwrap_or_default())).collect();
    anyhow::ensure!(fresh.len() == 1, "{} new mails to {email}", fresh.len());
    seen.insert(fresh[0].header("Message-ID").unwrap_or_default());
    fresh[0].token().ok_or_else(|| anyhow::anyhow!("no link in the mail"))
}

async fn problem_type(response: reqwest::Response) -> anyhow::Result<(u16, String)> {
    let status = response.status().as_u16();
    let body: Value = response.json().await?;
    Ok((status, body["type"].as_str().unwrap_or_default().to_owned()))
}

async fn sign_in_status(stack: &Stack, email: &str, password: &str) -> anyhow::Result<u16> {
    Ok(stack.sign_in(email, password).await?.status().as_u16())
}

/// Whether user-metadata holds `email`'s account as verified.
async fn verified(stack: &Stack, email: &str) -> anyhow::Result<bool> {
    let request = GetUserByEmailRequest { email: email.to_owned() };
    let user = stack.users().await?.get_user_by_email(request).await?.into_inner().user;
    Ok(user.is_some_and(|user| user.verified_at.is_some()))
}

async fn profile(stack: &Stack, email: &str, password: &str) -> anyhow::Result<Value> {
    let token = stack.session(email, password).await?;
    Ok(stack.me(&token).await?.json().await?)
}

/// Attack: the attacker signs up the victim's address with their own password, the victim signs up with theirs,
/// the attacker signs up again, and the victim opens the newest mail (the attacker's) and confirms it. On the code
/// before one-verification this verified the account with the attacker's password.
#[tokio::test]
async fn a_pre_registered_account_cannot_be_hijacked_and_the_owner_verifies_with_their_own_password()
-> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let victim = unique_email("victim");
    let mut seen = HashSet::new();
    sign_up(&stack, &victim, ATTACKER_PASSWORD, "Attacker's Name").await?;
    let attackers_first = next_link(&stack, &victim, &mut seen).await?;
    sign_up(&stack, &victim, VICTIM_PASSWORD, "Victim").await?;
    let victims_own = next_link(&stack, &victim, &mut seen).await?;
    sign_up(&stack, &victim, ATTACKER_PASSWORD, "Attacker's Name").await?;
    let attackers_newest = next_link(&stack, &victim, &mut seen).await?;

    // The victim confirms the newest mail with their password: it is not their signup's link.
    let (status, kind) = problem_type(stack.confirm(&attackers_newest, VICTIM_PASSWORD).await?).await?;
    assert_eq!((status, kind.as_str()), (400, "/problems/link-password-mismatch"));
    assert!(!verified(&stack, &victim).await?, "nothing was verified");
    // Their own mail's link, a later signup notwithstanding, works with their password.
    assert_eq!(stack.confirm(&victims_own, VICTIM_PASSWORD).await?.status(), 200);

    let me = profile(&stack, &victim, VICTIM_PASSWORD).await?;
    assert_eq!((me["email_verified"].as_bool(), me["display_name"].as_str()), (Some(true), Some("Victim")));
    assert_eq!(sign_in_status(&stack, &victim, ATTACKER_PASSWORD).await?, 401, "the attacker's password works");
    for link in [&attackers_first, &attackers_newest] {
        let (status, kind) = problem_type(stack.confirm(link, ATTACKER_PASSWORD).await?).await?;
        assert_eq!((status, kind.as_str()), (400, "/problems/invalid-token"), "an attacker's link still works");
    }
    assert_eq!(sign_in_status(&stack, &victim, ATTACKER_PASSWORD).await?, 401);
    Ok(())
}

/// Attack: the attacker signs up the victim's pending address with their own password (the newest attempt), signs
/// in with it and deletes the account: the owner's link dies with it, and each round mails the owner twice (a link
/// and a deletion notice). On the code before, the newest attempt's password opened a session of the pending
/// account, and the owner's confirm then answered invalid-token.
#[tokio::test]
async fn a_stranger_who_signs_up_a_pending_address_can_neither_sign_in_to_it_nor_delete_it() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let victim = unique_email("victim");
    let mut seen = HashSet::new();
    sign_up(&stack, &victim, VICTIM_PASSWORD, "Victim").await?;
    let victims_own = next_link(&stack, &victim, &mut seen).await?;
    sign_up(&stack, &victim, ATTACKER_PASSWORD, "Attacker's Name").await?;

    let signed_in = stack.sign_in(&victim, ATTACKER_PASSWORD).await?;
    let status = signed_in.status().as_u16();
    if status == 201 {
        let token = signed_in.json::<Value>().await?["token"].as_str().unwrap_or_default().to_owned();
        let url = format!("{}/v1/me", stack.api_url());
        let body = json!({ "password": ATTACKER_PASSWORD });
        stack.http().delete(url).bearer_auth(token).json(&body).send().await?;
    }

    // Nor does password open one for an attempt, whoever asks it (defence in depth behind signup-api).
    let request = GetUserByEmailRequest { email: victim.clone() };
    let pending = stack.users().await?.get_user_by_email(request).await?.into_inner().user.unwrap_or_default();
    let request = CreateSessionRequest {
        user_id: pending.user_id,
        signup_id: pending.signup_id,
        email_hash: vec![7; 32],
        password: ATTACKER_PASSWORD.to_owned(),
        ..CreateSessionRequest::default()
    };
    let by_attempt = stack.passwords().await?.create_session(request).await.map(|r| r.into_inner().outcome);

    assert_eq!(stack.confirm(&victims_own, VICTIM_PASSWORD).await?.status(), 200, "the owner's link was voided");
    assert_eq!(profile(&stack, &victim, VICTIM_PASSWORD).await?["display_name"], "Victim");
    assert_eq!(status, 401, "the newest signup's password opened a session of the pending account");
    assert_eq!(
        by_attempt.map_err(|s| s.code()),
        Err(tonic::Code::InvalidArgument),
        "password opened an attempt's session"
    );
    Ok(())
}

/// Attack: to learn whether an address has a verified account, sign it up with a password of one's own and sign in
/// with that password. On the code before, a new or pending address answered 201 (the newest signup's password
/// opened a session) and a verified one 401.
#[tokio::test]
async fn signing_up_then_signing_in_does_not_tell_whether_an_address_has_an_account() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let (member, stranger) = (person("member"), person("stranger"));
    self::member(&stack, &member, &[]).await?;
    let mut answers = Vec::new();
    for email in [&member, &stranger] {
        sign_up(&stack, email, ATTACKER_PASSWORD, "Prober").await?;
        let response = stack.sign_in(email, ATTACKER_PASSWORD).await?;
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"].to_str()?.to_owned();
        let body: Value = response.json().await?;
        answers.push((status, content_type, body["type"].clone(), body["detail"].clone()));
    }
    assert_eq!(answers[0], answers[1], "a verified address and a new one answer apart");
    assert_eq!(answers[0].0, 401);
    Ok(())
}

/// Attack: someone who can read the victim's link (a leaked mail, a scanner) but not their password tries to
/// confirm it with guesses. Nothing is verified; after five wrong tries the link is dead even for the right one.
#[tokio::test]
async fn a_link_without_its_password_verifies_nothing_and_dies_after_five_wrong_tries() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let victim = unique_email("leaked-link");
    sign_up(&stack, &victim, VICTIM_PASSWORD, "Victim").await?;
    let link = next_link(&stack, &victim, &mut HashSet::new()).await?;

    for guess in 0..5 {
        let (status, kind) = problem_type(stack.confirm(&link, &format!("guess number {guess}")).await?).await?;
        assert_eq!((status, kind.as_str()), (400, "/problems/link-password-mismatch"), "guess {guess}");
    }
    let (status, kind) = problem_type(stack.confirm(&link, VICTIM_PASSWORD).await?).await?;

    assert_eq!((status, kind.as_str()), (400, "/problems/invalid-token"), "a sixth try was let through");
    assert!(!verified(&stack, &victim).await?, "the link verified the account");
    // The owner signs up again and verifies with the new link.
    sign_up(&stack, &victim, VICTIM_PASSWORD, "Victim").await?;
    let mails = stack.smtp.wait_for(&victim, 2, DELIVERY_TIMEOUT).await?;
    let fresh = mails.iter().filter_map(Received::token).find(|t| *t != link).unwrap_or_default();
    assert_eq!(stack.confirm(&fresh, VICTIM_PASSWORD).await?.status(), 200);
    Ok(())
}

/// A wrong password uses nothing: the same link then works with the right one.
#[tokio::test]
async fn a_wrong_password_uses_nothing_and_the_right_one_then_verifies() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let owner = unique_email("typo");
    sign_up(&stack, &owner, VICTIM_PASSWORD, "Owner").await?;
    let link = next_link(&stack, &owner, &mut HashSet::new()).await?;

    assert_eq!(stack.confirm(&link, "a typo in the passphrase").await?.status(), 400);
    assert_eq!(stack.confirm(&link, VICTIM_PASSWORD).await?.status(), 200);
    assert_eq!(profile(&stack, &owner, VICTIM_PASSWORD).await?["email_verified"], true);
    Ok(())
}

/// Race: the owner and someone with a wrong password confirm the same link at once. Exactly one confirm verifies,
/// with the owner's password, and EmailVerified is announced once.
#[tokio::test]
async fn concurrent_confirms_with_the_right_and_a_wrong_password_verify_once_with_the_right_one() -> anyhow::Result<()>
{
    let stack = started(Options::default()).await?;
    let owner = unique_email("race");
    sign_up(&stack, &owner, VICTIM_PASSWORD, "Owner").await?;
    let link = next_link(&stack, &owner, &mut HashSet::new()).await?;

    let (right, wrong) = tokio::join!(stack.confirm(&link, VICTIM_PASSWORD), stack.confirm(&link, ATTACKER_PASSWORD));

    let (right, wrong) = (right?.status().as_u16(), problem_type(wrong?).await?);
    assert_eq!(right, 200);
    assert_eq!(wrong, (400, "/problems/link-password-mismatch".to_owned()));
    assert_eq!(sign_in_status(&stack, &owner, VICTIM_PASSWORD).await?, 201);
    assert_eq!(sign_in_status(&stack, &owner, ATTACKER_PASSWORD).await?, 401);
    let mut users = stack.database("user-metadata").connect().await?;
    let verified: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = $1")
        .bind(proto::Event::EMAIL_VERIFIED)
        .fetch_one(&mut users)
        .await?;
    assert_eq!(verified, 1);
    Ok(())
}

/// Attack: someone who reads the mailbox guesses the signup's password with many confirms of one link at once,
/// hoping that concurrent tries are counted after the fact. The attempt takes `CONFIRM_ATTEMPTS_PER_SIGNUP` (here
/// 5, under a link's own 100) wrong passwords and then none, however they arrive: the rest are refused as a dead
/// link, and so is the right password. (A link's own count is one row's, safe by the row's lock; the attempt's is
/// another table's, and its confirms take turns for it.)
#[tokio::test]
async fn wrong_passwords_sent_at_once_get_no_more_tries_than_one_after_another() -> anyhow::Result<()> {
    let env = vec![
        ("email-verification", "CONFIRM_ATTEMPTS_PER_TOKEN", "100".to_owned()),
        ("email-verification", "CONFIRM_ATTEMPTS_PER_SIGNUP", "5".to_owned()),
        // Room for every guess to wait for a hash, on any machine: none is refused for capacity (its try given
        // back), so exactly five are checked.
        ("password", "HASHING_QUEUE_LIMIT", "32".to_owned()),
    ];
    let stack = started(Options { env, ..Options::default() }).await?;
    let owner = unique_email("guessed-at-once");
    sign_up(&stack, &owner, VICTIM_PASSWORD, "Owner").await?;
    let link = next_link(&stack, &owner, &mut HashSet::new()).await?;

    let guesses = (0..20).map(|i| {
        let guess = format!("guess number {i} of many staples");
        let link = link.clone();
        let stack = &stack;
        async move { problem_type(stack.confirm(&link, &guess).await?).await }
    });
    let answers = futures_util::future::try_join_all(guesses).await?;
    let checked = answers.iter().filter(|(_, kind)| kind == "/problems/link-password-mismatch").count();
    let dead = answers.iter().filter(|(_, kind)| kind == "/problems/invalid-token").count();

    assert_eq!((checked, dead), (5, 15), "{answers:?}");
    let (status, kind) = problem_type(stack.confirm(&link, VICTIM_PASSWORD).await?).await?;
    assert_eq!(
        (status, kind.as_str()),
        (400, "/problems/invalid-token"),
        "the dead link still took the right password"
    );
    assert_eq!(sign_in_status(&stack, &owner, VICTIM_PASSWORD).await?, 401, "the account was verified");
    Ok(())
}

fn budget(per_hour: u32, per_day: u32) -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("email-verification", "MAIL_BUDGET_PER_HOUR", per_hour.to_string()),
        ("email-verification", "MAIL_BUDGET_PER_DAY", per_day.to_string()),
    ]
}

/// Waits until email-verification has applied every signup event and no mail is waiting, so counts are final.
async fn mail_settled(stack: &Stack, signups: i64) -> anyhow::Result<()> {
    stack.wait_processed(proto::Event::USER_SIGNED_UP, signups).await?;
    eventually(DELIVERY_TIMEOUT, || async {
        let mut db = stack.database("email-verification").connect().await?;
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM mails WHERE status = 'pending'").fetch_one(&mut db).await?;
        anyhow::ensure!(pending == 0, "{pending} mails pending");
        Ok(())
    })
    .await
}

/// Attack: thirty signups and thirty resends naming one address, as fast as the API takes them. The address gets
/// exactly its budget of mail (the first signup's and two resends of its link, which came first; none of the later
/// signups'); another address is unaffected; every answer is the same.
#[tokio::test]
async fn thirty_signups_and_thirty_resends_for_one_address_deliver_exactly_its_mail_budget() -> anyhow::Result<()> {
    let mut env = budget(3, 10);
    env.push(("user-metadata", "SIGNUP_ATTEMPTS_PER_ACCOUNT", "100".to_owned()));
    let stack = started(Options { env, ..Options::default() }).await?;
    let (target, bystander) = (unique_email("bombed"), unique_email("bystander"));
    let mut answers = HashSet::new();

    let mut signup_ids = Vec::new();
    for i in 0..30 {
        let body = json!({ "email": target, "password": format!("{ATTACKER_PASSWORD} {i}"), "display_name": "x" });
        let response = stack.signup(&body, None).await?;
        let status = response.status().as_u16();
        // Each answer names its own attempt; everything else must be the same.
        let mut accepted: Value = response.json().await?;
        signup_ids.push(accepted.as_object_mut().and_then(|a| a.remove("signup_id")));
        answers.insert((status, accepted.to_string()));
        if i > 0 {
            continue;
        }
        // After the first signup, once email-verification knows its attempt: the resends, naming it (only its 202
        // told its id).
        stack.wait_processed(proto::Event::USER_SIGNED_UP, 1).await?;
        let named = signup_ids[0].as_ref().and_then(Value::as_str).unwrap_or_default().to_owned();
        for _ in 0..30 {
            let response = stack.resend(&target, &named).await?;
            answers.insert((response.status().as_u16(), response.text().await?));
        }
    }
    sign_up(&stack, &bystander, VICTIM_PASSWORD, "Bystander").await?;
    mail_settled(&stack, 31).await?;
    let first: uuid::Uuid = signup_ids[0].as_ref().and_then(Value::as_str).unwrap_or_default().parse()?;
    let mut db = stack.database("email-verification").connect().await?;
    let query = "SELECT count(*) FROM mails WHERE signup_id = $1 AND status = 'sent'";
    let first_attempts: i64 = sqlx::query_scalar(query).bind(first).fetch_one(&mut db).await?;

    assert_eq!(stack.smtp.messages_to(&target).len(), 3, "the budget did not hold");
    assert_eq!(first_attempts, 3, "the first signup's mail and two resends of its link were not the three");
    assert_eq!(stack.smtp.messages_to(&bystander).len(), 1, "another address was affected");
    let statuses: HashSet<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, HashSet::from([202]), "the API told the budget apart: {answers:?}");
    assert_eq!(answers.len(), 2, "one body for signups and one for resends: {answers:?}");
    let distinct: HashSet<_> = signup_ids.iter().flatten().filter_map(Value::as_str).collect();
    assert_eq!(distinct.len(), 30, "each signup named its own attempt: {signup_ids:?}");
    Ok(())
}

/// Attack: a stranger's signup and four resends for one address at the same moment, each counting the budget in a
/// transaction of its own (the consumer's, and one per resend, as replicas would). To make the race certain rather
/// than likely, the test holds the mail queue against inserts (`LOCK TABLE mails IN SHARE MODE`: reads go on) until
/// the signup's event and the resends wait on a lock, then lets them all go. Counted under the address's lock, they
/// count one after the other and the address gets exactly its budget. Without it, each waiting resend had counted
/// the budget unspent: with `lock_address` a no-op the address got 5 or 6 mails against a budget of 2 (every run).
/// The consumer counts inside the statement that queues its mail, after the test's lock, so leaving its lock out of
/// the statement that records the attempt is caught only when the race after the release falls that way (3 mails in
/// 5 of 13 runs).
#[tokio::test]
async fn a_signup_and_four_resends_at_once_for_one_address_deliver_exactly_its_mail_budget() -> anyhow::Result<()> {
    // The sender claims only when mail is queued, so no claim of its own waits on the test's lock.
    let mut env = budget(2, 10);
    env.push(("email-verification", "MAIL_POLL_INTERVAL_MS", "600000".to_owned()));
    let stack = started(Options { env, ..Options::default() }).await?;
    let target = unique_email("raced");
    let accepted = sign_up(&stack, &target, VICTIM_PASSWORD, "Raced").await?;
    let signup_id = accepted["signup_id"].as_str().unwrap_or_default();
    mail_settled(&stack, 1).await?;
    let mut holder = stack.database("email-verification").connect().await?;
    sqlx::raw_sql("BEGIN; LOCK TABLE mails IN SHARE MODE").execute(&mut holder).await?;

    let signup = sign_up(&stack, &target, ATTACKER_PASSWORD, "Stranger");
    // Fewer than email-verification's pool holds, so the consumer gets a connection too.
    let resends = futures_util::future::try_join_all((0..4).map(|_| stack.resend(&target, signup_id)));
    let released = async {
        eventually(DELIVERY_TIMEOUT, || async {
            let mut watcher = stack.database("email-verification").connect().await?;
            // Waiters in this database, and whether one is the consumer (it alone has written processed_events).
            let (waiting, consumer): (i64, bool) = sqlx::query_as(
                "SELECT count(*), coalesce(bool_or(EXISTS (SELECT 1 FROM pg_locks h WHERE h.pid = w.pid \
                   AND h.granted AND h.database = w.database AND h.relation = 'processed_events'::regclass)), false) \
                 FROM pg_locks w WHERE NOT w.granted \
                   AND w.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&mut watcher)
            .await?;
            anyhow::ensure!(waiting >= 5 && consumer, "{waiting} waiting, the signup's event among them: {consumer}");
            Ok(())
        })
        .await?;
        sqlx::query("COMMIT").execute(&mut holder).await?;
        anyhow::Ok(())
    };
    let (signed_up, answers, released) = tokio::join!(signup, resends, released);
    released?;
    signed_up?;
    let statuses: HashSet<u16> = answers?.iter().map(|r| r.status().as_u16()).collect();
    mail_settled(&stack, 2).await?;

    assert_eq!(statuses, HashSet::from([202]), "every resend is answered alike");
    assert_eq!(stack.smtp.messages_to(&target).len(), 2, "concurrent writers overran the budget");
    Ok(())
}

/// Attack: mail-bombing one mailbox through the spellings that reach it (`+tags`, Gmail's dots and its other
/// domain), each of which had a budget of its own. On the code before, six tagged signups within an hour's budget of
/// three delivered six mails to one mailbox.
#[tokio::test]
async fn the_spellings_of_one_mailbox_share_its_mail_budget() -> anyhow::Result<()> {
    let stack = started(Options { env: budget(3, 10), ..Options::default() }).await?;
    let user = format!("bombed{}", uuid::Uuid::now_v7().simple());
    let (head, tail) = user.split_at(3);
    let tagged: Vec<String> = (0..6).map(|i| format!("{user}+{i}@example.com")).collect();
    let gmail = [
        format!("{user}@gmail.com"),
        format!("{head}.{tail}@gmail.com"),
        format!("{user}+x@googlemail.com"),
        format!("{head}.{tail}+y@gmail.com"),
    ];
    for email in tagged.iter().chain(&gmail) {
        sign_up(&stack, email, ATTACKER_PASSWORD, "x").await?;
    }
    mail_settled(&stack, 10).await?;

    let delivered = |spellings: &[String]| spellings.iter().map(|s| stack.smtp.messages_to(s).len()).sum::<usize>();
    assert_eq!(delivered(&tagged), 3, "tagged spellings of one mailbox got more than its budget");
    assert_eq!(delivered(&gmail), 3, "spellings of one Gmail mailbox got more than its budget");
    Ok(())
}

/// Attack: the same, through quoted local parts. `"ada"@…`, `"a\\da"@…` (and 2ⁿ more for an n-letter name) are
/// legal RFC 5322 spellings that many mail servers deliver to `ada`, and each was an account and a mail budget of
/// its own. They are refused as addresses now, as are ones that hide characters; before, each was accepted (202)
/// and mailed.
#[tokio::test]
async fn quoted_or_hidden_spellings_of_a_mailbox_are_refused() -> anyhow::Result<()> {
    let stack = started(Options { env: budget(3, 10), ..Options::default() }).await?;
    let user = format!("quoted{}", uuid::Uuid::now_v7().simple());
    let (head, tail) = user.split_at(3);
    let spellings = [
        format!("\"{user}\"@example.com"),
        format!("\"{head}\\{tail}\"@example.com"),
        format!("\"\\{user}\"@example.com"),
        format!("{head}\u{200B}{tail}@example.com"),
        // Characters that render as nothing made another spelling that reads the same; before, each was an account.
        format!("{head}\u{206A}{tail}@example.com"),
        format!("{head}\u{17B4}{tail}@example.com"),
        format!("{head}\u{1BCA0}{tail}@example.com"),
    ];
    let mut answers = Vec::new();
    for email in &spellings {
        let body = json!({ "email": email, "password": ATTACKER_PASSWORD, "display_name": "x" });
        let answer = stack.signup(&body, None).await?;
        let status = answer.status().as_u16();
        let problem: Value = answer.json().await?;
        answers.push((status, problem["errors"][0]["field"].as_str().map(str::to_owned)));
    }
    let plain = format!("{user}@example.com");
    sign_up(&stack, &plain, VICTIM_PASSWORD, "Ada").await?;
    let mut users = stack.database("user-metadata").connect().await?;
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut users).await?;

    assert!(answers.iter().all(|a| *a == (422, Some("email".to_owned()))), "{answers:?}");
    assert_eq!(accounts, 1, "a refused spelling is an account");
    Ok(())
}

/// Signs `email` up with `password` from `client` (through a trusted proxy's `X-Forwarded-For`); the status and
/// the answer's `signup_id` (empty if none).
async fn sign_up_from(stack: &Stack, client: &str, email: &str, password: &str) -> anyhow::Result<(u16, String)> {
    let body = json!({ "email": email, "password": password, "display_name": "x" });
    let request = stack.http().post(format!("{}/v1/signups", stack.api_url()));
    let response = request.header("x-forwarded-for", client).json(&body).send().await?;
    let status = response.status().as_u16();
    let accepted: Value = response.json().await?;
    Ok((status, accepted["signup_id"].as_str().unwrap_or_default().to_owned()))
}

/// A stack whose signup-api believes loopback's `X-Forwarded-For`, and whose addresses take six attempts, two per
/// client; with `extra` settings.
async fn squattable(extra: Vec<(&'static str, &'static str, String)>) -> anyhow::Result<Stack> {
    let mut env = vec![
        ("signup-api", "TRUSTED_PROXIES", "127.0.0.1/32, ::1/128".to_owned()),
        ("user-metadata", "SIGNUP_ATTEMPTS_PER_ACCOUNT", "6".to_owned()),
        ("user-metadata", "SIGNUP_ATTEMPTS_PER_CLIENT", "2".to_owned()),
    ];
    env.extend(extra);
    started(Options { env, ..Options::default() }).await
}

/// Attack: signups for an address beyond the attempts it takes. Each was answered 202 and dropped by user-metadata,
/// but password had already stored its argon2 hash under the address's keyed hash, and nothing removed it: no event
/// names a dropped attempt, so it outlived even the account's deletion, for as long as the attempts' expiry (30
/// days). On the code before, all five attempts' hashes (the three dropped among them) were still stored. Now
/// signup-api has them removed, after the answer (which is the same whether the attempts were spent or not).
#[tokio::test]
async fn signups_beyond_an_addresss_attempts_leave_no_password_behind() -> anyhow::Result<()> {
    let env = vec![("user-metadata", "SIGNUP_ATTEMPTS_PER_ACCOUNT", "2".to_owned())];
    let stack = started(Options { env, ..Options::default() }).await?;
    let email = unique_email("spent");
    let mut signup_ids = Vec::new();
    for i in 0..5 {
        let accepted = sign_up(&stack, &email, &format!("{ATTACKER_PASSWORD} {i}"), "x").await?;
        signup_ids.push(accepted["signup_id"].as_str().unwrap_or_default().parse::<uuid::Uuid>()?);
    }

    let passwords = stack.database("password");
    let stored = || async {
        let mut db = passwords.connect().await?;
        let query = "SELECT signup_id FROM attempt_credentials WHERE signup_id = ANY($1) ORDER BY signup_id";
        anyhow::Ok(sqlx::query_scalar::<_, uuid::Uuid>(query).bind(&signup_ids).fetch_all(&mut db).await?)
    };
    let kept = eventually(DELIVERY_TIMEOUT, || async {
        let kept = stored().await?;
        anyhow::ensure!(kept.len() <= 2, "{} of the five attempts' passwords are stored", kept.len());
        Ok(kept)
    })
    .await?;
    assert_eq!(kept, signup_ids[..2], "the recorded attempts' passwords are not the ones kept");
    Ok(())
}

/// Attack: keeping an address's owner from signing up, from one client. A few signups a day for the address
/// filled its attempts (the owner's own was dropped, with the same 202) and spent its mail budget (the owner's mail
/// was not sent): one client kept anyone from signing up with ten requests a day. A client now gets a share of each
/// (`SIGNUP_ATTEMPTS_PER_CLIENT`, `MAIL_BUDGET_PER_CLIENT_PER_DAY`), and the rest stays for others, the owner among
/// them. Before: no link confirmed with the owner's password, and the squatter held all six attempts (with the
/// attempts shared but not the mail, the squatter's resends spent the hour's budget before the owner's signup).
#[tokio::test]
async fn one_client_cannot_keep_an_address_from_signing_up() -> anyhow::Result<()> {
    let mut env = budget(3, 10);
    env.push(("email-verification", "MAIL_BUDGET_PER_CLIENT_PER_DAY", "2".to_owned()));
    let stack = squattable(env).await?;
    let victim = unique_email("squatted");
    let from = |client, password| sign_up_from(&stack, client, &victim, password);
    let (status, first) = from("203.0.113.9", ATTACKER_PASSWORD).await?;
    let mut answers = vec![status];
    // Resends of the squatter's first attempt, once email-verification knows it, which would mail its link until
    // the hour's budget was spent; then more signups.
    stack.wait_processed(proto::Event::USER_SIGNED_UP, 1).await?;
    for _ in 0..3 {
        let request = stack.http().post(format!("{}/v1/email-verifications", stack.api_url()));
        let body = json!({ "email": victim, "signup_id": first });
        let request = request.header("x-forwarded-for", "203.0.113.9").json(&body);
        answers.push(request.send().await?.status().as_u16());
    }
    for _ in 0..5 {
        answers.push(from("203.0.113.9", ATTACKER_PASSWORD).await?.0);
    }
    answers.push(from("198.51.100.4", VICTIM_PASSWORD).await?.0);
    let mails = stack.smtp.wait_for(&victim, 3, DELIVERY_TIMEOUT).await?;
    let mut mail_log = stack.database("email-verification").connect().await?;
    let query = "SELECT count(*) FROM mails WHERE signup_id = $1::uuid AND status = 'sent'";
    let squatters_first: i64 = sqlx::query_scalar(query).bind(&first).fetch_one(&mut mail_log).await?;
    let mut users = stack.database("user-metadata").connect().await?;
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM signup_attempts").fetch_one(&mut users).await?;
    let mut confirms = Vec::new();
    for mail in &mails {
        let token = mail.token().unwrap_or_default();
        confirms.push(stack.confirm(&token, VICTIM_PASSWORD).await?.status().as_u16());
    }

    assert!(answers.iter().all(|status| *status == 202), "{answers:?}");
    assert!(confirms.contains(&200), "no link confirmed with the owner's password: {confirms:?}");
    assert!(verified(&stack, &victim).await?, "the owner's confirm did not verify the account");
    assert_eq!(attempts, 3, "the squatter's two and the owner's");
    assert_eq!(squatters_first, 2, "its share was not its first signup's mail and one resend of its link");
    Ok(())
}

/// The same squatter on IPv6, where one subscriber holds a whole /48 and signs up from a fresh /64 each time: its
/// /64s are one client, and its share of the address's attempts is the same two. Counted per /64, it was four.
#[tokio::test]
async fn a_squatter_on_many_64s_of_one_48_is_one_client() -> anyhow::Result<()> {
    let stack = squattable(Vec::new()).await?;
    let victim = unique_email("squatted-v6");
    let from = |client, password| sign_up_from(&stack, client, &victim, password);
    let mut answers = Vec::new();
    for client in ["2001:db8:77:1::1", "2001:db8:77:2::1", "2001:db8:77:3::1", "2001:db8:77:4::1"] {
        answers.push(from(client, ATTACKER_PASSWORD).await?.0);
    }
    answers.push(from("2001:db8:78:1::1", VICTIM_PASSWORD).await?.0);
    let mut users = stack.database("user-metadata").connect().await?;
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM signup_attempts").fetch_one(&mut users).await?;

    assert_eq!(answers, [202; 5], "every signup gets the same answer");
    assert_eq!(attempts, 3, "the squatter's two (one /48) and the owner's");
    Ok(())
}

/// Attack: guessing a signup's password through its links. Wrong passwords end a link after five, but a resend is
/// a new link for the same attempt: someone who reads the mailbox (a shared inbox, forwarded mail) had five more
/// guesses per resend, about fifty a day. Tries now count per attempt too (`CONFIRM_ATTEMPTS_PER_SIGNUP`); once they
/// are spent, the owner signs up again. Before: the second link took five wrong passwords and the third verified.
#[tokio::test]
async fn resends_give_no_more_guesses_at_a_signups_password() -> anyhow::Result<()> {
    let env = vec![("email-verification", "CONFIRM_ATTEMPTS_PER_SIGNUP", "7".to_owned())];
    let stack = started(Options { env, ..Options::default() }).await?;
    let email = unique_email("guessed");
    let accepted = sign_up(&stack, &email, VICTIM_PASSWORD, "Victim").await?;
    let signup_id = accepted["signup_id"].as_str().unwrap_or_default();
    let mut seen = HashSet::new();
    let mut links = vec![next_link(&stack, &email, &mut seen).await?];
    for _ in 0..2 {
        anyhow::ensure!(stack.resend(&email, signup_id).await?.status() == 202, "resend");
        links.push(next_link(&stack, &email, &mut seen).await?);
    }

    let mut guesses = Vec::new();
    for link in &links[..2] {
        for _ in 0..5 {
            guesses.push(problem_type(stack.confirm(link, ATTACKER_PASSWORD).await?).await?.1);
        }
    }
    let owner = stack.confirm(&links[2], VICTIM_PASSWORD).await?.status().as_u16();

    let checked = guesses.iter().filter(|t| *t == "/problems/link-password-mismatch").count();
    assert_eq!(checked, 7, "guesses checked against the signup's password: {guesses:?}");
    assert!(guesses[7..].iter().all(|t| t == "/problems/invalid-token"), "{guesses:?}");
    assert_eq!(owner, 400, "a link of a signup whose tries are spent still verified");
    // A week on, the links are archived (their rows gone): the attempt's tries are still spent, and a resend sends
    // nothing (a link of it could never work).
    let mut db = stack.database("email-verification").connect().await?;
    sqlx::query("DELETE FROM tokens").execute(&mut db).await?;
    anyhow::ensure!(stack.resend(&email, signup_id).await?.status() == 202, "resend");
    let resent: i64 = sqlx::query_scalar("SELECT count(*) FROM mails").fetch_one(&mut db).await?;
    assert_eq!(resent, 3, "a resend mailed a link of a signup whose tries are spent");
    sign_up(&stack, &email, VICTIM_PASSWORD, "Victim").await?;
    let fresh = next_link(&stack, &email, &mut seen).await?;
    let again = stack.confirm(&fresh, VICTIM_PASSWORD).await?.status().as_u16();
    assert_eq!(again, 200, "signing up again did not give the owner a working link");
    Ok(())
}

/// Attack: keeping an address's owner from confirming by signing up after them. A resend mailed the link of the
/// account's newest attempt, and a stranger's signup with the owner's address made that the stranger's: the owner,
/// who lost the first mail and asked again, got a link that only the stranger's password confirms (and anyone's
/// resend, naming only the address, spent the owner's mail budget on it). Now a resend names its signup, whose id
/// only that signup's `202` told, and mails that attempt's link or nothing. Before: the resent link answered the
/// owner's password with `/problems/link-password-mismatch`.
#[tokio::test]
async fn a_resend_mails_the_owner_their_own_link_and_never_a_strangers() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("resent");
    let api = &stack;
    let signup = |password, locale| {
        let body = json!({ "email": email, "password": password, "display_name": "x", "locale": locale });
        async move { anyhow::Ok(api.signup(&body, None).await?.json::<Value>().await?) }
    };
    let owner = signup(VICTIM_PASSWORD, "fr-FR").await?;
    let mut seen = HashSet::new();
    next_link(&stack, &email, &mut seen).await?; // the owner's mail, lost
    let stranger = signup(ATTACKER_PASSWORD, "en").await?;
    next_link(&stack, &email, &mut seen).await?; // the stranger's, which the owner did not ask for

    // Someone who knows only the address, or names an attempt the account does not have: nothing is mailed.
    let guessed = stack.resend(&email, &uuid::Uuid::now_v7().to_string()).await?.status().as_u16();
    let owners_id = owner["signup_id"].as_str().unwrap_or_default();
    let resent = stack.resend(&email, owners_id).await?.status().as_u16();
    let link = next_link(&stack, &email, &mut seen).await?;
    let confirmed = problem_type(stack.confirm(&link, VICTIM_PASSWORD).await?).await?;
    let mails = stack.smtp.messages_to(&email);
    let subject = mails.iter().find(|m| m.token().as_deref() == Some(&link)).and_then(|m| m.header("Subject"));

    assert_eq!((guessed, resent), (202, 202), "the same answer for any attempt named");
    assert_eq!(subject.as_deref(), Some("Confirmez votre adresse e-mail"), "not in the owner's language");
    assert_ne!(owner["signup_id"], stranger["signup_id"], "two attempts, two ids");
    assert_eq!(confirmed, (200, String::new()), "the resent link is not the owner's");
    assert!(verified(&stack, &email).await?, "the owner's confirm did not verify the account");
    mail_settled(&stack, 2).await?;
    assert_eq!(stack.smtp.messages_to(&email).len(), 3, "a resend naming no attempt of the account mailed");
    Ok(())
}

/// Attack: choosing the language of someone's mail. An address's language followed its newest signup attempt, a
/// stranger's included, and stayed so once the owner verified theirs: every later mail to the owner (a reset link, a
/// password-changed notice) came in the stranger's language. Now the verifying attempt's language is the account's.
/// Before: the owner's reset mail was French.
#[tokio::test]
async fn a_stranger_does_not_choose_the_language_of_the_owners_mail() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let email = unique_email("polyglot");
    let mut seen = HashSet::new();
    let body = json!({ "email": email, "password": VICTIM_PASSWORD, "display_name": "Owner", "locale": "en" });
    anyhow::ensure!(stack.signup(&body, None).await?.status() == 202, "owner's signup");
    let owners = next_link(&stack, &email, &mut seen).await?;
    let body = json!({ "email": email, "password": ATTACKER_PASSWORD, "display_name": "x", "locale": "fr" });
    anyhow::ensure!(stack.signup(&body, None).await?.status() == 202, "stranger's signup");
    next_link(&stack, &email, &mut seen).await?;
    anyhow::ensure!(stack.confirm(&owners, VICTIM_PASSWORD).await?.status() == 200, "owner's confirm");
    let reset = stack.http().post(format!("{}/v1/password-resets", stack.api_url()));
    anyhow::ensure!(reset.json(&json!({ "email": email })).send().await?.status() == 202, "reset request");
    let mail = stack.smtp.wait_for(&email, 3, DELIVERY_TIMEOUT).await?.remove(2);

    assert_eq!(mail.header("Subject").as_deref(), Some("Reset your password"), "the owner's mail is not theirs");
    Ok(())
}

/// The global budget: beyond it mail waits (it is neither sent nor lost) and the operator is told.
#[tokio::test]
async fn mail_over_the_global_budget_waits_and_goes_out_later() -> anyhow::Result<()> {
    let env = vec![("email-verification", "MAIL_GLOBAL_PER_MINUTE", "2".to_owned())];
    let stack = started(Options { env, ..Options::default() }).await?;
    let emails: Vec<String> = (0..4).map(|i| unique_email(&format!("global{i}"))).collect();
    for email in &emails {
        sign_up(&stack, email, VICTIM_PASSWORD, "Someone").await?;
    }
    stack.wait_processed(proto::Event::USER_SIGNED_UP, 4).await?;
    let ops = stack.member("email-verification").ops_port;
    eventually(DELIVERY_TIMEOUT, || async {
        let metrics = reqwest::get(format!("http://127.0.0.1:{ops}/metrics")).await?.text().await?;
        anyhow::ensure!(metrics.contains("mail_global_budget_waits_total"), "the budget has not bitten yet");
        Ok(())
    })
    .await?;
    eventually(DELIVERY_TIMEOUT, || async {
        anyhow::ensure!(stack.smtp.received() == 2, "{} mails delivered, waiting for 2", stack.smtp.received());
        Ok(())
    })
    .await?;
    let logged = stack.member("email-verification").all_stdout().iter().any(|l| l.contains("global mail budget"));

    assert!(logged, "no log line says the global budget holds mail back");
    let mut db = stack.database("email-verification").connect().await?;
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mails WHERE status = 'pending'").fetch_one(&mut db).await?;
    assert_eq!(waiting, 2, "mail over the budget was dropped");
    // Controlled time: the minute passes for the mail already sent, and the rest goes out.
    sqlx::query("UPDATE mail_budget SET second = second - interval '61 seconds'").execute(&mut db).await?;
    for email in &emails {
        stack.smtp.wait_for(email, 1, DELIVERY_TIMEOUT).await?;
    }
    Ok(())
}

/// The requester chooses the display name; an address that has not proven it is theirs never sees it, and it can
/// carry no link or hidden text anywhere (attack: a link broken up by characters that render as nothing, such as a
/// variation selector after the dot, was accepted and shown in the suggestions of everyone whose address it listed).
#[tokio::test]
async fn display_names_carry_no_links_and_never_reach_an_unproven_mailbox() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let target = unique_email("spam-target");
    // The fullwidth and ideographic ones read as a link or an address all the same; before, they were accepted.
    let names = ["Win a prize at https://evil.example", "cheap-pills.com", "call me @home", "A\u{202E}B", "x\u{200B}y"];
    let lookalikes = ["ｃｈｅａｐ－ｐｉｌｌｓ．ｃｏｍ", "evil。com", "call me ＠home", "ｈｔｔｐｓ：／／x"];
    // Characters that render as nothing broke up what readers see as a link; before, these were accepted.
    let broken_up =
        ["Prize at evil.\u{FE0F}com", "http:\u{206A}//x", "ww\u{206A}w.x", "evil.\u{17B4}com", "evil\u{1BCA0}.com"];
    for name in names.into_iter().chain(lookalikes).chain(broken_up) {
        let body = json!({ "email": target, "password": VICTIM_PASSWORD, "display_name": name });
        let response = stack.signup(&body, None).await?;
        assert_eq!(response.status(), 422, "{name:?}");
        let problem: Value = response.json().await?;
        assert!(problem["errors"].to_string().contains("display_name_invalid"), "{problem}");
    }
    // An emoji's variation selector is no link: a name may have one.
    sign_up(&stack, &unique_email("emoji"), VICTIM_PASSWORD, "Ada \u{2764}\u{FE0F}").await?;
    sign_up(&stack, &target, VICTIM_PASSWORD, "Prize Department").await?;
    let mail = stack.smtp.wait_for(&target, 1, DELIVERY_TIMEOUT).await?.remove(0);
    assert!(!mail.data.contains("Prize Department"), "the requester's text reached an unproven mailbox");
    Ok(())
}

fn person(label: &str) -> String {
    unique_email(label)
}

/// Signs up and verifies `email` with `contacts`.
async fn member(stack: &Stack, email: &str, contacts: &[&String]) -> anyhow::Result<()> {
    let body = json!({ "email": email, "password": VICTIM_PASSWORD, "display_name": email.split('-').next(),
                       "contacts": contacts });
    anyhow::ensure!(stack.signup(&body, None).await?.status() == 202, "signup of {email}");
    let link = next_link(stack, email, &mut HashSet::new()).await?;
    anyhow::ensure!(stack.confirm(&link, VICTIM_PASSWORD).await?.status() == 200, "confirm of {email}");
    Ok(())
}

async fn suggestions(stack: &Stack, session: &str) -> anyhow::Result<(u16, Value)> {
    let response = stack.get_as(session, "/v1/me/friend-suggestions?limit=100").await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// Attack: a member uploads the addresses of members v1..v4 plus one outsider t, to learn which of them have t in
/// their address books. Before, `shared_contacts` counted the overlap with each member's whole address book,
/// non-members included, and told exactly that. Now every suggestion reads the same whatever t is to them.
#[tokio::test]
async fn an_upload_of_members_and_one_outsider_learns_nothing_about_the_outsider() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let outsider = person("outsider");
    let members: Vec<String> = (1..=4).map(|i| person(&format!("v{i}"))).collect();
    for (i, email) in members.iter().enumerate() {
        // v1 and v2 know the outsider; v3 and v4 do not.
        let contacts: Vec<&String> = if i < 2 { vec![&outsider] } else { vec![] };
        member(&stack, email, &contacts).await?;
    }
    let prober = person("prober");
    let upload: Vec<&String> = members.iter().chain([&outsider]).collect();
    member(&stack, &prober, &upload).await?;
    let session = stack.session(&prober, VICTIM_PASSWORD).await?;

    let page = eventually(DELIVERY_TIMEOUT, || async {
        let (status, page) = suggestions(&stack, &session).await?;
        let count = page["suggestions"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(status == 200 && count == 4, "{status}: {page}");
        Ok(page)
    })
    .await?;

    let shapes: HashSet<String> = page["suggestions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let mut s = s.clone();
            let object = s.as_object_mut().expect("an object");
            object.remove("id");
            object.remove("display_name");
            s.to_string()
        })
        .collect();
    assert_eq!(shapes, HashSet::from([json!({ "reason": "in_your_contacts" }).to_string()]), "{page}");
    Ok(())
}

/// A member who opts out disappears from everyone's suggestions, and comes back on opting in.
#[tokio::test]
async fn a_member_who_opts_out_disappears_from_everyones_suggestions() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    let (u, v) = (person("u"), person("v"));
    member(&stack, &u, &[&v]).await?;
    member(&stack, &v, &[&u]).await?;
    let (u_session, v_session) = (stack.session(&u, VICTIM_PASSWORD).await?, stack.session(&v, VICTIM_PASSWORD).await?);
    let sees_v = |expected: bool| {
        let (stack, session) = (&stack, &u_session);
        async move {
            eventually(DELIVERY_TIMEOUT, || async {
                let (_, page) = suggestions(stack, session).await?;
                let seen = page["suggestions"].as_array().is_some_and(|s| !s.is_empty());
                anyhow::ensure!(seen == expected, "u sees v: {seen}, expected {expected}");
                Ok(())
            })
            .await
        }
    };
    sees_v(true).await?;
    let patch = |discoverable: bool| {
        let url = format!("{}/v1/me", stack.api_url());
        stack.http().patch(url).bearer_auth(&v_session).json(&json!({ "discoverable": discoverable })).send()
    };

    let off = patch(false).await?;
    assert_eq!(off.status(), 200);
    assert_eq!(off.headers()["cache-control"], "no-store");
    assert_eq!(off.json::<Value>().await?["discoverable"], false);
    sees_v(false).await?;
    assert_eq!(patch(true).await?.status(), 200);
    sees_v(true).await?;

    Ok(())
}

/// Enumeration is bounded: one account gets at most SUGGESTIONS_PER_DAY suggestions a day.
#[tokio::test]
async fn suggestions_per_account_and_day_are_bounded() -> anyhow::Result<()> {
    let env = vec![("friend-discovery", "SUGGESTIONS_PER_DAY", "2".to_owned())];
    let stack = started(Options { env, ..Options::default() }).await?;
    let known: Vec<String> = (0..3).map(|i| person(&format!("k{i}"))).collect();
    for email in &known {
        member(&stack, email, &[]).await?;
    }
    let asker = person("asker");
    member(&stack, &asker, &known.iter().collect::<Vec<_>>()).await?;
    let session = stack.session(&asker, VICTIM_PASSWORD).await?;

    let first = eventually(DELIVERY_TIMEOUT, || async {
        let (status, page) = suggestions(&stack, &session).await?;
        anyhow::ensure!(status == 200 && page["suggestions"].as_array().is_some_and(|s| !s.is_empty()), "{page}");
        Ok(page)
    })
    .await?;
    let response = stack.get_as(&session, "/v1/me/friend-suggestions").await?;

    assert_eq!(first["suggestions"].as_array().map(Vec::len), Some(2), "more than the day's budget: {first}");
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(response.json::<Value>().await?["type"], "/problems/suggestion-budget-used");
    Ok(())
}

/// Passwords that a strength estimate knows are refused with its feedback; the README's example passes.
#[tokio::test]
async fn guessable_passwords_are_refused_with_the_reason() -> anyhow::Result<()> {
    let stack = started(Options::default()).await?;
    for weak in ["aaaaaaaaaaaaaaa", "123456789012345", "passwordpassword", "qwertyuiopasdfgh"] {
        let body = json!({ "email": unique_email("weak"), "password": weak, "display_name": "Weak" });
        let response = stack.signup(&body, None).await?;
        assert_eq!(response.status(), 422, "{weak}");
        let problem: Value = response.json().await?;
        let password = problem["errors"].as_array().into_iter().flatten().find(|e| e["field"] == "password").cloned();
        let password = password.unwrap_or_default();
        assert!(
            ["password_too_guessable", "password_common"].contains(&password["code"].as_str().unwrap_or_default()),
            "{weak}: {problem}"
        );
    }
    let readme = json!({ "email": unique_email("ada"), "password": "correct horse battery staple",
                         "display_name": "Ada Lovelace" });
    assert_eq!(stack.signup(&readme, None).await?.status(), 202);
    Ok(())
}
