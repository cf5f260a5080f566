//! The live dashboard: dataflow outputs feed an in-process [`hub::Hub`]; a small HTTP
//! server ([`server`]) serves the page, pushes consistent frames to it over server-sent
//! events, answers a REST/JSON API and exposes `/metrics` in Prometheus text format.
//!
//! It listens on loopback by default (`127.0.0.1:8080`). Bound to any other address it
//! requires a token (`--dashboard-token` or `STREAMGAUGE_DASHBOARD_TOKEN`) on the API,
//! the event stream and `/metrics`, and refuses to start without one.
//!
//! A cluster (`-n > 1`) has one dashboard, served by process 0, that shows every worker of
//! every process (`--dashboard-scope cluster`, the default; see `engine::cluster_hub`); with
//! `--dashboard-scope process` each process serves its own workers' share on port 8080 + `-p`.

pub mod hub;
pub mod server;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use clap::{Args, ValueEnum};
use thiserror::Error;

pub use hub::{Hub, HubConfig};
pub use server::Dashboard;

/// The address the dashboard uses when none is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Environment variable that holds the dashboard token.
pub const TOKEN_ENV: &str = "STREAMGAUGE_DASHBOARD_TOKEN";

/// Why the dashboard could not start.
#[derive(Debug, Error)]
pub enum DashboardError {
    /// The address does not parse or resolve.
    #[error("--dashboard {addr:?}: {why} (expected HOST:PORT, e.g. 127.0.0.1:8080)")]
    BadAddress {
        /// As given.
        addr: String,
        /// What is wrong.
        why: String,
    },
    /// A non-loopback bind without a token.
    #[error(
        "refusing to serve the dashboard on {addr} without a token: anyone on the network could read it. \
Pass --dashboard-token TOKEN (or set {TOKEN_ENV}), or bind to 127.0.0.1"
    )]
    NeedsToken {
        /// Address.
        addr: SocketAddr,
    },
    /// The socket could not be bound.
    #[error("dashboard cannot listen on {addr}: {why}; pick another --dashboard ADDR or pass --no-dashboard")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        why: String,
    },
    /// A bad memory bound.
    #[error("--dashboard-history and --dashboard-series must be at least 1")]
    Bounds,
}

/// What a dashboard shows when a run has more than one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DashboardScope {
    /// Process 0 serves one dashboard for every worker of the cluster; the others serve none.
    Cluster,
    /// Each process serves its own workers' share, on port 8080 + `-p` by default.
    Process,
}

/// Dashboard flags, shared by `demo` and `run`.
#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// Serve the live dashboard at ADDR (default 127.0.0.1:8080; any non-loopback address needs a token).
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<String>,
    /// Do not serve the dashboard.
    #[arg(long, conflicts_with = "dashboard")]
    pub no_dashboard: bool,
    /// Token the API, event stream and /metrics require (also STREAMGAUGE_DASHBOARD_TOKEN); mandatory off loopback.
    #[arg(long, value_name = "TOKEN")]
    pub dashboard_token: Option<String>,
    /// Points of history the dashboard keeps per series.
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub dashboard_history: usize,
    /// Series the dashboard charts; beyond it, those held stay while they report and the
    /// others wait for a place (one that stops, or at once for an outlier).
    #[arg(long, default_value_t = 5000, value_name = "N")]
    pub dashboard_series: usize,
    /// With -n > 1: `cluster` (process 0 serves one dashboard for every worker) or `process`
    /// (each process serves its own workers' share, on port 8080 + -p by default).
    #[arg(long, value_enum, default_value_t = DashboardScope::Cluster, value_name = "SCOPE")]
    pub dashboard_scope: DashboardScope,
}

/// Resolved dashboard settings.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Whether the address was asked for (a busy default port is a warning, not an error).
    pub explicit: bool,
    /// Required token, if any.
    pub token: Option<String>,
    /// Hub bounds.
    pub hub: HubConfig,
}

impl DashboardArgs {
    /// The settings these flags ask for (None: `--no-dashboard`), checked: a bad address or a
    /// non-loopback address without a token is an error.
    pub fn options(&self) -> Result<Option<DashboardOptions>, DashboardError> {
        self.options_for(0)
    }

    /// [`DashboardArgs::options`] for process `process` of a cluster (`-p`): with
    /// `--dashboard-scope process`, on the default address it listens on port 8080 +
    /// `process`, so that processes sharing a machine each serve their workers' share; an
    /// address given with `--dashboard` is taken as it is.
    pub fn options_for(&self, process: usize) -> Result<Option<DashboardOptions>, DashboardError> {
        if self.no_dashboard {
            return Ok(None);
        }
        if self.dashboard_history == 0 || self.dashboard_series == 0 {
            return Err(DashboardError::Bounds);
        }
        let given = self.dashboard.clone();
        let text = given.clone().unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let mut addr = text
            .to_socket_addrs()
            .map_err(|e| DashboardError::BadAddress {
                addr: text.clone(),
                why: e.to_string(),
            })?
            .next()
            .ok_or_else(|| DashboardError::BadAddress {
                addr: text.clone(),
                why: "resolves to no address".into(),
            })?;
        if given.is_none() && self.dashboard_scope == DashboardScope::Process {
            let port = u16::try_from(process)
                .ok()
                .and_then(|p| addr.port().checked_add(p))
                .ok_or_else(|| DashboardError::BadAddress {
                    addr: format!("{text} + process {process}"),
                    why: "the port of process -p is past 65535; give --dashboard".into(),
                })?;
            addr.set_port(port);
        }
        let token = self
            .dashboard_token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok())
            .filter(|t| !t.is_empty());
        if !addr.ip().is_loopback() && token.is_none() {
            return Err(DashboardError::NeedsToken { addr });
        }
        Ok(Some(DashboardOptions {
            addr,
            explicit: given.is_some(),
            token,
            hub: HubConfig {
                history: self.dashboard_history,
                max_series: self.dashboard_series,
                ..HubConfig::default()
            },
        }))
    }

    /// Starts the dashboard these flags ask for, with a fresh hub. `Ok(None)`: not wanted, or
    /// the default port was busy (a warning says so).
    pub fn start(&self) -> Result<Option<(Arc<Hub>, Dashboard)>, DashboardError> {
        self.start_for(0, 1)
    }

    /// [`DashboardArgs::start`] for process `process` of `processes` (see
    /// [`DashboardArgs::options_for`]). With `--dashboard-scope cluster` only process 0
    /// serves one (for the whole cluster).
    pub fn start_for(
        &self,
        process: usize,
        processes: usize,
    ) -> Result<Option<(Arc<Hub>, Dashboard)>, DashboardError> {
        let Some(opts) = self.options_for(process)? else {
            return Ok(None);
        };
        let cluster = processes > 1 && self.dashboard_scope == DashboardScope::Cluster;
        if cluster && process != 0 {
            eprintln!(
                "dashboard: process 0 serves the whole cluster's (this process sends it its updates)"
            );
            return Ok(None);
        }
        let hub = Hub::new(opts.hub);
        match Dashboard::start(&opts, hub.clone()) {
            Ok(d) => {
                eprintln!(
                    "dashboard at http://{}/{}{}",
                    d.addr(),
                    if cluster {
                        format!(" (every worker of the {processes} processes)")
                    } else if processes > 1 {
                        format!(" (process {process} of {processes}: its workers' share)")
                    } else {
                        String::new()
                    },
                    if opts.token.is_some() {
                        " (token required: add ?token=... to the URL)"
                    } else {
                        ""
                    }
                );
                Ok(Some((hub, d)))
            }
            Err(e) if !opts.explicit => {
                eprintln!("dashboard not started: {e}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dashboard: Option<&str>) -> DashboardArgs {
        DashboardArgs {
            dashboard: dashboard.map(str::to_string),
            no_dashboard: false,
            dashboard_token: None,
            dashboard_history: 300,
            dashboard_series: 5000,
            dashboard_scope: DashboardScope::Process,
        }
    }

    #[test]
    fn each_process_gets_its_own_default_port_when_each_serves_its_share() {
        let port = |a: &DashboardArgs, p| a.options_for(p).unwrap().unwrap().addr.port();
        let default = args(None);
        assert_eq!(port(&default, 0), 8080);
        assert_eq!(port(&default, 3), 8083);
        assert!(!default.options_for(3).unwrap().unwrap().explicit);
        // An address asked for is taken as it is.
        let given = args(Some("127.0.0.1:9000"));
        assert_eq!(port(&given, 3), 9000);
        let err = default.options_for(70_000).unwrap_err().to_string();
        assert!(err.contains("give --dashboard"), "{err}");
        // With one dashboard for the cluster, process 0 listens on the default port.
        let cluster = DashboardArgs {
            dashboard_scope: DashboardScope::Cluster,
            ..args(None)
        };
        assert_eq!(port(&cluster, 0), 8080);
        assert_eq!(port(&cluster, 3), 8080);
    }
}
