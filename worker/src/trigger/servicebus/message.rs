//! AMQP messages as orders see them: body bytes, message id, the
//! dead-letter properties, and building a message to send.

use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Header, Message, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Value};

/// Application property with the dead-letter reason (Service Bus's name).
pub const REASON: &str = "DeadLetterReason";
/// Application property with what is wrong (Service Bus's name).
pub const DESCRIPTION: &str = "DeadLetterErrorDescription";
/// Application property with when sagaflow dead-lettered it (ms since epoch).
pub const DEAD_LETTERED_AT: &str = "DeadLetteredAtMs";

/// A received message, body as AMQP gives it.
pub type AmqpMessage = Message<Body<Value>>;

/// The body as bytes: data sections joined, or a string / binary value.
/// `None` for bodies an order can never be (a number, a list, ...).
pub fn body_bytes(body: &Body<Value>) -> Option<Vec<u8>> {
    match body {
        Body::Data(batch) => {
            let mut out = Vec::with_capacity(batch.iter().map(|d| d.0.len()).sum());
            for d in batch.iter() {
                out.extend_from_slice(&d.0);
            }
            Some(out)
        }
        Body::Value(v) => match &v.0 {
            Value::String(s) => Some(s.as_bytes().to_vec()),
            Value::Binary(b) => Some(b.to_vec()),
            _ => None,
        },
        Body::Empty => Some(Vec::new()),
        Body::Sequence(_) => None,
    }
}

/// The message id as text, whatever its AMQP type.
pub fn message_id(message: &AmqpMessage) -> Option<String> {
    let id = message.properties.as_ref()?.message_id.as_ref()?;
    Some(match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => u.as_inner().iter().map(|b| format!("{b:02x}")).collect(),
        MessageId::Binary(b) => b.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// A string application property.
pub fn app_property(message: &AmqpMessage, key: &str) -> Option<String> {
    match message.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        other => Some(format!("{other:?}")),
    }
}

/// An unsigned application property.
pub fn app_property_u64(message: &AmqpMessage, key: &str) -> Option<u64> {
    match message.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::Ulong(n) => Some(*n),
        SimpleValue::Long(n) => u64::try_from(*n).ok(),
        SimpleValue::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The broker's own reason for a dead letter it made (RabbitMQ's
/// `x-first-death-reason`, e.g. "delivery_limit"), when sagaflow did not.
pub fn broker_death_reason(message: &AmqpMessage) -> Option<String> {
    let annotations = message.message_annotations.as_ref()?;
    annotations.0.iter().find_map(|(k, v)| {
        let key = format!("{k:?}");
        if key.contains("x-first-death-reason") {
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Symbol(s) => Some(s.0.clone()),
                other => Some(format!("{other:?}")),
            }
        } else {
            None
        }
    })
}

/// A durable JSON message with `id` as its message id and `properties`
/// as string application properties (`traceparent`, say).
pub fn order_message(id: &str, body: Vec<u8>, properties: &[(String, String)]) -> Message<Data> {
    let mut message = Message::builder()
        .header(Header {
            durable: true,
            ..Default::default()
        })
        .properties(Properties {
            message_id: Some(MessageId::String(id.to_owned())),
            content_type: Some(Symbol::from("application/json")),
            ..Default::default()
        })
        .data(Binary::from(body))
        .build();
    if !properties.is_empty() {
        let mut props = ApplicationProperties(Default::default());
        for (key, value) in properties {
            props
                .0
                .insert(key.clone(), SimpleValue::String(value.clone()));
        }
        message.application_properties = Some(props);
    }
    message
}

/// `message` with the dead-letter properties set (or, with `None`,
/// removed), the rest kept.
pub fn with_dead_letter(mut message: AmqpMessage, dead: Option<(&str, &str, u64)>) -> AmqpMessage {
    let mut props = message
        .application_properties
        .take()
        .unwrap_or_else(|| ApplicationProperties(Default::default()));
    for key in [REASON, DESCRIPTION, DEAD_LETTERED_AT] {
        props.0.as_inner_mut().swap_remove(key);
    }
    if let Some((reason, description, at_ms)) = dead {
        props
            .0
            .insert(REASON.into(), SimpleValue::String(reason.to_owned()));
        props.0.insert(
            DESCRIPTION.into(),
            SimpleValue::String(description.to_owned()),
        );
        props
            .0
            .insert(DEAD_LETTERED_AT.into(), SimpleValue::Ulong(at_ms));
    }
    message.application_properties = (!props.0.is_empty()).then_some(props);
    let header = message.header.get_or_insert_with(Default::default);
    header.durable = true;
    header.delivery_count = 0;
    message
}
