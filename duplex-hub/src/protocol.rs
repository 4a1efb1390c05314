//! The `duplex.v1` wire format (docs/protocol.md): parsing commands, writing replies and
//! pushes. No IO here.

use crate::broker::{ClientInfo, Data, Publication, StreamPosition};
use bytes::{BufMut, Bytes, BytesMut};
use duplex_proto::{Message, Utf8Bytes};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// The subprotocol name.
pub const SUBPROTOCOL: &str = "duplex.v1";

/// The largest `info` a `connect` command may carry, in bytes of compact JSON.
pub const MAX_CONNECT_INFO: usize = 1024;

/// Error codes of error replies (docs/protocol.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

#[allow(missing_docs)]
impl ErrorCode {
    pub const INTERNAL: Self = Self(100);
    pub const UNAUTHORIZED: Self = Self(101);
    pub const UNKNOWN_CHANNEL: Self = Self(102);
    pub const PERMISSION_DENIED: Self = Self(103);
    pub const UNKNOWN_COMMAND: Self = Self(104);
    pub const ALREADY: Self = Self(105);
    pub const LIMIT_EXCEEDED: Self = Self(106);
    pub const BAD_REQUEST: Self = Self(107);
    pub const NOT_AVAILABLE: Self = Self(108);
    pub const TOKEN_EXPIRED: Self = Self(109);
    pub const NOT_SUBSCRIBED: Self = Self(110);
    pub const TOO_MANY_REQUESTS: Self = Self(111);
    pub const EPOCH_MISMATCH: Self = Self(112);
}

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError {
    /// The code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl ReplyError {
    /// A new error reply.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// `connect`.
    Connect {
        /// The token, if any.
        token: Option<String>,
        /// Client name.
        name: Option<String>,
        /// Client version.
        version: Option<String>,
        /// Display data the client chose (a JSON object of at most [`MAX_CONNECT_INFO`]
        /// bytes), shown in presence and publications unless the token has an `info` claim.
        info: Option<Value>,
    },
    /// `subscribe`.
    Subscribe {
        /// Channel.
        channel: String,
        /// Recovery position.
        recover: Option<StreamPosition>,
    },
    /// `unsubscribe`.
    Unsubscribe {
        /// Channel.
        channel: String,
    },
    /// `publish`.
    Publish {
        /// Channel.
        channel: String,
        /// Payload.
        data: Data,
        /// Conflation key.
        key: Option<String>,
    },
    /// `presence`.
    Presence {
        /// Channel.
        channel: String,
    },
    /// `presence_stats`.
    PresenceStats {
        /// Channel.
        channel: String,
    },
    /// `history`.
    History {
        /// Channel.
        channel: String,
        /// At most this many.
        limit: Option<usize>,
        /// After this position.
        since: Option<StreamPosition>,
    },
    /// `ping`.
    Ping,
}

/// A frame that is not a command at all: the connection closes with 4500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad frame: {0}")]
pub struct BadFrame(pub String);

/// The fields any command may carry; unknown ones are ignored.
#[derive(Deserialize)]
struct Fields<'a> {
    id: Option<u64>,
    cmd: Option<String>,
    channel: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    key: Option<String>,
    token: Option<String>,
    name: Option<String>,
    version: Option<String>,
    #[serde(borrow)]
    info: Option<&'a RawValue>,
    recover: Option<StreamPosition>,
    since: Option<StreamPosition>,
    limit: Option<usize>,
}

/// Just the id and the command name, to answer a command whose other fields are wrong.
#[derive(Deserialize)]
struct Head {
    id: u64,
}

const MAX_ID: u64 = (1 << 53) - 1;

/// Parses one frame into `(id, command)`. `Ok((id, Err(..)))` is a command to answer with an
/// error reply; `Err` closes the connection.
///
/// # Errors
/// [`BadFrame`] for a frame that is not a command (no JSON object, no valid `id` or `cmd`).
pub fn parse(message: &Message) -> Result<(u64, Result<Command, ReplyError>), BadFrame> {
    let (header, payload) = match message {
        Message::Text(text) => (text.as_bytes(), None),
        Message::Binary(bytes) => {
            if bytes.len() < 4 {
                return Err(BadFrame(
                    "binary frame shorter than its header length".into(),
                ));
            }
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            if len < 2 || len > bytes.len() - 4 {
                return Err(BadFrame(format!(
                    "binary frame header length {len} does not fit the frame"
                )));
            }
            (&bytes[4..4 + len], Some(bytes.slice(4 + len..)))
        }
    };
    // serde would also read a struct from a JSON array; a command is an object.
    if header.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(BadFrame("a command is a JSON object".into()));
    }
    let fields: Fields<'_> = match serde_json::from_slice(header) {
        Ok(fields) => fields,
        Err(error) => {
            // Answer with 107 if at least the id can be read; otherwise close.
            return match serde_json::from_slice::<Head>(header) {
                Ok(head) if (1..=MAX_ID).contains(&head.id) => Ok((
                    head.id,
                    Err(ReplyError::new(
                        ErrorCode::BAD_REQUEST,
                        format!("bad command: {error}"),
                    )),
                )),
                _ => Err(BadFrame(format!("not a command object: {error}"))),
            };
        }
    };
    let id = match fields.id {
        Some(id) if (1..=MAX_ID).contains(&id) => id,
        Some(_) => return Err(BadFrame("id must be between 1 and 2^53-1".into())),
        None => return Err(BadFrame("command without id".into())),
    };
    let Some(cmd) = fields.cmd.as_deref() else {
        return Err(BadFrame("command without cmd".into()));
    };
    let channel = |c: Option<String>| {
        c.ok_or_else(|| ReplyError::new(ErrorCode::BAD_REQUEST, "channel is missing"))
    };
    let command = (|| {
        Ok(match cmd {
            "connect" => Command::Connect {
                token: fields.token,
                name: fields.name,
                version: fields.version,
                info: fields.info.map(connect_info).transpose()?,
            },
            "subscribe" => Command::Subscribe {
                channel: channel(fields.channel)?,
                recover: fields.recover,
            },
            "unsubscribe" => Command::Unsubscribe {
                channel: channel(fields.channel)?,
            },
            "publish" => {
                let data = match (payload, fields.data) {
                    (Some(bytes), _) => Data::Binary(bytes),
                    (None, Some(raw)) => Data::Json(Bytes::copy_from_slice(raw.get().as_bytes())),
                    (None, None) => {
                        return Err(ReplyError::new(ErrorCode::BAD_REQUEST, "data is missing"))
                    }
                };
                Command::Publish {
                    channel: channel(fields.channel)?,
                    data,
                    key: fields.key,
                }
            }
            "presence" => Command::Presence {
                channel: channel(fields.channel)?,
            },
            "presence_stats" => Command::PresenceStats {
                channel: channel(fields.channel)?,
            },
            "history" => Command::History {
                channel: channel(fields.channel)?,
                limit: fields.limit,
                since: fields.since,
            },
            "ping" => Command::Ping,
            other => {
                return Err(ReplyError::new(
                    ErrorCode::UNKNOWN_COMMAND,
                    format!("unknown command {other:?}"),
                ))
            }
        })
    })();
    Ok((id, command))
}

/// Checks a `connect` command's `info`: a JSON object of at most [`MAX_CONNECT_INFO`] bytes
/// once written compactly (the form others see it in).
fn connect_info(raw: &RawValue) -> Result<Value, ReplyError> {
    let value: Value = serde_json::from_str(raw.get())
        .map_err(|e| ReplyError::new(ErrorCode::BAD_REQUEST, format!("info: {e}")))?;
    if !value.is_object() {
        return Err(ReplyError::new(
            ErrorCode::BAD_REQUEST,
            "info must be a JSON object",
        ));
    }
    let size = value.to_string().len();
    if size > MAX_CONNECT_INFO {
        return Err(ReplyError::new(
            ErrorCode::BAD_REQUEST,
            format!("info is {size} bytes; at most {MAX_CONNECT_INFO}"),
        ));
    }
    Ok(value)
}

fn text(value: &Value) -> Message {
    Message::text(value.to_string())
}

/// A successful reply.
pub fn reply(id: u64, result: Value) -> Message {
    text(&json!({"id": id, "result": result}))
}

/// An error reply.
pub fn error_reply(id: u64, error: &ReplyError) -> Message {
    text(&json!({"id": id, "error": {"code": error.code.0, "message": error.message}}))
}

/// A reply carrying publications (history, recovery): `result` plus a `publications` array
/// written without re-parsing JSON data. Binary data is base64 in `data_b64`, as a reply is
/// one text frame.
pub fn reply_with_publications(
    id: u64,
    mut result: serde_json::Map<String, Value>,
    publications: &[std::sync::Arc<Publication>],
) -> Message {
    let mut out = String::with_capacity(64 + publications.len() * 64);
    out.push_str("{\"id\":");
    out.push_str(&id.to_string());
    out.push_str(",\"result\":{\"publications\":[");
    for (i, p) in publications.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_publication_fields(&mut out, p, None, true);
    }
    out.push(']');
    result.remove("publications");
    for (k, v) in result {
        out.push(',');
        out.push_str(&Value::String(k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push_str("}}");
    Message::text(out)
}

/// Writes `{"push":"publication",...}` or the object of a publication in a reply, without
/// the closing brace when `close` is false... always closed here; `inline_binary` puts binary
/// data in `data_b64` instead of leaving it for a binary frame.
fn write_publication_fields(
    out: &mut String,
    p: &Publication,
    channel: Option<&str>,
    inline_binary: bool,
) {
    out.push('{');
    if let Some(channel) = channel {
        out.push_str("\"push\":\"publication\",\"channel\":");
        out.push_str(&Value::String(channel.to_owned()).to_string());
        out.push(',');
    }
    if let Some(epoch) = &p.epoch {
        out.push_str("\"offset\":");
        out.push_str(&p.offset.to_string());
        out.push_str(",\"epoch\":");
        out.push_str(&Value::String(epoch.to_string()).to_string());
        out.push(',');
    }
    match &p.data {
        Data::Json(raw) => {
            out.push_str("\"data\":");
            // Validated JSON when it was accepted.
            out.push_str(std::str::from_utf8(raw).unwrap_or("null"));
            out.push(',');
        }
        Data::Text(raw) => {
            out.push_str("\"data\":");
            out.push_str(&Value::String(String::from_utf8_lossy(raw).into_owned()).to_string());
            out.push(',');
        }
        Data::Binary(raw) if inline_binary => {
            use base64::Engine;
            out.push_str("\"data_b64\":\"");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(raw));
            out.push_str("\",");
        }
        Data::Binary(_) => {}
    }
    if let Some(info) = &p.info {
        out.push_str("\"info\":");
        out.push_str(&serde_json::to_string(info).unwrap_or_else(|_| "null".into()));
        out.push(',');
    }
    if let Some(key) = &p.key {
        out.push_str("\"key\":");
        out.push_str(&Value::String(key.to_string()).to_string());
        out.push(',');
    }
    if out.ends_with(',') {
        out.pop();
    }
    out.push('}');
}

/// The publication push for `channel`: a text frame, or a binary frame (header + payload)
/// for binary data.
pub fn publication_push(channel: &str, p: &Publication) -> Message {
    let mut header = String::with_capacity(96 + p.data.len());
    write_publication_fields(&mut header, p, Some(channel), false);
    match &p.data {
        Data::Binary(payload) => binary_frame(header.as_bytes(), payload),
        _ => Message::text(header),
    }
}

/// A binary frame: u32 big-endian header length, header, payload.
pub fn binary_frame(header: &[u8], payload: &[u8]) -> Message {
    let mut buf = BytesMut::with_capacity(4 + header.len() + payload.len());
    buf.put_u32(header.len() as u32);
    buf.put_slice(header);
    buf.put_slice(payload);
    Message::binary(buf.freeze())
}

/// The message a raw-room client receives for a publication: JSON and text data as a text
/// frame, binary as binary.
pub fn raw_push(p: &Publication) -> Message {
    match &p.data {
        Data::Json(b) | Data::Text(b) => match Utf8Bytes::try_from_bytes(b.clone()) {
            Ok(text) => Message::Text(text),
            Err(bytes) => Message::binary(bytes),
        },
        Data::Binary(b) => Message::binary(b.clone()),
    }
}

/// A join or leave push.
pub fn event_push(kind: &str, channel: &str, info: &ClientInfo) -> Message {
    text(&json!({"push": kind, "channel": channel, "info": info}))
}

/// The disconnect push sent before the close frame.
pub fn disconnect_push(code: u16, reason: &str, reconnect: bool) -> Message {
    text(&json!({"push": "disconnect", "code": code, "reason": reason, "reconnect": reconnect}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cmd(text: &str) -> Result<(u64, Result<Command, ReplyError>), BadFrame> {
        parse(&Message::text(text))
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            cmd(r#"{"id":1,"cmd":"connect","token":"t","extra":[1]}"#).unwrap(),
            (
                1,
                Ok(Command::Connect {
                    token: Some("t".into()),
                    name: None,
                    version: None,
                    info: None
                })
            )
        );
        assert_eq!(
            cmd(r#"{"id":2,"cmd":"subscribe","channel":"chat:a","recover":{"offset":3,"epoch":"e"}}"#).unwrap(),
            (2, Ok(Command::Subscribe { channel: "chat:a".into(), recover: Some(StreamPosition { offset: 3, epoch: "e".into() }) }))
        );
        let (id, publish) =
            cmd(r#"{"id":3,"cmd":"publish","channel":"c","data":{"a": [1, 2]},"key":"k"}"#)
                .unwrap();
        assert_eq!(id, 3);
        assert_eq!(
            publish.unwrap(),
            Command::Publish {
                channel: "c".into(),
                data: Data::Json(Bytes::from_static(br#"{"a": [1, 2]}"#)),
                key: Some("k".into())
            }
        );
        assert_eq!(
            cmd(r#"{"id":4,"cmd":"ping"}"#).unwrap(),
            (4, Ok(Command::Ping))
        );
    }

    #[test]
    fn connect_info_is_a_small_object() {
        let (_, c) = cmd(r#"{"id":1,"cmd":"connect","info":{"name": "Ann"}}"#).unwrap();
        assert!(
            matches!(c.unwrap(), Command::Connect { info: Some(info), .. } if info == json!({"name": "Ann"}))
        );
        let (_, c) = cmd(r#"{"id":1,"cmd":"connect","info":null}"#).unwrap();
        assert!(matches!(c.unwrap(), Command::Connect { info: None, .. }));
        for bad in [r#""Ann""#, "[1]", "3"] {
            let (id, c) = cmd(&format!(r#"{{"id":2,"cmd":"connect","info":{bad}}}"#)).unwrap();
            assert_eq!(
                (id, c.unwrap_err().code),
                (2, ErrorCode::BAD_REQUEST),
                "{bad}"
            );
        }
        // The limit counts compact JSON: 1024 bytes pass, 1025 do not, whatever the spacing.
        let fits = format!(r#"{{"n":"{}"}}"#, "a".repeat(MAX_CONNECT_INFO - 8));
        assert_eq!(fits.len(), MAX_CONNECT_INFO);
        let spaced = fits.replace(':', " :   ");
        let (_, c) = cmd(&format!(r#"{{"id":3,"cmd":"connect","info":{spaced}}}"#)).unwrap();
        assert!(c.is_ok());
        let over = format!(r#"{{"n":"{}"}}"#, "a".repeat(MAX_CONNECT_INFO - 7));
        let (_, c) = cmd(&format!(r#"{{"id":4,"cmd":"connect","info":{over}}}"#)).unwrap();
        let e = c.unwrap_err();
        assert_eq!(e.code, ErrorCode::BAD_REQUEST);
        assert!(e.message.contains("1025"), "{}", e.message);
    }

    #[test]
    fn binary_frames_carry_data() {
        let frame = binary_frame(
            br#"{"id":5,"cmd":"publish","channel":"iot:t"}"#,
            &[0, 1, 2, 255],
        );
        let (id, command) = parse(&frame).unwrap();
        assert_eq!(id, 5);
        assert_eq!(
            command.unwrap(),
            Command::Publish {
                channel: "iot:t".into(),
                data: Data::Binary(Bytes::from_static(&[0, 1, 2, 255])),
                key: None
            }
        );
        assert!(parse(&Message::binary(vec![0, 0, 0, 50, b'{', b'}'])).is_err());
        assert!(parse(&Message::binary(vec![0, 0])).is_err());
    }

    #[test]
    fn errors() {
        assert!(cmd("nope").is_err());
        assert!(cmd("[1]").is_err());
        assert!(cmd(r#"{"cmd":"ping"}"#).is_err());
        assert!(cmd(r#"{"id":0,"cmd":"ping"}"#).is_err());
        assert!(cmd(r#"{"id":1}"#).is_err());
        let (id, e) = cmd(r#"{"id":7,"cmd":"fly"}"#).unwrap();
        assert_eq!((id, e.unwrap_err().code), (7, ErrorCode::UNKNOWN_COMMAND));
        let (_, e) = cmd(r#"{"id":8,"cmd":"subscribe"}"#).unwrap();
        assert_eq!(e.unwrap_err().code, ErrorCode::BAD_REQUEST);
        let (id, e) = cmd(r#"{"id":9,"cmd":"subscribe","channel":5}"#).unwrap();
        assert_eq!((id, e.unwrap_err().code), (9, ErrorCode::BAD_REQUEST));
        let (_, e) = cmd(r#"{"id":9,"cmd":"publish","channel":"c"}"#).unwrap();
        assert_eq!(e.unwrap_err().code, ErrorCode::BAD_REQUEST);
    }

    fn publication(data: Data) -> Publication {
        Publication {
            offset: 7,
            epoch: Some("ep".into()),
            data,
            info: Some(ClientInfo {
                client: "c1".into(),
                user: "u\"1".into(),
                info: None,
            }),
            key: Some("k".into()),
            time_us: 0,
        }
    }

    #[test]
    fn pushes_are_valid_json() {
        let m = publication_push(
            "chat:a",
            &publication(Data::Json(Bytes::from_static(b"{\"x\":1}"))),
        );
        let v: Value = serde_json::from_str(m.as_text().unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"push":"publication","channel":"chat:a","offset":7,"epoch":"ep","data":{"x":1},"info":{"client":"c1","user":"u\"1"},"key":"k"})
        );
        let m = publication_push(
            "rooms:a",
            &publication(Data::Text(Bytes::from_static(b"hi \"there\""))),
        );
        let v: Value = serde_json::from_str(m.as_text().unwrap()).unwrap();
        assert_eq!(v["data"], "hi \"there\"");
        let m = publication_push(
            "iot:a",
            &publication(Data::Binary(Bytes::from_static(b"\x00\x01"))),
        );
        let Message::Binary(b) = m else { panic!() };
        let len = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&b[4..4 + len]).unwrap();
        assert_eq!(header["offset"], 7);
        assert!(header.get("data").is_none());
        assert_eq!(&b[4 + len..], b"\x00\x01");
        let pubs = [Arc::new(publication(Data::Binary(Bytes::from_static(
            b"\x00\x01",
        ))))];
        let mut result = serde_json::Map::new();
        result.insert("recovered".into(), json!(true));
        let m = reply_with_publications(3, result, &pubs);
        let v: Value = serde_json::from_str(m.as_text().unwrap()).unwrap();
        assert_eq!(v["result"]["recovered"], true);
        assert_eq!(v["result"]["publications"][0]["data_b64"], "AAE=");
    }
}
