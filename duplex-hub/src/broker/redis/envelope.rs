//! What travels between nodes through Redis Pub/Sub, and what a history stream entry holds.
//!
//! A message on a channel's Pub/Sub channel is one of
//! * `P<offset>:<epoch>:<body>`: a publication (`P0::<body>` without history). The prefix is
//!   text because the publish script writes it: the offset exists only inside Redis;
//! * `J<client info JSON>` / `L<client info JSON>`: a join or leave.
//!
//! The control channel carries `C<control JSON>`.
//!
//! A publication's `body`, also stored as is in the history stream:
//! `[1][kind: 0 JSON, 1 text, 2 binary][time_us: u64 BE][data: u32 BE length + bytes]`
//! `[info JSON: u32 BE length + bytes, or u32::MAX for none][key: likewise]`.

use crate::broker::{ChannelEvent, ClientInfo, Control, Data, Publication};
use bytes::Bytes;
use std::sync::Arc;

const VERSION: u8 = 1;
const NONE: u32 = u32::MAX;

/// Encodes everything of `p` but its offset and epoch.
pub(crate) fn encode_body(p: &Publication) -> Vec<u8> {
    let (kind, data) = match &p.data {
        Data::Json(b) => (0u8, b),
        Data::Text(b) => (1, b),
        Data::Binary(b) => (2, b),
    };
    let info = p
        .info
        .as_ref()
        .map(|i| serde_json::to_vec(i).expect("ClientInfo serialises"));
    let mut out = Vec::with_capacity(data.len() + 64);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&p.time_us.to_be_bytes());
    put(&mut out, Some(data));
    put(&mut out, info.as_deref());
    put(&mut out, p.key.as_deref().map(str::as_bytes));
    out
}

fn put(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(bytes) => {
            // Payloads are bounded by `limits.max_message_size` (16 MiB at most).
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&NONE.to_be_bytes()),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn field(&mut self) -> Option<Option<&'a [u8]>> {
        match self.u32()? {
            NONE => Some(None),
            n => Some(Some(self.take(n as usize)?)),
        }
    }
}

/// Decodes a body; `None` if it is malformed.
pub(crate) fn decode_body(
    body: &[u8],
    offset: u64,
    epoch: Option<Arc<str>>,
) -> Option<Publication> {
    let mut r = Reader(body);
    if r.take(1)? != [VERSION] {
        return None;
    }
    let kind = r.take(1)?[0];
    let time_us = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
    let data = Bytes::copy_from_slice(r.field()??);
    let data = match kind {
        0 => Data::Json(data),
        1 => {
            std::str::from_utf8(&data).ok()?;
            Data::Text(data)
        }
        2 => Data::Binary(data),
        _ => return None,
    };
    let info = match r.field()? {
        Some(json) => Some(serde_json::from_slice::<ClientInfo>(json).ok()?),
        None => None,
    };
    let key = match r.field()? {
        Some(key) => Some(Arc::from(std::str::from_utf8(key).ok()?)),
        None => None,
    };
    if !r.0.is_empty() {
        return None;
    }
    Some(Publication {
        offset,
        epoch,
        data,
        info,
        key,
        time_us,
    })
}

/// The Pub/Sub message of a publication without history.
pub(crate) fn publication_message(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(b"P0::");
    out.extend_from_slice(body);
    out
}

/// The Pub/Sub message of a join or leave.
pub(crate) fn event_message(event: &ChannelEvent) -> Vec<u8> {
    let (tag, info) = match event {
        ChannelEvent::Join(info) => (b'J', info),
        ChannelEvent::Leave(info) => (b'L', info),
    };
    let mut out = vec![tag];
    serde_json::to_writer(&mut out, info).expect("ClientInfo serialises");
    out
}

/// The message of the control channel.
pub(crate) fn control_message(control: &Control) -> Vec<u8> {
    let mut out = vec![b'C'];
    serde_json::to_writer(&mut out, control).expect("Control serialises");
    out
}

/// A decoded channel message.
#[derive(Debug, PartialEq)]
pub(crate) enum Message {
    Publication(Publication),
    Event(ChannelEvent),
}

/// Decodes a message of a channel's Pub/Sub channel; `None` if it is malformed.
pub(crate) fn decode_message(message: &[u8]) -> Option<Message> {
    let (&tag, rest) = message.split_first()?;
    match tag {
        b'P' => {
            let colon = rest.iter().position(|&b| b == b':')?;
            let offset: u64 = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
            let rest = &rest[colon + 1..];
            let colon = rest.iter().position(|&b| b == b':')?;
            let epoch = std::str::from_utf8(&rest[..colon]).ok()?;
            let epoch = (!epoch.is_empty()).then(|| Arc::from(epoch));
            if epoch.is_some() != (offset > 0) {
                return None;
            }
            decode_body(&rest[colon + 1..], offset, epoch).map(Message::Publication)
        }
        b'J' => Some(Message::Event(ChannelEvent::Join(
            serde_json::from_slice(rest).ok()?,
        ))),
        b'L' => Some(Message::Event(ChannelEvent::Leave(
            serde_json::from_slice(rest).ok()?,
        ))),
        _ => None,
    }
}

/// Decodes a message of the control channel.
pub(crate) fn decode_control(message: &[u8]) -> Option<Control> {
    serde_json::from_slice(message.strip_prefix(b"C")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(data: Data, info: bool, key: Option<&str>) -> Publication {
        Publication {
            offset: 0,
            epoch: None,
            data,
            info: info.then(|| ClientInfo {
                client: "c1".into(),
                user: "42".into(),
                info: Some(Arc::new(serde_json::json!({"name": "Ann"}))),
            }),
            key: key.map(Arc::from),
            time_us: 1_700_000_000_000_001,
        }
    }

    #[test]
    fn publications_round_trip() {
        for p in [
            sample(
                Data::Json(Bytes::from_static(b"{\"a\":1}")),
                true,
                Some("k"),
            ),
            sample(
                Data::Text(Bytes::from_static("héllo".as_bytes())),
                false,
                None,
            ),
            sample(
                Data::Binary(Bytes::from_static(&[0, 255, b':'])),
                true,
                Some(""),
            ),
            sample(Data::Binary(Bytes::new()), false, None),
        ] {
            let body = encode_body(&p);
            assert_eq!(decode_body(&body, 0, None).as_ref(), Some(&p));
            assert_eq!(
                decode_message(&publication_message(&body)),
                Some(Message::Publication(p.clone()))
            );
            // What the publish script sends.
            let mut scripted = b"P17:0a1b2c3d:".to_vec();
            scripted.extend_from_slice(&body);
            let expected = Publication {
                offset: 17,
                epoch: Some("0a1b2c3d".into()),
                ..p.clone()
            };
            assert_eq!(
                decode_message(&scripted),
                Some(Message::Publication(expected))
            );
            // Every truncation is refused, never a panic.
            for n in 0..body.len() {
                assert_eq!(decode_body(&body[..n], 0, None), None);
            }
        }
    }

    #[test]
    fn events_and_control_round_trip() {
        let info = sample(Data::Json(Bytes::new()), true, None).info.unwrap();
        for event in [ChannelEvent::Join(info.clone()), ChannelEvent::Leave(info)] {
            assert_eq!(
                decode_message(&event_message(&event)),
                Some(Message::Event(event))
            );
        }
        let control = Control::DisconnectUser {
            user: "u".into(),
            code: 4502,
            reason: "bye".into(),
        };
        assert_eq!(decode_control(&control_message(&control)), Some(control));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            &b""[..],
            b"X",
            b"P",
            b"P1:",
            b"Px:e:",
            b"P1::\x01\x00",
            b"P0:e:",
            b"J{",
            b"C",
        ] {
            assert_eq!(decode_message(bad), None, "{bad:?}");
        }
        assert_eq!(decode_control(b"Cnope"), None);
    }
}
