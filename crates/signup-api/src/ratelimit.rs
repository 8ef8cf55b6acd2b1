//! Per-client rate limits: a token bucket per client and kind of request (signups, resends, confirms, sessions,
//! reads), so no client gets more than its budget whatever it sends. Over budget: `429` problem+json with
//! `Retry-After`; every limited answer carries `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-
//! headers) so a well-behaved client can pace itself.
//!
//! The client is the TCP peer, unless the peer is a trusted proxy (`TRUSTED_PROXIES`): then it is the right-most
//! address of `X-Forwarded-For` that is not itself a trusted proxy (the left part of the header is whatever the
//! client wrote). IPv6 clients are counted per /64, the smallest block a subscriber gets, and the /64s of one /48
//! also share a bucket of `RATE_LIMIT_IPV6_48_CLIENTS` clients' budgets: whoever holds a /48 (a tunnel broker gives
//! them away) would otherwise be 65,536 clients. The buckets live in this process: each replica limits on its own,
//! and the edge (ingress, WAF) adds the global limit.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, HeaderValue, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
    middleware::StateInformationMiddleware,
};
use ipnet::IpNet;

use crate::problem::Problem;

/// The kinds of request that have budgets of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `POST /v1/signups`.
    Signups,
    /// `POST /v1/email-verifications`.
    Resends,
    /// The confirm page and the confirm.
    Confirms,
    /// What checks a password: signing in, changing the password, leaving.
    Sessions,
    /// Reading the signed-in account and changing its settings, and signing out.
    Reads,
}

impl Class {
    const ALL: [Self; 5] = [Self::Signups, Self::Resends, Self::Confirms, Self::Sessions, Self::Reads];

    /// The policy's name in the headers and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Signups => "signups",
            Self::Resends => "resends",
            Self::Confirms => "confirms",
            Self::Sessions => "sessions",
            Self::Reads => "reads",
        }
    }
}

/// A budget: `requests` per `window`, refilled evenly (a token bucket of `requests` tokens).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    class: Class,
    requests: NonZeroU32,
    window: Duration,
    /// The budget an IPv6 /48's /64s share, not one client's.
    per_48: bool,
}

impl Policy {
    /// Parses `<requests>/<seconds>`, e.g. `30/600`.
    pub fn parse(class: Class, value: &str) -> Result<Self, String> {
        let invalid = || format!("must be <requests>/<seconds>, e.g. 30/600, not {value:?}");
        let (requests, secs) = value.trim().split_once('/').ok_or_else(invalid)?;
        let requests: NonZeroU32 = requests.trim().parse().map_err(|_| invalid())?;
        let secs: u64 = secs.trim().parse().map_err(|_| invalid())?;
        if secs == 0 {
            return Err(invalid());
        }
        Ok(Self { class, requests, window: Duration::from_secs(secs), per_48: false })
    }

    /// The budget the /64s of one IPv6 /48 share: `clients` times this one, in the same window.
    fn shared_by_48(self, clients: NonZeroU32) -> Self {
        Self { requests: self.requests.saturating_mul(clients), per_48: true, ..self }
    }

    /// The policy's name in the headers and metrics: the class's, with `-ipv6-48` for a /48's shared budget.
    fn name(&self) -> String {
        let suffix = if self.per_48 { "-ipv6-48" } else { "" };
        format!("{}{suffix}", self.class.name())
    }

    fn quota(&self) -> Quota {
        let period = (self.window / self.requests.get()).max(Duration::from_nanos(1));
        Quota::with_period(period).unwrap_or_else(|| Quota::per_second(self.requests)).allow_burst(self.requests)
    }

    /// `RateLimit-Policy`: the policy's name, its quota and its window in seconds.
    fn header(&self) -> String {
        format!("\"{}\";q={};w={}", self.name(), self.requests, self.window.as_secs())
    }
}

/// Every budget, and which peers may speak for the client.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// One policy per [`Class`], in the order of `Class::ALL`.
    pub policies: [Policy; 5],
    /// `RATE_LIMIT_IPV6_48_CLIENTS`: how many clients' budgets the /64s of one IPv6 /48 share.
    pub ipv6_48_clients: NonZeroU32,
    /// `TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

type Limiter = DefaultKeyedRateLimiter<IpAddr, StateInformationMiddleware>;

/// The buckets of every client, per class. Cloning shares them.
#[derive(Clone)]
pub struct RateLimits {
    inner: Arc<Inner>,
}

struct Inner {
    /// Per class: the client's bucket, and the bucket its IPv6 /48 shares.
    limiters: Vec<[(Policy, Limiter); 2]>,
    trusted_proxies: Vec<IpNet>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let policies: Vec<_> = self.inner.limiters.iter().flatten().map(|(policy, _)| policy).collect();
        f.debug_struct("RateLimits").field("policies", &policies).finish_non_exhaustive()
    }
}

impl RateLimits {
    /// Empty buckets for `settings`.
    pub fn new(settings: &RateLimitSettings) -> Self {
        let limiter = |policy: Policy| {
            (policy, RateLimiter::keyed(policy.quota()).with_middleware::<StateInformationMiddleware>())
        };
        let limiters = settings
            .policies
            .iter()
            .map(|policy| [limiter(*policy), limiter(policy.shared_by_48(settings.ipv6_48_clients))])
            .collect();
        Self { inner: Arc::new(Inner { limiters, trusted_proxies: settings.trusted_proxies.clone() }) }
    }

    /// Forgets clients whose buckets are full again, so memory follows the clients of the last window only.
    pub fn forget_idle(&self) {
        for (_, limiter) in self.inner.limiters.iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Takes one token of `class` for the client `key` (a [`bucket`]) and, for an IPv6 client that got it, one of
    /// its /48's shared bucket. The client's own bucket is asked first, so a client over its budget spends nothing of
    /// its neighbours'; a request the /48's bucket refuses has spent the client's own token all the same (buckets
    /// give nothing back), so a /64 of a busy /48 may wait for both to refill. The verdict is the one that refused,
    /// or the one with fewer tokens left.
    fn check(&self, class: Class, key: IpAddr) -> Verdict {
        let index = Class::ALL.iter().position(|c| *c == class).unwrap_or_default();
        let [client, shared] = &self.inner.limiters[index];
        let own = Self::take(client, key);
        let IpAddr::V6(v6) = key else { return own };
        if !own.allowed {
            return own;
        }
        let network = Self::take(shared, IpAddr::V6(prefix(v6, 48)));
        if !network.allowed || network.remaining < own.remaining { network } else { own }
    }

    fn take((policy, limiter): &(Policy, Limiter), key: IpAddr) -> Verdict {
        let period = policy.window / policy.requests.get();
        match limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let refill = period * policy.requests.get().saturating_sub(remaining);
                Verdict { policy: *policy, remaining, reset: refill, allowed: true }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Verdict { policy: *policy, remaining: 0, reset: wait, allowed: false }
            }
        }
    }
}

/// What one check decided, and what the headers say about it.
struct Verdict {
    policy: Policy,
    remaining: u32,
    reset: Duration,
    allowed: bool,
}

impl Verdict {
    fn reset_secs(&self) -> u64 {
        self.reset.as_secs() + u64::from(self.reset.subsec_nanos() > 0)
    }

    fn annotate(&self, headers: &mut HeaderMap) {
        let policy = self.policy.header();
        let state = format!("\"{}\";r={};t={}", self.policy.name(), self.remaining, self.reset_secs());
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
}

/// The middleware in front of the request's span: a trace context is continued only when the request came through
/// a proxy of ours (`TRUSTED_PROXIES`); a client's own is taken off, and linked
/// ([`platform::propagation::take_untrusted`]).
pub async fn trace_context(State(limits): State<RateLimits>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| canonical(info.0.ip()));
    let trusted = peer.is_some_and(|ip| limits.inner.trusted_proxies.iter().any(|net| net.contains(&ip)));
    if !trusted && let Some(link) = platform::propagation::take_untrusted(request.headers_mut()) {
        request.extensions_mut().insert(link);
    }
    next.run(request).await
}

/// The middleware: one token of `class` per request, or `429` without calling the handler. The handler finds the
/// client it counted against as the [`Client`] extractor.
pub async fn limit(State((limits, class)): State<(RateLimits, Class)>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let key = bucket(client(peer, request.headers(), &limits.inner.trusted_proxies));
    let verdict = limits.check(class, key);
    let mut response = if verdict.allowed {
        request.extensions_mut().insert(Client(Some(key)));
        next.run(request).await
    } else {
        metrics::counter!("rate_limited_total", "class" => class.name(), "per_48" => verdict.policy.per_48.to_string())
            .increment(1);
        let whose = if verdict.policy.per_48 { "this client's IPv6 /48 has" } else { "this client has" };
        Problem::of(&crate::problem::types::RATE_LIMITED)
            .with_detail(format!("{whose} used its {} budget; see Retry-After", class.name()))
            .with_retry_after(verdict.reset_secs().max(1))
            .into_response()
    };
    verdict.annotate(response.headers_mut());
    response
}

/// The client a request counted against, as [`limit`] found it (its IPv4 address or its IPv6 /64); unknown for a
/// request that did not pass the limiter. Whatever counts per client beyond this process (sign-in failures, an
/// address's attempts and mail) counts an IPv6 client per /48: a subscriber holds a /64 at least and often a /56 or
/// a /48 (tunnel brokers give /48s away), so a /64 would let one subscriber be thousands of clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client(Option<IpAddr>);

impl Client {
    /// The client under `hasher`'s key, as the services count it (an IPv6 client by its /48): empty when unknown.
    pub(crate) fn hash(self, hasher: &crate::contacts::KeyedHasher) -> Vec<u8> {
        let octets = match self.0 {
            Some(IpAddr::V4(v4)) => v4.octets().to_vec(),
            Some(IpAddr::V6(v6)) => prefix(v6, 48).octets().to_vec(),
            None => return Vec::new(),
        };
        hasher.mac(b"client\0", &octets)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Client>().copied().unwrap_or(Client(None)))
    }
}

/// The client a request is from: the peer, or, when the peer is a trusted proxy, the right-most address of
/// `X-Forwarded-For` that is not a trusted proxy (with or without a port, as proxies write it). The header is read
/// from the right, where our proxies append, and only as far as it can be read: anything left of an entry that is
/// not an address is the client's own word, so such an entry makes the peer the client. Without a peer (a request
/// built in a test), the unspecified address.
pub fn client(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    // Split before decoding: bytes the client wrote that are not text spoil only its own entries, never the ones
    // our proxies appended to the same line.
    let forwarded = headers.get_all("x-forwarded-for").iter().map(HeaderValue::as_bytes);
    let hops: Vec<&[u8]> = forwarded.flat_map(|value| value.split(|byte| *byte == b',')).collect();
    for hop in hops.into_iter().rev() {
        match std::str::from_utf8(hop).ok().and_then(|hop| hop_address(hop.trim())) {
            Some(ip) if is_trusted(&ip) => {}
            Some(ip) => return ip,
            None => return peer,
        }
    }
    peer
}

/// One `X-Forwarded-For` entry's address: `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:443`.
fn hop_address(hop: &str) -> Option<IpAddr> {
    let bracketed = || hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok();
    hop.parse().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|address| address.ip())).or_else(bracketed)
}

/// The bucket a client counts against: its IPv4 address, or the /64 of its IPv6 address.
fn bucket(client: IpAddr) -> IpAddr {
    match canonical(client) {
        IpAddr::V6(v6) => IpAddr::V6(prefix(v6, 64)),
        v4 => v4,
    }
}

/// The network of `address`'s first `bits` bits (at most 128).
fn prefix(address: Ipv6Addr, bits: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(address) & u128::MAX.checked_shl(128 - bits).unwrap_or(0))
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as the IPv4 addresses they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_forwarded_address_counts_only_from_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let headers = forwarded("198.51.100.7, 203.0.113.9, 10.1.2.3");

        assert_eq!(client(Some(ip("10.9.9.9")), &headers, &trusted), ip("203.0.113.9"));
        assert_eq!(client(Some(ip("192.0.2.1")), &headers, &trusted), ip("192.0.2.1"), "an untrusted peer");
        assert_eq!(client(Some(ip("10.9.9.9")), &HeaderMap::new(), &trusted), ip("10.9.9.9"), "no header");
        assert_eq!(client(Some(ip("10.9.9.9")), &forwarded("garbage"), &trusted), ip("10.9.9.9"));
        assert_eq!(client(Some(ip("::ffff:10.9.9.9")), &headers, &trusted), ip("203.0.113.9"), "v4-mapped peer");
    }

    #[test]
    fn a_proxy_that_writes_ports_is_read_and_nothing_left_of_an_unreadable_entry_is_believed() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy = Some(ip("10.9.9.9"));
        let cases = [
            ("203.0.113.1, 198.51.100.7:443", "198.51.100.7"),
            ("203.0.113.1, [2001:db8::7]:443, 10.1.2.3:80", "2001:db8::7"),
            ("[2001:db8::8]", "2001:db8::8"),
            // The client's own entries (left) are skipped only when they are trusted proxies, never when unreadable.
            ("203.0.113.1, not-an-address", "10.9.9.9"),
            ("203.0.113.1, , 10.1.2.3", "10.9.9.9"),
        ];
        for (header, expected) in cases {
            assert_eq!(client(proxy, &forwarded(header), &trusted), ip(expected), "{header}");
        }
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_v4_mapped_ones_are_v4() {
        assert_eq!(bucket(ip("2001:db8:1:2:aaaa::1")), bucket(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(bucket(ip("2001:db8:1:2::1")), bucket(ip("2001:db8:1:3::1")));
        assert_eq!(bucket(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn a_client_gets_its_budget_then_429s_and_others_are_unaffected() {
        let policy = Policy::parse(Class::Signups, "2/60").unwrap();
        let settings =
            RateLimitSettings { policies: [policy; 5], ipv6_48_clients: NonZeroU32::MIN, trusted_proxies: Vec::new() };
        let limits = RateLimits::new(&settings);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));

        let verdicts: Vec<bool> = (0..3).map(|_| limits.check(Class::Signups, a).allowed).collect();
        let other = limits.check(Class::Signups, b);
        let other_class = limits.check(Class::Reads, a);

        assert_eq!(verdicts, [true, true, false]);
        assert!(other.allowed && other_class.allowed);
        let denied = limits.check(Class::Signups, a);
        let mut headers = HeaderMap::new();
        denied.annotate(&mut headers);
        assert_eq!(headers["ratelimit-policy"], "\"signups\";q=2;w=60");
        assert!(headers["ratelimit"].to_str().unwrap().starts_with("\"signups\";r=0;t="), "{:?}", headers["ratelimit"]);
        assert!((1..=30).contains(&denied.reset_secs()), "{}", denied.reset_secs());
    }

    #[test]
    fn the_64s_of_one_48_share_a_budget_and_a_client_over_its_own_spends_none_of_it() {
        let policy = Policy::parse(Class::Signups, "2/60").unwrap();
        let clients = NonZeroU32::new(3).unwrap();
        let limits = RateLimits::new(&RateLimitSettings {
            policies: [policy; 5],
            ipv6_48_clients: clients,
            trusted_proxies: Vec::new(),
        });
        let take = |client: &str| limits.check(Class::Signups, bucket(ip(client))).allowed;

        // One /64 over its own budget: its third request is refused by its own bucket, not the /48's.
        let greedy: Vec<bool> = (0..3).map(|_| take("2001:db8:1:1::1")).collect();
        // Two more /64s of the /48 take the four tokens the /48 has left; the next /64 finds it empty.
        let neighbours: Vec<bool> = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:3::1", "2001:db8:1:3::2"]
            .into_iter()
            .map(take)
            .collect();
        let denied = limits.check(Class::Signups, bucket(ip("2001:db8:1:4::1")));

        assert_eq!(greedy, [true, true, false]);
        assert_eq!(neighbours, [true; 4]);
        assert!(!denied.allowed);
        let mut headers = HeaderMap::new();
        denied.annotate(&mut headers);
        assert_eq!(headers["ratelimit-policy"], "\"signups-ipv6-48\";q=6;w=60");
        assert!(take("2001:db8:2:1::1"), "another /48 was limited");
        assert!(take("192.0.2.1"), "an IPv4 client was limited");
    }

    #[test]
    fn policies_parse_and_bad_ones_say_why() {
        assert!(Policy::parse(Class::Reads, " 300 / 60 ").is_ok());
        for bad in ["", "30", "0/60", "30/0", "x/60", "30/y"] {
            assert!(Policy::parse(Class::Reads, bad).is_err(), "{bad}");
        }
    }
}
