//! The GSCIP simulator: a scenario file (SPEC section 11.1) run in virtual time, every GE
//! running the real `gscip-core` engine on real packet bytes, reported as SPEC section 11.2
//! says. `gscip sim FILE` is a thin wrapper around [`run_file`].
#![forbid(unsafe_code)]

pub mod gms;
pub mod paths;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod topology;

pub use report::Report;
pub use scenario::{Scenario, ScenarioError};
pub use sim::{Fault, SimError, Simulation};

/// The policy decision type the simulator compares against.
pub type SimDecision = gscip_core::policy::Decision;

/// Why `gscip sim` could not produce a report (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("{file}: {error}")]
    Sim { file: String, error: SimError },
}

/// Parses and simulates a scenario file.
pub fn run_file(path: &std::path::Path, overrides: &Overrides) -> Result<Report, RunError> {
    let mut scenario = Scenario::from_file(path)?;
    overrides.apply(&mut scenario.sim);
    let mut sim =
        Simulation::new(&scenario).map_err(|error| RunError::Sim { file: path.display().to_string(), error })?;
    Ok(sim.run())
}

/// Command-line overrides of the scenario's `[sim]` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub seed: Option<u64>,
    pub loss: Option<f64>,
    pub reorder: Option<f64>,
    pub delay_us: Option<u64>,
    pub jitter_us: Option<u64>,
}

impl Overrides {
    pub fn apply(&self, o: &mut scenario::SimOptions) {
        if let Some(v) = self.seed {
            o.seed = v;
        }
        if let Some(v) = self.loss {
            o.loss = v;
        }
        if let Some(v) = self.reorder {
            o.reorder = v;
        }
        if let Some(v) = self.delay_us {
            o.delay_us = v;
        }
        if let Some(v) = self.jitter_us {
            o.jitter_us = v;
        }
    }
}
