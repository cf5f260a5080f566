//! The command line: clap subcommands, parsed once into typed settings, each calling into the
//! library (`demo`, `broker`, `replay`, `run`, `datasets`, `generate`).

pub mod demo;
pub mod forecast_eval;
pub mod interrupt;
pub mod replay;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::Settings;
use crate::dataset::csvspec::CsvSpec;
use crate::dataset::timefmt::{TimeFormat, Zone};
use crate::dataset::{self, Manifest};
use crate::duration::HumanDuration;
use crate::engine::{self, ClusterArgs, Input, Metrics, OutputFormat, RunSpec};
use crate::kafka::source::KafkaInput;
use crate::kafka::ClientSettings;

/// streamgauge: real-time analytics over Kafka streams, in event time.
#[derive(Debug, Parser)]
#[command(name = "streamgauge", version, about, long_about = None)]
pub struct Cli {
    /// Config file (TOML): brokers, data_dir, window, lateness, idle_timeout, `[kafka]` properties, `[[mqtt]]` collectors.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: embedded broker, generator + datasets, dataflows, live summary.
    Demo(Box<demo::DemoArgs>),
    /// Run the embedded development broker on its own (in memory; not for production).
    #[command(
        long_about = "Runs librdkafka's built-in Kafka-protocol broker (real Kafka wire protocol over TCP, data in \
memory, gone when the process ends). It is a development broker: production points --brokers at a real \
Kafka cluster (or MSK, Confluent, Redpanda). Clients must run on this machine: after bootstrapping \
through --listen they follow metadata to the broker's own loopback port."
    )]
    Broker(BrokerArgs),
    /// Stream a historical dataset into Kafka, paced by its event time.
    Replay(replay::ReplayArgs),
    /// Run a dataflow over a Kafka topic or straight from a dataset.
    Run(Box<RunArgs>),
    /// List the datasets streamgauge knows and where their data was found.
    Datasets,
    /// Write a generated workload (W1) to a file.
    Generate(GenerateArgs),
    /// Run an anomaly detector over the Numenta Anomaly Benchmark and score it.
    Nab(NabArgs),
    /// Evaluate every forecaster one step ahead: MASE and 95% interval coverage per dataset.
    ForecastEval(forecast_eval::ForecastEvalArgs),
    /// Render PNG and SVG plots of a finished run's outputs (series with band, forecast and anomalies; throughput).
    Report(ReportArgs),
    /// Send again the result rows a run could not deliver to Kafka (its undelivered file).
    Redeliver(RedeliverArgs),
    /// Run collectors: the `[[mqtt]]`, `[[modbus]]`, `[[opcua]]`, `[[http]]`, `[[websocket]]`, `[[cctv]]` and `[[file]]` tables of --config FILE, or one from flags (`collect <kind> ...`).
    Collect(Box<CollectArgs>),
}

/// `nab` flags.
#[derive(Debug, Args)]
pub struct NabArgs {
    /// NAB folder (with data/ and labels/); default: `nab` in the data directories.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Detector: `gauge` (streamgauge's own, the `anomaly` dataflow).
    #[arg(long, default_value = "gauge")]
    pub detector: String,
    /// Results folder; scores go to `<out>/<detector>/<category>/<detector>_<file>.csv`.
    #[arg(long, default_value = "nab-results")]
    pub out: PathBuf,
    /// Worker threads.
    #[arg(short = 'w', long, default_value_t = 2)]
    pub workers: usize,
    /// A detector parameter other than its default, as NAME=VALUE (NAME as in `SG_DET_<NAME>`,
    /// e.g. `SEASON_DIV=6`); repeatable. For tuning runs: NAB's rules allow one parameter set
    /// for all files, and the defaults are the published one.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

/// `redeliver` flags.
#[derive(Debug, Args)]
pub struct RedeliverArgs {
    /// The undelivered file a run wrote (`undelivered.jsonl` in its --output, or --undelivered).
    pub file: PathBuf,
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaFlags,
    /// How long to wait for Kafka to acknowledge the rows; those still unacknowledged stay in
    /// the file.
    #[arg(long, default_value = "30s")]
    pub wait: HumanDuration,
}

/// `broker` flags.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Bootstrap address to listen on.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub listen: String,
    /// Topics to create, as NAME or NAME:PARTITIONS (others are auto-created with 4 partitions).
    #[arg(long = "topic", value_name = "NAME[:PARTITIONS]")]
    pub topics: Vec<String>,
    /// Partitions of topics given without a count.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Stop after this long (default: run until interrupted).
    #[arg(long)]
    pub duration: Option<HumanDuration>,
}

/// Where a dataset comes from: a manifest name (`nab`, `nab:machine_temperature`) or a CSV
/// path with column flags.
#[derive(Debug, Clone, Args)]
pub struct DatasetFlags {
    /// Directory that holds the datasets (default: $STREAMGAUGE_DATA, then ../shared/datasets).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// For a CSV path: the time column.
    #[arg(long, default_value = "ts_ms")]
    pub time_col: String,
    /// For a CSV path: epoch_ms, epoch_s, epoch_us, rfc3339 or a strftime pattern.
    #[arg(long, default_value = "epoch_ms")]
    pub time_format: String,
    /// For a CSV path: zone of local times: UTC, a fixed offset (+10:00), or a tz database
    /// name (America/Chicago), whose daylight saving is followed.
    #[arg(long, default_value = "UTC")]
    pub time_zone: String,
    /// For a CSV path: the series id column.
    #[arg(long, default_value = "sensor_id")]
    pub series_col: String,
    /// For a CSV path: value column(s).
    #[arg(long = "value-col", default_value = "value")]
    pub value_cols: Vec<String>,
}

impl DatasetFlags {
    /// A CSV spec when `name` is a file path.
    pub fn csv_spec(&self, name: &str) -> Result<Option<CsvSpec>> {
        if !dataset::csvspec::is_path(name) {
            return Ok(None);
        }
        Ok(Some(CsvSpec {
            path: PathBuf::from(name),
            time_col: self.time_col.clone(),
            time_format: TimeFormat::parse(&self.time_format).map_err(anyhow::Error::msg)?,
            zone: Zone::parse(&self.time_zone).map_err(anyhow::Error::msg)?,
            series_col: Some(self.series_col.clone()),
            value_cols: self.value_cols.clone(),
        }))
    }

    /// Loads a manifest dataset (`name` or `name:filter`) or a CSV path into memory.
    pub fn load(&self, name: &str, settings: &Settings) -> Result<dataset::Loaded> {
        if let Some(spec) = self.csv_spec(name)? {
            let (mut readings, quarantined, rows) = dataset::csvspec::read_all(&spec)?;
            readings.sort_by_key(|r| r.ts);
            return Ok(dataset::Loaded {
                readings,
                quarantined,
                rows,
                files: vec![name.to_string()],
            });
        }
        let dir = self.data_dir.clone().or_else(|| settings.data_dir.clone());
        Ok(dataset::load_builtin(name, dir.as_deref())?)
    }
}

/// Kafka connection flags.
#[derive(Debug, Clone, Args)]
pub struct KafkaFlags {
    /// Kafka bootstrap servers (or $STREAMGAUGE_BROKERS / config `brokers`).
    #[arg(long, value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,
    /// Any librdkafka property, e.g. -X security.protocol=SASL_SSL (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
}

impl KafkaFlags {
    /// Client settings from flags over config, or None when no broker is configured.
    pub fn settings(&self, settings: &Settings) -> Result<Option<ClientSettings>> {
        // Validate every -X even when no broker is configured: a typo must not pass silently.
        let flags = self
            .kafka
            .iter()
            .map(|x| ClientSettings::parse_override(x))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(brokers) = self.brokers.clone().or_else(|| settings.brokers.clone()) else {
            return Ok(None);
        };
        let mut s = ClientSettings::new(brokers);
        s.overrides = settings.kafka.clone();
        s.overrides.extend(flags);
        Ok(Some(s))
    }
}

/// `run` flags. `-h` is timely's hostfile flag here, so help is `--help` only.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Registered dataflow (see `streamgauge run --help` for the list).
    pub dataflow: String,
    /// Kafka topic of readings (with --brokers).
    #[arg(long)]
    pub topic: Option<String>,
    /// Read a dataset (manifest name, name:filter, or CSV path) instead of Kafka.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaFlags,
    /// Dataset location and CSV columns.
    #[command(flatten)]
    pub data: DatasetFlags,
    /// Worker threads per process (timely -w).
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    pub workers: usize,
    /// Number of processes (timely -n).
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// This process's index, 0..n (timely -p).
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    pub process: usize,
    /// File of host:port lines, one per process (timely -h).
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
    /// Directory for JSON-lines/CSV output files (one per output).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Output file format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Jsonl)]
    pub output_format: OutputFormat,
    /// Read each partition up to its end offset at start, close every window, exit.
    #[arg(long)]
    pub until_end: bool,
    /// Where to start reading each partition of --topic: beginning (default), end (only what
    /// arrives from now on), a time (2026-12-06T10:00:00Z, or epoch ms) or a duration before
    /// now (2h): the last message wholly before it in event time; readings before it are late.
    #[arg(long, value_name = "WHERE", value_parser = start_at)]
    pub from: Option<crate::kafka::source::StartAt>,
    /// Savepoint directory (Kafka input): resume from the newest savepoint in it (state,
    /// held readings, each partition's offset), and at a stop (Ctrl-C, --duration) write a
    /// new one there instead of closing anything early. Output files are appended to when
    /// resuming. series_stats, anomaly, zscore, trend, stock_forecast, sessions,
    /// sensor_outliers.
    #[arg(long, value_name = "DIR")]
    pub savepoint: Option<PathBuf>,
    /// With --savepoint: also write a checkpoint there at every multiple of this much event
    /// time (e.g. 1m), so a run that crashes or is killed loses nothing: run again with the
    /// same --savepoint and it resumes from the newest checkpoint, output files cut back to
    /// it (every row once). series_stats, anomaly, zscore, trend, stock_forecast, sessions,
    /// sensor_outliers.
    #[arg(long, value_name = "DURATION")]
    pub checkpoint_every: Option<HumanDuration>,
    /// Tumbling window width (default 10s).
    #[arg(long)]
    pub window: Option<HumanDuration>,
    /// The clock tumbling windows follow: UTC (default), a fixed offset (+10:00: days from
    /// local midnight) or a tz database zone (America/Chicago: daily windows from local
    /// midnight, 23 or 25 hours long across daylight saving; widths of whole hours that
    /// divide a day, or whole days). Also `window_zone` in --config, or STREAMGAUGE_WINDOW_ZONE.
    #[arg(long, value_name = "ZONE", value_parser = zone_arg)]
    pub window_zone: Option<Zone>,
    /// Hopping windows: one --window-long window ends every SLIDE (e.g. --window 1m --slide
    /// 10s; the slide must divide the window). Default: the window itself (tumbling).
    #[arg(long, value_name = "DURATION")]
    pub slide: Option<HumanDuration>,
    /// Count-window length in readings, for dataflows with count windows (zscore).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub readings: u32,
    /// Alert threshold, for dataflows that alert (zscore: |z| above it).
    #[arg(long, default_value_t = 4.0, value_parser = positive_f64)]
    pub threshold: f64,
    /// Size of top-k outputs (sensor_outliers).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub top: u32,
    /// Event time between top-k snapshots (sensor_outliers' outliers_top, taken at every
    /// multiple of it, e.g. 1s or 1m; at least 1ms).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = top_every)]
    pub top_every: HumanDuration,
    /// Forecast horizon in readings (stock_forecast forecasts 1 and this many steps ahead).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub horizon: u32,
    /// Readings at most this far apart in event time are one session (sessions; e.g. 30s,
    /// 5m; at least 1ms).
    #[arg(long, value_name = "DURATION", default_value = "1m")]
    pub gap: HumanDuration,
    /// Only values above this take part in sessions, and one at or below it ends the open
    /// session (sessions: excursions over a limit).
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub above: Option<f64>,
    /// Only values below this take part in sessions, and one at or above it ends the open
    /// session (sessions; with --above, a band).
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub below: Option<f64>,
    /// The longest a session may last from its first reading (sessions; e.g. 1h, 1d): a
    /// reading past it closes the session and starts the next, so a series that never pauses
    /// for the gap still gives a row per period. Default: no limit.
    #[arg(long, value_name = "DURATION")]
    pub max_session: Option<HumanDuration>,
    /// Reference table `series,location,unit[,valid_from]` joined with results (sensor_outliers).
    #[arg(long, value_name = "FILE")]
    pub reference: Option<PathBuf>,
    /// Rolling median and MAD (sensor_outliers' robust score): exact, or from a quantile
    /// sketch whose cost does not grow with --readings (bounded error; for windows of 10^5+).
    #[arg(long, value_enum, default_value_t = crate::dataflows::Quantiles::Exact)]
    pub quantiles: crate::dataflows::Quantiles,
    /// Drop the state of a (series, value) silent this long in event time (e.g. 1h); it
    /// starts afresh if it comes back, and leaves outlier sets (default: `state_ttl` of
    /// --config, or STREAMGAUGE_STATE_TTL; else state is kept for the whole run, so memory
    /// grows with every series ever seen).
    #[arg(long, value_name = "DURATION", value_parser = state_ttl)]
    pub state_ttl: Option<HumanDuration>,
    /// A `gauge` detector parameter other than its default (the `anomaly` dataflow), as
    /// NAME=VALUE (as for `nab --param`); repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Allowed lateness (default 5s).
    #[arg(long)]
    pub lateness: Option<HumanDuration>,
    /// A partition silent this long stops holding the frontier back (default 30s).
    #[arg(long)]
    pub idle_timeout: Option<HumanDuration>,
    /// With --until-end: how long an end-of-partition must stay quiet to be trusted.
    #[arg(long, default_value = "500ms")]
    pub end_confirm: HumanDuration,
    /// Do not write results to Kafka topics (`<topic>.<output>`).
    #[arg(long)]
    pub no_result_topics: bool,
    /// File for result rows Kafka does not take (refused, or not acknowledged within
    /// `message.timeout.ms`), one JSON object per line; `streamgauge redeliver FILE` sends
    /// them again. Default: `undelivered.jsonl` in --output, else in the current directory.
    #[arg(long, value_name = "FILE")]
    pub undelivered: Option<PathBuf>,
    /// Stop after this long.
    #[arg(long)]
    pub duration: Option<HumanDuration>,
    /// The live dashboard.
    #[command(flatten)]
    pub dashboard: crate::dashboard::DashboardArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// `collect` flags.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// One collector from flags instead of the config file's tables.
    #[command(subcommand)]
    pub single: Option<CollectKind>,
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaFlags,
    /// Stop after this long (default: until interrupted).
    #[arg(long, global = true)]
    pub duration: Option<HumanDuration>,
    /// Spool what Kafka's memory queue cannot hold to this directory (one folder per
    /// collector); overrides the config file's `[spool]`.
    #[arg(long, global = true)]
    pub spool_dir: Option<PathBuf>,
    /// Most megabytes spooled per collector before it blocks.
    #[arg(long, global = true, default_value_t = 1024)]
    pub spool_max_mb: u64,
}

/// A single collector from flags (the README's collector sections give each config-file form,
/// which can do more).
#[derive(Debug, Subcommand)]
pub enum CollectKind {
    /// Subscribe to an MQTT broker (IoT).
    Mqtt(Box<MqttFlags>),
    /// Poll registers of a Modbus TCP device (SCADA).
    Modbus(Box<ModbusFlags>),
    /// Subscribe to nodes of an OPC UA server (SCADA).
    Opcua(Box<OpcUaFlags>),
    /// Poll a JSON endpoint over HTTP (weather, quotes).
    Http(Box<HttpFlags>),
    /// Read JSON messages from a WebSocket (streaming quotes).
    Websocket(Box<WebSocketFlags>),
    /// Motion and brightness from camera snapshots or MJPEG streams, or object counts from
    /// Frigate's MQTT events.
    Cctv(Box<CctvFlags>),
    /// Stream a dataset's files through the cleaning into Kafka.
    File(Box<FileFlags>),
}

/// Flags every single collector has.
#[derive(Debug, Args)]
pub struct CommonCollectFlags {
    /// Kafka topic for the readings (rejects go to `<topic>.quarantine`).
    #[arg(long)]
    pub kafka_topic: String,
    /// Collector name (default: its kind).
    #[arg(long)]
    pub name: Option<String>,
    /// Unit a value is given in, FIELD=UNIT (repeatable).
    #[arg(long = "unit", value_name = "FIELD=UNIT")]
    pub units: Vec<String>,
    /// Unit a value is normalised to, FIELD=UNIT (repeatable).
    #[arg(long = "normalise", value_name = "FIELD=UNIT")]
    pub normalise: Vec<String>,
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaFlags,
}

impl CommonCollectFlags {
    /// A config table with these flags in it, to which a kind adds its own.
    fn table(&self, kind: &str, with_units: bool) -> Result<toml::Table> {
        let mut t = toml::Table::new();
        t.insert(
            "name".into(),
            self.name.clone().unwrap_or_else(|| kind.into()).into(),
        );
        t.insert("kafka_topic".into(), self.kafka_topic.clone().into());
        let units = pairs("--unit", &self.units)?;
        if !units.is_empty() {
            if !with_units {
                bail!("--unit: `collect {kind}` takes units from its own flags");
            }
            t.insert("units".into(), toml::Value::try_from(units)?);
        }
        let mut clean = toml::Table::new();
        clean.insert(
            "units".into(),
            toml::Value::try_from(pairs("--normalise", &self.normalise)?)?,
        );
        t.insert("clean".into(), clean.into());
        Ok(t)
    }
}

/// A collector config from a table built of flags (the config file's own checks apply).
fn from_table<T: serde::de::DeserializeOwned>(kind: &str, t: toml::Table) -> Result<T> {
    toml::Value::Table(t)
        .try_into()
        .map_err(|e| anyhow::anyhow!("collect {kind}: {e}"))
}

/// `collect modbus` flags.
#[derive(Debug, Args)]
pub struct ModbusFlags {
    /// Device host:port.
    #[arg(long)]
    pub device: String,
    /// Unit (slave) id.
    #[arg(long, default_value_t = 1)]
    pub unit_id: u8,
    /// Poll interval.
    #[arg(long, default_value = "1s")]
    pub interval: HumanDuration,
    /// A register: `SERIES/NAME=TABLE:ADDRESS:TYPE[:SCALE[:UNIT]]`, e.g.
    /// boiler/temperature=holding:0:f32 or pump/rpm=input:4:u16:0.1 (repeatable).
    #[arg(
        long = "register",
        required = true,
        value_name = "SERIES/NAME=TABLE:ADDR:TYPE"
    )]
    pub registers: Vec<String>,
    /// Common flags.
    #[command(flatten)]
    pub common: CommonCollectFlags,
}

impl ModbusFlags {
    /// The collector these flags describe.
    pub fn config(&self) -> Result<crate::collect::modbus::ModbusConfig> {
        let mut t = self.common.table("modbus", false)?;
        t.insert("device".into(), self.device.clone().into());
        t.insert("unit_id".into(), (self.unit_id as i64).into());
        t.insert("interval".into(), self.interval.to_string().into());
        let mut regs = Vec::new();
        for r in &self.registers {
            let bad = || {
                anyhow::anyhow!("--register {r:?}: expected SERIES/NAME=TABLE:ADDRESS:TYPE[:SCALE[:UNIT]], e.g. boiler/temperature=holding:0:f32")
            };
            let (key, spec) = r.split_once('=').ok_or_else(bad)?;
            let (series, name) = key.rsplit_once('/').ok_or_else(bad)?;
            let parts: Vec<&str> = spec.split(':').collect();
            if !(3..=5).contains(&parts.len()) {
                return Err(bad());
            }
            let mut e = toml::Table::new();
            e.insert("series".into(), series.into());
            e.insert("name".into(), name.into());
            e.insert("table".into(), parts[0].into());
            e.insert(
                "address".into(),
                parts[1].parse::<i64>().map_err(|_| bad())?.into(),
            );
            e.insert("type".into(), parts[2].into());
            if let Some(s) = parts.get(3) {
                e.insert("scale".into(), s.parse::<f64>().map_err(|_| bad())?.into());
            }
            if let Some(u) = parts.get(4) {
                e.insert("unit".into(), (*u).into());
            }
            regs.push(toml::Value::Table(e));
        }
        t.insert("registers".into(), regs.into());
        from_table("modbus", t)
    }
}

/// `collect opcua` flags.
#[derive(Debug, Args)]
pub struct OpcUaFlags {
    /// Endpoint URL, opc.tcp://host:port/path.
    #[arg(long)]
    pub endpoint: String,
    /// A monitored item: SERIES/NAME=NODE, e.g. boiler/temperature=ns=2;s=Boiler.Temperature
    /// (repeatable).
    #[arg(long = "item", required = true, value_name = "SERIES/NAME=NODE")]
    pub items: Vec<String>,
    /// Publishing interval.
    #[arg(long, default_value = "500ms")]
    pub publishing_interval: HumanDuration,
    /// Common flags.
    #[command(flatten)]
    pub common: CommonCollectFlags,
}

impl OpcUaFlags {
    /// The collector these flags describe.
    pub fn config(&self) -> Result<crate::collect::opcua::OpcUaConfig> {
        let mut t = self.common.table("opcua", false)?;
        t.insert("endpoint".into(), self.endpoint.clone().into());
        t.insert(
            "publishing_interval".into(),
            self.publishing_interval.to_string().into(),
        );
        let mut items = Vec::new();
        for i in &self.items {
            let bad = || {
                anyhow::anyhow!("--item {i:?}: expected SERIES/NAME=NODE, e.g. boiler/temperature=ns=2;s=Boiler.Temperature")
            };
            let (key, node) = i.split_once('=').ok_or_else(bad)?;
            let (series, name) = key.rsplit_once('/').ok_or_else(bad)?;
            let mut e = toml::Table::new();
            e.insert("series".into(), series.into());
            e.insert("name".into(), name.into());
            e.insert("node".into(), node.into());
            items.push(toml::Value::Table(e));
        }
        t.insert("items".into(), items.into());
        from_table("opcua", t)
    }
}

/// `collect http` flags.
#[derive(Debug, Args)]
pub struct HttpFlags {
    /// URL to poll ({symbol} is replaced by each --symbol).
    #[arg(long)]
    pub url: String,
    /// Response shape: open-meteo or finnhub-quote (default: generic JSON records).
    #[arg(long)]
    pub preset: Option<String>,
    /// Symbol for {symbol} in the URL (repeatable).
    #[arg(long = "symbol")]
    pub symbols: Vec<String>,
    /// Poll interval.
    #[arg(long, default_value = "1m")]
    pub interval: HumanDuration,
    /// Request header, NAME=VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Series id (open-meteo), prefix (finnhub-quote), or series of records without one.
    #[arg(long)]
    pub series: Option<String>,
    /// Generic: dotted path of the array of records.
    #[arg(long)]
    pub records: Option<String>,
    /// Generic: field with the series id.
    #[arg(long)]
    pub series_field: Option<String>,
    /// Generic: field with the event time.
    #[arg(long)]
    pub time_field: Option<String>,
    /// Common flags.
    #[command(flatten)]
    pub common: CommonCollectFlags,
}

fn put_opt(t: &mut toml::Table, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        t.insert(k.into(), v.clone().into());
    }
}

impl HttpFlags {
    /// The collector these flags describe.
    pub fn config(&self) -> Result<crate::collect::http::HttpConfig> {
        let mut t = self.common.table("http", true)?;
        t.insert("url".into(), self.url.clone().into());
        t.insert("interval".into(), self.interval.to_string().into());
        put_opt(&mut t, "preset", &self.preset);
        put_opt(&mut t, "series", &self.series);
        put_opt(&mut t, "records", &self.records);
        put_opt(&mut t, "series_field", &self.series_field);
        put_opt(&mut t, "time_field", &self.time_field);
        t.insert("symbols".into(), self.symbols.clone().into());
        let headers: std::collections::BTreeMap<String, String> = self
            .headers
            .iter()
            .map(|h| match h.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => bail!("--header {h:?}: expected NAME=VALUE"),
            })
            .collect::<Result<_>>()?;
        t.insert("headers".into(), toml::Value::try_from(headers)?);
        from_table("http", t)
    }
}

/// `collect websocket` flags.
#[derive(Debug, Args)]
pub struct WebSocketFlags {
    /// ws:// or wss:// URL.
    #[arg(long)]
    pub url: String,
    /// Message shape: finnhub-trades (default: generic JSON records).
    #[arg(long)]
    pub preset: Option<String>,
    /// Symbol to subscribe to (finnhub-trades; repeatable).
    #[arg(long = "symbol")]
    pub symbols: Vec<String>,
    /// Text message to send after connecting (repeatable).
    #[arg(long)]
    pub send: Vec<String>,
    /// Generic: dotted path of the array of records.
    #[arg(long)]
    pub records: Option<String>,
    /// Generic: field with the series id.
    #[arg(long)]
    pub series_field: Option<String>,
    /// Generic: field with the event time.
    #[arg(long)]
    pub time_field: Option<String>,
    /// Common flags.
    #[command(flatten)]
    pub common: CommonCollectFlags,
}

impl WebSocketFlags {
    /// The collector these flags describe.
    pub fn config(&self) -> Result<crate::collect::websocket::WebSocketConfig> {
        let mut t = self.common.table("websocket", true)?;
        t.insert("url".into(), self.url.clone().into());
        put_opt(&mut t, "preset", &self.preset);
        put_opt(&mut t, "records", &self.records);
        put_opt(&mut t, "series_field", &self.series_field);
        put_opt(&mut t, "time_field", &self.time_field);
        t.insert("symbols".into(), self.symbols.clone().into());
        t.insert("send".into(), self.send.clone().into());
        from_table("websocket", t)
    }
}

/// `collect cctv` flags.
#[derive(Debug, Args)]
pub struct CctvFlags {
    /// A camera's JPEG snapshot URL, NAME=URL (repeatable).
    #[arg(long = "snapshot", value_name = "NAME=URL")]
    pub snapshots: Vec<String>,
    /// A camera's MJPEG stream URL, NAME=URL (repeatable).
    #[arg(long = "mjpeg", value_name = "NAME=URL")]
    pub mjpeg: Vec<String>,
    /// Snapshot poll interval.
    #[arg(long, default_value = "1s")]
    pub interval: HumanDuration,
    /// Frigate: the MQTT broker host:port it publishes events to (instead of cameras).
    #[arg(long)]
    pub frigate_broker: Option<String>,
    /// Common flags.
    #[command(flatten)]
    pub common: CommonCollectFlags,
}

impl CctvFlags {
    /// The collector these flags describe.
    pub fn config(&self) -> Result<crate::collect::cctv::CctvConfig> {
        let mut t = self.common.table("cctv", false)?;
        let mut cams = Vec::new();
        for (flag, key, list) in [
            ("--snapshot", "snapshot", &self.snapshots),
            ("--mjpeg", "mjpeg", &self.mjpeg),
        ] {
            for c in list {
                let Some((name, url)) = c.split_once('=') else {
                    bail!("{flag} {c:?}: expected NAME=URL");
                };
                let mut e = toml::Table::new();
                e.insert("name".into(), name.into());
                e.insert(key.into(), url.into());
                cams.push(toml::Value::Table(e));
            }
        }
        if !cams.is_empty() {
            t.insert("cameras".into(), cams.into());
            t.insert("interval".into(), self.interval.to_string().into());
        }
        if let Some(b) = &self.frigate_broker {
            let mut f = toml::Table::new();
            f.insert("broker".into(), b.clone().into());
            t.insert("frigate".into(), f.into());
        }
        from_table("cctv", t)
    }
}

/// `collect file` flags.
#[derive(Debug, Args)]
pub struct FileFlags {
    /// A dataset manifest name, optionally with a file filter (`nab:machine_temperature`).
    pub dataset: String,
    /// Pace: max, 1x, 60x ...
    #[arg(long, default_value = "max")]
    pub speed: String,
    /// Where the data is (default: $STREAMGAUGE_DATA, ../shared/datasets).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Common flags.
    #[command(flatten)]
    pub common: CommonCollectFlags,
}

impl FileFlags {
    /// The collector these flags describe.
    pub fn config(&self) -> Result<crate::collect::file::FileConfig> {
        let mut t = self.common.table("file", true)?;
        t.insert("dataset".into(), self.dataset.clone().into());
        t.insert("speed".into(), self.speed.clone().into());
        if let Some(d) = &self.data_dir {
            t.insert("data_dir".into(), d.display().to_string().into());
        }
        from_table("file", t)
    }
}

/// `collect mqtt` flags.
#[derive(Debug, Args)]
pub struct MqttFlags {
    /// MQTT broker host:port.
    #[arg(long)]
    pub broker: String,
    /// Topic filter (repeatable; + and # wildcards).
    #[arg(long = "topic", required = true)]
    pub topics: Vec<String>,
    /// Kafka topic for the readings (rejects go to `<topic>.quarantine`).
    #[arg(long)]
    pub kafka_topic: String,
    /// QoS: 0 or 1.
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// MQTT version: 3 (3.1.1) or 5.
    #[arg(long, default_value_t = 3)]
    pub mqtt_version: u8,
    /// Payloads: json or number.
    #[arg(long, default_value = "json")]
    pub payload: String,
    /// JSON field with the series id (default: the topic).
    #[arg(long)]
    pub series_field: Option<String>,
    /// JSON field with the event time (default: time of receipt).
    #[arg(long)]
    pub time_field: Option<String>,
    /// JSON field to take as a value (repeatable; default: every numeric field).
    #[arg(long = "value-field")]
    pub value_fields: Vec<String>,
    /// Unit a value is sent in, FIELD=UNIT (repeatable).
    #[arg(long = "unit", value_name = "FIELD=UNIT")]
    pub units: Vec<String>,
    /// Unit a value is normalised to, FIELD=UNIT (repeatable).
    #[arg(long = "normalise", value_name = "FIELD=UNIT")]
    pub normalise: Vec<String>,
    /// Username.
    #[arg(long)]
    pub username: Option<String>,
    /// Password.
    #[arg(long)]
    pub password: Option<String>,
    /// Connect with TLS.
    #[arg(long)]
    pub tls: bool,
    /// CA certificate (PEM) to trust for TLS.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Collector name.
    #[arg(long, default_value = "mqtt")]
    pub name: String,
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaFlags,
}

fn pairs(flag: &str, v: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    v.iter()
        .map(|p| match p.split_once('=') {
            Some((k, u)) if !k.is_empty() && !u.is_empty() => Ok((k.to_string(), u.to_string())),
            _ => bail!("{flag} {p:?}: expected FIELD=UNIT"),
        })
        .collect()
}

impl MqttFlags {
    /// The collector these flags describe.
    pub fn config(&self) -> Result<crate::collect::mqtt::MqttConfig> {
        use crate::collect::mqtt::{MqttConfig, PayloadKind};
        Ok(MqttConfig {
            name: self.name.clone(),
            broker: self.broker.clone(),
            topics: self.topics.clone(),
            kafka_topic: self.kafka_topic.clone(),
            qos: self.qos,
            version: self.mqtt_version,
            client_id: None,
            username: self.username.clone(),
            password: self.password.clone(),
            tls: self.tls,
            ca_file: self.ca_file.clone(),
            payload: match self.payload.as_str() {
                "json" => PayloadKind::Json,
                "number" => PayloadKind::Number,
                other => bail!("--payload {other:?}: use json or number"),
            },
            series_field: self.series_field.clone(),
            time_field: self.time_field.clone(),
            value_fields: self.value_fields.clone(),
            value_name: "value".into(),
            units: pairs("--unit", &self.units)?,
            tags: Default::default(),
            clean: crate::collect::clean::CleanConfig {
                units: pairs("--normalise", &self.normalise)?,
                ..Default::default()
            },
        })
    }
}

/// Executes `collect`.
pub fn collect(a: CollectArgs, settings: &Settings) -> Result<()> {
    let mut collectors = crate::collect::Collectors::default();
    let flags = match &a.single {
        Some(CollectKind::Mqtt(m)) => {
            collectors.mqtt.push(m.config()?);
            &m.kafka
        }
        Some(CollectKind::Modbus(m)) => {
            collectors.modbus.push(m.config()?);
            &m.common.kafka
        }
        Some(CollectKind::Opcua(m)) => {
            collectors.opcua.push(m.config()?);
            &m.common.kafka
        }
        Some(CollectKind::Http(m)) => {
            collectors.http.push(m.config()?);
            &m.common.kafka
        }
        Some(CollectKind::Websocket(m)) => {
            collectors.websocket.push(m.config()?);
            &m.common.kafka
        }
        Some(CollectKind::Cctv(m)) => {
            collectors.cctv.push(m.config()?);
            &m.common.kafka
        }
        Some(CollectKind::File(m)) => {
            collectors.file.push(m.config()?);
            &m.common.kafka
        }
        None => {
            collectors = settings.collectors.clone();
            &a.kafka
        }
    };
    if let Some(dir) = &a.spool_dir {
        collectors.spool = Some(crate::collect::spool::SpoolConfig {
            dir: dir.clone(),
            max_mb: a.spool_max_mb,
        });
    }
    if collectors.is_empty() {
        bail!("no collectors: add [[mqtt]], [[modbus]], [[opcua]], [[http]], [[websocket]], [[cctv]] or [[file]] tables to the --config FILE, or run one from flags with `streamgauge collect <kind> ...`");
    }
    let Some(kafka) = flags.settings(settings)? else {
        bail!("collect needs --brokers (or STREAMGAUGE_BROKERS, or brokers in --config)")
    };
    let running = crate::collect::start(&collectors, &kafka)?;
    eprintln!(
        "{} collector(s) into Kafka at {}",
        collectors.len(),
        kafka.brokers
    );
    interrupt::install();
    let started = std::time::Instant::now();
    let mut reported = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if a.duration.is_some_and(|d| started.elapsed() >= d.0)
            || running.should_stop()
            || interrupt::interrupted()
        {
            break;
        }
        if reported.elapsed() >= crate::collect::REPORT_EVERY {
            reported = std::time::Instant::now();
            for (name, c) in &running.counters {
                let s = c.snapshot();
                eprintln!("{name}: {s}");
            }
        }
    }
    let mut first_error = None;
    for (name, r) in running.stop() {
        match r {
            Ok(s) => println!("{name}: {s}"),
            Err(e) => {
                eprintln!("{name}: {e}");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// `report` flags.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run's --output folder (outlier_scores, forecasts, throughput).
    #[arg(long)]
    pub input: PathBuf,
    /// Folder for the images.
    #[arg(long)]
    pub output: PathBuf,
    /// Series to draw, as series/field (repeatable); default: those with the most anomalies.
    #[arg(long, value_name = "KEY")]
    pub series: Vec<String>,
    /// How many series to draw when --series is not given.
    #[arg(long, default_value_t = 4)]
    pub top: usize,
    /// The last this many readings of each series are drawn.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(2..))]
    pub points: u32,
}

/// `generate` flags.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Workload: w1.
    pub workload: String,
    /// Rows to write.
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: u64,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// A finite number above zero.
fn positive_f64(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number above zero")),
    }
}

/// Parses `--window-zone`.
fn zone_arg(s: &str) -> Result<Zone, String> {
    Zone::parse(s)
}

/// `--from`: `beginning`, `end`, an RFC 3339 time, epoch milliseconds, or a duration before
/// now.
fn start_at(s: &str) -> std::result::Result<crate::kafka::source::StartAt, String> {
    use crate::kafka::source::StartAt;
    let t = s.trim();
    match t {
        "beginning" => return Ok(StartAt::Beginning),
        "end" => return Ok(StartAt::End),
        _ => {}
    }
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(StartAt::Time(ms));
    }
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(StartAt::Time(at.timestamp_millis()));
    }
    if let Ok(d) = t.parse::<HumanDuration>() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?;
        let ago = now.saturating_sub(d.0);
        return Ok(StartAt::Time(
            i64::try_from(ago.as_millis()).unwrap_or(i64::MAX),
        ));
    }
    Err(format!(
        "{s:?} is not a start: use beginning, end, a time (2026-12-06T10:00:00Z, or epoch ms) or a duration before now (2h)"
    ))
}

/// A top-k interval of at least 1 ms.
fn top_every(s: &str) -> std::result::Result<HumanDuration, String> {
    let d = s.parse::<HumanDuration>().map_err(|e| e.to_string())?;
    crate::config::at_least_1ms(d.0, "a top-k interval", "1s or 1m").map(HumanDuration)
}

fn state_ttl(s: &str) -> std::result::Result<HumanDuration, String> {
    let d = s.parse::<HumanDuration>().map_err(|e| e.to_string())?;
    crate::config::positive_ttl(d.0).map(HumanDuration)
}

/// Detector parameters from `--param NAME=VALUE` flags (names as in `SG_DET_<NAME>`).
fn detector_params(params: &[String]) -> Result<crate::analytics::detector::DetectorParams> {
    let mut overrides = Vec::with_capacity(params.len());
    for p in params {
        let (name, value) = p
            .split_once('=')
            .with_context(|| format!("--param {p:?}: expected NAME=VALUE, e.g. SEASON_DIV=6"))?;
        overrides.push((format!("SG_DET_{}", name.trim()), value.to_string()));
    }
    use crate::analytics::detector::{DetectorParams, ParamError};
    // The library's errors name the environment variable; say it as the flag was given.
    let flag = |var: &str| var.trim_start_matches("SG_DET_").to_string();
    DetectorParams::from_vars(overrides).map_err(|e| match e {
        ParamError::Unknown(var) => anyhow::anyhow!(
            "--param {}: names no detector parameter; known: {}",
            flag(&var),
            DetectorParams::env_names().collect::<Vec<_>>().join(", ")
        ),
        ParamError::Value {
            name,
            value,
            expected,
        } => anyhow::anyhow!(
            "--param {}={value:?}: expected a value of type {expected}",
            flag(&name)
        ),
    })
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Demo(a) => demo::run(*a, &settings),
        Command::Broker(a) => broker(a),
        Command::Replay(a) => replay::run(a, &settings).map(|_| ()),
        Command::Run(a) => run_dataflow(*a, &settings).map(|_| ()),
        Command::Collect(a) => collect(*a, &settings),
        Command::Report(a) => {
            let files = crate::report::render(&crate::report::ReportSpec {
                input: a.input,
                output: a.output,
                series: a.series,
                top: a.top,
                points: a.points as usize,
            })?;
            for f in files {
                println!("{}", f.display());
            }
            Ok(())
        }
        Command::Datasets => datasets(&settings),
        Command::Generate(a) => generate(a),
        Command::Nab(a) => nab(a, &settings),
        Command::ForecastEval(a) => forecast_eval::run(a, &settings),
        Command::Redeliver(a) => redeliver(a, &settings),
    }
}

/// `streamgauge redeliver FILE`: the rows of an undelivered file, sent again.
fn redeliver(a: RedeliverArgs, settings: &Settings) -> Result<()> {
    let Some(k) = a.kafka.settings(settings)? else {
        bail!("redeliver needs --brokers (or STREAMGAUGE_BROKERS, or brokers in --config)");
    };
    if !a.file.exists() {
        bail!(
            "{}: no such file (nothing left to redeliver?)",
            a.file.display()
        );
    }
    let r = crate::kafka::results::redeliver(&k.producer_config(), &a.file, a.wait.0)?;
    eprintln!(
        "redeliver {}: {} rows delivered, {} failed again, {} lines unreadable",
        a.file.display(),
        r.delivered,
        r.kept,
        r.unreadable
    );
    if r.kept > 0 || r.unreadable > 0 {
        bail!(
            "{} rows are still in {} (failed again: see their reason there; or unreadable)",
            r.kept + r.unreadable,
            a.file.display()
        );
    }
    Ok(())
}

fn broker(a: BrokerArgs) -> Result<()> {
    let b = crate::kafka::broker::EmbeddedBroker::start(1)?;
    for t in &a.topics {
        let (name, parts) = match t.split_once(':') {
            Some((n, p)) => (
                n,
                p.parse::<i32>()
                    .with_context(|| format!("--topic {t}: partitions must be a number"))?,
            ),
            None => (t.as_str(), a.partitions),
        };
        b.create_topic(name, parts)?;
        println!("topic {name}: {parts} partitions");
    }
    let bound = b.listen(&a.listen)?;
    println!(
        "embedded Kafka-protocol broker (development only, in memory) on {bound} (broker at {})",
        b.bootstrap()
    );
    println!("production: point --brokers at a real Kafka cluster");
    match a.duration {
        Some(d) => std::thread::sleep(d.0),
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
    Ok(())
}

fn nab(a: NabArgs, settings: &Settings) -> Result<()> {
    use crate::nab::score::{Scorer, PROFILES};
    if a.detector != "gauge" {
        bail!("unknown detector {:?}; known: gauge", a.detector);
    }
    if a.workers == 0 {
        bail!("-w/--workers must be at least 1");
    }
    let detector = detector_params(&a.params)?;
    let dir = match a.data {
        Some(d) => d,
        None => dataset::data_dirs(settings.data_dir.as_deref())
            .into_iter()
            .map(|d| d.join("nab"))
            .find(|d| d.is_dir())
            .context("no nab folder in the data directories; give --data <NAB folder>")?,
    };
    let corpus = crate::nab::Corpus::load(&dir)?;
    let scratch = a.out.join(".engine");
    let run = crate::nab::run_detector(&corpus, a.workers, &detector, &scratch)?;
    let written = corpus.write_scores(&a.out, &a.detector, &run.scores)?;
    let _ = std::fs::remove_dir_all(&scratch);
    let scorer = Scorer::new(&corpus);
    println!(
        "{}: {} files, {} readings in {:.2}s ({:.0} readings/s on {} workers); scores in {}",
        a.detector,
        written,
        run.readings,
        run.elapsed.as_secs_f64(),
        run.readings as f64 / run.elapsed.as_secs_f64().max(1e-9),
        a.workers,
        a.out.join(&a.detector).display()
    );
    let params = if a.params.is_empty() {
        "defaults".to_string()
    } else {
        format!("defaults except {} (a tuning run)", a.params.join(" "))
    };
    println!("parameters: {params}");
    println!(
        "{:<20} {:>10} {:>10} {:>9} {:>8}",
        "profile", "score", "threshold", "windows", "FP rows"
    );
    let mut summary = serde_json::Map::new();
    summary.insert("parameters".to_string(), serde_json::json!(params));
    for p in &PROFILES {
        let o = scorer.best(&run.scores, p);
        println!(
            "{:<20} {:>10.2} {:>10.4} {:>5}/{:<3} {:>8}",
            p.name,
            o.normalised,
            o.threshold,
            o.detected_windows,
            scorer.windows(),
            o.false_positives
        );
        summary.insert(
            p.name.to_string(),
            serde_json::json!({"score": o.normalised, "raw": o.raw, "threshold": o.threshold}),
        );
    }
    let path = a.out.join(format!("{}_scores.json", a.detector));
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn datasets(settings: &Settings) -> Result<()> {
    let dirs = dataset::data_dirs(settings.data_dir.as_deref());
    println!("{:<36} {:<8} LOCATION / DESCRIPTION", "DATASET", "STATUS");
    for m in Manifest::all_builtin()? {
        match dataset::locate(&m, settings.data_dir.as_deref()) {
            Ok(p) => println!(
                "{:<36} {:<8} {}\n{:<45} {}",
                m.name,
                "found",
                p.display(),
                "",
                m.description
            ),
            Err(_) => println!(
                "{:<36} {:<8} {}\n{:<45} {}",
                m.name, "missing", m.folder, "", m.description
            ),
        }
    }
    println!(
        "\nsearched: {}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("a CSV path also works wherever a dataset name does (with --time-col/--series-col/--value-col)");
    Ok(())
}

fn generate(a: GenerateArgs) -> Result<()> {
    if a.workload != "w1" {
        bail!(
            "unknown workload {:?}: the only generated workload is w1",
            a.workload
        );
    }
    let f =
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    crate::dataset::generate::write_w1(&mut w, a.rows, a.seed)?;
    eprintln!("wrote {} rows of W1 to {}", a.rows, a.out.display());
    Ok(())
}

/// Executes `run`, returning the engine's report.
pub fn run_dataflow(a: RunArgs, settings: &Settings) -> Result<engine::RunReport> {
    crate::dataflows::find(&a.dataflow)?;
    if let Some(r) = &a.reference {
        crate::engine::reference::load(r)?;
    }
    let detector = detector_params(&a.params)?;
    let kafka = a.kafka.settings(settings)?;
    if a.from.is_some() && a.topic.is_none() {
        bail!("--from picks where to start reading a Kafka topic: give it with --topic (a dataset is read whole)");
    }
    if a.until_end && a.from == Some(crate::kafka::source::StartAt::End) {
        bail!("--from end with --until-end reads nothing: the end at the start is where it would stop. Drop one of them");
    }
    let input = match (&a.dataset, &a.topic) {
        (Some(_), Some(_)) => bail!("give either --dataset or --topic, not both"),
        (Some(d), None) => match a.data.csv_spec(d)? {
            Some(spec) => Input::Csv(spec),
            None => Input::loaded(a.data.load(d, settings)?),
        },
        (None, Some(t)) => {
            let Some(k) = kafka.clone() else {
                bail!("--topic needs --brokers (or STREAMGAUGE_BROKERS, or brokers in --config)")
            };
            Input::Kafka(KafkaInput {
                settings: k,
                topic: t.clone(),
                until_end: a.until_end,
                metadata_refresh: Duration::from_secs(5),
                start: a.from.unwrap_or_default(),
            })
        }
        (None, None) => bail!("give --topic (with --brokers) or --dataset"),
    };
    let result_topics = match (&input, &kafka, &a.topic) {
        (Input::Kafka(_), Some(k), Some(t)) if !a.no_result_topics => Some((k.clone(), t.clone())),
        _ => None,
    };
    if a.output.is_none() && result_topics.is_none() && a.dashboard.no_dashboard {
        eprintln!("note: no --output directory, no result topics and no dashboard: results are only counted");
    }
    let dashboard = a.dashboard.start_for(a.process, a.processes)?;
    let stop = Arc::new(AtomicBool::new(false));
    interrupt::stop_on_signal(&stop);
    if let Some(d) = a.duration {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d.0);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let spec = RunSpec {
        dataflow: a.dataflow.clone(),
        input,
        cluster: ClusterArgs {
            workers: a.workers,
            processes: a.processes,
            process: a.process,
            hostfile: a.hostfile.clone(),
        },
        window: a.window.map_or(settings.window, |d| d.0),
        window_zone: a
            .window_zone
            .clone()
            .unwrap_or_else(|| settings.window_zone.clone()),
        slide: a.slide.map(|d| d.0),
        readings: a.readings as usize,
        threshold: a.threshold,
        top: a.top as usize,
        top_every: a.top_every.0,
        horizon: a.horizon as usize,
        sessions: crate::dataflows::sessions::SessionParams {
            gap_ms: i64::try_from(a.gap.0.as_millis()).unwrap_or(i64::MAX),
            above: a.above,
            below: a.below,
            max_ms: a
                .max_session
                .map(|d| i64::try_from(d.0.as_millis()).unwrap_or(i64::MAX)),
        },
        reference: a.reference.clone(),
        quantiles: a.quantiles,
        detector,
        state_ttl: a.state_ttl.map(|d| d.0).or(settings.state_ttl),
        lateness: a.lateness.map_or(settings.lateness, |d| d.0),
        idle_timeout: a.idle_timeout.map_or(settings.idle_timeout, |d| d.0),
        end_confirm: a.end_confirm.0,
        output_dir: a.output.clone(),
        output_format: a.output_format,
        result_topics,
        undelivered: a.undelivered.clone(),
        metrics: Arc::new(Metrics::default()),
        stop,
        hub: dashboard.as_ref().map(|(h, _)| (h.clone(), String::new())),
        dashboard_cluster: a.dashboard.dashboard_scope == crate::dashboard::DashboardScope::Cluster
            && !a.dashboard.no_dashboard,
        savepoint: a.savepoint.clone(),
        checkpoint_every: a.checkpoint_every.map(|d| d.0),
    };
    let report = engine::run(spec)?;
    drop(dashboard);
    let m = report.metrics;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "{}: {} readings in {:.2}s ({:.0}/s), {} rows out, {} late, {} quarantined, {} offsets skipped; outputs {:?}",
        a.dataflow,
        m.readings_in,
        secs,
        m.readings_in as f64 / secs,
        m.rows_out,
        m.late,
        m.quarantined,
        m.skipped_offsets,
        report.outputs
    );
    if let Some(dir) = &report.resumed_from {
        eprintln!("resumed from the savepoint {}", dir.display());
        if report.results_not_resent > 0 {
            eprintln!(
                "{} result rows the run before had already sent to Kafka after the checkpoint were not sent again",
                report.results_not_resent
            );
        }
    }
    let c = &report.checkpoints;
    if let Some(last) = &c.last {
        eprintln!(
            "{} checkpoints written, the newest {} ({:.1} MB){}",
            c.count,
            last.display(),
            c.last_bytes as f64 / 1e6,
            if c.failed > 0 {
                format!("; {} given up (see the log)", c.failed)
            } else {
                String::new()
            }
        );
    } else if c.failed > 0 {
        eprintln!("no checkpoint written; {} given up (see the log)", c.failed);
    }
    if let Some(w) = &report.savepoint {
        eprintln!(
            "stopped: savepoint written to {} ({} states, {} readings held, {:.1} MB); run again \
             with --savepoint {} to go on from there",
            w.dir.display(),
            w.states,
            w.held,
            w.bytes as f64 / 1e6,
            a.savepoint.as_deref().unwrap_or(&w.dir).display()
        );
    }
    if let Some(t) = report.cut_short_from {
        let when = chrono::DateTime::from_timestamp_millis(t).map_or_else(
            || t.to_string(),
            |d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        );
        eprintln!(
            "stopped before the end: the windows starting at {when} ({t} ms) or later were \
             written cut short; to redo them whole, run again with --from {when} and keep its \
             windows starting there or later"
        );
    }
    if let Some(path) = &report.undelivered {
        bail!(
            "{} result rows were not delivered to Kafka (see the log for why); they are kept in \
             {}: once Kafka takes them, send them with `streamgauge redeliver {} --brokers ...`",
            report.metrics.results_undelivered,
            path.display(),
            path.display()
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::start_at;
    use crate::kafka::source::StartAt;

    #[test]
    fn from_reads_the_ends_a_time_epoch_ms_and_a_duration_before_now() {
        assert_eq!(start_at("beginning"), Ok(StartAt::Beginning));
        assert_eq!(start_at("end"), Ok(StartAt::End));
        assert_eq!(
            start_at("2026-12-06T10:00:00Z"),
            Ok(StartAt::Time(1_796_551_200_000))
        );
        assert_eq!(
            start_at("2026-12-06T11:00:00+01:00"),
            Ok(StartAt::Time(1_796_551_200_000))
        );
        assert_eq!(
            start_at("1700000000000"),
            Ok(StartAt::Time(1_700_000_000_000))
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let Ok(StartAt::Time(t)) = start_at("2h") else {
            panic!("a duration is a time before now")
        };
        assert!((now - 7_200_000 - t).abs() < 60_000, "{t} vs {now}");
        assert!(start_at("soon")
            .unwrap_err()
            .contains("duration before now"));
    }
}
