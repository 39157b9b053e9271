//! A fake Twitch chat server (IRC over TCP) that speaks what `irc.chat.twitch.tv` speaks:
//! `CAP REQ` → `CAP * ACK`, `PASS`/`NICK` → the 001–004/375/372/376 welcome (or
//! `NOTICE * :Login authentication failed` for a wrong token), `JOIN` → the JOIN echo, 353/366,
//! `USERSTATE` and `ROOMSTATE`, `PING` → `PONG`, and tagged `PRIVMSG` in both directions.
//! A test types chat with [`FakeTwitch::say`], reads what the bot sent with
//! [`FakeTwitch::sent`], and makes trouble with [`FakeTwitch::reconnect`] (a `RECONNECT`) and
//! [`FakeTwitch::drop_connections`] (a lost connection).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How the fake behaves.
#[derive(Debug, Clone, Default)]
pub struct FakeTwitchOptions {
    /// The only token (without `oauth:`) accepted; any token when `None`.
    pub token: Option<String>,
    /// Channels where the bot is a moderator (its `USERSTATE` says `mod=1`).
    pub moderator_in: Vec<String>,
}

/// A message the bot sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub channel: String,
    pub text: String,
    /// The `reply-parent-msg-id` tag, when the message was a reply.
    pub reply_parent: Option<String>,
}

/// A chat user for [`FakeTwitch::say`].
#[derive(Debug, Clone)]
pub struct Chatter {
    pub login: String,
    pub user_id: String,
    /// `badges` tag entries, e.g. `["subscriber/12"]`.
    pub badges: Vec<String>,
}

impl Chatter {
    pub fn new(login: &str, user_id: &str) -> Self {
        Self {
            login: login.to_owned(),
            user_id: user_id.to_owned(),
            badges: Vec::new(),
        }
    }
}

struct Connection {
    id: u64,
    nick: Option<String>,
    joined: HashSet<String>,
    tx: mpsc::UnboundedSender<String>,
    close: CancellationToken,
}

#[derive(Default)]
struct State {
    connections: Vec<Connection>,
    sent: Vec<Sent>,
    /// When the bot's messages of the last 30 s went out, by channel (Twitch's send window).
    window: std::collections::HashMap<String, std::collections::VecDeque<std::time::Instant>>,
    /// Messages refused for going over the send limit (Twitch drops them with a NOTICE).
    over_limit: u64,
    logins: u64,
    next_id: u64,
}

pub struct FakeTwitch {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
}

impl FakeTwitch {
    pub async fn start(options: FakeTwitchOptions) -> FakeTwitch {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake twitch");
        let addr = listener.local_addr().expect("fake twitch address");
        let state = Arc::new(Mutex::new(State::default()));
        let shutdown = CancellationToken::new();
        let options = Arc::new(options);
        {
            let state = state.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let stream = tokio::select! {
                        () = shutdown.cancelled() => return,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                    };
                    tokio::spawn(serve(
                        stream,
                        state.clone(),
                        options.clone(),
                        shutdown.child_token(),
                    ));
                }
            });
        }
        FakeTwitch {
            addr,
            state,
            shutdown,
        }
    }

    /// `irc://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("irc://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A chatter types `text` in `#channel`; returns the message id.
    pub fn say(&self, channel: &str, chatter: &Chatter, text: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.say_with_id(channel, chatter, text, &id);
        id
    }

    /// Like [`FakeTwitch::say`] with a given message id (a message delivered twice).
    pub fn say_with_id(&self, channel: &str, chatter: &Chatter, text: &str, id: &str) {
        let channel = channel.trim_start_matches('#');
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let moderator = chatter.badges.iter().any(|b| b.starts_with("moderator/"));
        let subscriber = chatter.badges.iter().any(|b| b.starts_with("subscriber/"));
        let line = format!(
            "@badge-info=;badges={badges};client-nonce=fake;color=#1E90FF;display-name={name};\
             emotes=;first-msg=0;flags=;id={id};mod={moderator};returning-chatter=0;\
             room-id=1000{room};subscriber={subscriber};tmi-sent-ts={ts};turbo=0;\
             user-id={user_id};user-type= :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #{channel} :{text}",
            badges = chatter.badges.join(","),
            name = display_name(&chatter.login),
            moderator = u8::from(moderator),
            subscriber = u8::from(subscriber),
            room = channel.len(),
            user_id = chatter.user_id,
            login = chatter.login,
        );
        for connection in &self.lock().connections {
            if connection.joined.contains(channel) {
                let _ = connection.tx.send(line.clone());
            }
        }
    }

    /// Messages the bot sent over Twitch's send limit (refused, as Twitch does).
    pub fn over_limit(&self) -> u64 {
        self.lock().over_limit
    }

    /// Everything the bot sent, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// Successful logins so far (one per connection the bot opened).
    pub fn logins(&self) -> u64 {
        self.lock().logins
    }

    /// Whether some open connection has joined `#channel`.
    pub fn joined(&self, channel: &str) -> bool {
        self.lock()
            .connections
            .iter()
            .any(|c| c.joined.contains(channel.trim_start_matches('#')))
    }

    /// Twitch is going down for maintenance: `:tmi.twitch.tv RECONNECT` on every connection.
    pub fn reconnect(&self) {
        for connection in &self.lock().connections {
            let _ = connection.tx.send(":tmi.twitch.tv RECONNECT".to_owned());
        }
    }

    /// Closes every connection without a word.
    pub fn drop_connections(&self) {
        let mut state = self.lock();
        for connection in state.connections.drain(..) {
            connection.close.cancel();
        }
    }
}

impl Drop for FakeTwitch {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn display_name(login: &str) -> String {
    let mut chars = login.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `@a=b;c=d :prefix CMD params :trailing` → (tags, command, params with trailing last).
fn parse(line: &str) -> (Vec<(String, String)>, String, Vec<String>) {
    let mut rest = line;
    let mut tags = Vec::new();
    if let Some(stripped) = rest.strip_prefix('@') {
        let (raw, after) = stripped.split_once(' ').unwrap_or((stripped, ""));
        for tag in raw.split(';') {
            let (key, value) = tag.split_once('=').unwrap_or((tag, ""));
            tags.push((key.to_owned(), value.to_owned()));
        }
        rest = after;
    }
    if rest.starts_with(':') {
        rest = rest.split_once(' ').map_or("", |(_, after)| after);
    }
    let (head, trailing) = match rest.split_once(" :") {
        Some((head, trailing)) => (head, Some(trailing)),
        None => (rest, None),
    };
    let mut words = head.split_whitespace();
    let command = words.next().unwrap_or_default().to_ascii_uppercase();
    let mut params: Vec<String> = words.map(str::to_owned).collect();
    if let Some(trailing) = trailing {
        params.push(trailing.to_owned());
    }
    (tags, command, params)
}

async fn serve(
    stream: TcpStream,
    state: Arc<Mutex<State>>,
    options: Arc<FakeTwitchOptions>,
    close: CancellationToken,
) {
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let id = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.next_id += 1;
        let id = state.next_id;
        state.connections.push(Connection {
            id,
            nick: None,
            joined: HashSet::new(),
            tx: tx.clone(),
            close: close.clone(),
        });
        id
    };
    let writer_close = close.clone();
    let writer = tokio::spawn(async move {
        loop {
            let line = tokio::select! {
                () = writer_close.cancelled() => break,
                line = rx.recv() => match line { Some(line) => line, None => break },
            };
            if write
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            if line.ends_with("RECONNECT") {
                // Twitch closes the connection after asking clients to reconnect.
                break;
            }
        }
        writer_close.cancel();
        let _ = write.shutdown().await;
    });
    let mut lines = BufReader::new(read).lines();
    let mut pass: Option<String> = None;
    loop {
        let line = tokio::select! {
            () = close.cancelled() => break,
            line = lines.next_line() => match line {
                Ok(Some(line)) => line,
                _ => break,
            },
        };
        let (tags, command, params) = parse(&line);
        let send = |text: String| {
            let _ = tx.send(text);
        };
        let nick = {
            let state = state.lock().unwrap_or_else(PoisonError::into_inner);
            state
                .connections
                .iter()
                .find(|c| c.id == id)
                .and_then(|c| c.nick.clone())
                .unwrap_or_default()
        };
        match command.as_str() {
            "CAP" => {
                let caps = params.last().cloned().unwrap_or_default();
                send(format!(":tmi.twitch.tv CAP * ACK :{caps}"));
            }
            "PASS" => pass = params.first().cloned(),
            "NICK" => {
                let nick = params.first().cloned().unwrap_or_default().to_lowercase();
                let anonymous = nick.starts_with("justinfan");
                let token_ok = match (&options.token, &pass) {
                    (None, _) => true,
                    (Some(expected), Some(given)) => {
                        given.strip_prefix("oauth:") == Some(expected.as_str())
                    }
                    (Some(_), None) => anonymous,
                };
                if !token_ok {
                    send(":tmi.twitch.tv NOTICE * :Login authentication failed".to_owned());
                    break;
                }
                {
                    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.logins += 1;
                    if let Some(connection) = state.connections.iter_mut().find(|c| c.id == id) {
                        connection.nick = Some(nick.clone());
                    }
                }
                for (code, text) in [
                    ("001", "Welcome, GLHF!"),
                    ("002", "Your host is tmi.twitch.tv"),
                    ("003", "This server is rather new"),
                    ("004", "-"),
                    ("375", "-"),
                    ("372", "You are in a maze of twisty passages, all alike."),
                    ("376", ">"),
                ] {
                    send(format!(":tmi.twitch.tv {code} {nick} :{text}"));
                }
                if !anonymous {
                    send(format!(
                        "@badge-info=;badges=;color=;display-name={};emote-sets=0;user-id=900;user-type= :tmi.twitch.tv GLOBALUSERSTATE",
                        display_name(&nick)
                    ));
                }
            }
            "JOIN" => {
                for channel in params
                    .first()
                    .map(|p| p.split(',').map(str::to_owned).collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    let channel = channel.trim_start_matches('#').to_lowercase();
                    {
                        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(connection) = state.connections.iter_mut().find(|c| c.id == id)
                        {
                            connection.joined.insert(channel.clone());
                        }
                    }
                    let moderator = options.moderator_in.contains(&channel);
                    send(format!(
                        ":{nick}!{nick}@{nick}.tmi.twitch.tv JOIN #{channel}"
                    ));
                    send(format!(
                        ":{nick}.tmi.twitch.tv 353 {nick} = #{channel} :{nick}"
                    ));
                    send(format!(
                        ":{nick}.tmi.twitch.tv 366 {nick} #{channel} :End of /NAMES list"
                    ));
                    send(format!(
                        "@badge-info=;badges={};color=;display-name={};emote-sets=0;mod={};subscriber=0;user-type={} :tmi.twitch.tv USERSTATE #{channel}",
                        if moderator { "moderator/1" } else { "" },
                        display_name(&nick),
                        u8::from(moderator),
                        if moderator { "mod" } else { "" },
                    ));
                    send(format!(
                        "@emote-only=0;followers-only=-1;r9k=0;room-id=1000{};slow=0;subs-only=0 :tmi.twitch.tv ROOMSTATE #{channel}",
                        channel.len()
                    ));
                }
            }
            "PART" => {
                let channel = params
                    .first()
                    .map(|c| c.trim_start_matches('#').to_lowercase())
                    .unwrap_or_default();
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(connection) = state.connections.iter_mut().find(|c| c.id == id) {
                    connection.joined.remove(&channel);
                }
                drop(state);
                send(format!(
                    ":{nick}!{nick}@{nick}.tmi.twitch.tv PART #{channel}"
                ));
            }
            "PING" => {
                let argument = params.first().cloned().unwrap_or_default();
                send(format!(":tmi.twitch.tv PONG tmi.twitch.tv :{argument}"));
            }
            "PRIVMSG" => {
                let channel = params
                    .first()
                    .map(|c| c.trim_start_matches('#').to_lowercase())
                    .unwrap_or_default();
                let text = params.get(1).cloned().unwrap_or_default();
                let reply_parent = tags
                    .iter()
                    .find(|(k, _)| k == "reply-parent-msg-id")
                    .map(|(_, v)| v.clone());
                let moderator = options.moderator_in.contains(&channel);
                let refused = {
                    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    let now = std::time::Instant::now();
                    let window = state.window.entry(channel.clone()).or_default();
                    while window
                        .front()
                        .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(30))
                    {
                        window.pop_front();
                    }
                    // Twitch: 20 messages per 30 s, 100 where the bot is a moderator.
                    let limit = if moderator { 100 } else { 20 };
                    if window.len() >= limit {
                        state.over_limit += 1;
                        true
                    } else {
                        window.push_back(now);
                        state.sent.push(Sent {
                            channel: channel.clone(),
                            text,
                            reply_parent,
                        });
                        false
                    }
                };
                if refused {
                    send(format!(
                        "@msg-id=msg_ratelimit :tmi.twitch.tv NOTICE #{channel} :Your message was not sent because you are sending messages too quickly."
                    ));
                    continue;
                }
                send(format!(
                    "@badge-info=;badges={};color=;display-name={};emote-sets=0;mod={};subscriber=0;user-type= :tmi.twitch.tv USERSTATE #{channel}",
                    if moderator { "moderator/1" } else { "" },
                    display_name(&nick),
                    u8::from(moderator),
                ));
            }
            _ => {}
        }
    }
    close.cancel();
    let _ = writer.await;
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    state.connections.retain(|c| c.id != id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_like_irc() {
        let (tags, command, params) =
            parse("@reply-parent-msg-id=abc PRIVMSG #chan :hello there :)");
        assert_eq!(tags, vec![("reply-parent-msg-id".into(), "abc".into())]);
        assert_eq!(command, "PRIVMSG");
        assert_eq!(
            params,
            vec!["#chan".to_owned(), "hello there :)".to_owned()]
        );
        let (_, command, params) = parse("PING :tmi.twitch.tv");
        assert_eq!((command.as_str(), params.len()), ("PING", 1));
    }
}
