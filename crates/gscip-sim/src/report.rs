//! The report of SPEC section 11.2, shared by the simulator and the lab: a human table by
//! default, JSON with `--json`, and the exit code.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    /// "sim" or "lab".
    pub engine: String,
    pub flows: Vec<FlowReport>,
    pub summary: Summary,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowReport {
    pub name: String,
    pub from: String,
    pub to: String,
    pub proto: String,
    pub port: u16,
    /// "protected", "plaintext" or "discarded".
    pub outcome: String,
    pub delivered: bool,
    pub group: Option<u16>,
    pub encrypted_by: Option<String>,
    pub decrypted_by: Option<String>,
    pub discarded_at: Option<String>,
    /// GE name -> "encrypt" | "decrypt" | "relay" | "plain" | "discard", in path order.
    pub actions: serde_json::Map<String, serde_json::Value>,
    /// Links on which the payload was seen in clear, in path order.
    pub plaintext_on: Vec<String>,
    pub setup_us: Option<u64>,
    pub expect: Option<String>,
    pub as_expected: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub flows: usize,
    pub as_expected: usize,
    pub not_as_expected: usize,
    pub plaintext_leaks: usize,
}

impl Report {
    pub fn summarize(flows: &[FlowReport], leaks: usize) -> Summary {
        let ok = flows.iter().filter(|f| f.as_expected).count();
        Summary { flows: flows.len(), as_expected: ok, not_as_expected: flows.len() - ok, plaintext_leaks: leaks }
    }

    /// 0 when every flow with an expectation met it and nothing leaked, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.summary.not_as_expected == 0 && self.summary.plaintext_leaks == 0 {
            0
        } else {
            1
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The human table.
    pub fn to_table(&self) -> String {
        let head = ["flow", "outcome", "group", "protected by", "discarded at", "plaintext on", "setup µs", "expected"];
        let rows: Vec<[String; 8]> = self
            .flows
            .iter()
            .map(|f| {
                [
                    f.name.clone(),
                    f.outcome.clone(),
                    f.group.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
                    match (&f.encrypted_by, &f.decrypted_by) {
                        (Some(e), Some(d)) => format!("{e} -> {d}"),
                        _ => "-".into(),
                    },
                    f.discarded_at.clone().unwrap_or_else(|| "-".into()),
                    if f.plaintext_on.is_empty() { "-".into() } else { f.plaintext_on.join(",") },
                    f.setup_us.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
                    match (&f.expect, f.as_expected) {
                        (None, _) => "(none)".into(),
                        (Some(e), true) => format!("yes ({e})"),
                        (Some(e), false) => format!("NO (expected {e})"),
                    },
                ]
            })
            .collect();
        let mut w = head.map(|h| h.chars().count());
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| -> String {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<width$}", width = w[i]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        let mut out = format!("scenario {} ({})\n", self.scenario, self.engine);
        out.push_str(&line(head.to_vec()));
        out.push('\n');
        for r in &rows {
            out.push_str(&line(r.iter().map(String::as_str).collect()));
            out.push('\n');
        }
        let s = &self.summary;
        out.push_str(&format!(
            "{} flows: {} as expected, {} not as expected; plaintext leaks: {}\n",
            s.flows, s.as_expected, s.not_as_expected, s.plaintext_leaks
        ));
        out
    }
}
