//! RFC 6455 at the frame level, against the real server: fragmented messages (with control
//! frames between their fragments) are reassembled within the message limit, text is
//! checked as UTF-8 across fragments, frame sequences that break the RFC fail the connection
//! with its close code, and the client's close code is echoed. The same socket layer is
//! checked exhaustively by Autobahn|Testsuite (`.ci/autobahn.sh`).

use std::time::Duration;

use aggregates::types::Role;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::ws::{self, closed, frame_of, next, Received, Socket};
use crate::helpers::{spawn_app, spawn_app_with};

const H: &str = "st-marys";

/// Sends one raw frame; a failure is ignored (the server may already have closed).
async fn send_frame(socket: &mut Socket, data: &[u8], opcode: Data, fin: bool) {
    let frame = Frame::message(data.to_vec(), OpCode::Data(opcode), fin);
    let _ = socket.send(Message::Frame(frame)).await;
}

#[actix_web::test]
async fn a_fragmented_subscribe_with_a_ping_between_its_fragments_is_accepted() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    frame_of(&mut socket, "authenticated").await;
    let subscribe = br#"{"type":"subscribe","id":"fragmented","topics":["alerts"]}"#;
    let (first, rest) = subscribe.split_at(10);
    let (middle, last) = rest.split_at(20);

    // Act: three fragments, a ping between the first two.
    send_frame(&mut socket, first, Data::Text, false).await;
    let _ = socket.send(Message::Ping(b"between".to_vec())).await;
    send_frame(&mut socket, middle, Data::Continue, false).await;
    send_frame(&mut socket, last, Data::Continue, true).await;

    // Assert: the reassembled frame was understood as one subscribe.
    let subscribed = frame_of(&mut socket, "subscribed").await;
    assert_eq!(subscribed["id"], "fragmented");
}

#[actix_web::test]
async fn fragments_adding_up_to_more_than_the_hard_limit_close_with_1009() {
    // Arrange: a 1 KiB soft limit makes the hard limit 64 KiB.
    let app = spawn_app_with(|s| s.realtime.max_frame_bytes = 1024).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    frame_of(&mut socket, "authenticated").await;
    let fragment = vec![b' '; 40 * 1024];

    // Act: each fragment is under the limit, the message is not.
    send_frame(&mut socket, &fragment, Data::Text, false).await;
    send_frame(&mut socket, &fragment, Data::Continue, true).await;

    // Assert
    let (reason, code) = closed(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(reason.as_deref(), Some("frame_too_large"));
    assert_eq!(code, Some(1009));
}

#[actix_web::test]
async fn invalid_utf8_in_a_later_fragment_closes_with_1007() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    frame_of(&mut socket, "authenticated").await;

    // Act: valid first fragment; the second holds a UTF-16 surrogate (invalid in UTF-8).
    send_frame(&mut socket, br#"{"type":"ping","pad":""#, Data::Text, false).await;
    send_frame(
        &mut socket,
        &[0xED, 0xA0, 0x80, b'"', b'}'],
        Data::Continue,
        true,
    )
    .await;

    // Assert
    let (reason, code) = closed(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(reason.as_deref(), Some("invalid_payload"));
    assert_eq!(code, Some(1007));
}

#[actix_web::test]
async fn a_continuation_without_a_started_message_closes_with_1002() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    frame_of(&mut socket, "authenticated").await;

    // Act
    send_frame(&mut socket, b"{}", Data::Continue, true).await;

    // Assert
    let (reason, code) = closed(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(reason.as_deref(), Some("protocol_error"));
    assert_eq!(code, Some(1002));
}

#[actix_web::test]
async fn the_clients_close_code_is_echoed() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut socket = ws::connect(app.port, H, Some(&nurse)).await;
    frame_of(&mut socket, "authenticated").await;

    // Act
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(4321),
            reason: "done for today".into(),
        })))
        .await;

    // Assert: the server's close frame carries the client's code.
    match next(&mut socket, Duration::from_secs(5)).await {
        Received::Closed(code) => assert_eq!(code, Some(4321)),
        other => panic!("expected the close, got {other:?}"),
    }
}
