//! The `table` form: one row per entry, for people (talosctl style).
//!
//! Columns are `MACHINE` (and `ADDRESS` for fan-out calls), then the entry
//! type's scalar fields in declaration order (strings, numbers, bools,
//! enums, bytes, repeated scalars joined with `,`, and the well-known
//! Timestamp, Duration and wrapper types). Other nested messages and maps do
//! not fit a cell and are skipped; a type with no such field gets one
//! `REPLY` column holding the entry as compact JSON. A failed machine's row
//! reads `ERROR <CODE>: message` after its machine. Columns are padded to
//! their widest cell and separated by three spaces; error texts, always last
//! on their row, do not widen columns. Streamed replies are printed a row at
//! a time ([`TableStream`]): columns are as wide as the widest cell so far,
//! machines and addresses given room for common lengths from the start.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};

use super::fanout::{Entry, code_name, is_metadata};
use super::gojson;
use super::json::{JsonOptions, is_well_known, to_json};

const GAP: &str = "   ";

/// Width of the MACHINE column of a streamed table before any row widens it.
const STREAM_MACHINE_WIDTH: usize = 10;
/// Width of its ADDRESS column, likewise (`[fd00::1]:51000` fits).
const STREAM_ADDRESS_WIDTH: usize = 22;

/// `entries` as an aligned table, one line per row, each ending in `\n`;
/// `addresses` adds the machines' addresses.
pub fn format_table(entries: &[Entry], addresses: bool) -> String {
    let Some(first) = entries.first() else {
        return String::new();
    };
    let columns = Columns::new(&first.body.descriptor(), addresses);
    let mut rows = vec![Row::Cells(columns.header())];
    rows.extend(entries.iter().map(|entry| columns.row(entry)));
    let mut widths = Vec::new();
    for row in &rows {
        widen(&mut widths, row);
    }
    rows.iter().map(|row| render(&widths, row)).collect()
}

/// A table printed as entries arrive.
#[derive(Debug)]
pub struct TableStream {
    addresses: bool,
    columns: Option<Columns>,
    widths: Vec<usize>,
}

impl TableStream {
    /// A table whose columns the first entry will decide.
    pub fn new(addresses: bool) -> Self {
        Self {
            addresses,
            columns: None,
            widths: Vec::new(),
        }
    }

    /// The lines for `entry`: its row, after the header if it is the first.
    pub fn lines(&mut self, entry: &Entry) -> String {
        let mut out = String::new();
        if self.columns.is_none() {
            let columns = Columns::new(&entry.body.descriptor(), self.addresses);
            let header = Row::Cells(columns.header());
            // Rows come one at a time: room for typical machine names and
            // addresses keeps them aligned from the start.
            self.widths = vec![STREAM_MACHINE_WIDTH];
            if self.addresses {
                self.widths.push(STREAM_ADDRESS_WIDTH);
            }
            widen(&mut self.widths, &header);
            out.push_str(&render(&self.widths, &header));
            self.columns = Some(columns);
        }
        if let Some(columns) = &self.columns {
            let row = columns.row(entry);
            widen(&mut self.widths, &row);
            out.push_str(&render(&self.widths, &row));
        }
        out
    }
}

/// What a table shows of each entry.
#[derive(Debug)]
struct Columns {
    addresses: bool,
    /// The reply's fields, `None` for one `REPLY` column.
    fields: Option<Vec<FieldDescriptor>>,
}

impl Columns {
    fn new(entry_type: &MessageDescriptor, addresses: bool) -> Self {
        Self {
            addresses,
            fields: columns(entry_type),
        }
    }

    fn header(&self) -> Vec<String> {
        let mut header = vec!["MACHINE".to_owned()];
        if self.addresses {
            header.push("ADDRESS".to_owned());
        }
        match &self.fields {
            Some(fields) => header.extend(fields.iter().map(|f| f.name().to_uppercase())),
            None => header.push("REPLY".to_owned()),
        }
        header
    }

    fn row(&self, entry: &Entry) -> Row {
        let mut cells = vec![entry.machine_label().to_owned()];
        if self.addresses {
            cells.push(
                entry
                    .machine
                    .as_ref()
                    .map(|m| m.addr.clone())
                    .unwrap_or_default(),
            );
        }
        if let Some(error) = &entry.error {
            return Row::Error(
                cells,
                format!("ERROR {}: {}", code_name(error.code), clean(&error.message)),
            );
        }
        match &self.fields {
            Some(fields) => cells.extend(fields.iter().map(|f| cell(&entry.body, f))),
            None => cells.push(to_json(&entry.body, JsonOptions::default()).to_compact()),
        }
        Row::Cells(cells)
    }
}

#[derive(Debug)]
enum Row {
    Cells(Vec<String>),
    /// The machine's cells, then the error text spanning the rest.
    Error(Vec<String>, String),
}

impl Row {
    fn cells(&self) -> &[String] {
        match self {
            Self::Cells(cells) | Self::Error(cells, _) => cells,
        }
    }
}

fn widen(widths: &mut Vec<usize>, row: &Row) {
    for (i, cell) in row.cells().iter().enumerate() {
        let width = cell.chars().count();
        match widths.get_mut(i) {
            Some(w) => *w = (*w).max(width),
            None => widths.push(width),
        }
    }
}

fn render(widths: &[usize], row: &Row) -> String {
    let mut line = String::new();
    for (i, cell) in row.cells().iter().enumerate() {
        if i > 0 {
            line.push_str(GAP);
        }
        line.push_str(cell);
        let pad = widths
            .get(i)
            .copied()
            .unwrap_or(0)
            .saturating_sub(cell.chars().count());
        line.extend(std::iter::repeat_n(' ', pad));
    }
    if let Row::Error(_, error) = row {
        line.push_str(GAP);
        line.push_str(error);
    }
    let mut line = line.trim_end().to_owned();
    line.push('\n');
    line
}

/// The fields shown as columns, `None` when there is none.
fn columns(descriptor: &MessageDescriptor) -> Option<Vec<FieldDescriptor>> {
    let fields: Vec<FieldDescriptor> = descriptor
        .fields()
        .filter(|field| !field.is_map())
        .filter(|field| match field.kind() {
            Kind::Message(m) => !is_metadata(&m) && is_cell_message(&m, field),
            _ => true,
        })
        .collect();
    (!fields.is_empty()).then_some(fields)
}

/// Well-known types that print as one scalar.
fn is_cell_message(message: &MessageDescriptor, field: &FieldDescriptor) -> bool {
    !field.is_list()
        && is_well_known(message)
        && !matches!(
            message.name(),
            "Any" | "Empty" | "Struct" | "Value" | "ListValue"
        )
}

fn cell(message: &DynamicMessage, field: &FieldDescriptor) -> String {
    if let Kind::Message(_) = field.kind()
        && !message.has_field(field)
    {
        return String::new();
    }
    let value = message.get_field(field);
    clean(&match value.as_ref() {
        Value::List(items) => items
            .iter()
            .map(|item| scalar(&field.kind(), item))
            .collect::<Vec<_>>()
            .join(","),
        value => scalar(&field.kind(), value),
    })
}

fn scalar(kind: &Kind, value: &Value) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        Value::I32(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F32(f) => gojson::format_g32(*f).trim_matches('"').to_owned(),
        Value::F64(f) => gojson::format_g64(*f).trim_matches('"').to_owned(),
        Value::String(s) => s.clone(),
        Value::Bytes(b) => BASE64_STANDARD.encode(b),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or_else(|| n.to_string(), |v| v.name().to_owned()),
            _ => n.to_string(),
        },
        Value::Message(m) => match to_json(m, JsonOptions::default()) {
            gojson::Json::String(s) => s,
            other => other.to_compact(),
        },
        Value::List(_) | Value::Map(_) => String::new(),
    }
}

/// Keeps a cell on one line, and a server's text from steering the
/// terminal: line breaks escaped, other control characters as `?`.
pub(crate) fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}
