//! Where the Service Bus trigger connects: connection strings and opening
//! an AMQP 1.0 connection (TCP_NODELAY, TLS for Azure, SASL PLAIN).
//!
//! Two kinds of endpoint, told apart by the connection string:
//! - Azure Service Bus: `Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=RULE;SharedAccessKey=KEY[;EntityPath=QUEUE]`.
//!   TLS on 5671; the SAS rule name and key are the SASL PLAIN user and
//!   password; queues are addressed by name, dead letters live in
//!   `QUEUE/$deadletterqueue`. `UseDevelopmentEmulator=true` (the Service
//!   Bus emulator) means plain TCP on 5672.
//! - A plain AMQP 1.0 broker (RabbitMQ with `rabbitmq_amqp1_0`, for local
//!   runs and tests): `amqp://USER:PASS@HOST:PORT` or `amqps://...`. Queues
//!   are addressed `/amq/queue/NAME` (RabbitMQ 3.x; a name starting with `/`
//!   is used as written), and dead letters go to a queue of their own.

use super::error::LinkError;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::Receiver;
use fe2o3_amqp::{Connection, Session};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long opening a connection (TCP, TLS, SASL, open, begin) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long each closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What kind of broker an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Azure Service Bus (or its emulator).
    ServiceBus,
    /// Any other AMQP 1.0 broker (RabbitMQ 3.x addressing).
    Broker,
}

/// A parsed connection string. The password never appears in `Debug` or
/// `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Broker kind.
    pub flavour: Flavour,
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// True for TLS.
    pub tls: bool,
    /// SASL PLAIN user (the SAS rule name on Service Bus).
    pub username: String,
    password: String,
    /// `EntityPath` of a Service Bus connection string, when given.
    pub entity_path: Option<String>,
}

/// A connection string that cannot be used, or a connection that failed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The variable named by `[servicebus] connection_env` is not set.
    #[error("the environment variable {0} ([servicebus] connection_env) is not set; export it with a Service Bus connection string (Endpoint=sb://NAMESPACE.servicebus.windows.net/;SharedAccessKeyName=...;SharedAccessKey=...) or a broker URL (amqp://guest:guest@127.0.0.1:5672)")]
    MissingVariable(String),
    /// The string is neither form.
    #[error("the Service Bus connection string in {var} is not usable: {why}")]
    Malformed {
        /// The variable it came from.
        var: String,
        /// What is wrong.
        why: String,
    },
    /// Opening the connection failed.
    #[error("cannot connect to {endpoint}: {why}; check the broker is running and the connection string in [servicebus] connection_env")]
    Connect {
        /// Where (no secrets).
        endpoint: String,
        /// What failed.
        why: String,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        let kind = match self.flavour {
            Flavour::ServiceBus => "Service Bus",
            Flavour::Broker => "AMQP 1.0 broker",
        };
        write!(
            f,
            "{scheme}://{}:{} ({kind}, user {})",
            self.host, self.port, self.username
        )
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

/// An open connection and one session on it.
pub struct Link {
    /// The connection.
    pub connection: ConnectionHandle<()>,
    /// The session links are attached on.
    pub session: SessionHandle<()>,
}

impl Link {
    /// Attaches a peek-lock receiver on `address`: deliveries arrive
    /// unsettled (sender settle mode unsettled, receiver settle mode first)
    /// and stay locked until accepted, released or rejected, or until the
    /// link drops. `credit` is manual (the caller grants it) or automatic.
    pub async fn peek_lock_receiver(
        &mut self,
        name: String,
        address: &str,
        credit: CreditMode,
    ) -> Result<Receiver, LinkError> {
        Receiver::builder()
            .name(name)
            .source(address.to_owned())
            .credit_mode(credit)
            .auto_accept(false)
            .sender_settle_mode(SenderSettleMode::Unsettled)
            .receiver_settle_mode(ReceiverSettleMode::First)
            .attach(&mut self.session)
            .await
            .map_err(|e| LinkError::Attach {
                what: "receive from",
                address: address.to_owned(),
                detail: e.to_string(),
                hint: "",
            })
    }

    /// Ends the session and closes the connection, ignoring errors (the
    /// broker drops what is left either way). Each step is time-bound: fe2o3
    /// can wait forever for a peer's `end` that never comes.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.session.end()).await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.connection.close()).await;
    }
}

impl Endpoint {
    /// Reads and parses the connection string from the variable `var`.
    pub fn from_env(var: &str) -> Result<Endpoint, EndpointError> {
        let value = std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| EndpointError::MissingVariable(var.to_owned()))?;
        Endpoint::parse(&value).map_err(|why| EndpointError::Malformed {
            var: var.to_owned(),
            why,
        })
    }

    /// Parses either form (see the module docs).
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let s = s.trim();
        if s.starts_with("amqp://") || s.starts_with("amqps://") {
            parse_url(s)
        } else if s.contains('=') {
            parse_service_bus(s)
        } else {
            Err("expected Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=... or amqp://user:password@host:port".into())
        }
    }

    /// The address to receive orders from / send orders to.
    pub fn queue_address(&self, queue: &str) -> String {
        match self.flavour {
            Flavour::ServiceBus => queue.to_owned(),
            Flavour::Broker if queue.starts_with('/') => queue.to_owned(),
            Flavour::Broker => format!("/amq/queue/{queue}"),
        }
    }

    /// Where dead letters are read from: Service Bus's sub-queue, or the
    /// broker's dead-letter queue.
    pub fn dead_letter_address(&self, queue: &str, dead_letter_queue: &str) -> String {
        match self.flavour {
            Flavour::ServiceBus => format!("{queue}/$deadletterqueue"),
            Flavour::Broker => self.queue_address(dead_letter_queue),
        }
    }

    /// Opens a connection and a session. `name` becomes the container id.
    pub async fn connect(&self, name: &str) -> Result<Link, EndpointError> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_inner(name))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {CONNECT_TIMEOUT:?}")))
            .map_err(|why| EndpointError::Connect {
                endpoint: self.to_string(),
                why,
            })
    }

    async fn connect_inner(&self, name: &str) -> Result<Link, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| e.to_string())?;
        // fe2o3 leaves Nagle on: a request/response round trip then costs
        // about 45 ms (delayed ACK).
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let builder = Connection::builder()
            .container_id(name)
            .hostname(self.host.as_str())
            .sasl_profile(SaslProfile::Plain {
                username: self.username.clone(),
                password: self.password.clone(),
            })
            .scheme("amqp");
        let mut connection = if self.tls {
            // TLS first, then AMQP inside it (Service Bus on 5671): the
            // "alternative TLS establishment" of the AMQP spec, 5.2.1.
            let server = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| format!("bad TLS server name {}: {e}", self.host))?;
            let stream = tls_connector()?
                .connect(server, tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            builder.open_with_stream(stream).await
        } else {
            builder.open_with_stream(tcp).await
        }
        .map_err(|e| e.to_string())?;
        let session = match Session::begin(&mut connection).await {
            Ok(s) => s,
            Err(e) => {
                let _ = connection.close().await;
                return Err(e.to_string());
            }
        };
        Ok(Link {
            connection,
            session,
        })
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn parse_service_bus(s: &str) -> Result<Endpoint, String> {
    let mut endpoint = None;
    let mut key_name = None;
    let mut key = None;
    let mut entity_path = None;
    let mut emulator = false;
    // Errors name a part by its position, never by its text: a malformed
    // part may be (or hold) the key itself.
    for (index, part) in s
        .split(';')
        .enumerate()
        .filter(|(_, p)| !p.trim().is_empty())
    {
        // The key itself may contain '=' (base64), so split at the first.
        let (k, v) = part.split_once('=').ok_or_else(|| {
            format!(
                "part {} (counting the ';'-separated parts from 1) is not KEY=VALUE",
                index + 1
            )
        })?;
        match k.trim().to_ascii_lowercase().as_str() {
            "endpoint" => endpoint = Some(v.trim().to_owned()),
            "sharedaccesskeyname" => key_name = Some(v.trim().to_owned()),
            "sharedaccesskey" => key = Some(v.trim().to_owned()),
            "entitypath" => entity_path = Some(v.trim().to_owned()),
            "usedevelopmentemulator" => emulator = v.trim().eq_ignore_ascii_case("true"),
            other => {
                return Err(format!(
                    "part {} has an unknown key{}; expected Endpoint, SharedAccessKeyName, SharedAccessKey, EntityPath or UseDevelopmentEmulator",
                    index + 1,
                    shown_if_a_name(other)
                        .map(|name| format!(" \"{name}\""))
                        .unwrap_or_default()
                ))
            }
        }
    }
    let endpoint = endpoint.ok_or("Endpoint=sb://NAMESPACE.servicebus.windows.net/ is missing")?;
    let rest = endpoint.strip_prefix("sb://").ok_or_else(|| {
        let scheme = endpoint.split_once("://").map(|(scheme, _)| scheme);
        format!(
            "Endpoint must start with sb://{}",
            scheme
                .and_then(shown_if_a_name)
                .map(|scheme| format!(" (it starts with {scheme}://)"))
                .unwrap_or_default()
        )
    })?;
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h.to_owned(),
            Some(p.parse::<u16>().map_err(|_| {
                "the port in Endpoint (after the last ':') is not a number from 0 to 65535"
                    .to_owned()
            })?),
        ),
        None => (authority.to_owned(), None),
    };
    if host.is_empty() {
        return Err("Endpoint has no host name".into());
    }
    let key_name = key_name.ok_or(
        "SharedAccessKeyName is missing (the SAS policy name, e.g. RootManageSharedAccessKey)",
    )?;
    let key = key.ok_or("SharedAccessKey is missing (the SAS policy's key)")?;
    Ok(Endpoint {
        flavour: Flavour::ServiceBus,
        port: port.unwrap_or(if emulator { 5672 } else { 5671 }),
        host,
        tls: !emulator,
        username: key_name,
        password: key,
        entity_path,
    })
}

/// `text` when it is short and made of letters, digits, '-' and '_' only,
/// as key names and schemes are: echoing it helps find a typo. Anything
/// else may be (part of) a secret and is never shown.
fn shown_if_a_name(text: &str) -> Option<&str> {
    let text = text.trim();
    let name_like = !text.is_empty()
        && text.len() <= 32
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    name_like.then_some(text)
}

fn parse_url(s: &str) -> Result<Endpoint, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a valid URL: {e}"))?;
    let tls = url.scheme() == "amqps";
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("the URL has no host")?
        .to_owned();
    // Keys contain '+', '/' and '='; fe2o3 would not percent-decode them.
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| "the user or password is not valid UTF-8 once percent-decoded".to_owned())
    };
    let username = decode(url.username())?;
    let password = decode(url.password().unwrap_or(""))?;
    if username.is_empty() {
        return Err("the URL has no user; write amqp://USER:PASSWORD@HOST:PORT".into());
    }
    Ok(Endpoint {
        flavour: Flavour::Broker,
        port: url.port().unwrap_or(if tls { 5671 } else { 5672 }),
        host,
        tls,
        username,
        password,
        entity_path: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_bus_connection_string() {
        let e = Endpoint::parse("Endpoint=sb://shop.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=ab+c/d==;EntityPath=orders").unwrap();
        assert_eq!(e.flavour, Flavour::ServiceBus);
        assert_eq!(e.host, "shop.servicebus.windows.net");
        assert_eq!(e.port, 5671);
        assert!(e.tls);
        assert_eq!(e.username, "RootManageSharedAccessKey");
        assert_eq!(e.password, "ab+c/d==");
        assert_eq!(e.entity_path.as_deref(), Some("orders"));
        assert_eq!(e.queue_address("orders"), "orders");
        assert_eq!(
            e.dead_letter_address("orders", "orders.dlq"),
            "orders/$deadletterqueue"
        );
    }

    #[test]
    fn emulator_is_plain_tcp() {
        let e = Endpoint::parse("Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;").unwrap();
        assert_eq!((e.port, e.tls), (5672, false));
    }

    #[test]
    fn broker_url_decodes_credentials() {
        let e = Endpoint::parse("amqp://guest:p%2Bw%2F%3D@127.0.0.1:5673").unwrap();
        assert_eq!(e.flavour, Flavour::Broker);
        assert_eq!((e.host.as_str(), e.port, e.tls), ("127.0.0.1", 5673, false));
        assert_eq!(e.password, "p+w/=");
        assert_eq!(e.queue_address("orders"), "/amq/queue/orders");
        assert_eq!(e.queue_address("/queues/orders"), "/queues/orders");
        assert_eq!(
            e.dead_letter_address("orders", "orders.dlq"),
            "/amq/queue/orders.dlq"
        );
    }

    #[test]
    fn secrets_never_print() {
        let e = Endpoint::parse("Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=TOPSECRET").unwrap();
        assert!(!format!("{e} {e:?}").contains("TOPSECRET"));
        let e = Endpoint::parse("amqp://guest:TOPSECRET@localhost").unwrap();
        assert!(!format!("{e} {e:?}").contains("TOPSECRET"));
    }

    #[test]
    fn a_malformed_part_is_named_by_position_not_by_its_text() {
        // Found by the generated test below: the part was echoed, key and all.
        let err = Endpoint::parse("sb://:TOPSECRET@:;=").unwrap_err();
        assert!(!err.contains("TOPSECRET"), "{err}");
        assert!(err.contains("part 1"), "{err}");
        let err =
            Endpoint::parse("Endpoint=sb://h:TOPSECRET/;SharedAccessKeyName=k;SharedAccessKey=v")
                .unwrap_err();
        assert!(!err.contains("TOPSECRET") && err.contains("port"), "{err}");
        let err =
            Endpoint::parse("Endpoint=x:TOPSECRET@h://;SharedAccessKeyName=k;SharedAccessKey=v")
                .unwrap_err();
        assert!(!err.contains("TOPSECRET") && err.contains("sb://"), "{err}");
        let err = Endpoint::parse("Endpoint=sb://h/;SharedAccesKey=v").unwrap_err();
        assert!(err.contains("\"sharedacceskey\""), "a typo is shown: {err}");
    }

    #[test]
    fn bad_strings_say_what_is_missing() {
        let err = Endpoint::parse("Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=k")
            .unwrap_err();
        assert!(err.contains("SharedAccessKey is missing"), "{err}");
        let err = Endpoint::parse("Endpoint=https://x;SharedAccessKeyName=k;SharedAccessKey=v")
            .unwrap_err();
        assert!(err.contains("sb://"), "{err}");
        assert!(Endpoint::parse("localhost:5672").is_err());
        assert!(Endpoint::parse("amqp://127.0.0.1")
            .unwrap_err()
            .contains("no user"));
    }
}

/// Generated connection strings (issue 12): the parser never panics, every
/// refusal says what is wrong, and the secret appears in no error and no
/// `Debug` output, whatever surrounds it.
#[cfg(test)]
mod generated {
    use super::*;
    use proptest::prelude::*;

    /// A secret that no generated text around it can contain by chance.
    const SECRET: &str = "Zq9SECRETx7";

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn any_text_parses_or_is_refused_with_a_reason(s in "\\PC{0,120}") {
            if let Err(why) = Endpoint::parse(&s) {
                prop_assert!(!why.trim().is_empty());
            }
        }

        #[test]
        fn the_secret_never_shows_in_an_error_or_debug(
            scheme in "amqp|amqps|sb|http|",
            user in "[a-z]{0,8}|guest",
            host in "[a-z0-9.]{0,20}|127.0.0.1|\\PC{0,6}",
            port in "[0-9]{0,6}|5672|",
            rest in "\\PC{0,12}",
            service_bus in any::<bool>(),
        ) {
            let text = if service_bus {
                format!("Endpoint={scheme}://{host}/;SharedAccessKeyName={user};SharedAccessKey={SECRET}{rest}")
            } else {
                format!("{scheme}://{user}:{SECRET}@{host}:{port}{rest}")
            };
            match Endpoint::parse(&text) {
                Ok(endpoint) => {
                    let shown = format!("{endpoint:?}");
                    prop_assert!(!shown.contains(SECRET), "{}", shown);
                }
                Err(why) => prop_assert!(!why.contains(SECRET), "{}", why),
            }
        }
    }
}
