//! Request messages from JSON text (`-d`).
//!
//! The text uses the protobuf JSON mapping (field `json_name`s or proto
//! names, 64-bit integers as numbers or strings, enums by name or number),
//! decoded by prost-reflect. Errors name the field that failed, with its
//! path (`messages[0].name`), because "expected u32" alone does not say
//! which of twenty fields was wrong.
//!
//! How many messages the text holds depends on the method:
//! - unary and server-streaming methods take exactly one; empty text means
//!   `{}`, the empty request;
//! - client-streaming and bidi methods take any number, written either as
//!   concatenated JSON objects (whitespace or newlines between them: what
//!   grpcurl accepts, and what NDJSON is) or as one JSON array of objects
//!   (easier to generate, and a message is never an array, so the two
//!   cannot be confused). Empty text means no message: the client closes
//!   its stream at once.

use std::io::Read;

use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor};
use serde_json::value::RawValue;

/// Why the request text could not become messages.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The data file (or stdin) could not be read.
    #[error("cannot read request data from {source_name}: {error}")]
    Read {
        /// `stdin` or the file name.
        source_name: String,
        /// Why.
        error: std::io::Error,
    },
    /// The text is not JSON.
    #[error("request data is not valid JSON: {0}")]
    Syntax(serde_json::Error),
    /// A message does not fit its type.
    #[error("{}{}: {message}", .index.map(|i| format!("request #{i}: ")).unwrap_or_default(), field_part(.path, .message_type))]
    Field {
        /// 1-based position of the message when the text holds several.
        index: Option<usize>,
        /// The request type.
        message_type: String,
        /// Where in the message (`count`, `messages[0].name`); empty for the
        /// message itself.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// A unary or server-streaming method was given several messages.
    #[error("{method} takes exactly one request message, but the data holds {count}")]
    TooMany {
        /// The method's full name.
        method: String,
        /// How many the text holds.
        count: usize,
    },
}

fn field_part(path: &str, message_type: &str) -> String {
    if path.is_empty() {
        format!("invalid {message_type}")
    } else {
        format!("invalid value for field `{path}` of {message_type}")
    }
}

/// The text of a `-d` argument: `@-` reads stdin, `@FILE` reads FILE,
/// anything else is the text itself; no argument is empty text.
pub fn read_data(arg: Option<&str>, stdin: impl Read) -> Result<String, RequestError> {
    let read = |source_name: &str, mut reader: Box<dyn Read + '_>| {
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|error| RequestError::Read {
                source_name: source_name.to_owned(),
                error,
            })?;
        Ok(text)
    };
    match arg {
        None => Ok(String::new()),
        Some("@-") => read("stdin", Box::new(stdin)),
        Some(arg) => match arg.strip_prefix('@') {
            Some(path) => {
                let file = std::fs::File::open(path).map_err(|error| RequestError::Read {
                    source_name: path.to_owned(),
                    error,
                })?;
                read(path, Box::new(file))
            }
            None => Ok(arg.to_owned()),
        },
    }
}

/// Options of request parsing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Ignore fields the request type does not have, instead of failing
    /// (grpcurl `-allow-unknown-fields`).
    pub allow_unknown_fields: bool,
}

/// The request messages `text` holds for `method` (see the module docs for
/// how many).
pub fn requests_for(
    method: &MethodDescriptor,
    text: &str,
    options: RequestOptions,
) -> Result<Vec<DynamicMessage>, RequestError> {
    let input = method.input();
    if method.is_client_streaming() {
        return parse_messages(&input, text, options);
    }
    let mut messages = parse_messages(&input, text, options)?;
    match messages.len() {
        0 => Ok(vec![DynamicMessage::new(input)]),
        1 => Ok(messages.split_off(0)),
        count => Err(RequestError::TooMany {
            method: method.full_name().to_owned(),
            count,
        }),
    }
}

/// Every message in `text`: concatenated JSON objects, or one array of them.
pub fn parse_messages(
    descriptor: &MessageDescriptor,
    text: &str,
    options: RequestOptions,
) -> Result<Vec<DynamicMessage>, RequestError> {
    let values = split_values(text)?;
    let several = values.len() > 1;
    values
        .iter()
        .enumerate()
        .map(|(i, raw)| parse_one(descriptor, raw, several.then_some(i + 1), options))
        .collect()
}

/// One raw JSON value per message.
fn split_values(text: &str) -> Result<Vec<Box<RawValue>>, RequestError> {
    let values = serde_json::Deserializer::from_str(text)
        .into_iter::<Box<RawValue>>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(RequestError::Syntax)?;
    match values.as_slice() {
        [only] if only.get().starts_with('[') => {
            serde_json::from_str::<Vec<Box<RawValue>>>(only.get()).map_err(RequestError::Syntax)
        }
        _ => Ok(values),
    }
}

fn parse_one(
    descriptor: &MessageDescriptor,
    raw: &RawValue,
    index: Option<usize>,
    options: RequestOptions,
) -> Result<DynamicMessage, RequestError> {
    let options = DeserializeOptions::new().deny_unknown_fields(!options.allow_unknown_fields);
    let mut json = serde_json::Deserializer::from_str(raw.get());
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(&mut json, &mut track);
    let parsed = DynamicMessage::deserialize_with_options(descriptor.clone(), tracked, &options)
        .and_then(|message| json.end().map(|()| message));
    parsed.map_err(|err| {
        let path = track.path();
        RequestError::Field {
            index,
            message_type: descriptor.full_name().to_owned(),
            path: if path.iter().next().is_none() {
                String::new()
            } else {
                path.to_string()
            },
            message: err.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_data_arguments() {
        assert_eq!(read_data(None, std::io::empty()).unwrap(), "");
        assert_eq!(
            read_data(Some("{\"a\":1}"), std::io::empty()).unwrap(),
            "{\"a\":1}"
        );
        assert_eq!(read_data(Some("@-"), &b"{}"[..]).unwrap(), "{}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("req.json");
        std::fs::write(&path, "{\"count\": 3}").unwrap();
        let arg = format!("@{}", path.display());
        assert_eq!(
            read_data(Some(&arg), std::io::empty()).unwrap(),
            "{\"count\": 3}"
        );
        let err = read_data(Some("@/nonexistent/req.json"), std::io::empty()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/req.json"), "{err}");
    }

    #[test]
    fn splits_concatenated_and_array_forms() {
        let count = |text: &str| split_values(text).unwrap().len();
        assert_eq!(count(""), 0);
        assert_eq!(count("  \n"), 0);
        assert_eq!(count("{}"), 1);
        assert_eq!(count("{} {}\n{\"a\":1}"), 3);
        assert_eq!(count("{}{}"), 2);
        assert_eq!(count("[{}, {}]"), 2);
        assert_eq!(count("[]"), 0);
        assert!(split_values("{").is_err());
    }
}
