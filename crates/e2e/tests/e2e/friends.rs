//! Friend suggestions through the real stack: signups with contacts, verification by the mailed link, and
//! `GET /v1/me/friend-suggestions`; plus events published by hand to check order independence, redelivery and
//! deletion.

use e2e::{
    broker::{Tap, publish},
    poll::eventually,
    stack::{CONTACT_HASH_KEY, DELIVERY_TIMEOUT, Options, Stack},
};
use platform::events::Envelope;
use prost::Message as _;
use proto::events::v1::{DiscoverabilityChanged, EmailVerified, UserDeleted, UserSignedUp};
use serde_json::{Value, json};
use signup_api::{contacts::KeyedHasher, domain::email::Email};

const PASSWORD: &str = "correct horse battery staple";

/// A person in a test: a unique email under a short name.
#[derive(Debug, Clone)]
struct Person {
    name: &'static str,
    email: String,
}

fn person(name: &'static str) -> Person {
    Person { name, email: format!("{name}-{}@example.com", uuid::Uuid::now_v7().simple()) }
}

async fn started() -> anyhow::Result<Stack> {
    let mut stack = Stack::start_with(Options::default()).await?;
    stack.wait_ready().await?;
    Ok(stack)
}

/// Signs `who` up with `contacts`, and confirms the mailed link when `verify`.
async fn join(
    stack: &Stack,
    who: &Person,
    contacts: &[&Person],
    discoverable: bool,
    verify: bool,
) -> anyhow::Result<()> {
    let body = json!({
        "email": who.email, "password": PASSWORD, "display_name": who.name,
        "contacts": contacts.iter().map(|c| c.email.as_str()).collect::<Vec<_>>(), "discoverable": discoverable,
    });
    let response = stack.signup(&body, None).await?;
    anyhow::ensure!(response.status() == 202, "signup of {} answered {}", who.name, response.status());
    if verify {
        let mail = stack.smtp.wait_for(&who.email, 1, DELIVERY_TIMEOUT).await?.remove(0);
        let confirmed = stack.confirm(&mail.token().unwrap_or_default(), PASSWORD).await?;
        anyhow::ensure!(confirmed.status() == 200, "confirm of {} answered {}", who.name, confirmed.status());
    }
    Ok(())
}

/// One page of suggestions for the session `session` as `(name, reason)`, and the next page token.
async fn page(
    stack: &Stack,
    session: &str,
    limit: u32,
    token: Option<&str>,
) -> anyhow::Result<(Vec<(String, String)>, Option<String>)> {
    let mut path = format!("/v1/me/friend-suggestions?limit={limit}");
    if let Some(token) = token {
        path.push_str(&format!("&page_token={token}"));
    }
    let response = stack.get_as(session, &path).await?;
    anyhow::ensure!(response.status() == 200, "suggestions answered {}", response.status());
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await?;
    let suggestions = body["suggestions"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no suggestions array in {body}"))?
        .iter()
        .map(|s| {
            assert_eq!(s.as_object().map(|o| o.len()), Some(3), "a suggestion says who and why, nothing more: {s}");
            let field = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
            (field("display_name"), field("reason"))
        })
        .collect();
    Ok((suggestions, body["next_page_token"].as_str().map(str::to_owned)))
}

/// Waits until `who`'s first page is exactly `expected`.
async fn expect(stack: &Stack, who: &Person, expected: &[(&str, &str)]) -> anyhow::Result<()> {
    let expected: Vec<(String, String)> = expected.iter().map(|(n, r)| ((*n).to_owned(), (*r).to_owned())).collect();
    let session = stack.session(&who.email, PASSWORD).await?;
    eventually(DELIVERY_TIMEOUT, || async {
        let (got, _) = page(stack, &session, 100, None).await?;
        anyhow::ensure!(got == expected, "{} sees {got:?}, expected {expected:?}", who.name);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn suggestions_give_each_reason_in_order_and_skip_unverified_and_opted_out_users() -> anyhow::Result<()> {
    let stack = started().await?;
    let [u, a, b, c, d, f, g, h, o, x, y] = ["u", "a", "b", "c", "d", "f", "g", "h", "o", "x", "y"].map(person);
    // x and y never sign up: they are only contacts that u shares with others.
    join(&stack, &u, &[&a, &b, &c, &h, &o, &x, &y], true, true).await?;
    join(&stack, &a, &[&u, &x, &y], true, true).await?; // mutual
    join(&stack, &b, &[], true, true).await?; // in u's contacts
    join(&stack, &c, &[&u], true, true).await?; // mutual, newer
    join(&stack, &d, &[&u, &x], true, true).await?; // has u
    join(&stack, &f, &[&u], true, true).await?; // has u, newer
    join(&stack, &g, &[&u], true, true).await?; // has u, newest
    join(&stack, &h, &[&u], true, false).await?; // never verified
    join(&stack, &o, &[&u], false, true).await?; // opted out

    let expected = [
        ("c", "mutual"),
        ("a", "mutual"),
        ("g", "has_you_in_contacts"),
        ("f", "has_you_in_contacts"),
        ("d", "has_you_in_contacts"),
        ("b", "in_your_contacts"),
    ];
    expect(&stack, &u, &expected).await?;

    // Pages of two follow the same order and end with no token.
    let session = stack.session(&u.email, PASSWORD).await?;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..3 {
        let (suggestions, next) = page(&stack, &session, 2, token.as_deref()).await?;
        assert_eq!(suggestions.len(), 2);
        seen.extend(suggestions.into_iter().map(|(name, _)| name));
        token = next;
    }
    assert_eq!(seen, ["c", "a", "g", "f", "d", "b"]);
    assert_eq!(token, None);

    // The opted-out user still gets their own suggestions; the unverified one cannot sign in to ask.
    expect(&stack, &o, &[("u", "mutual")]).await?;
    assert_eq!(stack.sign_in(&h.email, PASSWORD).await?.status(), 401);
    assert_eq!(stack.get_as(&session, "/v1/me/friend-suggestions?page_token=nope").await?.status(), 400);
    Ok(())
}

/// Attack: learning from "people you may know" when each person shown first signed up, and a handle on them that
/// is the same for everyone. A user id is a UUID v7 (its first 48 bits are the time), and pages named each
/// suggestion by it, and the page token held the last one's in plain base64. Now a suggestion's `id` is a keyed hash
/// of viewer and member, and the token is sealed for its viewer. Before: eve's first page carried bob's user id.
#[tokio::test]
async fn suggestions_name_nobody_by_their_user_id_and_page_tokens_are_sealed_for_their_viewer() -> anyhow::Result<()> {
    let stack = started().await?;
    let [ada, bob, cy, eve] = ["ada", "bob", "cy", "eve"].map(person);
    join(&stack, &ada, &[], true, true).await?;
    join(&stack, &bob, &[], true, true).await?;
    join(&stack, &eve, &[&ada, &bob], true, true).await?;
    join(&stack, &cy, &[&ada], true, true).await?;
    expect(&stack, &eve, &[("bob", "in_your_contacts"), ("ada", "in_your_contacts")]).await?;
    expect(&stack, &cy, &[("ada", "in_your_contacts")]).await?;
    let mut user_ids = Vec::new();
    for member in [&ada, &bob] {
        let me: Value = stack.me(&stack.session(&member.email, PASSWORD).await?).await?.json().await?;
        let id = uuid::Uuid::parse_str(me["user_id"].as_str().unwrap_or_default())?;
        user_ids.extend([id.hyphenated().to_string(), id.simple().to_string()]);
    }
    let (eve_session, cy_session) =
        (stack.session(&eve.email, PASSWORD).await?, stack.session(&cy.email, PASSWORD).await?);
    let raw = |session: String, query: String| {
        let stack = &stack;
        async move {
            let response = stack.get_as(&session, &format!("/v1/me/friend-suggestions?{query}")).await?;
            Ok::<_, anyhow::Error>((response.status(), response.json::<Value>().await?))
        }
    };

    let (status, first) = raw(eve_session.clone(), "limit=1".into()).await?;
    assert_eq!(status, 200, "{first}");
    let token = first["next_page_token"].as_str().unwrap_or_default().to_owned();
    let (status, second) = raw(eve_session.clone(), format!("limit=1&page_token={token}")).await?;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        (first["suggestions"][0]["display_name"].as_str(), second["suggestions"][0]["display_name"].as_str()),
        (Some("bob"), Some("ada")),
        "the sealed token still pages"
    );
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &token).unwrap_or_default();
    let shown = [first.to_string(), second.to_string(), String::from_utf8_lossy(&decoded).into_owned()].join("\n");
    for user_id in &user_ids {
        assert!(!shown.to_lowercase().contains(user_id), "a page or its token carries the user id {user_id}: {shown}");
    }

    let ada_for_eve = second["suggestions"][0]["id"].as_str().unwrap_or_default().to_owned();
    let (_, again) = raw(eve_session, "limit=2".into()).await?;
    assert_eq!(again["suggestions"][1]["id"].as_str(), Some(ada_for_eve.as_str()), "an id is stable for its viewer");
    let (_, cys) = raw(cy_session.clone(), "limit=1".into()).await?;
    let ada_for_cy = cys["suggestions"][0]["id"].as_str().unwrap_or_default();
    assert!(!ada_for_eve.is_empty() && ada_for_eve != ada_for_cy, "two viewers see one member under one id");

    let (status, refused) = raw(cy_session, format!("limit=1&page_token={token}")).await?;
    assert_eq!(status, 400, "another viewer's page token was taken: {refused}");
    Ok(())
}

/// Attack: hiding someone's real "people you may know". The members who have someone in their contacts were taken
/// newest first and only then filtered for who may be shown, so a crowd of new opted-out accounts listing a victim
/// filled the window (`SUGGESTION_SOURCES`, 1,000 by default; 2 here) and the victim's genuine contacts were never
/// suggested. Now the window holds only members who may be shown. Before (the old query with the window at 2):
/// the victim saw nothing.
#[tokio::test]
async fn opted_out_accounts_listing_someone_do_not_hide_their_real_contacts() -> anyhow::Result<()> {
    let env = vec![("friend-discovery", "SUGGESTION_SOURCES", "2".to_owned())];
    let mut stack = Stack::start_with(Options { env, ..Options::default() }).await?;
    stack.wait_ready().await?;
    let [victim, friend, h1, h2, h3] = ["victim", "friend", "h1", "h2", "h3"].map(person);
    join(&stack, &victim, &[], true, true).await?;
    join(&stack, &friend, &[&victim], true, true).await?; // the genuine one, oldest
    for hidden in [&h1, &h2, &h3] {
        join(&stack, hidden, &[&victim], false, true).await?;
    }
    expect(&stack, &victim, &[("friend", "has_you_in_contacts")]).await
}

#[tokio::test]
async fn suggestions_do_not_depend_on_the_order_of_signups_and_verifications() -> anyhow::Result<()> {
    let stack = started().await?;
    // First pair: b (who has a in contacts) signs up and verifies before a exists.
    let (a1, b1) = (person("a1"), person("b1"));
    join(&stack, &b1, &[&a1], true, true).await?;
    join(&stack, &a1, &[], true, true).await?;
    // Second pair: a signs up first, b after.
    let (a2, b2) = (person("a2"), person("b2"));
    join(&stack, &a2, &[], true, true).await?;
    join(&stack, &b2, &[&a2], true, true).await?;
    // Third pair: b signs up, a signs up, and only then does b verify.
    let (a3, b3) = (person("a3"), person("b3"));
    join(&stack, &b3, &[&a3], true, false).await?;
    join(&stack, &a3, &[], true, true).await?;
    let mail = stack.smtp.wait_for(&b3.email, 1, DELIVERY_TIMEOUT).await?.remove(0);
    assert_eq!(stack.confirm(&mail.token().unwrap_or_default(), PASSWORD).await?.status(), 200);

    for (a, b) in [(&a1, &b1), (&a2, &b2), (&a3, &b3)] {
        expect(&stack, a, &[(b.name, "has_you_in_contacts")]).await?;
        expect(&stack, b, &[(a.name, "in_your_contacts")]).await?;
    }
    Ok(())
}

/// Publishes one event as user-metadata would.
async fn announce(stack: &Stack, kind: &str, data: Vec<u8>) -> anyhow::Result<uuid::Uuid> {
    let id = uuid::Uuid::now_v7();
    let time = chrono::Utc::now();
    let envelope =
        Envelope { id, kind: kind.to_owned(), source: "/e2e".to_owned(), time, data, trace: Default::default() };
    publish(&stack.exchange, envelope.properties(), &envelope.data).await?;
    Ok(id)
}

async fn processed(stack: &Stack, id: uuid::Uuid) -> anyhow::Result<()> {
    eventually(DELIVERY_TIMEOUT, || async {
        let mut db = stack.database("friend-discovery").connect().await?;
        let seen: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_id = $1)")
            .bind(id)
            .fetch_one(&mut db)
            .await?;
        anyhow::ensure!(seen, "event {id} not processed yet");
        Ok(())
    })
    .await
}

/// A consumer's batch waits `EVENTS_BATCH_LINGER_MS` after its first delivery: events published apart within it are
/// applied in one transaction (one `processed_at`: the transaction's time), and one published once that batch is
/// applied goes in another.
#[tokio::test]
async fn events_arriving_within_the_batch_linger_are_applied_in_one_transaction() -> anyhow::Result<()> {
    let env = vec![("friend-discovery", "EVENTS_BATCH_LINGER_MS", "1000".to_owned())];
    let mut stack = Stack::start_with(Options { env, ..Options::default() }).await?;
    stack.wait_ready().await?;
    let deleted = || UserDeleted { user_id: uuid::Uuid::now_v7().to_string(), ..Default::default() }.encode_to_vec();

    let first = announce(&stack, proto::Event::USER_DELETED, deleted()).await?;
    // Apart, and well within the linger: what the test is about, not a wait for something to happen.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let second = announce(&stack, proto::Event::USER_DELETED, deleted()).await?;
    processed(&stack, second).await?;
    let third = announce(&stack, proto::Event::USER_DELETED, deleted()).await?;
    processed(&stack, third).await?;

    let mut db = stack.database("friend-discovery").connect().await?;
    let applied: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT processed_at FROM processed_events WHERE event_id = ANY($1) ORDER BY event_id")
            .bind([first, second, third])
            .fetch_all(&mut db)
            .await?;
    assert_eq!(applied.len(), 3);
    assert_eq!(applied[0], applied[1], "published 200 ms apart, within the linger, and applied apart");
    assert!(applied[2] > applied[1], "published after the batch was applied, and applied with it");
    Ok(())
}

#[tokio::test]
async fn a_verification_that_overtakes_its_signup_is_kept_and_a_deleted_user_disappears() -> anyhow::Result<()> {
    let stack = started().await?;
    let (u, v) = (person("u"), person("v"));
    let hasher = KeyedHasher::new(secrecy::SecretString::from(CONTACT_HASH_KEY));
    let hash = |p: &Person| Email::parse(&p.email).map(|e| hasher.hash(&e));
    join(&stack, &u, &[&v], true, true).await?;

    // v exists only as events, and its EmailVerified arrives before its UserSignedUp.
    let user_id = uuid::Uuid::now_v7().to_string();
    let signup_id = uuid::Uuid::now_v7().to_string();
    let verified = EmailVerified {
        user_id: user_id.clone(),
        signup_id: signup_id.clone(),
        verified_at: Some(platform::time::to_proto(chrono::Utc::now())),
        ..Default::default()
    };
    let id = announce(&stack, proto::Event::EMAIL_VERIFIED, verified.encode_to_vec()).await?;
    processed(&stack, id).await?;
    let signed_up = UserSignedUp {
        user_id: user_id.clone(),
        signup_id,
        email: v.email.clone(),
        display_name: "v".to_owned(),
        email_hash: hash(&v)?,
        contact_hashes: vec![hash(&u)?],
        discoverable: true,
        ..Default::default()
    };
    let id = announce(&stack, proto::Event::USER_SIGNED_UP, signed_up.encode_to_vec()).await?;
    processed(&stack, id).await?;
    expect(&stack, &u, &[("v", "mutual")]).await?;

    let deleted = UserDeleted { user_id, ..Default::default() };
    let id = announce(&stack, proto::Event::USER_DELETED, deleted.encode_to_vec()).await?;
    processed(&stack, id).await?;
    expect(&stack, &u, &[]).await?;
    // A late signup event for the deleted user does not bring them back.
    let id = announce(&stack, proto::Event::USER_SIGNED_UP, signed_up.encode_to_vec()).await?;
    processed(&stack, id).await?;
    expect(&stack, &u, &[]).await?;
    Ok(())
}

/// Attack on an opt-out: the signup's choice and the later opt-out were ordered by their UUID v7 ids, one from
/// signup-api's clock (the attempt's id) and one from user-metadata's (the event's id). With signup-api's clock ten
/// minutes ahead, an opt-out within ten minutes of signing up lost to the signup's choice, whichever arrived first,
/// and the member who opted out was still suggested to others. A choice made at signup never outranks a change the
/// member made since: every change is made by a verified member, after the verification.
#[tokio::test]
async fn an_opt_out_soon_after_signing_up_holds_whatever_the_clocks_say() -> anyhow::Result<()> {
    let stack = started().await?;
    let (u, x) = (person("u"), person("x"));
    let hasher = KeyedHasher::new(secrecy::SecretString::from(CONTACT_HASH_KEY));
    let hash = |p: &Person| Email::parse(&p.email).map(|e| hasher.hash(&e));
    join(&stack, &u, &[], true, true).await?;
    // A member who lists u and never opts out: shown, so an empty page cannot pass for a broken one.
    join(&stack, &x, &[&u], true, true).await?;
    stack.wait_processed(proto::Event::EMAIL_VERIFIED, 2).await?;

    // Two members who list u, each opting out soon after verifying: the opt-out arrives after the verification
    // (v) or before it (w, events overtake each other).
    let ahead = chrono::Utc::now() + chrono::Duration::minutes(10);
    let ahead = uuid::Timestamp::from_unix(uuid::NoContext, ahead.timestamp() as u64, ahead.timestamp_subsec_nanos());
    for (name, opt_out_first) in [("v", false), ("w", true)] {
        let member = person(name);
        let user_id = uuid::Uuid::now_v7().to_string();
        let signed_up = UserSignedUp {
            user_id: user_id.clone(),
            signup_id: uuid::Uuid::new_v7(ahead).to_string(),
            email: member.email.clone(),
            display_name: name.to_owned(),
            email_hash: hash(&member)?,
            contact_hashes: vec![hash(&u)?],
            discoverable: true,
            ..Default::default()
        };
        let verified = EmailVerified {
            user_id: user_id.clone(),
            signup_id: signed_up.signup_id.clone(),
            verified_at: Some(platform::time::to_proto(chrono::Utc::now())),
            ..Default::default()
        };
        let opt_out = DiscoverabilityChanged { user_id, discoverable: false, ..Default::default() };
        let mut events = vec![
            (proto::Event::USER_SIGNED_UP, signed_up.encode_to_vec()),
            (proto::Event::EMAIL_VERIFIED, verified.encode_to_vec()),
        ];
        let opt_out = (proto::Event::DISCOVERABILITY_CHANGED, opt_out.encode_to_vec());
        if opt_out_first {
            events.insert(0, opt_out)
        } else {
            events.push(opt_out)
        }
        for (kind, data) in events {
            let id = announce(&stack, kind, data).await?;
            processed(&stack, id).await?;
        }
    }

    // Every event is applied: one read tells (polling would spend u's suggestions for the day).
    let session = stack.session(&u.email, PASSWORD).await?;
    let (shown, _) = page(&stack, &session, 100, None).await?;
    let expected = [("x".to_owned(), "has_you_in_contacts".to_owned())];
    assert_eq!(shown, expected, "members who opted out are suggested (or the one who did not is not)");
    Ok(())
}

#[tokio::test]
async fn redelivered_events_change_no_suggestion() -> anyhow::Result<()> {
    let stack = started().await?;
    let tap = Tap::attach(&stack.exchange).await?;
    let (u, v) = (person("u"), person("v"));
    join(&stack, &u, &[&v], true, true).await?;
    join(&stack, &v, &[&u], true, true).await?;
    expect(&stack, &u, &[("v", "mutual")]).await?;
    let before: i64 = stack.processed("friend-discovery", None).await?;

    for message in tap.seen() {
        publish(&stack.exchange, message.properties.clone(), &message.data).await?;
    }
    let member = stack.member("friend-discovery");
    eventually(DELIVERY_TIMEOUT, || async {
        let redeliveries = member.all_stdout().iter().filter(|l| l.contains("event already applied")).count();
        anyhow::ensure!(redeliveries as i64 >= before, "{redeliveries} of {before} redeliveries consumed");
        Ok(())
    })
    .await?;

    assert_eq!(stack.processed("friend-discovery", None).await?, before);
    expect(&stack, &u, &[("v", "mutual")]).await?;
    expect(&stack, &v, &[("u", "mutual")]).await?;
    tap.close().await;
    Ok(())
}

#[tokio::test]
async fn a_canary_contact_appears_in_no_database_log_line_message_or_mail() -> anyhow::Result<()> {
    let stack = started().await?;
    let tap = Tap::attach(&stack.exchange).await?;
    // The canary never signs up: it exists only in u's upload. v does, so the edges are used for real.
    let (u, v, canary) = (person("u"), person("v"), person("canary-contact"));
    join(&stack, &u, &[&canary, &v], true, true).await?;
    join(&stack, &v, &[], true, true).await?;
    expect(&stack, &u, &[("v", "in_your_contacts")]).await?;

    let mut db = stack.database("friend-discovery").connect().await?;
    let edges: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts").fetch_one(&mut db).await?;
    assert_eq!(edges, 2, "both uploaded contacts are stored, as hashes");
    let hex: String = canary.email.bytes().map(|b| format!("{b:02x}")).collect();
    let needles = [canary.email.clone(), hex];
    for member in &stack.members {
        let output = [member.all_stdout(), member.process.stderr_lines()].concat().join("\n");
        for needle in &needles {
            assert!(!output.contains(needle.as_str()), "{} logged the canary", member.process.name());
        }
    }
    for database in stack.databases() {
        let dump = database.dump().await?;
        for needle in &needles {
            assert!(!dump.contains(needle.as_str()), "database {} holds the canary", database.name());
        }
    }
    for message in tap.seen() {
        let text = format!("{:?} {}", message.properties, String::from_utf8_lossy(&message.data));
        assert!(!text.contains(&canary.email), "a message carries the canary");
    }
    for mail in stack.smtp.messages() {
        assert!(!mail.data.contains(&canary.email), "a mail carries the canary");
    }
    tap.close().await;
    Ok(())
}
