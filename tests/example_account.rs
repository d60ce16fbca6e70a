//! The account example runs as documented: Herald with the example's
//! configuration (its service URL pointed at the port the service got), the
//! real account service, a page reading its balance and cashing out over
//! its WebSocket, and a back office cashing out on the user's behalf.

mod support;

use serde_json::json;
use support::example::{start_example, ExampleService};
use support::*;

fn start_account_service() -> (ExampleService, String) {
    let (service, first) = start_example("account-service", &[("ACCOUNT_LISTEN", "127.0.0.1:0")]);
    let url = first
        .strip_prefix("account service ready on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    (service, url)
}

#[tokio::test]
async fn a_page_reads_its_balance_cashes_out_and_gets_a_back_office_cash_out() {
    let (_service, url) = start_account_service();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/account/herald.toml"
    ))
    .expect("example config");
    let config = std::env::temp_dir().join(format!("{}.toml", unique_topic("account-example")));
    std::fs::write(&config, example.replace("http://127.0.0.1:9001", &url)).expect("write config");
    let node = TestNode::start(&["--config", config.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&config);

    let (mut page, _) = node.connect_as("account-example-secret", "alice").await;
    let balance = page
        .call(json!({"op": "request", "service": "account", "method": "GET", "path": "/accounts/alice"}))
        .await;
    assert_eq!(balance["op"], "response", "{balance}");
    assert_eq!(balance["body"], json!({"user": "alice", "balance": 100}));
    let cashed = page
        .call(
            json!({"op": "request", "service": "account", "method": "POST",
            "path": "/accounts/alice/cash-out", "body": {"amount": 30}}),
        )
        .await;
    assert_eq!(
        (cashed["status"].clone(), cashed["body"]["balance"].clone()),
        (json!(200), json!(70)),
        "{cashed}"
    );
    // Someone else's account is the service's to refuse: a 403 response.
    let other = page
        .call(json!({"op": "request", "service": "account", "method": "GET", "path": "/accounts/bob"}))
        .await;
    assert_eq!(other["status"], 403, "{other}");
    // A back office cashes out for alice; her page gets the result.
    let (status, answer) = node
        .post(
            "/api/users/alice/requests",
            json!({"service": "account", "method": "POST", "path": "/accounts/alice/cash-out",
                "body": {"amount": 50}, "id": "payout-1"}),
        )
        .await;
    assert_eq!(
        (status, answer["status"].clone()),
        (200, json!(200)),
        "{answer}"
    );
    let pushed = page.expect_op("response").await;
    assert_eq!(pushed["origin"], "backend");
    assert_eq!(pushed["id"], "payout-1");
    assert_eq!(pushed["body"]["balance"], 20, "{pushed}");
    let short = page
        .call(
            json!({"op": "request", "service": "account", "method": "POST",
            "path": "/accounts/alice/cash-out", "body": {"amount": 30}}),
        )
        .await;
    assert_eq!(short["status"], 409, "{short}");
}
