//! One dashboard for a cluster: with more than one process (`-n`), every worker's dashboard
//! updates travel through timely to worker 0, whose process serves the dashboard for the
//! whole cluster, and every other process sends its counters, worker statuses and operator
//! timings about once a second and once more when its run ends.
//!
//! # Design
//! Each output's sink turns its rows into [`Update`]s ([`crate::engine::output::Row::publish`])
//! and emits them at the rows' event time. A second sink per output, with an exchange pact
//! that routes everything to worker 0, stages them in the hub and offers its input frontier.
//! Timely's frontier at that sink accounts for every worker of every process, so a frame is
//! released only when the whole cluster has passed its time: a page never shows half a
//! window or half a set change, as with one process.
//!
//! Counters are not event-time data. A source operator per worker ([`counters`]) holds a
//! capability that follows the frontier of every sink in the cluster (a probe on the sinks'
//! outputs) and, on the first worker of each process but process 0, sends the process's
//! counters at it. It sends them once more, and lets the capability go, when every sink has
//! finished, so the dashboard's totals are exact when the run ends. Process 0 reads its own
//! counters directly.
//!
//! The operators exist on every worker of every process whether or not a dashboard is shown
//! (timely needs the same dataflow everywhere); what they send depends on the process's
//! flags. When nothing is published they carry no data, only timely's progress messages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::{ProbeHandle, Scope, Stream};

use super::metrics::Metrics;
use crate::dashboard::hub::{OperatorTiming, PipelineHandle, ProcessCounters, Update};
use crate::record::EventTime;

/// How often a process sends its counters to the dashboard's process.
const COUNTERS_EVERY: Duration = Duration::from_secs(1);
/// How often the counters operator looks at the sinks' frontier.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// What travels from a worker to the dashboard's process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HubMsg {
    /// A dashboard update at its event time.
    Update(Update),
    /// A process's counters (not event-time data: applied as they arrive).
    Counters(ProcessCounters),
}

/// A cluster's dashboard settings for one process (present when the run has more than one
/// process).
#[derive(Debug, Clone, Default)]
pub struct ClusterHub {
    /// This process's workers publish their updates (and, off process 0, their counters) to
    /// worker 0: the cluster has one dashboard, on process 0. False: each process's dashboard
    /// shows its own workers' share (`--dashboard-scope process`), or none is shown.
    pub publish: bool,
    /// This process's index.
    pub process: usize,
    /// On process 0 with `publish`: the hub handle worker 0 offers the cluster's updates to.
    pub hub: Option<PipelineHandle>,
    /// Operator timings summed over this process's workers, sent with its counters.
    pub timings: Arc<Mutex<BTreeMap<String, OperatorTiming>>>,
}

/// Routes `stream` to worker 0 and, there, hands it to `hub` (when this process has one):
/// updates are staged and released as frames when the input frontier passes their time
/// (`frames`: the sink takes part in frame release under the name `output`); counters are
/// applied as they arrive.
pub fn hub_sink<'s>(
    stream: Stream<'s, EventTime, Vec<HubMsg>>,
    output: &str,
    frames: bool,
    hub: Option<PipelineHandle>,
) {
    let name = output.to_string();
    if frames {
        if let Some(h) = &hub {
            h.declare(&name);
        }
    }
    let mut staged: Vec<(EventTime, Update)> = Vec::new();
    let mut offered: Option<EventTime> = Some(EventTime::MIN);
    stream.sink(
        Exchange::new(|_: &HubMsg| 0u64),
        &format!("hub:{output}"),
        move |(input, frontier)| {
            input.for_each(|cap, msgs| {
                let t = cap.least().copied().unwrap_or(EventTime::MIN);
                for m in msgs.drain(..) {
                    match (m, &hub) {
                        (HubMsg::Update(u), Some(_)) if frames => staged.push((t, u)),
                        (HubMsg::Counters(c), Some(h)) => h.set_counters(c),
                        _ => {}
                    }
                }
            });
            if !frames {
                return;
            }
            if let Some(h) = &hub {
                let now = frontier.frontier().iter().next().copied();
                if !staged.is_empty() || now != offered {
                    h.offer(&name, 0, &mut staged, now);
                    offered = now;
                }
            }
        },
    );
}

/// What the counters operator of one worker sends: the process's counters, statuses and
/// timings (only the first worker of each process but process 0 has any).
#[derive(Debug, Clone)]
pub struct CountersDuty {
    /// Process index.
    pub process: usize,
    /// The process's counters.
    pub metrics: Arc<Metrics>,
    /// The process's operator timings.
    pub timings: Arc<Mutex<BTreeMap<String, OperatorTiming>>>,
}

impl CountersDuty {
    fn message(&self) -> HubMsg {
        HubMsg::Counters(ProcessCounters {
            process: self.process,
            snapshot: self.metrics.snapshot(),
            workers: self.metrics.workers(),
            operators: self
                .timings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        })
    }
}

/// The counters operator (see the module's design notes): sends `duty`'s counters about
/// once a second at a capability that follows `sinks` (a probe on every sink's output), and
/// once more when every sink of the cluster has finished. Without a duty it lets its
/// capability go at once.
pub fn counters<'s>(
    scope: Scope<'s, EventTime>,
    sinks: ProbeHandle<EventTime>,
    duty: Option<CountersDuty>,
) -> Stream<'s, EventTime, Vec<HubMsg>> {
    source::<_, timely::container::CapacityContainerBuilder<Vec<HubMsg>>, _, _>(
        scope,
        "hub-counters",
        move |cap, info| {
            let activator = scope.activator_for(info.address.clone());
            let mut cap = duty.is_some().then_some(cap);
            let mut sent: Option<Instant> = None;
            if cap.is_some() {
                activator.activate();
            }
            move |output| {
                let (Some(c), Some(duty)) = (cap.as_mut(), duty.as_ref()) else {
                    return;
                };
                let frontier = sinks.with_frontier(|f| f.iter().min().copied());
                match frontier {
                    None => {
                        output.session(&*c).give(duty.message());
                        cap = None;
                        return;
                    }
                    Some(t) if t > *c.time() => c.downgrade(&t),
                    Some(_) => {}
                }
                if sent.is_none_or(|s| s.elapsed() >= COUNTERS_EVERY) {
                    sent = Some(Instant::now());
                    output.session(&*c).give(duty.message());
                }
                activator.activate_after(POLL_EVERY);
            }
        },
    )
}
