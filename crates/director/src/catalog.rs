//! What the local server's methods are, learned from its gRPC reflection.
//!
//! Fan-out must know two things about a method that nothing on the wire
//! says: whether its replies stream (forward them as they come) or not
//! (merge them into one), and whether its reply type fits the fan-out
//! contract at all (`repeated X messages = 1`, `X` keeping field 1 for
//! `Metadata`); without that, tagging writes into a field that means
//! something else and the caller gets undecodable bytes, or an `OK` with
//! an empty list. A configured list catches the first only until someone
//! forgets a method. So the director asks its own machine's server, which
//! serves the same API as every other machine, through reflection (v1, or
//! v1alpha on older servers): on first use (so an embedder's director is
//! right by default), again on [`MethodCatalog::refresh`] and every
//! [`REDISCOVER_EVERY`]. Once the server has answered, a method it does not
//! declare has no known reply type, so a tagged fan-out of it is refused
//! too, unless configured as streamed; from a server without reflection
//! nothing is known, and every method is fanned out as configured.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorProto};
use tokio::sync::{Notify, watch};
use tonic::transport::Endpoint;

use crate::reflection::{ReflectionClient, ReflectionError, ServiceFiles, connect_unix};

/// Bound of one whole discovery (connect plus every request).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the catalog is learned again (the local server may have been
/// upgraded).
pub const REDISCOVER_EVERY: Duration = Duration::from_secs(300);

/// How long the first fan-out call waits for the first discovery to end.
pub const FIRST_DISCOVERY_WAIT: Duration = Duration::from_secs(2);

/// What the catalog knows of one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodFacts {
    /// Its replies stream.
    pub streamed: bool,
    /// Why its replies cannot be fanned out, if they cannot.
    pub unfit: Option<String>,
}

/// The methods of the local server, by `/package.Service/Method`.
#[derive(Debug)]
pub struct MethodCatalog {
    /// `None` until the server answers reflection (and again after it says
    /// it has none).
    methods: RwLock<Option<Arc<HashMap<String, MethodFacts>>>>,
    /// `true` once a first discovery ended, however it ended.
    settled: watch::Sender<bool>,
    refresh: Arc<Notify>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Default for MethodCatalog {
    fn default() -> Self {
        Self {
            methods: RwLock::default(),
            settled: watch::Sender::new(false),
            refresh: Arc::new(Notify::new()),
            task: Mutex::new(None),
        }
    }
}

impl MethodCatalog {
    /// A catalog of `methods`, already settled (tests, or an embedder that
    /// knows its API).
    pub fn with_methods(methods: HashMap<String, MethodFacts>) -> Self {
        let catalog = Self::default();
        catalog.replace(Some(methods));
        catalog
    }

    /// What is known of `method`.
    pub fn get(&self, method: &str) -> Option<MethodFacts> {
        self.current().get(method).cloned()
    }

    /// Whether the local server declares `method`.
    pub fn knows(&self, method: &str) -> bool {
        self.current().contains_key(method)
    }

    /// Whether the local server answered reflection: only then does a
    /// method missing from the catalog mean it declares no such method.
    pub fn answered(&self) -> bool {
        self.methods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The declared methods, sorted.
    pub fn methods(&self) -> Vec<String> {
        let mut names: Vec<String> = self.current().keys().cloned().collect();
        names.sort();
        names
    }

    /// The methods whose replies stream, sorted.
    pub fn streamed(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .current()
            .iter()
            .filter(|(_, facts)| facts.streamed)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// Asks the server again (configuration reload).
    pub fn refresh(&self) {
        self.refresh.notify_one();
    }

    /// Waits (at most `bound`) until a first discovery has ended.
    pub async fn settled(&self, bound: Duration) {
        let mut settled = self.settled.subscribe();
        let _ = tokio::time::timeout(bound, settled.wait_for(|s| *s)).await;
    }

    /// Whether discovery has started.
    pub fn is_running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Whether a first discovery has ended.
    pub fn is_settled(&self) -> bool {
        *self.settled.borrow()
    }

    fn current(&self) -> Arc<HashMap<String, MethodFacts>> {
        self.methods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default()
    }

    fn replace(&self, methods: Option<HashMap<String, MethodFacts>>) {
        *self.methods.write().unwrap_or_else(PoisonError::into_inner) = methods.map(Arc::new);
        self.settle();
    }

    fn settle(&self) {
        self.settled.send_replace(true);
    }

    /// Starts keeping the catalog up to date from the server at `socket`,
    /// unless already started or outside a Tokio runtime (then the next call
    /// tries again). Whether discovery runs.
    pub(crate) fn start(self: &Arc<Self>, socket: &Path) -> bool {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.is_some() {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        // The task holds the catalog weakly: dropping the director ends it.
        let catalog = Arc::downgrade(self);
        let refresh = self.refresh.clone();
        *task = Some(runtime.spawn(keep_discovering(catalog, refresh, socket.to_owned())));
        true
    }
}

impl Drop for MethodCatalog {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().map_or(None, Option::take) {
            task.abort();
        }
    }
}

/// Asks the server at `socket` now, again with backoff while that fails, and
/// again on refresh or every [`REDISCOVER_EVERY`].
async fn keep_discovering(
    catalog: std::sync::Weak<MethodCatalog>,
    refresh: Arc<Notify>,
    socket: PathBuf,
) {
    let mut retry = Duration::from_millis(200);
    loop {
        let result = discover(&socket).await;
        let Some(strong) = catalog.upgrade() else {
            return;
        };
        let wait = match result {
            Ok(methods) => {
                let streamed = methods.values().filter(|f| f.streamed).count();
                let unfit: Vec<&str> = methods
                    .iter()
                    .filter(|(_, f)| f.unfit.is_some())
                    .map(|(name, _)| name.as_str())
                    .collect();
                tracing::info!(
                    methods = methods.len(),
                    streamed,
                    cannot_fan_out = unfit.len(),
                    "learned the local server's methods through gRPC reflection"
                );
                tracing::debug!(
                    ?unfit,
                    "methods whose replies do not fit the fan-out contract"
                );
                strong.replace(Some(methods));
                retry = Duration::from_millis(200);
                REDISCOVER_EVERY
            }
            Err(ReflectionError::Unsupported(status)) => {
                tracing::info!(
                    status_message = status.message(),
                    "the local gRPC server has no reflection service; only configured streamed methods apply"
                );
                strong.replace(None);
                REDISCOVER_EVERY
            }
            Err(err) => {
                tracing::debug!(error = %err, ?retry, "method discovery failed; retrying");
                strong.settle();
                let wait = retry;
                retry = (retry * 2).min(Duration::from_secs(30));
                wait
            }
        };
        drop(strong);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = refresh.notified() => {}
        }
    }
}

/// The methods the gRPC server on the Unix socket `socket` declares.
pub async fn discover(socket: &Path) -> Result<HashMap<String, MethodFacts>, ReflectionError> {
    let found = tokio::time::timeout(DISCOVERY_TIMEOUT, services(socket))
        .await
        .map_err(|_| ReflectionError::Timeout(DISCOVERY_TIMEOUT))??;
    Ok(catalog_of(&found)?)
}

async fn services(socket: &Path) -> Result<ServiceFiles, ReflectionError> {
    let channel = connect_unix(Endpoint::from_static("http://localhost"), socket)
        .await
        .map_err(|e| ReflectionError::Status(tonic::Status::unavailable(e.to_string())))?;
    ReflectionClient::new(channel)
        .with_timeout(DISCOVERY_TIMEOUT)
        .files_for_services()
        .await
}

/// The methods of the services in `found`, and what each one's reply type
/// allows (pure: the files as reflection returned them).
pub fn catalog_of(
    found: &ServiceFiles,
) -> Result<HashMap<String, MethodFacts>, prost::DecodeError> {
    let files = found
        .files
        .decoded()
        .collect::<Result<Vec<FileDescriptorProto>, _>>()?;
    let messages = Messages::of(&files);
    let mut methods = HashMap::new();
    for file in &files {
        for service in &file.service {
            let full = qualified(file.package(), service.name());
            if found.services.binary_search(&full).is_err() {
                continue;
            }
            for method in &service.method {
                let streamed = method.server_streaming();
                let facts = MethodFacts {
                    streamed,
                    unfit: messages.unfit(method.output_type(), streamed),
                };
                methods.insert(format!("/{full}/{}", method.name()), facts);
            }
        }
    }
    Ok(methods)
}

fn qualified(package: &str, name: &str) -> String {
    match package {
        "" => name.to_owned(),
        package => format!("{package}.{name}"),
    }
}

/// Every message type of a set of files, by full name (`pkg.Outer.Inner`).
struct Messages<'a>(HashMap<String, &'a DescriptorProto>);

impl<'a> Messages<'a> {
    fn of(files: &'a [FileDescriptorProto]) -> Self {
        fn add<'a>(
            into: &mut HashMap<String, &'a DescriptorProto>,
            scope: &str,
            message: &'a DescriptorProto,
        ) {
            let name = qualified(scope, message.name());
            for nested in &message.nested_type {
                add(into, &name, nested);
            }
            into.insert(name, message);
        }
        let mut all = HashMap::new();
        for file in files {
            for message in &file.message_type {
                add(&mut all, file.package(), message);
            }
        }
        Self(all)
    }

    fn get(&self, type_name: &str) -> Option<&'a DescriptorProto> {
        self.0.get(type_name.trim_start_matches('.')).copied()
    }

    /// Why replies of type `reply` cannot be fanned out; `None` when they
    /// can, or when a type is not in the files (unknown: not refused). A
    /// unary reply is a list, `repeated Entry messages = 1`; each message of
    /// a stream is one entry. An entry keeps field 1 for `Metadata`.
    fn unfit(&self, reply: &str, streamed: bool) -> Option<String> {
        let name = reply.trim_start_matches('.');
        let message = self.get(reply)?;
        if streamed {
            return entry_unfit(message, name, "its streamed reply type");
        }
        let Some(entries) = message.field.iter().find(|f| f.number() == 1) else {
            return Some(format!(
                "its reply type {name} has no field 1 (fan-out needs `repeated <Entry> messages = 1`)"
            ));
        };
        if entries.label() != Label::Repeated || entries.r#type() != Type::Message {
            return Some(format!(
                "field 1 of its reply type {name} (`{}`) is not a repeated message (fan-out needs `repeated <Entry> messages = 1`)",
                entries.name()
            ));
        }
        let entry_name = entries.type_name().trim_start_matches('.');
        entry_unfit(self.get(entries.type_name())?, entry_name, "its entries")
    }
}

/// Why `entry` (named `name`, described as `what`) cannot carry a
/// machine's `Metadata` in field 1.
fn entry_unfit(entry: &DescriptorProto, name: &str, what: &str) -> Option<String> {
    match entry.field.iter().find(|f| f.number() == 1) {
        Some(metadata)
            if metadata.r#type() == Type::Message && metadata.label() != Label::Repeated =>
        {
            None
        }
        Some(other) => Some(format!(
            "field 1 of {what} ({name}.{}) is not a message: fan-out writes the machine's Metadata there",
            other.name()
        )),
        None => Some(format!(
            "{what} ({name}): no field 1, where fan-out writes the machine's Metadata"
        )),
    }
}

#[cfg(test)]
mod tests;
