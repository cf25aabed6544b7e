//! The OpenAPI document: it validates (openapi-spec-validator, installed by `.ci/run`), it is
//! OpenAPI 3.1, every route the router serves is in it, and every operation requires the bearer key.

use std::process::Command;

/// Routes the API serves, as (method, path). The router and the document are built from one list
/// (`documented()` in src/lib.rs); this pins what that list must contain.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/payouts"),
    ("get", "/v1/payouts"),
    ("post", "/v1/payouts/batch"),
    ("get", "/v1/payouts/{id}"),
    ("post", "/v1/payouts/{id}/redeliver"),
    ("post", "/v1/payouts/{id}/cancel"),
    ("post", "/v1/sandbox/cards"),
    ("post", "/v1/sandbox/wallets"),
    ("get", "/v1/balances"),
    ("post", "/v1/quotes"),
    ("get", "/v1/treasury/rails"),
    ("post", "/v1/treasury/rails/{rail}/kill-switch"),
    ("put", "/v1/treasury/rails/{rail}/fees/{currency}"),
    ("put", "/v1/treasury/rails/{rail}/limits/{currency}"),
    ("put", "/v1/treasury/routing/weights"),
    ("get", "/v1/treasury/fx"),
    ("put", "/v1/treasury/fx/providers/{provider}/spread"),
    ("put", "/v1/treasury/rails/{rail}/fx-spread"),
    ("get", "/v1/treasury/audit"),
    ("get", "/v1/treasury/liquidity"),
    ("post", "/v1/treasury/rails/{rail}/liquidity"),
    ("get", "/v1/treasury/windows"),
    ("get", "/v1/treasury/windows/{id}"),
    ("get", "/v1/treasury/windows/{id}/report"),
    ("post", "/v1/treasury/rails/{rail}/windows/close"),
    ("post", "/v1/treasury/windows/{id}/settle"),
    ("get", "/v1/treasury/rebalance"),
    ("post", "/v1/treasury/reconcile"),
    ("get", "/v1/webhooks/secret"),
    ("get", "/v1/webhooks/deliveries"),
    ("get", "/v1/approvals"),
    ("post", "/v1/payouts/{id}/approve"),
    ("post", "/v1/payouts/{id}/reject"),
    ("get", "/v1/audit/verify"),
    ("post", "/v1/admin/keys"),
    ("get", "/v1/admin/keys"),
    ("post", "/v1/admin/keys/{tenant}/{id}/revoke"),
    ("put", "/v1/sandbox/rails/{rail}/faults"),
];

#[test]
fn the_document_covers_every_route_and_validates() {
    let document: serde_json::Value = serde_json::from_str(&railyard_api::openapi().to_pretty_json().unwrap()).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"), "{}", document["openapi"]);
    let mut documented = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            documented += 1;
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "{method} {path} is documented but not listed here"
            );
            assert!(operation["security"].to_string().contains("bearer"), "{method} {path} has no security");
        }
    }
    assert_eq!(documented, ROUTES.len(), "a listed route is missing from the document");

    let path = std::env::temp_dir().join(format!("railyard_openapi_{}.json", std::process::id()));
    std::fs::write(&path, document.to_string()).unwrap();
    let output = Command::new("python3").args(["-m", "openapi_spec_validator"]).arg(&path).output();
    let _ = std::fs::remove_file(&path);
    let output = output.expect("python3 is needed to validate the OpenAPI document");
    assert!(
        output.status.success(),
        "openapi-spec-validator (pip install openapi-spec-validator) rejected the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
