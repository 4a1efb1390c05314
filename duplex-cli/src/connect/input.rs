//! What `duplex connect` sends: stdin lines (pipe mode) or what a person types (interactive
//! mode, with line editing, history and slash commands).

use super::binary::BinaryFormat;
use super::output::Output;
use bytes::Bytes;
use duplex::{CloseCode, Message};
use rustyline::error::ReadlineError;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// Lines read ahead of the connection (they wait here while it reconnects).
pub const QUEUE: usize = 64;

/// Most bytes of a close reason (RFC 6455 §5.5: 125-byte control payloads, 2 for the code).
const MAX_REASON: usize = 123;
/// Most bytes of a ping payload (RFC 6455 §5.5).
const MAX_PING: usize = 125;

/// One thing to do on the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Send a message.
    Send(Message),
    /// Send a ping with this payload.
    Ping(Bytes),
    /// Close with this code and reason, then exit (`/close`).
    Close(CloseCode, String),
    /// Close with 1000, then exit: end of stdin, `/quit`, Ctrl-D, Ctrl-C.
    End,
    /// The input cannot go on (unreadable stdin, a line that does not decode): close with
    /// 1000, then exit with an error.
    Fail(String),
}

/// Pipe mode: every stdin line becomes a text message, or with `binary` a binary message
/// written in that format; end of input becomes [`Input::End`].
pub fn pipe(tx: mpsc::Sender<Input>, binary: Option<BinaryFormat>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut number = 0u64;
        loop {
            let input = match lines.next_line().await {
                Ok(Some(line)) => {
                    number += 1;
                    match binary {
                        None => Input::Send(Message::text(line)),
                        Some(format) => match format.decode(&line) {
                            Ok(data) => Input::Send(Message::binary(data)),
                            Err(why) => Input::Fail(format!("stdin line {number}: {why}")),
                        },
                    }
                }
                Ok(None) => Input::End,
                Err(error) => Input::Fail(format!("reading stdin: {error}")),
            };
            let last = !matches!(input, Input::Send(_));
            if tx.send(input).await.is_err() || last {
                break;
            }
        }
    });
}

/// What one typed line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Input(Input),
    File(PathBuf),
    Timestamps(Option<bool>),
    Help,
    Nothing,
}

const HELP: &str = "\
* Lines are sent as text messages. Commands:
*   /ping [data]              send a ping; the pong shows the round-trip time
*   /close [code [reason]]    close with code (default 1000) and reason, then exit
*   /binary <data>            send a binary message written in hex (or base64 with
*                             --binary-format base64); prefix hex: or base64: to choose
*   /file <path>              send a file: as text when it is UTF-8, else as binary
*   /timestamps [on|off]      toggle timestamps on printed lines
*   /quit                     close with 1000 and exit (also Ctrl-D, Ctrl-C)
*   //text                    send \"/text\"
* Up/Down browse the history; the usual Emacs line-editing keys work.";

/// Parses one typed line.
fn parse(line: &str, format: BinaryFormat) -> Result<Command, String> {
    let Some(command) = line.strip_prefix('/') else {
        if line.is_empty() {
            return Ok(Command::Nothing);
        }
        return Ok(Command::Input(Input::Send(Message::text(line))));
    };
    if command.starts_with('/') {
        return Ok(Command::Input(Input::Send(Message::text(command))));
    }
    let (name, rest) = command.split_once(' ').unwrap_or((command, ""));
    let rest = rest.trim();
    match name {
        "ping" => {
            if rest.len() > MAX_PING {
                return Err(format!("a ping carries at most {MAX_PING} bytes"));
            }
            Ok(Command::Input(Input::Ping(Bytes::copy_from_slice(
                rest.as_bytes(),
            ))))
        }
        "close" => {
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            let code = if code.is_empty() {
                CloseCode::NORMAL
            } else {
                let number: u16 = code
                    .parse()
                    .map_err(|_| format!("{code:?} is not a close code"))?;
                let code = CloseCode::new(number);
                if !code.is_sendable() {
                    return Err(format!(
                        "{number} may not be sent (use 1000-1003, 1007-1011 or 3000-4999)"
                    ));
                }
                code
            };
            let reason = reason.trim();
            if reason.len() > MAX_REASON {
                return Err(format!("a close reason has at most {MAX_REASON} bytes"));
            }
            Ok(Command::Input(Input::Close(code, reason.to_owned())))
        }
        "binary" => {
            let (format, data) = if let Some(data) = rest.strip_prefix("hex:") {
                (BinaryFormat::Hex, data)
            } else if let Some(data) = rest.strip_prefix("base64:") {
                (BinaryFormat::Base64, data)
            } else {
                (format, rest)
            };
            if data.trim().is_empty() {
                return Err(format!("usage: /binary <data in {}>", format.name()));
            }
            let data = format.decode(data)?;
            Ok(Command::Input(Input::Send(Message::binary(data))))
        }
        "file" if !rest.is_empty() => Ok(Command::File(PathBuf::from(rest))),
        "file" => Err("usage: /file <path>".into()),
        "timestamps" => match rest {
            "" => Ok(Command::Timestamps(None)),
            "on" => Ok(Command::Timestamps(Some(true))),
            "off" => Ok(Command::Timestamps(Some(false))),
            _ => Err("usage: /timestamps [on|off]".into()),
        },
        "quit" | "exit" => Ok(Command::Input(Input::End)),
        "help" | "?" => Ok(Command::Help),
        _ => Err(format!("unknown command /{name} (try /help)")),
    }
}

/// A file as one message: text when it is UTF-8, else binary.
fn file_message(path: &PathBuf) -> Result<Message, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(match String::from_utf8(data) {
        Ok(text) => Message::text(text),
        Err(e) => Message::binary(e.into_bytes()),
    })
}

/// The line editor, ready to run on its own thread.
pub struct Editor {
    editor: rustyline::DefaultEditor,
}

impl Editor {
    /// Sets the terminal up for editing and returns the printer that writes above the
    /// prompt.
    ///
    /// # Errors
    /// The terminal could not be set up.
    pub fn new() -> anyhow::Result<(Self, super::output::Printer)> {
        let config = rustyline::Config::builder()
            .max_history_size(1000)?
            .history_ignore_dups(true)?
            .auto_add_history(false)
            .build();
        let mut editor = rustyline::DefaultEditor::with_config(config)?;
        let printer = editor.create_external_printer()?;
        Ok((Self { editor }, Box::new(printer)))
    }

    /// Reads lines on a thread of its own until the user ends or `tx` is closed.
    pub fn spawn(mut self, output: Arc<Output>, tx: mpsc::Sender<Input>) {
        output.note("* type a message and Enter to send it; /help for commands");
        std::thread::spawn(move || loop {
            let line = match self.editor.readline("> ") {
                Ok(line) => line,
                Err(ReadlineError::Eof | ReadlineError::Interrupted) => {
                    let _ = tx.blocking_send(Input::End);
                    break;
                }
                Err(error) => {
                    let _ = tx.blocking_send(Input::Fail(format!("reading the terminal: {error}")));
                    break;
                }
            };
            if !line.trim().is_empty() {
                let _ = self.editor.add_history_entry(line.as_str());
            }
            let input = match parse(&line, output.binary_format()) {
                Ok(Command::Input(input)) => input,
                Ok(Command::File(path)) => match file_message(&path) {
                    Ok(message) => {
                        let kind = if message.is_text() { "text" } else { "binary" };
                        output.note(&format!(
                            "* sending {} as {kind} ({} B)",
                            path.display(),
                            message.len()
                        ));
                        Input::Send(message)
                    }
                    Err(why) => {
                        output.note(&format!("! {why}"));
                        continue;
                    }
                },
                Ok(Command::Timestamps(on)) => {
                    let on = on.unwrap_or(!output.timestamps());
                    output.set_timestamps(on);
                    output.note(if on {
                        "* timestamps on (UTC)"
                    } else {
                        "* timestamps off"
                    });
                    continue;
                }
                Ok(Command::Help) => {
                    output.note(HELP);
                    continue;
                }
                Ok(Command::Nothing) => continue,
                Err(why) => {
                    output.note(&format!("! {why}"));
                    continue;
                }
            };
            let last = matches!(input, Input::End | Input::Close(..));
            if tx.blocking_send(input).is_err() || last {
                break;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_hex(line: &str) -> Result<Command, String> {
        parse(line, BinaryFormat::Hex)
    }

    fn send(message: Message) -> Result<Command, String> {
        Ok(Command::Input(Input::Send(message)))
    }

    #[test]
    fn plain_lines_are_text_and_double_slash_escapes() {
        assert_eq!(parse_hex("hello /ping"), send(Message::text("hello /ping")));
        assert_eq!(parse_hex("//ping x"), send(Message::text("/ping x")));
        assert_eq!(parse_hex(""), Ok(Command::Nothing));
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse_hex("/ping"),
            Ok(Command::Input(Input::Ping(Bytes::new())))
        );
        assert_eq!(
            parse_hex("/ping some data"),
            Ok(Command::Input(Input::Ping(Bytes::from_static(
                b"some data"
            ))))
        );
        assert_eq!(
            parse_hex("/close"),
            Ok(Command::Input(Input::Close(
                CloseCode::NORMAL,
                String::new()
            )))
        );
        assert_eq!(
            parse_hex("/close 4000 see you later"),
            Ok(Command::Input(Input::Close(
                CloseCode::new(4000),
                "see you later".into()
            )))
        );
        assert_eq!(
            parse_hex("/binary 00ff"),
            send(Message::binary(vec![0, 255]))
        );
        assert_eq!(
            parse("/binary AP8=", BinaryFormat::Base64),
            send(Message::binary(vec![0, 255]))
        );
        assert_eq!(
            parse_hex("/binary base64:AP8="),
            send(Message::binary(vec![0, 255]))
        );
        assert_eq!(
            parse_hex("/file /tmp/x y"),
            Ok(Command::File(PathBuf::from("/tmp/x y")))
        );
        assert_eq!(parse_hex("/timestamps"), Ok(Command::Timestamps(None)));
        assert_eq!(
            parse_hex("/timestamps off"),
            Ok(Command::Timestamps(Some(false)))
        );
        assert_eq!(parse_hex("/quit"), Ok(Command::Input(Input::End)));
        assert_eq!(parse_hex("/help"), Ok(Command::Help));
    }

    #[test]
    fn bad_commands_are_refused_not_sent() {
        for line in [
            "/close 1005",
            "/close 999",
            "/close abc",
            "/binary",
            "/binary 0",
            "/file",
            "/timestamps maybe",
            "/nope",
        ] {
            assert!(parse_hex(line).is_err(), "{line}");
        }
        assert!(parse_hex(&format!("/ping {}", "x".repeat(126))).is_err());
        assert!(parse_hex(&format!("/close 1000 {}", "x".repeat(124))).is_err());
    }
}
