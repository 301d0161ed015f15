//! A node's public address as a browser spells its origin: what operators
//! list in `[web] nodes`, checked strictly because it goes into a response
//! header and decides where the web app may send passwords.

/// `url` as a browser spells its origin (`http://host:port`, lower case,
/// without the scheme's default port), or why it is not one. Strict: these
/// go into a response header and decide where passwords may be sent.
pub fn origin(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("not a URL: expected http://host[:port] or https://host[:port]")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port: u16 = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(format!("scheme {scheme:?}: only http and https")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err("a node's address has no path, query or fragment".into());
    }
    if authority.contains('@') {
        return Err("a node's address has no user or password".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let host = host.to_ascii_lowercase();
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }
    };
    if !host_ok {
        return Err(format!("host {host:?} is not a host name or IP address"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("port {p:?} is not 1-65535")),
        },
    };
    // As a browser spells the origin: the scheme's own port left out.
    Ok(match port {
        Some(n) if n != default_port => format!("{scheme}://{host}:{n}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_or_refused() {
        for (given, want) in [
            ("http://127.0.0.1:8081", "http://127.0.0.1:8081"),
            ("http://127.0.0.1:8081/", "http://127.0.0.1:8081"),
            ("HTTPS://Chat.Example.com:443/", "https://chat.example.com"),
            ("http://chat.example.com:80", "http://chat.example.com"),
            ("http://chat.example.com:080", "http://chat.example.com"),
            ("https://chat.example.com:80", "https://chat.example.com:80"),
            (
                "https://chat.example.com:8443",
                "https://chat.example.com:8443",
            ),
            ("http://[::1]:8080", "http://[::1]:8080"),
        ] {
            assert_eq!(origin(given).as_deref(), Ok(want), "{given}");
        }
        for bad in [
            "",
            "127.0.0.1:8081",
            "javascript:alert(1)",
            "ftp://host",
            "http://",
            "http://host/path",
            "http://host?q",
            "http://host#f",
            "http://u:p@host",
            "http://host:0",
            "http://host:65536",
            "http://host:+80",
            "http://ho st",
            "http://host;script-src",
            "http://[not-v6]:80",
        ] {
            assert!(origin(bad).is_err(), "{bad:?} accepted");
        }
    }
}
