//! The greeting service of the Spring STOMP tutorial, as a microservice
//! behind Herald: it consumes what pages send to the destination `hello`
//! and answers on its own `greetings` exchange, which Herald maps onto the
//! topic `greetings` (see `herald.toml` beside this file).
//!
//! `cargo run --example greeting-service` (RabbitMQ at `AMQP_URL`, default
//! amqp://guest:guest@127.0.0.1:5672/%2f).

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct HelloMessage {
    name: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;

    // The service's own exchange; Herald consumes it through [[amqp.inbound]].
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            "greetings".into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    // What pages `send` to destination `hello` arrives on herald.client.
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare("greeting-service".into(), durable, FieldTable::default())
        .await?;
    channel
        .exchange_declare(
            "herald.client".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            "greeting-service".into(),
            "herald.client".into(),
            "hello".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut hellos = channel
        .basic_consume(
            "greeting-service".into(),
            "greeting-service".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    println!("greeting service ready");

    while let Some(delivery) = hellos.next().await {
        let delivery = delivery?;
        let content = match serde_json::from_slice::<HelloMessage>(&delivery.data) {
            Ok(hello) => format!("Hello, {}!", hello.name),
            Err(_) => "Hello, stranger!".to_owned(),
        };
        let greeting = json!({ "content": content }).to_string();
        channel
            .basic_publish(
                "greetings".into(),
                "greeting".into(),
                BasicPublishOptions::default(),
                greeting.as_bytes(),
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await?;
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}
