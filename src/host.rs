//! SECURITY: the Host check against DNS rebinding. A page on the LAN's web can make its own name
//! resolve to this board's address; the browser then treats the daemon as that page's origin (the
//! Origin check passes: `Origin` and `Host` name the attacker's site) and the page can read the
//! process list and logs. A request for the dashboard, its assets, `/api/*` or `/ws*` must
//! therefore name this daemon: an IP literal, `localhost`, this machine's hostname or
//! `<hostname>.local`, or a name given with `--allow-host`. `/healthz`, `/metrics` (host figures
//! only; protect it with the token) and unknown paths are not checked.

use std::net::IpAddr;

use crate::http::{Request, Response};

/// The names a request may reach this daemon by (besides IP literals), lowercased.
#[derive(Clone, Debug)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    /// `localhost`, `hostname` and `hostname.local` (when the hostname is known), and `extra`.
    pub fn new(hostname: Option<&str>, extra: &[String]) -> AllowedHosts {
        let mut names = vec!["localhost".to_string()];
        if let Some(h) = hostname.map(str::trim).filter(|h| !h.is_empty()) {
            let h = h.to_ascii_lowercase();
            names.push(format!("{h}.local"));
            names.push(h);
        }
        names.extend(extra.iter().map(|n| n.to_ascii_lowercase()));
        AllowedHosts { names }
    }

    /// This machine's hostname, as the kernel has it.
    pub fn system_hostname() -> Option<String> {
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok()
    }

    /// Whether `host` (a `Host` header: name or IP literal, with or without a port) names this
    /// daemon. A request without `Host` (HTTP/1.0 scripts) is not a browser's and passes.
    pub fn admits(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return true };
        let name = name_of(host);
        let name = name.strip_suffix('.').unwrap_or(name);
        name.parse::<IpAddr>().is_ok() || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// The 403 for a request whose `Host` names another site, or `None` to go on.
    pub fn check(&self, req: &Request) -> Option<Response> {
        if self.admits(req.host.as_deref()) {
            return None;
        }
        let name = name_of(req.host.as_deref().unwrap_or_default());
        Some(Response::error(
            403,
            &format!(
                "this daemon does not answer to the name '{name}' (a DNS rebinding guard); \
                 if that is how you reach it, start it with --allow-host {name}"
            ),
        ))
    }
}

/// The host part of a `Host` header: without the port, IPv6 literals without brackets.
fn name_of(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_this_daemon_pass() {
        let h = AllowedHosts::new(Some("Pi4\n"), &["board.example.org".to_string()]);
        for ok in [
            "192.168.1.20:9753",
            "192.168.1.20",
            "[fe80::1]:9753",
            "[::1]",
            "localhost:9753",
            "pi4:9753",
            "PI4.local",
            "pi4.local.:9753",
            "board.example.org",
        ] {
            assert!(h.admits(Some(ok)), "{ok}");
        }
        assert!(h.admits(None), "no Host: not a browser");
        for bad in [
            "attacker.example",
            "attacker.example:9753",
            "pi4.attacker.example",
            "localhost.attacker.example",
            "",
        ] {
            assert!(!h.admits(Some(bad)), "{bad}");
        }
    }

    #[test]
    fn the_refusal_names_the_flag_that_would_admit_it() {
        let h = AllowedHosts::new(None, &[]);
        let req = Request {
            host: Some("nas.lan:9753".into()),
            ..Request::default()
        };
        let r = h.check(&req).unwrap();
        assert_eq!(r.status, 403);
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert!(body.contains("--allow-host nas.lan"), "{body}");
    }
}
