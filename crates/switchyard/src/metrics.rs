//! What the daemon records of its work: the access log and, when a metrics
//! listener is configured, Prometheus metrics. [`Telemetry`] is the engine's
//! [`Observer`].
//!
//! Every label set is bounded, so a caller cannot grow the series: a method
//! gets its own label once the configuration or the local server's
//! reflection names it, or a machine answered it `OK` (a server implements
//! it); until then it counts as `other`. A machine likewise gets its label
//! once it is in the registry or has answered (a call reached it), so that
//! callers naming made-up addresses cannot use up the machine labels. Each
//! kind is capped at [`MAX_LABELS`] values, beyond which everything counts
//! as `other`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use switchyard_director::{MachineDirector, authz};
use switchyard_engine::observe::{CallEnd, CallStart, ConnectionEvent, LegEnd, Observer};
pub use switchyard_engine::status::code_name;
use switchyard_engine::{Backend, ChannelState, Mode, PeerAddr};
use tonic::Code;

/// Most distinct values of one label.
pub const MAX_LABELS: usize = 1024;

const OTHER: &str = "other";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    mode: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MachineCodeLabels {
    machine: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MachineLabels {
    machine: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MachineStateLabels {
    machine: &'static str,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    event: &'static str,
}

/// The engine's observer: the access log, and the metrics if any.
#[derive(Debug)]
pub struct Telemetry {
    director: Arc<MachineDirector>,
    access_log: AtomicBool,
    metrics: Option<Metrics>,
}

impl Telemetry {
    /// The access log of `director`'s calls (one line per call at `info`
    /// when `access_log`, else at `debug`), and `metrics` if given.
    pub fn new(director: Arc<MachineDirector>, access_log: bool, metrics: Option<Metrics>) -> Self {
        Self {
            director,
            access_log: AtomicBool::new(access_log),
            metrics,
        }
    }

    /// Turns the access log on or off (reload).
    pub fn set_access_log(&self, on: bool) {
        self.access_log.store(on, Ordering::Relaxed);
    }

    /// The metrics, when they are recorded.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// The metrics in the Prometheus text format (empty without metrics).
    pub fn encode(&self) -> String {
        self.metrics
            .as_ref()
            .map(|m| m.encode(&self.director))
            .unwrap_or_default()
    }

    /// Whether the local server declares `method` (its reflection).
    fn declared(&self, method: &str) -> bool {
        self.director
            .catalog()
            .is_some_and(|catalog| catalog.knows(method))
    }

    /// How a call went.
    fn mode(&self, mode: Option<Mode>, backends: &[Arc<dyn Backend>]) -> CallMode {
        match (mode, backends.first()) {
            (None, _) => CallMode::Refused,
            (Some(Mode::OneToMany(_)), _) => CallMode::FanOut,
            (Some(Mode::OneToOne), Some(backend))
                if std::ptr::addr_eq(
                    Arc::as_ptr(backend),
                    Arc::as_ptr(self.director.local_backend()),
                ) =>
            {
                CallMode::Local
            }
            (Some(Mode::OneToOne), _) => CallMode::Remote,
        }
    }
}

impl Observer for Telemetry {
    /// Calls cost nothing to observe when there are no metrics and the
    /// access log is neither on nor enabled at `debug`.
    fn observes_calls(&self) -> bool {
        self.metrics.is_some()
            || self.access_log.load(Ordering::Relaxed)
            || tracing::enabled!(target: ACCESS_LOG, tracing::Level::DEBUG)
    }

    fn call_started(&self, call: &CallStart<'_>) {
        if let Some(metrics) = &self.metrics {
            metrics.call_started(call);
        }
    }

    fn call_ended(&self, call: &CallEnd<'_>) {
        let mode = self.mode(call.mode, call.backends);
        if let Some(metrics) = &self.metrics {
            metrics.call_ended(call, mode, || self.declared(call.method));
        }
        access_log(self.access_log.load(Ordering::Relaxed), call, mode.label());
    }

    fn leg_ended(&self, leg: &LegEnd<'_>) {
        if let Some(metrics) = &self.metrics {
            metrics.leg_ended(leg, || self.declared(leg.method));
        }
    }

    fn connection(&self, event: ConnectionEvent, _peer: &PeerAddr) {
        if let Some(metrics) = &self.metrics {
            metrics.connection(event);
        }
    }
}

/// The daemon's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    /// `call_duration_seconds` by [`CallMode`], and `open_calls` for
    /// one-to-one and fan-out calls: series with fixed labels, looked up
    /// once here instead of hashed into their family on every call.
    call_seconds: [Histogram; CallMode::ALL.len()],
    open_one_to_one: Gauge,
    open_fan_out: Gauge,
    machine_calls: Family<MachineCodeLabels, Counter>,
    machine_seconds: Family<MachineLabels, Histogram>,
    machine_state: Family<MachineStateLabels, Gauge>,
    late_machines: Counter,
    error_entries: Family<CodeLabels, Counter>,
    bytes_received: Counter,
    bytes_sent: Counter,
    connections: Family<ConnectionLabels, Counter>,
    methods: Names,
    machines: Names,
    /// One scrape at a time: encoding clears and refills the state gauges.
    encoding: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency() -> Histogram {
    // 100 µs to ~26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

impl Metrics {
    /// Metrics in which `known_methods` get their own label from the start.
    pub fn new(known_methods: impl IntoIterator<Item = String>) -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let calls = Family::default();
        registry.register(
            "calls",
            "Calls by method, mode (local, remote, fan_out, refused) and status code",
            calls.clone(),
        );
        let call_seconds = Family::<ModeLabels, Histogram>::new_with_constructor(latency);
        registry.register(
            "call_duration_seconds",
            "Call duration by mode, from the request to the end of the response",
            call_seconds.clone(),
        );
        let call_seconds = CallMode::ALL
            .map(|mode| call_seconds.get_or_create_owned(&ModeLabels { mode: mode.label() }));
        let open_calls = Family::<ModeLabels, Gauge>::default();
        registry.register(
            "open_calls",
            "Calls running now (streams included), by mode",
            open_calls.clone(),
        );
        let open = |mode| open_calls.get_or_create_owned(&ModeLabels { mode });
        let machine_calls = Family::default();
        registry.register(
            "machine_calls",
            "Calls to each machine (one-to-one, and each fan-out leg) by status code",
            machine_calls.clone(),
        );
        let machine_seconds = Family::<MachineLabels, Histogram>::new_with_constructor(latency);
        registry.register(
            "machine_call_duration_seconds",
            "Duration of calls to each machine",
            machine_seconds.clone(),
        );
        let machine_state = Family::default();
        registry.register(
            "machine_connection_state",
            "1 for each machine's connection state: idle, connecting, up, down, closed",
            machine_state.clone(),
        );
        let late_machines = Counter::default();
        registry.register(
            "fan_out_late_machines",
            "Machines a unary fan-out answered without, at the caller's deadline (partial answers)",
            late_machines.clone(),
        );
        let error_entries = Family::default();
        registry.register(
            "fan_out_error_entries",
            "Fan-out error entries, by status code",
            error_entries.clone(),
        );
        let bytes_received = Counter::default();
        registry.register(
            "received_bytes",
            "Request bytes received from callers",
            bytes_received.clone(),
        );
        let bytes_sent = Counter::default();
        registry.register(
            "sent_bytes",
            "Response bytes sent to callers",
            bytes_sent.clone(),
        );
        let connections = Family::default();
        registry.register(
            "connections",
            "Connections by event: accepted, refused (cap), evicted (cap), idle_closed, handshake_timeout, tls_failed",
            connections.clone(),
        );
        let methods = Names::default();
        for method in known_methods {
            methods.intern(&method);
        }
        Self {
            registry,
            calls,
            call_seconds,
            open_one_to_one: open(OPEN_ONE_TO_ONE),
            open_fan_out: open(OPEN_FAN_OUT),
            machine_calls,
            machine_seconds,
            machine_state,
            late_machines,
            error_entries,
            bytes_received,
            bytes_sent,
            connections,
            methods,
            machines: Names::default(),
            encoding: Mutex::new(()),
        }
    }

    /// The metrics in the Prometheus text format, with the connection
    /// state of `director`'s machines as of now.
    pub fn encode(&self, director: &MachineDirector) -> String {
        let _one_scrape = self.encoding.lock().unwrap_or_else(PoisonError::into_inner);
        self.machine_state.clear();
        for machine in director.machines() {
            // Named as the machine's calls are (its backend's name).
            let name = match machine.info.addr.as_str() {
                "" => "local",
                addr => addr,
            };
            let known = machine.local
                || !machine.info.id.is_empty()
                || matches!(machine.state, ChannelState::Connected);
            let label = self.machines.label(name, || known);
            if label == OTHER {
                continue;
            }
            let labels = MachineStateLabels {
                machine: label,
                state: state_name(&machine.state),
            };
            self.machine_state.get_or_create(&labels).set(1);
        }
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// A method's label: its own once `known` (declared by the local
    /// server, or answered `OK` by a machine) or configured, else `other`.
    /// `known` is only asked while the method has no label.
    fn method(&self, method: &str, known: impl FnOnce() -> bool) -> &'static str {
        self.methods.label(method, known)
    }

    /// A machine's label: its own once a call with status `code` shows
    /// that it was reached, else `other` until it has one.
    fn machine(&self, backend: &dyn Backend, code: Code) -> &'static str {
        let reached = !matches!(
            code,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
        );
        // Named into a reused buffer: no allocation per call.
        thread_local!(static NAME: RefCell<String> = const { RefCell::new(String::new()) });
        NAME.with_borrow_mut(|name| {
            name.clear();
            let _ = write!(name, "{backend}");
            self.machines.label(name, || reached)
        })
    }
}

/// How a call went, as the `mode` label of `calls_total` and
/// `call_duration_seconds` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallMode {
    Refused,
    FanOut,
    Local,
    Remote,
}

impl CallMode {
    const ALL: [Self; 4] = [Self::Refused, Self::FanOut, Self::Local, Self::Remote];

    fn label(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::FanOut => "fan_out",
            Self::Local => "local",
            Self::Remote => "remote",
        }
    }
}

/// The `mode` labels of `open_calls`.
const OPEN_ONE_TO_ONE: &str = "one_to_one";
const OPEN_FAN_OUT: &str = "fan_out";

fn state_name(state: &ChannelState) -> &'static str {
    match state {
        ChannelState::Idle => "idle",
        ChannelState::Connecting => "connecting",
        ChannelState::Connected => "up",
        ChannelState::Down { .. } => "down",
        ChannelState::Closed => "closed",
    }
}

impl Metrics {
    /// The `open_calls` gauge of calls run in `mode`.
    fn open(&self, mode: Mode) -> &Gauge {
        match mode {
            Mode::OneToOne => &self.open_one_to_one,
            Mode::OneToMany(_) => &self.open_fan_out,
        }
    }

    fn call_started(&self, call: &CallStart<'_>) {
        self.open(call.mode).inc();
    }

    fn call_ended(&self, call: &CallEnd<'_>, mode: CallMode, declared: impl FnOnce() -> bool) {
        if let Some(open) = call.mode {
            self.open(open).dec();
        }
        let code = code_name(call.code);
        self.calls
            .get_or_create(&CallLabels {
                // A fan-out says OK even when every machine failed; its legs
                // said whether the method exists.
                method: self.method(call.method, || {
                    (call.code == Code::Ok && call.mode == Some(Mode::OneToOne)) || declared()
                }),
                mode: mode.label(),
                code,
            })
            .inc();
        let seconds = call.duration.as_secs_f64();
        self.call_seconds[mode as usize].observe(seconds);
        self.bytes_received.inc_by(call.bytes_in);
        self.bytes_sent.inc_by(call.bytes_out);
        if call.mode == Some(Mode::OneToOne)
            && let Some(backend) = call.backends.first()
        {
            let machine = self.machine(&**backend, call.code);
            self.machine_calls
                .get_or_create(&MachineCodeLabels { machine, code })
                .inc();
            self.machine_seconds
                .get_or_create(&MachineLabels { machine })
                .observe(seconds);
        }
    }

    fn leg_ended(&self, leg: &LegEnd<'_>, declared: impl FnOnce() -> bool) {
        self.method(leg.method, || leg.code == Code::Ok || declared());
        let machine = self.machine(leg.backend, leg.code);
        let code = code_name(leg.code);
        self.machine_calls
            .get_or_create(&MachineCodeLabels { machine, code })
            .inc();
        self.machine_seconds
            .get_or_create(&MachineLabels { machine })
            .observe(leg.duration.as_secs_f64());
        if leg.error_entry {
            self.error_entries.get_or_create(&CodeLabels { code }).inc();
            if leg.code == Code::DeadlineExceeded {
                self.late_machines.inc();
            }
        }
    }

    fn connection(&self, event: ConnectionEvent) {
        let event = match event {
            ConnectionEvent::Accepted => "accepted",
            ConnectionEvent::Refused => "refused",
            ConnectionEvent::Evicted => "evicted",
            ConnectionEvent::IdleClosed => "idle_closed",
            ConnectionEvent::HandshakeTimeout => "handshake_timeout",
            ConnectionEvent::TlsFailed => "tls_failed",
        };
        self.connections
            .get_or_create(&ConnectionLabels { event })
            .inc();
    }
}

/// The log target of the access log.
const ACCESS_LOG: &str = "switchyard::access";

/// One line per call: at `info` when the access log is on, else at `debug`
/// (only then are its fields computed).
fn access_log(on: bool, call: &CallEnd<'_>, mode: &str) {
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                target: ACCESS_LOG,
                method = call.method,
                mode,
                machines = %Machines(call.backends),
                code = code_name(call.code),
                duration_ms = call.duration.as_secs_f64() * 1000.0,
                bytes_in = call.bytes_in,
                bytes_out = call.bytes_out,
                peer = %call.peer.map_or_else(|| "-".to_owned(), |p| p.addr.to_string()),
                caller = %call
                    .peer
                    .and_then(authz::identity_of)
                    .map_or_else(|| "-".to_owned(), |i| i.to_string()),
                "call"
            )
        };
    }
    if on {
        line!(info);
    } else {
        line!(debug);
    }
}

/// Backends as `a,b,c`.
struct Machines<'a>(&'a [Arc<dyn Backend>]);

impl std::fmt::Display for Machines<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, backend) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{backend}")?;
        }
        Ok(())
    }
}

/// A bounded set of label values, each allocated once for the process's
/// life (bounded by [`MAX_LABELS`], so never more than that leaks).
#[derive(Debug, Default)]
struct Names(Mutex<HashMap<String, &'static str>>);

impl Names {
    /// The label for `name`, added if there is room.
    fn intern(&self, name: &str) -> &'static str {
        let mut names = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(label) = names.get(name) {
            return label;
        }
        if names.len() >= MAX_LABELS {
            return OTHER;
        }
        let label: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(name.to_owned(), label);
        label
    }

    /// The label for `name`, if it has one.
    fn get(&self, name: &str) -> Option<&'static str> {
        let names = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        names.get(name).copied()
    }

    /// The label for `name`: its own if it has one, or if `earned` says it
    /// has earned one (and there is room), else `other`. `earned` is only
    /// asked on a miss: the usual call costs one lookup.
    fn label(&self, name: &str, earned: impl FnOnce() -> bool) -> &'static str {
        match self.get(name) {
            Some(label) => label,
            None if earned() => self.intern(name),
            None => OTHER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_bounded() {
        let names = Names::default();
        for i in 0..MAX_LABELS + 10 {
            let label = names.intern(&format!("/m.S/M{i}"));
            if i < MAX_LABELS {
                assert_eq!(label, format!("/m.S/M{i}"));
            } else {
                assert_eq!(label, OTHER);
            }
        }
        assert_eq!(names.get("/m.S/M0"), Some("/m.S/M0"));
        assert_eq!(names.get("/never.Seen/X"), None);
        assert_eq!(names.label("/never.Seen/X", || false), OTHER);
        // Full: an earned name still counts as `other`.
        assert_eq!(names.label("/never.Seen/X", || true), OTHER);
        assert_eq!(
            names.label("/m.S/M1", || unreachable!("labelled")),
            "/m.S/M1"
        );
    }

    /// A backend known only by its name.
    #[derive(Debug)]
    struct Named(&'static str);

    impl std::fmt::Display for Named {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Backend for Named {
        fn connect<'a>(
            &'a self,
            _: &'a http::request::Parts,
        ) -> futures_util::future::BoxFuture<'a, Result<switchyard_engine::Upstream, tonic::Status>>
        {
            unreachable!("only named")
        }
    }

    #[test]
    fn machines_get_their_label_once_reached() {
        let metrics = Metrics::new([]);
        // Callers naming addresses nobody answers at use up no labels.
        for i in 0..MAX_LABELS + 10 {
            let name: &'static str = Box::leak(format!("[fd00::{i:x}]:51000").into_boxed_str());
            for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Cancelled] {
                assert_eq!(metrics.machine(&Named(name), code), OTHER);
            }
        }
        let real = Named("[fd00::1]:51000");
        assert_eq!(metrics.machine(&real, Code::NotFound), real.0);
        assert_eq!(metrics.machine(&real, Code::Unavailable), real.0);
    }

    #[test]
    fn calls_are_observed_only_for_metrics_or_the_access_log() {
        let director = || {
            Arc::new(MachineDirector::new(
                "/nonexistent/sy.sock",
                51000,
                switchyard_director::DirectorOptions::default(),
            ))
        };
        // No subscriber in unit tests: the access log is not enabled at debug.
        let quiet = Telemetry::new(director(), false, None);
        assert!(!quiet.observes_calls());
        quiet.set_access_log(true);
        assert!(quiet.observes_calls());
        quiet.set_access_log(false);
        assert!(!quiet.observes_calls());
        assert!(Telemetry::new(director(), false, Some(Metrics::new([]))).observes_calls());
    }

    #[test]
    fn call_modes_index_their_series() {
        for (i, mode) in CallMode::ALL.into_iter().enumerate() {
            assert_eq!(mode as usize, i, "{}", mode.label());
        }
        // Fixed series are there from the start, at zero.
        let text = Metrics::new([]).encode(&MachineDirector::new(
            "/nonexistent/sy.sock",
            51000,
            switchyard_director::DirectorOptions::default(),
        ));
        for mode in CallMode::ALL {
            let count = format!(
                "switchyard_call_duration_seconds_count{{mode=\"{}\"}} 0",
                mode.label()
            );
            assert!(text.contains(&count), "{count} missing from\n{text}");
        }
        for mode in [OPEN_ONE_TO_ONE, OPEN_FAN_OUT] {
            let open = format!("switchyard_open_calls{{mode=\"{mode}\"}} 0");
            assert!(text.contains(&open), "{open} missing from\n{text}");
        }
    }

    #[test]
    fn methods_get_their_label_once_answered_ok_or_configured() {
        let metrics = Metrics::new(["/known.S/M".to_owned()]);
        assert_eq!(metrics.method("/known.S/M", || false), "/known.S/M");
        assert_eq!(metrics.method("/probe.S/X", || false), OTHER);
        assert_eq!(metrics.method("/real.S/Y", || true), "/real.S/Y");
        assert_eq!(metrics.method("/real.S/Y", || false), "/real.S/Y");
    }
}
