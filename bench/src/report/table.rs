//! The human tables: one run's, and a summary's.

use std::fmt::Write as _;

use super::run::RunReport;
use super::summary::Summary;

impl RunReport {
    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.label)
        };
        let _ = writeln!(
            s,
            "== {} against {}{label} on {} [server on {} cores, harness on {}]",
            self.scenario,
            self.target,
            self.nodes.join(","),
            self.server_cores,
            self.cores
        );
        if let Some(c) = &self.connect {
            let _ = writeln!(
                s,
                "connections  {}/{} established, {} failed, {:.0}/s; connect p50 {:.1} ms p99 {:.1} ms",
                c.established, c.requested, c.failed, c.per_s, c.connect_ms.p50, c.connect_ms.p99
            );
        }
        if !self.steps.is_empty() || !self.fixed.is_empty() || self.half_peak.is_some() {
            let _ = writeln!(
                s,
                "{:>9} {:>10} {:>10} {:>12} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>5} {:>9} {:>7} {:>7}",
                "rate/user",
                "offered/s",
                "accepted/s",
                "deliveries/s",
                "deliv%",
                "p50 ms",
                "p99 ms",
                "p999 ms",
                "max ms",
                "ack p99",
                "errors",
                "ok",
                "srv us/dl",
                "srv cpu",
                "harness"
            );
            let rows = self
                .fixed
                .iter()
                .map(|st| ("fixed", st))
                .chain(self.steps.iter().map(|st| ("", st)))
                .chain(self.half_peak.iter().map(|h| ("half-peak", h)));
            let pct = |v: Option<f64>| {
                v.map(|v| format!("{:.0}%", v * 100.0))
                    .unwrap_or_else(|| "-".into())
            };
            for (tag, st) in rows {
                let flag = if st.harness_bound {
                    " HARNESS-BOUND (not a peak)"
                } else {
                    ""
                };
                let _ = writeln!(
                    s,
                    "{:>9.2} {:>10.0} {:>10.0} {:>12.0} {:>6.1}% {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>8.2} {:>6} {:>5} {:>9} {:>7} {:>7} {tag}{flag}",
                    st.rate_per_user,
                    st.offered_msgs_per_s,
                    st.accepted_per_s,
                    st.deliveries_per_s,
                    st.delivery_ratio * 100.0,
                    st.latency_ms.p50,
                    st.latency_ms.p99,
                    st.latency_ms.p999,
                    st.latency_ms.max,
                    st.ack_ms.p99,
                    st.errors,
                    if st.kept_up { "yes" } else { "NO" },
                    st.server_cpu_us_per_delivery
                        .map(|v| format!("{v:.2}"))
                        .unwrap_or_else(|| "-".into()),
                    pct(st.server_cpu_share),
                    pct(st.harness_cpu_share),
                );
            }
            for (tag, st) in self
                .fixed
                .iter()
                .map(|st| ("fixed", st))
                .chain(self.steps.iter().map(|st| ("", st)))
            {
                if let Some(per_s) = st.pushes_per_s {
                    let _ = writeln!(
                        s,
                        "{:>9.2} pushes: {per_s:.0}/s ({} in the window) {tag}",
                        st.rate_per_user,
                        st.pushes.unwrap_or(0)
                    );
                }
            }
            if let Some(p) = &self.peak {
                let _ = writeln!(
                    s,
                    "peak         {:.0} deliveries/s, {:.0} accepted/s at p99 {:.2} ms",
                    p.deliveries_per_s, p.accepted_per_s, p.latency_ms.p99
                );
            }
            if self
                .fixed
                .iter()
                .chain(&self.steps)
                .any(|st| st.server_cpu_s.is_some())
            {
                let _ = writeln!(
                    s,
                    "cpu          srv us/dl: server CPU (pids {:?}) per delivery received in the window; \
                     srv cpu: of {} server core(s); harness: of the harness's core(s)",
                    self.server_pids, self.server_cores
                );
            }
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                s,
                "memory       RSS {:.1} MiB -> {:.1} MiB for {} connections: {:.2} KiB per connection (end of hold {:.1} MiB, {} dropped)",
                m.rss_before as f64 / 1048576.0,
                m.rss_after as f64 / 1048576.0,
                m.connections,
                m.kib_per_connection,
                m.rss_end as f64 / 1048576.0,
                m.dropped
            );
        }
        if let Some(h) = &self.history {
            let _ = writeln!(
                s,
                "history      {:.0} pages/s ({:.0} messages/s) of {} by {} readers; p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms; {} errors; server {} us/page, harness {}{}",
                h.pages_per_s,
                h.messages_per_s,
                h.page_size,
                h.readers,
                h.latency_ms.p50,
                h.latency_ms.p99,
                h.latency_ms.p999,
                h.errors,
                h.server_cpu_us_per_page
                    .map(|u| format!("{u:.1}"))
                    .unwrap_or_else(|| "?".into()),
                h.harness_cpu_share
                    .map(|c| format!("{:.0}%", c * 100.0))
                    .unwrap_or_else(|| "?".into()),
                if h.harness_bound { " HARNESS-BOUND" } else { "" }
            );
        }
        if let Some(r) = &self.reconnect {
            let _ = writeln!(
                s,
                "reconnect    {}/{} caught up in {:.2} s ({} failed); per client p50 {:.0} ms p99 {:.0} ms; {} messages recovered with history; server CPU {} ms per client, harness {} of its core{}",
                r.caught_up,
                r.clients,
                r.all_caught_up_s,
                r.failed,
                r.catch_up_ms.p50,
                r.catch_up_ms.p99,
                r.recovered_messages,
                r.server_cpu_ms_per_client
                    .map(|u| format!("{u:.2}"))
                    .unwrap_or_else(|| "?".into()),
                r.harness_cpu_share
                    .map(|c| format!("{:.0}%", c * 100.0))
                    .unwrap_or_else(|| "?".into()),
                if r.harness_bound { " HARNESS-BOUND" } else { "" }
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "errors       {:?}", self.errors);
        }
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "first error  {e}");
        }
        for n in &self.notes {
            let _ = writeln!(s, "note         {n}");
        }
        s
    }
}

impl Summary {
    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let num = |v: Option<f64>| match v {
            Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
            Some(v) => format!("{v:.2}"),
            None => "-".into(),
        };
        let x = |v: Option<f64>| v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "== chat vs baselines (one {}-core machine runs the harness and the servers)",
            self.cores
        );
        let _ = writeln!(
            s,
            "{:<52} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}",
            "metric", "chat", "socketio", "ceiling", "centrifugo", "vs sio", "vs ceil", "vs cf"
        );
        for c in &self.comparisons {
            let _ = writeln!(
                s,
                "{:<52} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}",
                c.metric,
                num(c.chat),
                num(c.socketio),
                num(c.ceiling),
                num(c.centrifugo),
                x(c.vs_socketio),
                x(c.vs_ceiling),
                x(c.vs_centrifugo)
            );
            if let Some(n) = &c.note {
                let _ = writeln!(s, "    ({n})");
            }
        }
        let _ = writeln!(s, "\n== targets");
        for c in &self.checks {
            let verdict = match c.met {
                Some(true) => "MET   ",
                Some(false) => "MISSED",
                None => "n/a   ",
            };
            let _ = writeln!(s, "{verdict} {:<72} {}", c.target, c.measured);
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}
