//! `proto/asyncapi.json` describes exactly the events the code knows: every type of the catalogue and no other,
//! each message's payload the fields of its protobuf message (name, number, repetition), so the browsable contract
//! cannot drift from `proto/signup/events/v1/events.proto`.

use prost::Message as _;
use prost_types::{
    FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};
use serde_json::Value;

fn document() -> Value {
    let text = include_str!("../../../proto/asyncapi.json");
    serde_json::from_str(text).unwrap_or_else(|error| panic!("proto/asyncapi.json is not JSON: {error}"))
}

#[test]
fn the_asyncapi_document_lists_exactly_the_event_types_of_the_catalogue() {
    let document = document();
    let messages = document["components"]["messages"].as_object().cloned().unwrap_or_default();
    let mut documented: Vec<String> = messages
        .values()
        .map(|m| m["headers"]["properties"]["cloudEvents_type"]["const"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut known: Vec<String> = proto::Event::TYPES.iter().map(|t| (*t).to_owned()).collect();
    documented.sort();
    known.sort();
    assert_eq!(documented, known);
    let on_channel = document["channels"]["signupEvents"]["messages"].as_object().map_or(0, serde_json::Map::len);
    assert_eq!(on_channel, known.len(), "the channel carries every message");
}

#[test]
fn each_documented_payload_has_the_fields_of_its_protobuf_message() {
    let document = document();
    let set = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap_or_else(|e| panic!("descriptor set: {e}"));
    let events = set.file.iter().find(|f| f.package() == "signup.events.v1").unwrap_or_else(|| panic!("no events"));
    for message in &events.message_type {
        let documented = &document["components"]["messages"][message.name()]["payload"]["properties"];
        let documented = documented.as_object().unwrap_or_else(|| panic!("{} is not documented", message.name()));
        assert_eq!(documented.len(), message.field.len(), "{}: fields {documented:?}", message.name());
        for field in &message.field {
            let schema = &documented[field.name()];
            let where_ = format!("{}.{}", message.name(), field.name());
            assert_eq!(schema["x-protobuf-field"], field.number(), "{where_}");
            let repeated = field.label() == Label::Repeated;
            assert_eq!(schema["type"] == "array", repeated, "{where_}");
            let item = if repeated { &schema["items"] } else { schema };
            let expected = match field.r#type() {
                Type::Bool => "boolean",
                Type::String | Type::Bytes | Type::Message => "string",
                other => panic!("{where_}: {other:?} has no mapping here yet"),
            };
            assert_eq!(item["type"], expected, "{where_}");
            match field.r#type() {
                Type::Bytes => assert_eq!(item["contentEncoding"], "base64", "{where_}"),
                Type::Message => assert_eq!(
                    (field.type_name(), &item["format"]),
                    (".google.protobuf.Timestamp", &Value::from("date-time")),
                    "{where_}"
                ),
                _ => {}
            }
        }
    }
}
