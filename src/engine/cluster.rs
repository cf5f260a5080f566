//! Cluster flags as timely names them (`-w` threads per process, `-n` processes, `-p` this
//! process's index, `-h` hostfile), validated and turned into a `timely::Config`.

use std::path::PathBuf;

use thiserror::Error;

/// Bad cluster flags.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// A count is zero.
    #[error("{flag} must be at least 1")]
    Zero {
        /// The flag.
        flag: &'static str,
    },
    /// `-p` outside `0..n`.
    #[error("-p/--process {process} is out of range for -n/--processes {processes} (use 0..{processes})")]
    ProcessIndex {
        /// Given index.
        process: usize,
        /// Number of processes.
        processes: usize,
    },
    /// The hostfile could not be read or is too short.
    #[error("hostfile {path}: {why}")]
    Hostfile {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The cluster a run spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterArgs {
    /// Worker threads per process (`-w`).
    pub workers: usize,
    /// Processes (`-n`).
    pub processes: usize,
    /// This process's index (`-p`).
    pub process: usize,
    /// Lines `host:port`, one per process (`-h`); default `localhost:2101+i`.
    pub hostfile: Option<PathBuf>,
}

impl Default for ClusterArgs {
    fn default() -> Self {
        ClusterArgs {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
        }
    }
}

impl ClusterArgs {
    /// Total workers across all processes.
    pub fn peers(&self) -> usize {
        self.workers * self.processes
    }

    /// Validates and builds the timely configuration.
    pub fn to_timely(&self) -> Result<timely::Config, ClusterError> {
        use timely::CommunicationConfig as C;
        if self.workers == 0 {
            return Err(ClusterError::Zero {
                flag: "-w/--workers",
            });
        }
        if self.processes == 0 {
            return Err(ClusterError::Zero {
                flag: "-n/--processes",
            });
        }
        if self.process >= self.processes {
            return Err(ClusterError::ProcessIndex {
                process: self.process,
                processes: self.processes,
            });
        }
        let communication = if self.processes > 1 {
            let addresses = match &self.hostfile {
                Some(path) => {
                    let err = |why: String| ClusterError::Hostfile {
                        path: path.clone(),
                        why,
                    };
                    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
                    let lines: Vec<String> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .take(self.processes)
                        .collect();
                    if lines.len() < self.processes {
                        return Err(err(format!(
                            "has {} addresses but -n is {}",
                            lines.len(),
                            self.processes
                        )));
                    }
                    lines
                }
                None => (0..self.processes)
                    .map(|i| format!("localhost:{}", 2101 + i))
                    .collect(),
            };
            C::Cluster {
                threads: self.workers,
                process: self.process,
                addresses,
                report: false,
                zerocopy: false,
            }
        } else if self.workers > 1 {
            C::Process(self.workers)
        } else {
            C::Thread
        };
        Ok(timely::Config {
            communication,
            worker: timely::WorkerConfig::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_flags() {
        assert!(ClusterArgs {
            workers: 0,
            ..Default::default()
        }
        .to_timely()
        .is_err());
        let e = ClusterArgs {
            processes: 2,
            process: 2,
            ..Default::default()
        }
        .to_timely()
        .unwrap_err();
        assert!(e.to_string().contains("out of range"));
        let e = ClusterArgs {
            processes: 2,
            hostfile: Some("/nonexistent/hosts".into()),
            ..Default::default()
        }
        .to_timely()
        .unwrap_err();
        assert!(e.to_string().contains("hostfile"));
        assert!(ClusterArgs {
            workers: 4,
            ..Default::default()
        }
        .to_timely()
        .is_ok());
    }
}
