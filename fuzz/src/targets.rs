//! Fuzz target bodies: each takes arbitrary bytes, drives one duplex-proto entry point, and
//! panics only when an invariant breaks (or when the code under test panics by itself).
//!
//! This file is shared: the libFuzzer binaries call it through the `duplex-fuzz` library, and
//! `duplex-proto/tests/fuzz_corpus.rs` includes it with `#[path]` to replay the seed corpus.
//! It may therefore only use crates that `duplex-proto` depends on: `bytes` and `http`.
//!
//! Inputs that need settings (role options, limits, how to cut the stream into reads) take
//! them from their first bytes, so one corpus file is one complete, reproducible case. The
//! layout of each target's input is documented on its function and in `fuzz/README.md`.

use std::io::IoSlice;

use bytes::BytesMut;
use duplex_proto::deflate::{
    client_offer, negotiate_client, negotiate_server, parse_extensions, DeflateCodec,
    DeflateConfig, DeflateParams,
};
use duplex_proto::frame::{apply_mask, encode_frame, FrameHeader, MAX_HEADER_LEN};
use duplex_proto::handshake::{
    accept, accept_key, parse_request, parse_response, ClientHandshake, HeadReader,
};
use duplex_proto::{Config, Connection, Event, Message, ProtocolError, Role, SendError};
use http::header::SEC_WEBSOCKET_KEY;
use http::{HeaderMap, StatusCode, Uri};

/// Control frames carry at most 125 bytes (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// In `handshake_response` inputs, this placeholder is replaced by the `Sec-WebSocket-Accept`
/// value that matches the (random) key of the handshake under test, so seeds can hold a
/// response that passes the key check.
pub const ACCEPT_PLACEHOLDER: &[u8] = b"{ACCEPT}";

// ---- helpers ----------------------------------------------------------------------------

/// Splits off the first `N` bytes as settings, padding short inputs with zeros.
fn settings<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut head = [0u8; N];
    let n = data.len().min(N);
    head[..n].copy_from_slice(&data[..n]);
    (head, &data[n..])
}

/// Cuts `data` into the pieces a transport might deliver. `seed == 0` means one piece;
/// otherwise piece sizes are drawn from 1 to `2^(seed % 8)` by a small xorshift generator.
fn pieces(data: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 || data.is_empty() {
        return vec![data];
    }
    let max = 1usize << (seed % 8);
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (state as usize % max + 1).min(rest.len());
        let (piece, tail) = rest.split_at(size);
        out.push(piece);
        rest = tail;
    }
    out
}

/// The ends of the growing prefixes a reader sees when `data` arrives in [`pieces`].
fn prefix_ends(data: &[u8], seed: u8) -> Vec<usize> {
    let mut end = 0;
    pieces(data, seed)
        .iter()
        .map(|p| {
            end += p.len();
            end
        })
        .collect()
}

/// A window size in the range RFC 7692 allows (8..=15).
fn window_bits(bits: u8) -> u8 {
    8 + (bits & 7)
}

fn check_params(params: &DeflateParams) {
    assert!(
        (8..=15).contains(&params.server_max_window_bits),
        "{params:?}"
    );
    assert!(
        (8..=15).contains(&params.client_max_window_bits),
        "{params:?}"
    );
}

/// A permessage-deflate policy drawn from one byte.
fn deflate_config(byte: u8) -> DeflateConfig {
    let mut config = DeflateConfig::default();
    config.server_no_context_takeover = byte & 0x01 != 0;
    config.client_no_context_takeover = byte & 0x02 != 0;
    config.server_max_window_bits = if byte & 0x04 != 0 {
        window_bits(byte >> 5)
    } else {
        15
    };
    config.client_max_window_bits = if byte & 0x08 != 0 {
        window_bits(byte >> 3)
    } else {
        15
    };
    config.compression_level = u32::from(byte >> 4) % 10;
    config
}

/// Negotiated parameters drawn from two bytes.
fn deflate_params(flags: u8, bits: u8) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: flags & 0x01 != 0,
        client_no_context_takeover: flags & 0x02 != 0,
        server_max_window_bits: window_bits(bits),
        client_max_window_bits: window_bits(bits >> 3),
    }
}

// ---- connections ------------------------------------------------------------------------

/// How one connection case is set up, from the first three bytes of the input.
#[derive(Clone, Debug)]
struct Setup {
    config: Config,
    deflate: Option<DeflateParams>,
    /// Feed through `read_buffer` + `handle_read` instead of `handle_bytes`.
    read_buffer: bool,
    /// Drain output with `transmit_slices` + `advance_transmit` (in short writes) instead of
    /// `poll_transmit`.
    vectored: bool,
    /// Report end of stream after the last piece.
    eof: bool,
    /// How to cut the stream into reads (see [`pieces`]).
    split: u8,
}

impl Setup {
    /// Byte 0, flags: bit 0 deflate negotiated, bit 1 small limits, bit 2 read_buffer path,
    /// bit 3 vectored transmit, bit 4 EOF at the end, bits 5/6 server/client no context
    /// takeover, bit 7 leave messages under 16 bytes uncompressed.
    /// Byte 1: window bits (low three: server, next three: client; 8 + value).
    /// Byte 2: split seed (0: the whole stream in one read).
    fn from_bytes([flags, bits, split]: [u8; 3]) -> Self {
        let mut config = Config::default();
        if flags & 0x02 != 0 {
            config = config
                .with_max_message_size(1024)
                .with_max_frame_size(512)
                .with_max_fragments(8);
        }
        let mut deflate_config = DeflateConfig::default();
        if flags & 0x80 != 0 {
            deflate_config.min_compress_size = 16;
        }
        deflate_config.compression_level = u32::from(bits >> 6);
        config = config.with_deflate(Some(deflate_config));
        let deflate = (flags & 0x01 != 0).then(|| DeflateParams {
            server_no_context_takeover: flags & 0x20 != 0,
            client_no_context_takeover: flags & 0x40 != 0,
            server_max_window_bits: window_bits(bits),
            client_max_window_bits: window_bits(bits >> 3),
        });
        Self {
            config,
            deflate,
            read_buffer: flags & 0x04 != 0,
            vectored: flags & 0x08 != 0,
            eof: flags & 0x10 != 0,
            split,
        }
    }
}

/// What one run of a connection produced.
#[derive(Debug, Default)]
struct Run {
    events: Vec<Event>,
    error: Option<ProtocolError>,
    /// Messages echoed back with `send`, in order.
    sent: Vec<Message>,
    /// Everything the connection transmitted.
    wire: BytesMut,
    closed: bool,
}

/// `server_connection` and `client_connection` inputs: 3 setting bytes (see `Setup`), then the
/// byte stream from the peer.
fn connection(role: Role, data: &[u8]) {
    let (head, stream) = settings::<3>(data);
    let setup = Setup::from_bytes(head);
    let chunked = drive(role, &setup, stream, setup.split);
    check_wire(role, &setup, &chunked);
    if setup.split != 0 {
        // The same stream in one read must give the same events: cutting it differently
        // changes nothing but when they are reported (only ever earlier for chunked input).
        let whole = drive(role, &setup, stream, 0);
        check_wire(role, &setup, &whole);
        assert_eq!(
            whole.events, chunked.events,
            "events depend on how input was cut"
        );
        assert_eq!(whole.closed, chunked.closed);
        match (&whole.error, &chunked.error) {
            (None, None) => {}
            // Without compression, errors are found at the same frame for the same reason.
            // With it, a chunk may fail UTF-8 before the rest of the frame fails to inflate.
            (Some(a), Some(b)) if setup.deflate.is_none() => assert_eq!(a, b),
            (Some(_), Some(_)) => {}
            (a, b) => panic!("error depends on how input was cut: whole {a:?}, chunked {b:?}"),
        }
    }
}

/// Server role: arbitrary bytes as if from a client.
pub fn server_connection(data: &[u8]) {
    connection(Role::Server, data);
}

/// Client role: arbitrary bytes as if from a server.
pub fn client_connection(data: &[u8]) {
    connection(Role::Client, data);
}

fn drive(role: Role, setup: &Setup, stream: &[u8], split: u8) -> Run {
    let mut conn = Connection::with_deflate(role, setup.config.clone(), setup.deflate);
    let mut run = Run::default();
    for (i, piece) in pieces(stream, split).into_iter().enumerate() {
        // After a close frame or an error, input is ignored and nothing more happens.
        let stopped = run.error.is_some() || conn.close_received();
        let result = if setup.read_buffer {
            conn.read_buffer().extend_from_slice(piece);
            conn.handle_read()
        } else {
            conn.handle_bytes(piece)
        };
        let before = run.events.len();
        drain_events(&mut conn, setup, &mut run);
        if stopped {
            assert_eq!(result, Ok(()), "input after the connection stopped reading");
            assert_eq!(
                run.events.len(),
                before,
                "events after the connection stopped"
            );
        }
        if let Err(e) = result {
            assert!(conn.is_closed(), "failed connection not closed: {e}");
            assert!(!conn.can_send());
            run.error = Some(e);
        }
        transmit(&mut conn, setup.vectored, i, &mut run);
    }
    if setup.eof {
        let closed = conn.is_closed();
        let result = conn.handle_eof();
        if closed {
            assert_eq!(result, Ok(()));
        } else {
            assert_eq!(result, Err(ProtocolError::AbnormalClosure));
        }
        assert!(conn.is_closed());
        assert!(conn.poll_event().is_none());
        assert!(conn.send(Message::text("late")).is_err());
        transmit(&mut conn, setup.vectored, 0, &mut run);
    }
    run.closed = conn.is_closed();
    // Whatever happened, idling and freeing buffers must be harmless.
    conn.release_idle_memory();
    assert!(!conn.has_pending_transmit());
    run
}

fn drain_events(conn: &mut Connection, setup: &Setup, run: &mut Run) {
    while let Some(event) = conn.poll_event() {
        assert!(
            !matches!(run.events.last(), Some(Event::Close(_))),
            "event after Close: {event:?}"
        );
        match &event {
            Event::Message(message) => {
                assert!(message.len() <= setup.config.max_message_size);
                if let Some(text) = message.as_text() {
                    assert_eq!(text.len(), message.len());
                }
                if conn.can_send() {
                    match conn.send(message.clone()) {
                        Ok(()) => run.sent.push(message.clone()),
                        Err(e) => panic!("echo of a received message failed: {e}"),
                    }
                } else {
                    assert_eq!(conn.send(message.clone()), Err(SendError::Closed));
                }
            }
            Event::Ping(payload) | Event::Pong(payload) => {
                assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
            }
            Event::Close(frame) => {
                assert!(conn.close_received());
                assert!(conn.is_closed());
                assert_eq!(conn.close_frame(), frame.as_ref());
            }
            other => panic!("unexpected event kind {other:?}"),
        }
        run.events.push(event);
    }
}

/// Moves everything pending onto `run.wire`, either at once or in short vectored writes.
fn transmit(conn: &mut Connection, vectored: bool, round: usize, run: &mut Run) {
    let pending = conn.pending_transmit_len();
    assert_eq!(conn.has_pending_transmit(), pending > 0);
    if vectored {
        let mut written = 0;
        let mut step = round;
        loop {
            let (total, take) = {
                let mut slices = [IoSlice::new(&[]); 4];
                let n = conn.transmit_slices(&mut slices);
                let total: usize = slices[..n].iter().map(|s| s.len()).sum();
                // A short write: all of it, or a varying prefix.
                step = step.wrapping_mul(31).wrapping_add(7);
                let take = if step.is_multiple_of(3) {
                    total
                } else {
                    total.min(step % 97 + 1)
                };
                let mut left = take;
                for slice in &slices[..n] {
                    let k = slice.len().min(left);
                    run.wire.extend_from_slice(&slice[..k]);
                    left -= k;
                }
                (total, take)
            };
            if total == 0 {
                break;
            }
            conn.advance_transmit(take);
            written += take;
        }
        assert_eq!(written, pending);
    } else {
        assert_eq!(conn.poll_transmit(&mut run.wire), pending);
    }
    assert_eq!(conn.pending_transmit_len(), 0);
}

/// Whatever a connection wrote must be valid for its peer, and carry exactly the messages it
/// echoed, in order.
fn check_wire(role: Role, setup: &Setup, run: &Run) {
    let mut peer = Connection::with_deflate(role.peer(), Config::default(), setup.deflate);
    if let Err(e) = peer.handle_bytes(&run.wire) {
        panic!("our own output is invalid for the peer: {e}");
    }
    let mut received = Vec::new();
    let mut closes = 0;
    while let Some(event) = peer.poll_event() {
        match event {
            Event::Message(m) => {
                assert_eq!(closes, 0, "message after our close frame");
                received.push(m);
            }
            Event::Close(_) => closes += 1,
            Event::Ping(_) | Event::Pong(_) => {}
            other => panic!("unexpected event kind {other:?}"),
        }
    }
    assert_eq!(
        received, run.sent,
        "echoed messages arrive intact and in order"
    );
    assert!(closes <= 1);
    // We send a close frame when the peer closed or we failed (unless the error's code may not
    // be sent, as for 1006 at end of stream).
    if matches!(run.events.last(), Some(Event::Close(_))) {
        assert_eq!(closes, 1, "no close reply");
    }
    if let Some(e) = &run.error {
        if e.close_code().is_sendable() && !matches!(run.events.last(), Some(Event::Close(_))) {
            assert_eq!(closes, 1, "no close frame for {e}");
        }
    }
}

// ---- frames -----------------------------------------------------------------------------

/// Parses a frame header from arbitrary bytes; checks prefixes, re-encoding, and that
/// `encode_frame` and `apply_mask` round-trip the bytes after the header as a payload.
pub fn frame_header(data: &[u8]) {
    let (header, len) = match FrameHeader::parse(data) {
        Err(e) => {
            assert_eq!(e, ProtocolError::InvalidLength);
            assert!(data.len() >= 10 && data[1] & 0x7F == 127 && data[2] & 0x80 != 0);
            return;
        }
        Ok(None) => {
            assert!(data.len() < MAX_HEADER_LEN, "a full header was not found");
            return;
        }
        Ok(Some(parsed)) => parsed,
    };
    assert!((2..=MAX_HEADER_LEN).contains(&len) && len <= data.len());
    assert!(
        header.encoded_len() <= len,
        "non-minimal lengths only grow the header"
    );
    assert!(header.rsv <= 0b111);
    assert_eq!(header.opcode.as_u8(), data[0] & 0x0F);
    for end in 0..len {
        assert_eq!(
            FrameHeader::parse(&data[..end]),
            Ok(None),
            "prefix of {end}"
        );
    }
    let mut buf = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut buf);
    assert_eq!(n, header.encoded_len());
    assert_eq!(FrameHeader::parse(&buf[..n]), Ok(Some((header, n))));

    let payload = &data[len..];
    let mask = header.mask.unwrap_or([data[0], data[1], 0x5A, 0xA5]);
    // Masking in two pieces at any cut equals masking byte by byte.
    let cut = usize::from(data[1]) % (payload.len() + 1);
    let mut fast = payload.to_vec();
    let (a, b) = fast.split_at_mut(cut);
    apply_mask(a, mask, 0);
    apply_mask(b, mask, cut);
    let slow: Vec<u8> = payload
        .iter()
        .enumerate()
        .map(|(i, byte)| byte ^ mask[i % 4])
        .collect();
    assert_eq!(fast, slow);

    let mut out = BytesMut::new();
    encode_frame(
        &mut out,
        header.fin,
        header.rsv1(),
        header.opcode,
        header.mask,
        payload,
    );
    let (again, n) = FrameHeader::parse(&out)
        .expect("our frame parses")
        .expect("our frame is complete");
    assert_eq!(again.payload_len, payload.len() as u64);
    assert_eq!(out.len(), n + payload.len());
    assert_eq!(
        (
            again.fin,
            again.rsv1(),
            again.rsv & 0b011,
            again.opcode,
            again.mask
        ),
        (header.fin, header.rsv1(), 0, header.opcode, header.mask)
    );
    let mut body = out[n..].to_vec();
    if let Some(mask) = again.mask {
        apply_mask(&mut body, mask, 0);
    }
    assert_eq!(body, payload);
}

// ---- handshake --------------------------------------------------------------------------

/// A handshake configuration from one byte: bit 0 disables deflate, bit 1 sets small head
/// limits, bits 2..=7 are the split seed for the head reader.
fn handshake_config(flags: u8) -> (Config, u8) {
    let mut config = Config::default();
    if flags & 0x01 != 0 {
        config = config.with_deflate(None);
    }
    if flags & 0x02 != 0 {
        config = config.with_max_headers(8).with_max_header_bytes(512);
    }
    (config, flags >> 2)
}

/// Finds the head with [`HeadReader`] as it would arrive in pieces, checking that the result
/// does not depend on the cuts. Returns `Err(())` when the reader refused the input (431).
fn read_head(data: &[u8], config: &Config, split: u8) -> Result<Option<usize>, ()> {
    let once = HeadReader::new().poll(data, config);
    let mut reader = HeadReader::new();
    let mut found = Ok(None);
    for end in prefix_ends(data, split) {
        match reader.poll(&data[..end], config) {
            Ok(Some(len)) => {
                found = Ok(Some(len));
                break;
            }
            Ok(None) => {}
            Err(e) => {
                assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
                assert!(end >= config.max_header_bytes);
                found = Err(());
                break;
            }
        }
    }
    match (&once, &found) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "head length depends on how input was cut"),
        (Err(_), Err(())) => {}
        // Read piece by piece, the end of a head is found before the limit is reached
        // only if it also is at once, and vice versa.
        (a, b) => panic!("HeadReader differs: at once {a:?}, in pieces {b:?}"),
    }
    if let Ok(Some(len)) = found {
        assert!(len <= data.len() && len <= config.max_header_bytes);
        assert!(data[..len].ends_with(b"\n"));
        assert_eq!(
            reader.poll(data, config).ok(),
            Some(Some(len)),
            "length is sticky"
        );
    }
    found
}

/// An HTTP response we wrote must parse, with the status we meant.
fn check_written_response(out: &[u8], status: StatusCode) {
    let len = HeadReader::new()
        .poll(out, &Config::default())
        .expect("our head is not too long")
        .expect("our head is complete");
    let response = parse_response(&out[..len], &Config::default()).expect("our response parses");
    assert_eq!(response.status(), status);
}

/// Upgrade request heads: 1 setting byte (see `handshake_config`), then the bytes a client
/// sent. Runs [`HeadReader`], [`parse_request`] and [`accept`], then writes the answer.
pub fn handshake_request(data: &[u8]) {
    let ([flags], input) = settings::<1>(data);
    let (config, split) = handshake_config(flags);
    let Ok(found) = read_head(input, &config, split) else {
        return;
    };
    // An incomplete head must be refused as gracefully as a malformed one.
    let head = found.map_or(input, |len| &input[..len]);
    let request = match parse_request(head, &config) {
        Ok(request) => request,
        Err(e) => {
            assert!(
                matches!(e.status().as_u16(), 400 | 431),
                "parse_request: {e}"
            );
            let mut out = BytesMut::new();
            e.write_response(&mut out);
            check_written_response(&out, e.status());
            return;
        }
    };
    match accept(&request, &config) {
        Ok(mut upgrade) => {
            let key = request
                .headers()
                .get(SEC_WEBSOCKET_KEY)
                .expect("an accepted request has a key");
            assert_eq!(
                upgrade.accept_key(),
                accept_key(key.as_bytes().trim_ascii())
            );
            if config.deflate.is_none() {
                assert_eq!(upgrade.deflate(), None);
            }
            if let Some(params) = upgrade.deflate() {
                check_params(&params);
            }
            if let Some(first) = upgrade.protocols().first().cloned() {
                upgrade
                    .select_protocol(&first)
                    .expect("an offered protocol");
                assert_eq!(upgrade.protocol(), Some(first.as_str()));
            }
            // Not a token, so never offered.
            assert!(upgrade.select_protocol("not offered").is_err());
            let mut out = BytesMut::new();
            upgrade.write_response(&HeaderMap::new(), &mut out);
            check_written_response(&out, StatusCode::SWITCHING_PROTOCOLS);
        }
        Err(e) => {
            assert!(
                matches!(e.status().as_u16(), 400 | 405 | 426),
                "accept: {e}"
            );
            let mut out = BytesMut::new();
            e.write_response(&mut out);
            check_written_response(&out, e.status());
        }
    }
}

/// Replaces every [`ACCEPT_PLACEHOLDER`] in `input` with `accept`.
fn fill_accept(input: &[u8], accept: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + accept.len());
    let mut rest = input;
    while let Some(at) = rest
        .windows(ACCEPT_PLACEHOLDER.len())
        .position(|w| w == ACCEPT_PLACEHOLDER)
    {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(accept);
        rest = &rest[at + ACCEPT_PLACEHOLDER.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Upgrade response heads: 1 setting byte (see `handshake_config`; bit 0 also means the
/// client offers no subprotocols), then the bytes a server sent, where `{ACCEPT}` stands for
/// the right `Sec-WebSocket-Accept`. Runs [`HeadReader`] and
/// [`ClientHandshake::handle_response`].
pub fn handshake_response(data: &[u8]) {
    let ([flags], input) = settings::<1>(data);
    let (config, split) = handshake_config(flags);
    let uri = Uri::from_static("ws://example.com/chat");
    let mut handshake = ClientHandshake::new(&uri, &config).expect("a fixed, valid URI");
    if flags & 0x01 == 0 {
        handshake = handshake.protocols(["chat", "superchat"]);
    }
    let input = fill_accept(input, accept_key(handshake.key().as_bytes()).as_bytes());
    let Ok(found) = read_head(&input, &config, split) else {
        return;
    };
    let head = found.map_or(&input[..], |len| &input[..len]);
    let parsed = parse_response(head, &config);
    match handshake.handle_response(head) {
        Ok(upgrade) => {
            let parsed = parsed.expect("an accepted response parses");
            assert_eq!(parsed.status(), StatusCode::SWITCHING_PROTOCOLS);
            assert_eq!(upgrade.response().status(), StatusCode::SWITCHING_PROTOCOLS);
            if let Some(protocol) = upgrade.protocol() {
                assert!(["chat", "superchat"].contains(&protocol) && flags & 0x01 == 0);
            }
            if config.deflate.is_none() {
                assert_eq!(upgrade.deflate(), None);
            }
            if let Some(params) = upgrade.deflate() {
                check_params(&params);
            }
        }
        Err(e) => match parsed {
            // A refusal keeps the server's status; anything else wrong is a 502.
            Ok(r) if r.status() != StatusCode::SWITCHING_PROTOCOLS => {
                assert_eq!(e.status(), r.status());
            }
            _ => assert_eq!(e.status(), StatusCode::BAD_GATEWAY, "{e}"),
        },
    }
}

// ---- extensions -------------------------------------------------------------------------

/// `Sec-WebSocket-Extensions` values: byte 0 is the client's deflate policy, byte 1 the
/// server's (see `deflate_config`), then header values separated by `\n`.
pub fn extensions(data: &[u8]) {
    let ([client_byte, server_byte], input) = settings::<2>(data);
    let client = deflate_config(client_byte);
    let server = deflate_config(server_byte);
    let text = String::from_utf8_lossy(input);
    let values: Vec<&str> = text.split('\n').collect();
    for value in &values {
        if let Ok(parsed) = parse_extensions(value) {
            assert!(!parsed.is_empty(), "{value:?}");
            for extension in parsed {
                assert!(!extension.name.is_empty(), "{value:?}");
                // Writing an extension back gives a value that parses to the same thing.
                let written = extension.to_string();
                let again = parse_extensions(&written)
                    .unwrap_or_else(|e| panic!("{written:?} (from {value:?}) does not parse: {e}"));
                assert_eq!(again, [extension], "{value:?} written as {written:?}");
            }
        }
    }
    if let Ok(Some((params, answer))) = negotiate_server(values.iter().copied(), &server) {
        check_params(&params);
        if !answer.is_empty() {
            let parsed = parse_extensions(&answer).expect("our own answer parses");
            assert_eq!(parsed.len(), 1, "{answer:?}");
            assert_eq!(parsed[0].name, "permessage-deflate");
        }
    }
    if let Ok(Some(params)) = negotiate_client(values.iter().copied(), &client) {
        check_params(&params);
    }

    // Our client and our server must agree with each other, whatever their policies, except
    // that the client may keep a client_no_context_takeover promise the server did not need
    // (a client that resets its compressor is always decodable; RFC 7692 §7.1.1.2).
    let offer = client_offer(&client);
    if offer.is_empty() {
        return;
    }
    parse_extensions(&offer).expect("our own offer parses");
    match negotiate_server([offer.as_str()], &server) {
        Ok(Some((params, answer))) if !answer.is_empty() => {
            let agreed = negotiate_client([answer.as_str()], &client)
                .unwrap_or_else(|e| panic!("client refused {answer:?} to {offer:?}: {e}"));
            let agreed = agreed.unwrap_or_else(|| panic!("client ignored {answer:?}"));
            assert!(
                agreed.client_no_context_takeover || !params.client_no_context_takeover,
                "client would keep context the server resets: offer {offer:?}, answer {answer:?}"
            );
            assert_eq!(
                agreed,
                DeflateParams {
                    client_no_context_takeover: agreed.client_no_context_takeover,
                    ..params
                },
                "offer {offer:?}, answer {answer:?}"
            );
        }
        Ok(_) => {}
        Err(e) => panic!("server refused our own offer {offer:?}: {e}"),
    }
}

// ---- inflate ----------------------------------------------------------------------------

/// Compressed frames: byte 0 flags (bit 0 role: server inflates the client's data, bits 1/2
/// no context takeover), byte 1 window bits, byte 2 the message size limit (`byte * 16 + 1`),
/// then frames, each a big-endian `u16` whose top bit is FIN and whose low 15 bits are the
/// length, followed by that many bytes. Then the same bytes are compressed and inflated back.
pub fn inflate(data: &[u8]) {
    let ([flags, bits, max], input) = settings::<3>(data);
    let role = if flags & 0x01 != 0 {
        Role::Server
    } else {
        Role::Client
    };
    let params = deflate_params(flags >> 1, bits);
    let max = usize::from(max) * 16 + 1;
    let level = u32::from(flags >> 4) % 10;

    let mut codec = DeflateCodec::new(role, params, level);
    let mut out = BytesMut::new();
    let mut rest = input;
    while rest.len() >= 2 {
        let prefix = u16::from_be_bytes([rest[0], rest[1]]);
        let fin = prefix & 0x8000 != 0;
        let len = usize::from(prefix & 0x7FFF).min(rest.len() - 2);
        let frame = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let result = codec.decompress(frame, fin, &mut out, max);
        assert!(
            out.len() <= max,
            "{} bytes inflated, over the limit of {max}",
            out.len()
        );
        match result {
            Ok(()) if fin => out.clear(),
            Ok(()) => {}
            // The connection fails here; the codec is not used again.
            Err(ProtocolError::Inflate(_) | ProtocolError::MessageTooBig { .. }) => break,
            Err(e) => panic!("unexpected inflate error {e}"),
        }
    }

    // Round trip: what the peer compresses, we inflate back exactly, with a limit that is
    // exact too. Two messages, so context takeover is exercised.
    let mut sender = DeflateCodec::new(role.peer(), params, level);
    let mut receiver = DeflateCodec::new(role, params, level);
    let cut = usize::from(bits) % (input.len() + 1);
    for (i, message) in [&input[..cut], &input[cut..]].into_iter().enumerate() {
        let mut compressed = BytesMut::new();
        if let Err(e) = sender.compress(message, &mut compressed) {
            panic!("compress failed: {e}");
        }
        if !message.is_empty() {
            // One byte short of the limit must fail, without touching the real receiver's
            // context (a fresh codec when contexts are kept would not match the stream).
            let mut probe = DeflateCodec::new(role, params, level);
            let mut tight = BytesMut::new();
            if i == 0 || params_reset_context(role, &params) {
                let r = probe.decompress(&compressed, true, &mut tight, message.len() - 1);
                assert!(
                    matches!(r, Err(ProtocolError::MessageTooBig { .. })),
                    "limit not enforced: {r:?}"
                );
                assert!(tight.len() < message.len());
            }
        }
        let mut inflated = BytesMut::new();
        receiver
            .decompress(&compressed, true, &mut inflated, message.len())
            .unwrap_or_else(|e| panic!("our own compressed data does not inflate: {e}"));
        assert_eq!(&inflated[..], message);
    }
}

/// Whether the peer (the sender towards a `role` receiver) resets its compressor after each
/// message, so each compressed message inflates on its own.
fn params_reset_context(role: Role, params: &DeflateParams) -> bool {
    match role {
        Role::Server => params.client_no_context_takeover,
        Role::Client => params.server_no_context_takeover,
    }
}
