//! The lines of a [`Summary`](super::Summary): the targets compared, a
//! [`Comparison`] of ours against the baselines with its ratios, and a
//! [`Check`] of one of the targets.

use serde::{Deserialize, Serialize};

/// The targets a summary compares, ours first.
pub const TARGETS: [&str; 4] = ["chat", "socketio", "ceiling", "centrifugo"];

/// The fixed rate (msgs/s per user) whose server CPU per delivery is
/// compared when every target kept up there.
pub const COMPARED_FIXED_RATE: f64 = 5.27;

/// One line of the comparison: a number of ours, the baselines' and ratios.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// What is compared.
    pub metric: String,
    /// Ours.
    pub chat: Option<f64>,
    /// Socket.IO baseline.
    pub socketio: Option<f64>,
    /// Ceiling.
    pub ceiling: Option<f64>,
    /// Centrifugo baseline.
    #[serde(default)]
    pub centrifugo: Option<f64>,
    /// chat / socketio.
    pub vs_socketio: Option<f64>,
    /// chat / ceiling.
    pub vs_ceiling: Option<f64>,
    /// chat / centrifugo.
    #[serde(default)]
    pub vs_centrifugo: Option<f64>,
    /// How the values were taken, when the metric's name does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Comparison {
    /// A line with the values of [`TARGETS`], in order, and their ratios.
    pub fn of(metric: String, v: [Option<f64>; 4]) -> Comparison {
        let [c, s, x, f] = v;
        Comparison {
            metric,
            chat: c,
            socketio: s,
            ceiling: x,
            centrifugo: f,
            vs_socketio: ratio(c, s),
            vs_ceiling: ratio(c, x),
            vs_centrifugo: ratio(c, f),
            note: None,
        }
    }

    pub(super) fn noted(mut self, note: String) -> Comparison {
        self.note = Some(note);
        self
    }
}

/// A target of the issue and whether this set of runs meets it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// The target.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met, missed, or not measured (None).
    pub met: Option<bool>,
}

pub(super) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

pub(super) fn same_rate(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}
