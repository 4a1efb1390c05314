use super::*;
use crate::deflate::DeflateParams;
use proptest::prelude::*;

fn pair_with(config: Config, deflate: Option<DeflateParams>) -> (Connection, Connection) {
    (
        Connection::with_deflate(Role::Client, config.clone(), deflate),
        Connection::with_deflate(Role::Server, config, deflate),
    )
}

fn pair() -> (Connection, Connection) {
    pair_with(Config::default(), None)
}

/// Moves everything `from` has to send into `to`, returning `to`'s verdict.
fn pump(from: &mut Connection, to: &mut Connection) -> Result<(), ProtocolError> {
    let mut wire = BytesMut::new();
    from.poll_transmit(&mut wire);
    to.handle_bytes(&wire)
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

/// A client-masked frame, for hand-written input to a server.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let header = FrameHeader {
        fin: first & 0x80 != 0,
        rsv: (first >> 4) & 7,
        opcode: OpCode::new(first),
        mask: Some([1, 2, 3, 4]),
        payload_len: payload.len() as u64,
    };
    let mut buf = [0; crate::frame::MAX_HEADER_LEN];
    let n = header.encode(&mut buf);
    out.extend_from_slice(&buf[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], [1, 2, 3, 4], 0);
    out.to_vec()
}

/// The close code of the close frame a connection queued.
fn queued_close_code(conn: &mut Connection) -> Option<u16> {
    let mut wire = BytesMut::new();
    conn.poll_transmit(&mut wire);
    let mut peer = Connection::new(conn.role().peer(), Config::default());
    let _ = peer.handle_bytes(&wire);
    events(&mut peer).into_iter().find_map(|e| match e {
        Event::Close(f) => Some(f.map_or(1005, |f| f.code.as_u16())),
        _ => None,
    })
}

#[test]
fn messages_flow_both_ways() {
    let (mut client, mut server) = pair();
    client.send(Message::text("hello")).unwrap();
    client.send(Message::binary(vec![0u8, 1, 2])).unwrap();
    pump(&mut client, &mut server).unwrap();
    assert_eq!(
        events(&mut server),
        vec![
            Event::Message(Message::text("hello")),
            Event::Message(Message::binary(vec![0u8, 1, 2]))
        ]
    );
    server.send(Message::text("back")).unwrap();
    pump(&mut server, &mut client).unwrap();
    assert_eq!(
        events(&mut client),
        vec![Event::Message(Message::text("back"))]
    );
}

#[test]
fn rejects_unmasked_client_frame() {
    let mut server = Connection::new(Role::Server, Config::default());
    let err = server.handle_bytes(&[0x81, 0x02, b'h', b'i']).unwrap_err();
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    assert!(server.has_pending_transmit());
    assert!(server.is_closed());
    assert_eq!(queued_close_code(&mut server), Some(1002));
}

#[test]
fn rejects_masked_server_frame() {
    let mut client = Connection::new(Role::Client, Config::default());
    let err = client.handle_bytes(&masked(0x81, b"hi")).unwrap_err();
    assert_eq!(err, ProtocolError::MaskedFrame);
}

#[test]
fn header_rules_fail_with_the_right_error() {
    let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
        (masked(0x91, b"x"), ProtocolError::ReservedBits), // RSV1 without deflate
        (masked(0xA1, b"x"), ProtocolError::ReservedBits), // RSV2
        (masked(0x83, b"x"), ProtocolError::UnknownOpcode(3)),
        (masked(0x8B, b""), ProtocolError::UnknownOpcode(0xB)),
        (masked(0x89, &[0; 126]), ProtocolError::ControlFrameTooLong),
        (masked(0x09, b""), ProtocolError::FragmentedControlFrame),
        (masked(0x80, b"x"), ProtocolError::UnexpectedContinuation),
        (
            [masked(0x01, b"a"), masked(0x81, b"b")].concat(),
            ProtocolError::ExpectedContinuation,
        ),
        (masked(0x88, &[3]), ProtocolError::InvalidClosePayload),
        (
            masked(0x88, &[0x03, 0xED]),
            ProtocolError::InvalidCloseCode(1005),
        ),
        (
            masked(0x88, &[0x03, 0xE8, 0xFF]),
            ProtocolError::InvalidUtf8,
        ),
    ];
    for (input, expected) in cases {
        let mut server = Connection::new(Role::Server, Config::default());
        assert_eq!(
            server.handle_bytes(&input).unwrap_err(),
            expected,
            "{input:02x?}"
        );
        assert!(server.is_closed());
    }
}

#[test]
fn close_codes_on_the_wire() {
    for (code, ok) in [
        (999, false),
        (1000, true),
        (1003, true),
        (1004, false),
        (1005, false),
        (1006, false),
        (1007, true),
        (1011, true),
        (1012, false),
        (1015, false),
        (2999, false),
        (3000, true),
        (4999, true),
        (5000, false),
    ] {
        let mut server = Connection::new(Role::Server, Config::default());
        let result = server.handle_bytes(&masked(0x88, &u16::to_be_bytes(code)));
        assert_eq!(result.is_ok(), ok, "code {code}");
        if ok {
            // The reply echoes the code.
            assert_eq!(queued_close_code(&mut server), Some(code));
        }
    }
}

#[test]
fn ping_is_answered_and_interleaves_with_fragments() {
    let mut server = Connection::new(Role::Server, Config::default());
    let input = [
        masked(0x01, b"frag"),
        masked(0x89, b"ping!"),
        masked(0x00, b"ment"),
        masked(0x80, b"ed"),
    ]
    .concat();
    server.handle_bytes(&input).unwrap();
    assert_eq!(
        events(&mut server),
        vec![
            Event::Ping(Bytes::from_static(b"ping!")),
            Event::Message(Message::text("fragmented"))
        ]
    );
    let mut wire = BytesMut::new();
    server.poll_transmit(&mut wire);
    assert_eq!(&wire[..], &[0x8A, 0x05, b'p', b'i', b'n', b'g', b'!']);
}

#[test]
fn invalid_utf8_fails_before_the_frame_is_complete() {
    let mut server = Connection::new(Role::Server, Config::default());
    // A 20-byte text frame; the first 8 bytes already contain an invalid sequence.
    let mut payload = b"hello\xED\xA0\x80".to_vec();
    payload.resize(20, b'x');
    let frame = masked(0x81, &payload);
    let header_len = frame.len() - payload.len();
    let err = server.handle_bytes(&frame[..header_len + 7]).unwrap_err();
    assert_eq!(err, ProtocolError::InvalidUtf8);
    assert_eq!(queued_close_code(&mut server), Some(1007));
}

#[test]
fn invalid_utf8_fails_across_fragments() {
    let mut server = Connection::new(Role::Server, Config::default());
    server.handle_bytes(&masked(0x01, b"ok\xF4")).unwrap();
    let err = server.handle_bytes(&masked(0x00, b"\x90")).unwrap_err();
    assert_eq!(err, ProtocolError::InvalidUtf8);
}

#[test]
fn code_point_split_across_fragments_is_fine() {
    let mut server = Connection::new(Role::Server, Config::default());
    let euro = "€".as_bytes();
    let input = [
        masked(0x01, &euro[..1]),
        masked(0x00, &euro[1..2]),
        masked(0x80, &euro[2..]),
    ]
    .concat();
    server.handle_bytes(&input).unwrap();
    assert_eq!(
        events(&mut server),
        vec![Event::Message(Message::text("€"))]
    );
}

#[test]
fn truncated_code_point_at_message_end_fails() {
    let mut server = Connection::new(Role::Server, Config::default());
    server.handle_bytes(&masked(0x01, b"\xE2\x82")).unwrap();
    assert_eq!(
        server.handle_bytes(&masked(0x80, b"")).unwrap_err(),
        ProtocolError::InvalidUtf8
    );
}

#[test]
fn close_handshake_initiated_by_client() {
    let (mut client, mut server) = pair();
    client
        .close(Some(CloseFrame::new(CloseCode::NORMAL, "bye")))
        .unwrap();
    assert!(client.is_closing());
    assert_eq!(client.send(Message::text("late")), Err(SendError::Closed));
    pump(&mut client, &mut server).unwrap();
    assert_eq!(
        events(&mut server),
        vec![Event::Close(Some(CloseFrame::new(
            CloseCode::NORMAL,
            "bye"
        )))]
    );
    assert!(server.is_closed());
    pump(&mut server, &mut client).unwrap();
    assert_eq!(
        events(&mut client),
        vec![Event::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))]
    );
    assert!(client.is_closed());
    assert_eq!(client.handle_eof(), Ok(()));
}

#[test]
fn close_without_code_is_answered_without_code() {
    let mut server = Connection::new(Role::Server, Config::default());
    server.handle_bytes(&masked(0x88, b"")).unwrap();
    assert_eq!(events(&mut server), vec![Event::Close(None)]);
    assert_eq!(queued_close_code(&mut server), Some(1005));
}

#[test]
fn data_after_close_is_ignored() {
    let mut server = Connection::new(Role::Server, Config::default());
    let input = [masked(0x88, &[0x03, 0xE8]), masked(0x81, b"late")].concat();
    server.handle_bytes(&input).unwrap();
    assert_eq!(
        events(&mut server),
        vec![Event::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))]
    );
}

#[test]
fn message_before_a_bad_frame_can_still_be_answered() {
    // Autobahn 3.2: a valid message, then a frame with RSV bits, in one read.
    let mut server = Connection::new(Role::Server, Config::default());
    let input = [masked(0x81, b"hello"), masked(0xA1, b"bad")].concat();
    let err = server.handle_bytes(&input).unwrap_err();
    assert_eq!(err, ProtocolError::ReservedBits);
    assert!(
        !server.has_pending_transmit(),
        "close waits behind the message"
    );
    let Some(Event::Message(echo)) = server.poll_event() else {
        panic!("the message comes first")
    };
    server.send(echo).unwrap();
    assert_eq!(server.poll_event(), None);
    assert!(server.is_closed());
    let mut wire = BytesMut::new();
    server.poll_transmit(&mut wire);
    let mut client = Connection::new(Role::Client, Config::default());
    client.handle_bytes(&wire).unwrap();
    assert_eq!(
        events(&mut client),
        vec![
            Event::Message(Message::text("hello")),
            Event::Close(Some(CloseFrame::new(
                CloseCode::PROTOCOL_ERROR,
                "reserved bits set in frame header"
            )))
        ]
    );
}

#[test]
fn message_before_the_peer_close_can_still_be_answered() {
    let mut server = Connection::new(Role::Server, Config::default());
    let input = [masked(0x82, b"data"), masked(0x88, &[0x03, 0xE8])].concat();
    server.handle_bytes(&input).unwrap();
    let Some(Event::Message(echo)) = server.poll_event() else {
        panic!("the message comes first")
    };
    assert!(server.can_send());
    server.send(echo).unwrap();
    assert!(matches!(server.poll_event(), Some(Event::Close(_))));
    assert!(server.is_closed());
    let mut wire = BytesMut::new();
    server.poll_transmit(&mut wire);
    assert_eq!(
        &wire[..],
        &[0x82, 0x04, b'd', b'a', b't', b'a', 0x88, 0x02, 0x03, 0xE8]
    );
}

#[test]
fn eof_after_the_peer_close_is_clean_even_before_the_event_is_taken() {
    let mut server = Connection::new(Role::Server, Config::default());
    let input = [masked(0x82, b"data"), masked(0x88, &[0x03, 0xE8])].concat();
    server.handle_bytes(&input).unwrap();
    // The peer closed and went away before the application took its events.
    assert_eq!(server.handle_eof(), Ok(()));
    assert!(server.is_closed());
}

#[test]
fn eof_before_close_is_abnormal() {
    let mut server = Connection::new(Role::Server, Config::default());
    assert_eq!(server.handle_eof(), Err(ProtocolError::AbnormalClosure));
    assert_eq!(
        ProtocolError::AbnormalClosure.close_code(),
        CloseCode::ABNORMAL
    );
    assert!(!server.has_pending_transmit());
}

#[test]
fn sending_invalid_close_is_refused_locally() {
    let (mut client, _) = pair();
    assert_eq!(
        client.close(Some(CloseFrame::new(CloseCode::ABNORMAL, ""))),
        Err(SendError::InvalidCloseCode(1006))
    );
    assert_eq!(
        client.close(Some(CloseFrame::new(CloseCode::NORMAL, "x".repeat(124)))),
        Err(SendError::ControlFrameTooLong)
    );
    assert_eq!(
        client.ping(Bytes::from(vec![0; 126])),
        Err(SendError::ControlFrameTooLong)
    );
    assert!(client.can_send());
}

#[test]
fn limits_close_with_their_codes() {
    let config = Config::default()
        .with_max_message_size(100)
        .with_max_frame_size(50)
        .with_max_fragments(3);
    let frame_too_big = masked(0x82, &[0; 51]);
    let message_too_big = [
        masked(0x02, &[0; 50]),
        masked(0x00, &[0; 50]),
        masked(0x80, &[0; 1]),
    ]
    .concat();
    let too_many = [
        masked(0x02, b"a"),
        masked(0x00, b"b"),
        masked(0x00, b"c"),
        masked(0x80, b"d"),
    ]
    .concat();
    for (input, code) in [
        (frame_too_big, 1009),
        (message_too_big, 1009),
        (too_many, 1008),
    ] {
        let mut server = Connection::new(Role::Server, config.clone());
        let err = server.handle_bytes(&input).unwrap_err();
        assert_eq!(err.close_code().as_u16(), code, "{err}");
        assert_eq!(queued_close_code(&mut server), Some(code));
    }
}

#[test]
fn oversized_frame_fails_on_its_header() {
    // Nothing of the 1 GiB payload needs to arrive for the frame to be refused.
    let mut server = Connection::new(Role::Server, Config::default());
    let header = [0x82, 0xFF, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4];
    let err = server.handle_bytes(&header).unwrap_err();
    assert!(matches!(err, ProtocolError::FrameTooBig { .. }));
}

#[test]
fn a_frame_split_across_reads_counts_as_one_fragment() {
    // Found by the client_connection fuzz target: header in one read, payload in the next.
    let config = Config::default().with_max_fragments(2);
    let mut client = Connection::new(Role::Client, config);
    client.handle_bytes(&[0x02, 0x01]).unwrap();
    client.handle_bytes(&[0xAA]).unwrap();
    client.handle_bytes(&[0x80, 0x01, 0xBB]).unwrap();
    assert_eq!(
        events(&mut client),
        vec![Event::Message(Message::binary(vec![0xAA, 0xBB]))]
    );
}

#[test]
fn announced_length_is_not_preallocated() {
    // A 16 MiB frame announced, 3 bytes sent: the buffer holds what arrived, not 16 MiB.
    let mut server = Connection::new(Role::Server, Config::default());
    let mut input = vec![0x82, 0xFF, 0, 0, 0, 0, 0, 0xFF, 0, 0, 1, 2, 3, 4];
    input.extend_from_slice(&[9, 9, 9]);
    server.handle_bytes(&input).unwrap();
    let capacity = server.message.as_ref().map_or(0, |m| m.buf.capacity());
    assert!(capacity < 1 << 10, "preallocated {capacity} bytes");
}

#[test]
fn small_messages_do_not_pin_the_read_buffer() {
    let mut server = Connection::new(Role::Server, Config::default());
    server.read_buffer().reserve(64 << 10);
    let buffer_start = server.read_buffer().as_ptr() as usize;
    server
        .read_buffer()
        .extend_from_slice(&masked(0x82, b"tiny"));
    server.handle_read().unwrap();
    let Some(Event::Message(Message::Binary(payload))) = server.poll_event() else {
        panic!("a binary message")
    };
    let at = payload.as_ptr() as usize;
    assert!(
        !(buffer_start..buffer_start + (64 << 10)).contains(&at),
        "the message lives inside the read buffer"
    );
}

#[test]
fn outgoing_fragmentation() {
    let (mut client, mut server) = pair_with(Config::default().with_max_send_frame_size(3), None);
    client.send(Message::text("abcdefgh")).unwrap();
    let mut wire = BytesMut::new();
    client.poll_transmit(&mut wire);
    // 3 frames of 3 + 3 + 2 bytes, each with a 6-byte masked header.
    assert_eq!(wire.len(), 3 * 6 + 8);
    server.handle_bytes(&wire).unwrap();
    assert_eq!(
        events(&mut server),
        vec![Event::Message(Message::text("abcdefgh"))]
    );
}

#[test]
fn large_payloads_are_queued_without_copy_and_written_vectored() {
    let (_, mut server) = pair();
    let big = Bytes::from(vec![7u8; 100_000]);
    server.send(Message::Binary(big.clone())).unwrap();
    server.send(Message::text("small")).unwrap();
    let mut slices = [IoSlice::new(&[]); 8];
    let n = server.transmit_slices(&mut slices);
    assert_eq!(n, 3); // header, shared payload, small frame
    assert_eq!(slices[1].as_ptr(), big.as_ptr());
    let total: usize = slices[..n].iter().map(|s| s.len()).sum();
    assert_eq!(total, server.pending_transmit_len());
    server.advance_transmit(total);
    assert!(!server.has_pending_transmit());
}

#[test]
fn prepared_frame_is_shared() {
    let (mut client, mut server) = pair();
    let prepared = PreparedFrame::new(Message::binary(vec![1u8; 10_000]));
    server.send_prepared(&prepared).unwrap();
    let mut slices = [IoSlice::new(&[]); 4];
    assert_eq!(server.transmit_slices(&mut slices), 1);
    assert_eq!(slices[0].as_ptr(), prepared.frame_bytes().as_ptr());
    pump(&mut server, &mut client).unwrap();
    assert_eq!(
        events(&mut client),
        vec![Event::Message(prepared.message().clone())]
    );
}

#[test]
fn a_small_prepared_frame_alone_is_written_in_place_and_a_batch_is_one_slice() {
    let (mut client, mut server) = pair();
    let prepared = PreparedFrame::new(Message::text("tick"));
    server.send_prepared(&prepared).unwrap();
    // Nothing else queued: sent from the shared frame itself, without taking a buffer.
    {
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(server.transmit_slices(&mut slices), 1);
        assert_eq!(slices[0].as_ptr(), prepared.frame_bytes().as_ptr());
    }
    assert_eq!(server.out.tail_capacity(), 0);
    // Behind it, the next ones are coalesced with it into one slice (one `send`, not a
    // `writev` of two).
    server.send_prepared(&prepared).unwrap();
    server.send_prepared(&prepared).unwrap();
    let mut slices = [IoSlice::new(&[]); 4];
    assert_eq!(server.transmit_slices(&mut slices), 1);
    assert_eq!(slices[0].len(), 3 * prepared.frame_bytes().len());
    pump(&mut server, &mut client).unwrap();
    assert_eq!(
        events(&mut client),
        vec![Event::Message(prepared.message().clone()); 3]
    );
    server.release_idle_memory();
    assert_eq!(server.out.tail_capacity(), 0);
}

fn shared_deflate_params(server_no_context: bool, server_bits: u8) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: server_no_context,
        client_no_context_takeover: false,
        server_max_window_bits: server_bits,
        client_max_window_bits: 15,
    }
}

#[test]
fn prepared_frame_is_compressed_once_without_server_context() {
    let text: String = (0..2000).map(|i| format!("{{\"i\":{i}}}")).collect();
    let prepared = PreparedFrame::new(Message::text(text));
    let mut sent = Vec::new();
    for _ in 0..3 {
        let (mut client, mut server) =
            pair_with(Config::default(), Some(shared_deflate_params(true, 15)));
        server.send_prepared(&prepared).unwrap();
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(server.transmit_slices(&mut slices), 1);
        sent.push(slices[0].as_ptr());
        let frame = slices[0].to_vec();
        assert_eq!(frame[0], 0xC1, "FIN, RSV1, text");
        assert!(frame.len() < prepared.message().len() / 2, "compressed");
        pump(&mut server, &mut client).unwrap();
        assert_eq!(
            events(&mut client),
            vec![Event::Message(prepared.message().clone())]
        );
        // The same connection keeps working with its own codec afterwards.
        server.send(Message::text("after")).unwrap();
        pump(&mut server, &mut client).unwrap();
        assert_eq!(
            events(&mut client),
            vec![Event::Message(Message::text("after"))]
        );
    }
    assert!(
        sent.windows(2).all(|w| w[0] == w[1]),
        "one compressed copy shared"
    );

    // A smaller window gets its own copy, still decodable.
    let (mut client, mut server) =
        pair_with(Config::default(), Some(shared_deflate_params(true, 9)));
    server.send_prepared(&prepared).unwrap();
    let mut slices = [IoSlice::new(&[]); 4];
    server.transmit_slices(&mut slices);
    assert_ne!(slices[0].as_ptr(), sent[0]);
    pump(&mut server, &mut client).unwrap();
    assert_eq!(
        events(&mut client),
        vec![Event::Message(prepared.message().clone())]
    );

    // With server context takeover, each connection compresses for itself.
    let (mut client, mut server) =
        pair_with(Config::default(), Some(shared_deflate_params(false, 15)));
    server.send_prepared(&prepared).unwrap();
    server.send_prepared(&prepared).unwrap();
    pump(&mut server, &mut client).unwrap();
    assert_eq!(events(&mut client).len(), 2);
}

#[test]
fn release_idle_memory_frees_buffers() {
    let (mut client, mut server) = pair();
    client.send(Message::binary(vec![0u8; 10_000])).unwrap();
    pump(&mut client, &mut server).unwrap();
    events(&mut server);
    client.release_idle_memory();
    server.release_idle_memory();
    assert_eq!(server.read.capacity(), 0);
    assert_eq!(client.out.tail_capacity(), 0);
}

#[test]
fn released_buffers_are_reused_from_the_thread_pool() {
    let (mut client, mut server) = pair();
    client.send(Message::text("one")).unwrap();
    let mut wire = BytesMut::new();
    client.poll_transmit(&mut wire);
    server.reserve_read(4096).extend_from_slice(&wire);
    server.handle_read().unwrap();
    assert_eq!(
        events(&mut server),
        vec![Event::Message(Message::text("one"))]
    );
    let storage = server.read.as_ptr() as usize - wire.len();
    let pooled = pool::pooled();
    server.release_idle_memory();
    assert_eq!(server.read.capacity(), 0);
    assert_eq!(pool::pooled(), pooled + 1);
    // The next read on this thread gets the same storage back, not a new allocation.
    client.send(Message::text("two")).unwrap();
    wire.clear();
    client.poll_transmit(&mut wire);
    let buf = server.reserve_read(1024);
    assert_eq!(buf.as_ptr() as usize, storage);
    buf.extend_from_slice(&wire);
    server.handle_read().unwrap();
    assert_eq!(
        events(&mut server),
        vec![Event::Message(Message::text("two"))]
    );
    assert_eq!(pool::pooled(), pooled);
}

#[test]
fn an_untouched_read_buffer_goes_back_but_one_shared_with_a_message_does_not() {
    let (mut client, mut server) = pair();
    // A read that found nothing: the buffer goes straight back and comes out again.
    let storage = server.reserve_read(4096).as_ptr();
    let pooled = pool::pooled();
    server.unreserve_read();
    assert_eq!(server.read.capacity(), 0);
    assert_eq!(pool::pooled(), pooled + 1);
    assert_eq!(server.reserve_read(4096).as_ptr(), storage);
    // A large payload is split off the read buffer without a copy: after it was processed,
    // the buffer shares its storage with the message and must not be pooled.
    let big = vec![7u8; 3 * INLINE_PAYLOAD];
    client.send(Message::binary(big.clone())).unwrap();
    let mut wire = BytesMut::new();
    client.poll_transmit(&mut wire);
    let pooled = pool::pooled();
    // Room to spare, so the rest after the message would be worth pooling if it were free.
    server
        .reserve_read(wire.len() + 2 * pool::MIN_POOLED)
        .extend_from_slice(&wire);
    server.handle_read().unwrap();
    let received = events(&mut server);
    assert!(server.read.is_empty());
    assert!(server.read.capacity() >= pool::MIN_POOLED);
    server.unreserve_read();
    assert_eq!(server.read.capacity(), 0);
    assert_eq!(pool::pooled(), pooled, "still shared with the message");
    assert_eq!(received, vec![Event::Message(Message::binary(big))]);
}

fn deflate_params() -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    }
}

#[test]
fn rfc7692_compressed_hello_is_decoded() {
    // RFC 7692 §7.2.3.1: "Hello" compressed, in one unmasked frame from a server.
    let mut client =
        Connection::with_deflate(Role::Client, Config::default(), Some(deflate_params()));
    client
        .handle_bytes(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])
        .unwrap();
    // §7.2.3.1 fragmented: the same bytes split over two frames.
    client
        .handle_bytes(&[
            0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
        ])
        .unwrap();
    // §7.2.3.2: the second "Hello" reusing the sliding window.
    client
        .handle_bytes(&[0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00])
        .unwrap();
    assert_eq!(
        events(&mut client),
        vec![Event::Message(Message::text("Hello")); 3]
    );
}

#[test]
fn compressed_messages_set_rsv1_and_round_trip() {
    let (mut client, mut server) = pair_with(Config::default(), Some(deflate_params()));
    let text = "{\"price\": 101.25, \"symbol\": \"BTC-USD\"} ".repeat(50);
    client.send(Message::text(text.clone())).unwrap();
    let mut wire = BytesMut::new();
    client.poll_transmit(&mut wire);
    assert_eq!(wire[0], 0xC1, "FIN + RSV1 + text");
    assert!(
        wire.len() < text.len() / 4,
        "compressed to {} bytes",
        wire.len()
    );
    server.handle_bytes(&wire).unwrap();
    assert_eq!(
        events(&mut server),
        vec![Event::Message(Message::text(text))]
    );
}

#[test]
fn rsv1_on_continuation_or_control_is_rejected() {
    let mut server =
        Connection::with_deflate(Role::Server, Config::default(), Some(deflate_params()));
    let err = server
        .handle_bytes(&[masked(0x01, b"a"), masked(0xC0, b"b")].concat())
        .unwrap_err();
    assert_eq!(err, ProtocolError::InvalidCompressedFrame);
    let mut server =
        Connection::with_deflate(Role::Server, Config::default(), Some(deflate_params()));
    let err = server.handle_bytes(&masked(0xC9, b"")).unwrap_err();
    assert_eq!(err, ProtocolError::InvalidCompressedFrame);
}

#[test]
fn compression_bomb_fails_with_1009_at_the_limit() {
    let config = Config::default()
        .with_max_message_size(64 << 10)
        .with_max_frame_size(64 << 10);
    let (mut client, _) = pair_with(Config::default(), Some(deflate_params()));
    client.send(Message::binary(vec![0u8; 4 << 20])).unwrap();
    let mut wire = BytesMut::new();
    client.poll_transmit(&mut wire);
    assert!(
        wire.len() < 64 << 10,
        "4 MiB of zeros compress to {} bytes",
        wire.len()
    );
    let mut server = Connection::with_deflate(Role::Server, config, Some(deflate_params()));
    let err = server.handle_bytes(&wire).unwrap_err();
    assert_eq!(err, ProtocolError::MessageTooBig { max: 64 << 10 });
    assert_eq!(queued_close_code(&mut server), Some(1009));
}

#[test]
fn invalid_utf8_inside_compressed_text_is_1007() {
    let (mut client, mut server) = pair_with(Config::default(), Some(deflate_params()));
    // Compress invalid bytes as if they were text: send binary, then flip the opcode.
    client
        .send(Message::binary(b"ok\xff\xfe".to_vec()))
        .unwrap();
    let mut wire = BytesMut::new();
    client.poll_transmit(&mut wire);
    wire[0] = 0xC1;
    assert_eq!(
        server.handle_bytes(&wire).unwrap_err(),
        ProtocolError::InvalidUtf8
    );
}

#[test]
fn corrupt_compressed_data_fails() {
    let mut client =
        Connection::with_deflate(Role::Client, Config::default(), Some(deflate_params()));
    let err = client
        .handle_bytes(&[0xc2, 0x03, 0xff, 0xff, 0xff])
        .unwrap_err();
    assert!(matches!(err, ProtocolError::Inflate(_)), "{err:?}");
}

#[test]
fn discarded_input_takes_deferred_messages_with_it() {
    let mut server = Connection::new(Role::Server, Config::default());
    let input = [masked(0x82, b"one"), masked(0x82, b"two")].concat();
    server.handle_bytes(&input).unwrap();
    assert_eq!(
        server.poll_event(),
        Some(Event::Message(Message::binary(&b"one"[..])))
    );
    server.discard_input();
    assert_eq!(server.poll_event(), None);
    // Input after that is read from a clean start.
    server.handle_bytes(&masked(0x81, b"three")).unwrap();
    assert_eq!(
        events(&mut server),
        vec![Event::Message(Message::text("three"))]
    );
}

// ---- property tests ---------------------------------------------------------------------

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        ".{0,300}".prop_map(Message::text),
        proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Message::binary),
    ]
}

/// A frame as (first byte, payload, masked): mostly small text and binary frames, valid or
/// not (UTF-8, masking, length against the limits), among fragments and control frames.
fn arb_frame() -> impl Strategy<Value = (u8, Vec<u8>, bool)> {
    let first = prop_oneof![
        6 => Just(0x81u8),
        6 => Just(0x82),
        1 => Just(0x01),
        1 => Just(0x02),
        1 => Just(0x00),
        1 => Just(0x80),
        1 => Just(0x89),
        1 => Just(0x8A),
        1 => Just(0xC1),
        1 => Just(0x83),
        1 => Just(0x88),
    ];
    let payload = prop_oneof![
        4 => "[a-z]{0,130}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..130),
    ];
    (first, payload, proptest::bool::weighted(0.9))
}

/// A frame with any first byte, masked or not, with the minimal length encoding.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mask = masked.then_some([1, 2, 3, 4]);
    crate::frame::encode_frame(
        &mut out,
        first & 0x80 != 0,
        first & 0x40 != 0,
        OpCode::new(first),
        mask,
        payload,
    );
    // encode_frame writes RSV1 only: set RSV2 and RSV3 as asked.
    out[0] |= first & 0x30;
    out.to_vec()
}

/// What `conn` queued, as its peer decodes it.
fn heard_by_peer(conn: &mut Connection) -> (Result<(), ProtocolError>, Vec<Event>) {
    let mut wire = BytesMut::new();
    conn.poll_transmit(&mut wire);
    let mut peer = Connection::new(conn.role().peer(), Config::default());
    (peer.handle_bytes(&wire), events(&mut peer))
}

fn roundtrip(
    messages: &[Message],
    frame_size: usize,
    chunk: usize,
    deflate: Option<DeflateParams>,
    from: Role,
) -> Vec<Event> {
    let config = Config::default().with_max_send_frame_size(frame_size);
    let (mut client, mut server) = pair_with(config, deflate);
    let (sender, receiver) = match from {
        Role::Client => (&mut client, &mut server),
        Role::Server => (&mut server, &mut client),
    };
    let mut wire = BytesMut::new();
    for m in messages {
        sender.send(m.clone()).unwrap();
        sender.ping(Bytes::from_static(b"p")).unwrap();
    }
    sender.poll_transmit(&mut wire);
    for piece in wire.chunks(chunk) {
        receiver.handle_bytes(piece).unwrap();
    }
    events(receiver)
        .into_iter()
        .filter(|e| matches!(e, Event::Message(_)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_messages_survive_any_fragmentation_and_chunking(
        messages in proptest::collection::vec(arb_message(), 0..8),
        frame_size in 1usize..2000,
        chunk in 1usize..5000,
        client_sends in any::<bool>(),
    ) {
        let from = if client_sends { Role::Client } else { Role::Server };
        let got = roundtrip(&messages, frame_size, chunk, None, from);
        let want: Vec<Event> = messages.into_iter().map(Event::Message).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_messages_survive_compression(
        messages in proptest::collection::vec(arb_message(), 0..8),
        frame_size in 1usize..2000,
        chunk in 1usize..5000,
        client_sends in any::<bool>(),
        no_context in any::<bool>(),
        bits in 8u8..=15,
    ) {
        let from = if client_sends { Role::Client } else { Role::Server };
        let params = DeflateParams {
            server_no_context_takeover: no_context,
            client_no_context_takeover: no_context,
            server_max_window_bits: bits,
            client_max_window_bits: bits,
        };
        let got = roundtrip(&messages, frame_size, chunk, Some(params), from);
        let want: Vec<Event> = messages.into_iter().map(Event::Message).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn random_input_never_panics(
        input in proptest::collection::vec(any::<u8>(), 0..512),
        chunk in 1usize..64,
        server in any::<bool>(),
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let mut conn = Connection::new(role, Config::default());
        for piece in input.chunks(chunk) {
            if conn.handle_bytes(piece).is_err() {
                break;
            }
            while conn.poll_event().is_some() {}
        }
        let mut out = BytesMut::new();
        conn.poll_transmit(&mut out);
    }
}

proptest! {
    // Cheap cases (a few frames each), and the orderings it looks for are rare: many of them.
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frames_in_one_read_and_byte_by_byte_are_judged_alike(
        frames in proptest::collection::vec(arb_frame(), 0..12),
        server in any::<bool>(),
        limits in 0usize..3,
        chunk in 1usize..300,
        take in 0usize..4,
    ) {
        // In one read, whole small data frames are checked on the fast path of `process` and
        // handed out from the buffer; fed a byte at a time, every frame with a payload goes
        // through the general path. In reads of `chunk` bytes with up to `take` events taken
        // after each, deferred messages meet later reads and a queue that is not empty.
        // Limits below 125 bytes, either one the lower, make the fast path's checks matter.
        let role = if server { Role::Server } else { Role::Client };
        let (frame_limit, message_limit) = [(60, 100), (100, 60), (125, 125)][limits];
        let config = Config::default()
            .with_max_frame_size(frame_limit)
            .with_max_message_size(message_limit)
            .with_max_fragments(3);
        let input: Vec<u8> = frames
            .iter()
            .flat_map(|(first, payload, masked)| frame(*first, payload, *masked))
            .collect();
        let mut whole = Connection::new(role, config.clone());
        let whole_result = whole.handle_bytes(&input);
        let whole_events = events(&mut whole);

        let mut bytewise = Connection::new(role, config.clone());
        let bytewise_result = input
            .iter()
            .map(|b| bytewise.handle_bytes(std::slice::from_ref(b)))
            .find(Result::is_err)
            .unwrap_or(Ok(()));
        prop_assert_eq!(&whole_result, &bytewise_result);
        prop_assert_eq!(&whole_events, &events(&mut bytewise));


        // In reads of `chunk` bytes, and in reads of one whole frame each (so that a read
        // of small messages only meets events of earlier reads not yet taken).
        let by_frame: Vec<Vec<u8>> = frames
            .iter()
            .map(|(first, payload, masked)| frame(*first, payload, *masked))
            .collect();
        let reads = [
            input.chunks(chunk).map(<[u8]>::to_vec).collect::<Vec<_>>(),
            by_frame,
        ];
        let heard = heard_by_peer(&mut whole);
        prop_assert_eq!(&heard, &heard_by_peer(&mut bytewise));
        for reads in reads {
            let mut conn = Connection::new(role, config.clone());
            let mut result = Ok(());
            let mut got = Vec::new();
            for read in &reads {
                let this = conn.handle_bytes(read);
                if result.is_ok() {
                    result = this;
                }
                got.extend(std::iter::from_fn(|| conn.poll_event()).take(take));
            }
            got.extend(events(&mut conn));
            prop_assert_eq!(&whole_result, &result);
            prop_assert_eq!(&whole_events, &got);
            // What each queued (pongs, the close frame), as the peer reads it: a client
            // masks with random keys, so the bytes differ.
            prop_assert_eq!(&heard, &heard_by_peer(&mut conn));
        }
    }
}
