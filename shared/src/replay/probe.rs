//! Endpoint health probes: one request per distinct endpoint, concurrently with a bound. Healthy
//! means an HTTP answer below 500 within the timeout. Only http(s) to public addresses is probed:
//! the host is resolved once, every address is checked against the refused ranges (unless an
//! allowlisted CIDR contains it), and the request connects to exactly the checked addresses (the
//! client's resolver only answers from the checked set), so DNS rebinding cannot slip past.

use super::config::ProbeConfig;
use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The outcome of probing one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub endpoint: String,
    pub healthy: bool,
    /// The HTTP status, when the endpoint answered.
    pub status: Option<u16>,
    /// Why it is not healthy: `refused-target: ...`, `invalid-url: ...`, `timeout`,
    /// `connect-failed: ...`, `server-error`.
    pub reason: Option<String>,
    pub elapsed_ms: u64,
}

impl ProbeResult {
    fn unhealthy(endpoint: &str, reason: String, started: Instant) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            healthy: false,
            status: None,
            reason: Some(reason),
            elapsed_ms: elapsed_ms(started),
        }
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Checks one endpoint's health.
#[async_trait::async_trait]
pub trait EndpointProbe: Send + Sync {
    async fn probe(&self, endpoint: &str) -> ProbeResult;
}

/// The endpoint a delivery URL belongs to: scheme, host, port and path (no query, no fragment,
/// no credentials). Deliveries with the same key share one probe.
pub fn endpoint_key(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

/// Why an address is refused, or `None` when it is a public unicast address.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [0, ..] => "unspecified (0.0.0.0/8)",
        [127, ..] => "loopback (127.0.0.0/8)",
        [10, ..] => "private (10.0.0.0/8)",
        [172, b, ..] if (16..=31).contains(&b) => "private (172.16.0.0/12)",
        [192, 168, ..] => "private (192.168.0.0/16)",
        [100, b, ..] if (64..=127).contains(&b) => "carrier-grade NAT (100.64.0.0/10)",
        [169, 254, ..] => "link-local / instance metadata (169.254.0.0/16)",
        [192, 0, 0, _] => "IETF protocol assignments (192.0.0.0/24)",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation range",
        [198, 18 | 19, ..] => "benchmarking (198.18.0.0/15)",
        [255, 255, 255, 255] => "broadcast",
        [a, ..] if (224..=239).contains(&a) => "multicast (224.0.0.0/4)",
        [a, ..] if a >= 240 => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4).map(|_| "IPv4-mapped address in a refused range");
    }
    let s = ip.segments();
    Some(match s {
        _ if ip.is_unspecified() => "unspecified (::)",
        _ if ip.is_loopback() => "loopback (::1)",
        [a, ..] if a & 0xfe00 == 0xfc00 => "unique-local (fc00::/7)",
        [a, ..] if a & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        [a, ..] if a & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        [0x2001, 0x0db8, ..] => "documentation (2001:db8::/32)",
        [0x0064, 0xff9b, 0, 0, 0, 0, ..] => {
            let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            refused_v4(v4).map(|_| "NAT64 address of a refused IPv4 range")?
        }
        [0x0100, 0, 0, 0, ..] => "discard (100::/64)",
        // Forms that carry or relay to an IPv4 address, or reach a private network by another
        // name: refused whole, since the embedded address cannot be trusted to be public.
        [0, 0, 0, 0, 0, 0, ..] => "IPv4-compatible (::/96, deprecated)",
        [0x2002, ..] => "6to4 (2002::/16)",
        [0x2001, 0, ..] => "Teredo (2001::/32)",
        [0x0064, 0xff9b, 0x0001, ..] => "local-use NAT64 (64:ff9b:1::/48)",
        [a, ..] if a & 0xffc0 == 0xfec0 => "site-local (fec0::/10, deprecated)",
        _ => return None,
    })
}

/// `localhost`, `localhost.`, `api.localhost`...: names that always mean this machine.
pub fn is_localhost_name(host: &str) -> bool {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Checks one address against the refused ranges and the allowlist.
pub fn check_ip(ip: IpAddr, allow: &[IpNet]) -> Result<(), String> {
    if allow.iter().any(|net| net.contains(&ip)) {
        return Ok(());
    }
    match refused_range(ip) {
        Some(range) => Err(format!("refused-target: {ip} is {range}")),
        None => Ok(()),
    }
}

/// The addresses each host name was checked to, for the HTTP client's resolver.
#[derive(Default)]
struct CheckedResolver {
    checked: Mutex<HashMap<String, Vec<SocketAddr>>>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let found = self
            .checked
            .lock()
            .ok()
            .and_then(|map| map.get(name.as_str()).cloned());
        Box::pin(async move {
            match found {
                Some(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                None => Err(format!("{} was not checked before connecting", name.as_str()).into()),
            }
        })
    }
}

/// Probes over HTTP(S) with reqwest (rustls), no proxy, no redirects followed.
pub struct HttpProbe {
    client: reqwest::Client,
    resolver: Arc<CheckedResolver>,
    config: ProbeConfig,
}

impl HttpProbe {
    pub fn new(config: ProbeConfig) -> Result<Self, reqwest::Error> {
        let resolver = Arc::new(CheckedResolver::default());
        let client = crate::tls::http_client_builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(resolver.clone())
            .timeout(Duration::from_millis(config.timeout_ms.into()))
            .connect_timeout(Duration::from_millis(config.timeout_ms.into()))
            .pool_max_idle_per_host(1)
            .user_agent("catalyst-dr-dead-letter-replay")
            .build()?;
        Ok(Self {
            client,
            resolver,
            config,
        })
    }

    /// The URL actually requested: the endpoint, with `PROBE_PATH` in place of its path.
    fn probe_url(&self, endpoint: &str) -> Result<Url, String> {
        let mut url = Url::parse(endpoint).map_err(|e| format!("invalid-url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "refused-target: scheme {:?} is not http or https",
                url.scheme()
            ));
        }
        if let Some(path) = &self.config.path {
            url.set_path(path);
            url.set_query(None);
        }
        Ok(url)
    }

    /// Resolves and checks the host; remembers the checked addresses for the connection.
    async fn check_host(&self, url: &Url) -> Result<(), String> {
        let port = url
            .port_or_known_default()
            .ok_or_else(|| "invalid-url: no port".to_owned())?;
        let addrs: Vec<SocketAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            // `localhost.` and `*.localhost` are loopback by definition (RFC 6761), whatever a
            // resolver says: checked as 127.0.0.1 without asking one.
            Some(url::Host::Domain(domain)) if is_localhost_name(domain) => {
                vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]
            }
            Some(url::Host::Domain(domain)) => {
                let timeout = Duration::from_millis(self.config.timeout_ms.into());
                let lookup = tokio::time::timeout(timeout, tokio::net::lookup_host((domain, port)));
                match lookup.await {
                    Err(_) => return Err("timeout: resolving the host".to_owned()),
                    Ok(Err(e)) => return Err(format!("connect-failed: resolving {domain}: {e}")),
                    Ok(Ok(found)) => found.collect(),
                }
            }
            None => return Err("invalid-url: no host".to_owned()),
        };
        if addrs.is_empty() {
            return Err("connect-failed: the host has no addresses".to_owned());
        }
        for addr in &addrs {
            check_ip(addr.ip(), &self.config.allow)?;
        }
        if let Some(url::Host::Domain(domain)) = url.host()
            && let Ok(mut map) = self.resolver.checked.lock()
        {
            map.insert(domain.to_owned(), addrs);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl EndpointProbe for HttpProbe {
    async fn probe(&self, endpoint: &str) -> ProbeResult {
        let started = Instant::now();
        let url = match self.probe_url(endpoint) {
            Ok(url) => url,
            Err(reason) => return ProbeResult::unhealthy(endpoint, reason, started),
        };
        if let Err(reason) = self.check_host(&url).await {
            return ProbeResult::unhealthy(endpoint, reason, started);
        }
        let method = reqwest::Method::from_bytes(self.config.method.as_bytes())
            .unwrap_or(reqwest::Method::HEAD);
        match self.client.request(method, url).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let healthy = status < 500;
                ProbeResult {
                    endpoint: endpoint.to_owned(),
                    healthy,
                    status: Some(status),
                    reason: (!healthy).then(|| "server-error".to_owned()),
                    elapsed_ms: elapsed_ms(started),
                }
            }
            Err(e) if e.is_timeout() => {
                ProbeResult::unhealthy(endpoint, "timeout".to_owned(), started)
            }
            Err(e) => ProbeResult::unhealthy(
                endpoint,
                format!("connect-failed: {}", crate::error_chain::error_chain(&e)),
                started,
            ),
        }
    }
}

/// Probes each distinct endpoint once, at most `concurrency` at a time.
pub async fn probe_all(
    probe: Arc<dyn EndpointProbe>,
    endpoints: impl IntoIterator<Item = String>,
    concurrency: u32,
) -> BTreeMap<String, ProbeResult> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1) as usize));
    let mut tasks = tokio::task::JoinSet::new();
    let mut distinct: Vec<String> = endpoints.into_iter().collect();
    distinct.sort();
    distinct.dedup();
    for endpoint in distinct {
        let probe = probe.clone();
        let semaphore = semaphore.clone();
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            probe.probe(&endpoint).await
        });
    }
    let mut results = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(result) = done {
            results.insert(result.endpoint.clone(), result);
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(check_ip(ip, &[]).is_err(), "{ip} accepted");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(check_ip(ip, &[]), Ok(()), "{ip} refused");
        }
    }

    fn refused_as(ip: &str, range: &str) {
        let ip: IpAddr = ip.parse().unwrap();
        let err = check_ip(ip, &[]).expect_err(&format!("{ip} accepted"));
        assert!(err.contains(range), "{ip}: {err}");
    }

    #[test]
    fn refuses_ipv4_compatible_addresses() {
        refused_as("::7f00:1", "IPv4-compatible");
        refused_as("::169.254.169.254", "IPv4-compatible");
        refused_as("::8.8.8.8", "IPv4-compatible");
    }

    #[test]
    fn refuses_6to4() {
        refused_as("2002:a9fe:a9fe::1", "6to4");
        refused_as("2002:7f00:1::", "6to4");
    }

    #[test]
    fn refuses_teredo() {
        refused_as("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo");
        refused_as("2001::1", "Teredo");
        // Outside 2001::/32, 2001: addresses are ordinary public ones.
        assert_eq!(
            check_ip("2001:4860:4860::8888".parse().unwrap(), &[]),
            Ok(())
        );
    }

    #[test]
    fn refuses_local_use_nat64() {
        refused_as("64:ff9b:1::a9fe:a9fe", "local-use NAT64");
        refused_as("64:ff9b:1:ffff::8.8.8.8", "local-use NAT64");
    }

    #[test]
    fn refuses_site_local() {
        refused_as("fec0::1", "site-local");
        refused_as("feff:ffff::1", "site-local");
    }

    #[test]
    fn localhost_names_are_loopback() {
        for name in [
            "localhost",
            "localhost.",
            "LOCALHOST..",
            "api.localhost",
            "a.b.localhost.",
        ] {
            assert!(is_localhost_name(name), "{name}");
        }
        for name in ["localhost.example.com", "mylocalhost", "example.com."] {
            assert!(!is_localhost_name(name), "{name}");
        }
    }

    #[test]
    fn the_allowlist_admits_only_its_range() {
        let allow = vec!["127.0.0.0/8".parse().unwrap()];
        assert_eq!(check_ip("127.0.0.1".parse().unwrap(), &allow), Ok(()));
        assert!(check_ip("169.254.169.254".parse().unwrap(), &allow).is_err());
    }

    #[test]
    fn endpoint_keys_drop_query_and_credentials() {
        assert_eq!(
            endpoint_key("https://u:p@hooks.example.com:8443/a/b?x=1#f"),
            "https://hooks.example.com:8443/a/b"
        );
        assert_eq!(
            endpoint_key("http://127.0.0.1:9000/7"),
            "http://127.0.0.1:9000/7"
        );
    }

    #[tokio::test]
    async fn refused_targets_are_never_contacted() {
        let probe = HttpProbe::new(ProbeConfig::default()).unwrap();
        for endpoint in [
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "ftp://example.com/x",
            "http://[::1]:80/",
            "http://localhost./",
            "http://localhost/",
            "http://metadata.localhost:8080/",
            "http://[::169.254.169.254]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[2001::a9fe:a9fe]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://[fec0::1]/",
        ] {
            let result = probe.probe(endpoint).await;
            assert!(!result.healthy, "{endpoint}");
            let reason = result.reason.unwrap();
            assert!(reason.starts_with("refused-target"), "{endpoint}: {reason}");
            assert!(
                result.elapsed_ms < 1_000,
                "{endpoint}: refused without a connection attempt"
            );
        }
    }
}
