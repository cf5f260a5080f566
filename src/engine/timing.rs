//! Per-operator timings for the dashboard and `/metrics`: a timely log listener that sums,
//! per operator name, how often and how long each operator was scheduled on this worker,
//! and hands the sums to the dashboard hub about once a second (or, on a process of a
//! cluster whose dashboard another process serves, to the counters it sends there).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};

use crate::dashboard::hub::{OperatorTiming, PipelineHandle};

/// How often a worker hands its sums to the hub (in the worker's log time).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Where a worker's operator timings go.
#[derive(Debug, Clone)]
pub enum TimingTarget {
    /// This process's dashboard hub.
    Hub(PipelineHandle),
    /// The process's running sums, sent with its counters to the cluster's dashboard.
    Shared(Arc<Mutex<BTreeMap<String, OperatorTiming>>>),
}

impl TimingTarget {
    fn add(&self, sums: &mut HashMap<String, OperatorTiming>) {
        match self {
            TimingTarget::Hub(h) => h.add_timings(sums),
            TimingTarget::Shared(m) => {
                let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
                for (name, t) in sums.drain() {
                    m.entry(name).or_default().add(&t);
                }
            }
        }
    }
}

/// Registers the listener on `worker` (before its dataflows are built, so that operator
/// names are seen). Does nothing when the worker has no log registry.
pub fn record_operator_times(worker: &mut timely::worker::Worker, target: TimingTarget) {
    let Some(mut registry) = worker.log_register() else {
        return;
    };
    let mut names: HashMap<usize, String> = HashMap::new();
    let mut started: HashMap<usize, Duration> = HashMap::new();
    let mut sums: HashMap<String, OperatorTiming> = HashMap::new();
    let mut reported = Duration::ZERO;
    registry.insert::<TimelyEventBuilder, _>("timely", move |time, data| {
        if let Some(data) = data {
            for (at, event) in data.iter() {
                match event {
                    // The dataflow itself (a top-level scope) contains the others: skip it.
                    TimelyEvent::Operates(o) if o.addr.len() > 1 => {
                        names.insert(o.id, o.name.clone());
                    }
                    TimelyEvent::Schedule(s) => match s.start_stop {
                        StartStop::Start => {
                            started.insert(s.id, *at);
                        }
                        StartStop::Stop => {
                            if let (Some(t0), Some(name)) =
                                (started.remove(&s.id), names.get(&s.id))
                            {
                                let e = sums.entry(name.clone()).or_default();
                                e.runs += 1;
                                e.seconds += at.saturating_sub(t0).as_secs_f64();
                            }
                        }
                    },
                    _ => {}
                }
            }
        }
        if *time >= reported + REPORT_EVERY || data.is_none() {
            reported = *time;
            if !sums.is_empty() {
                target.add(&mut sums);
            }
        }
    });
}
