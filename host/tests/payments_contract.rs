//! Plugin contract tests: every provider plugin, loaded by the payment host's own plugin loader
//! and run against the local sandbox simulator, must answer the `payment-provider` world's
//! operations with values — provider errors for bad input, unknown references, bad signatures
//! and wrong credentials — and never trap.

mod payments_support;
use payments_support as common;

use std::sync::Arc;
use std::time::Duration;

use bazaar_host::payments::config::SimulatorConfig;
use bazaar_host::payments::plugins::{
    AuthorizeRequest, CallError, CardSource, ErrorKind, Limits, Money, Op, Output, PaymentSource,
    PluginHost, PluginSpec, ProviderStatus,
};
use bazaar_host::payments::simulator;

const SECRET: &str = "whsec_contract";

struct Case {
    name: &'static str,
    package: &'static str,
    source: PaymentSource,
    wrong_source: PaymentSource,
    extra: Vec<(String, String)>,
    /// The status a fresh, accepted authorization has.
    authorized: ProviderStatus,
}

fn card_source() -> PaymentSource {
    PaymentSource::Card(CardSource {
        // The simulator declines non-numeric numbers: the contract run sends a real test number
        // in place of a vault token (no detokenizing egress here).
        token: "4242424242424242".into(),
        brand: "visa".into(),
        last4: "4242".into(),
        exp_month: 12,
        exp_year: 2040,
        holder_name: "Contract".into(),
    })
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "card",
            package: "payment-card",
            source: card_source(),
            wrong_source: PaymentSource::Crypto,
            extra: vec![],
            authorized: ProviderStatus::Authorized,
        },
        Case {
            name: "wallet",
            package: "payment-wallet",
            source: PaymentSource::Wallet("payer-contract".into()),
            wrong_source: PaymentSource::Crypto,
            extra: vec![],
            authorized: ProviderStatus::Authorized,
        },
        Case {
            name: "crypto",
            package: "payment-crypto",
            source: PaymentSource::Crypto,
            wrong_source: card_source(),
            extra: vec![("store_id".into(), "sandbox".into())],
            authorized: ProviderStatus::RequiresAction,
        },
    ]
}

async fn start_simulator() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sim = simulator::Simulator::new(SimulatorConfig {
        listen: addr.to_string(),
        latency_ms: 0,
        failure_rate: 0.0,
        api_key: "sk_test_bazaar".into(),
        crypto_webhook_url: None,
        crypto_webhook_secret: None,
        wallet_webhook_url: None,
        wallet_webhook_secret: None,
    });
    tokio::spawn(simulator::serve(sim, listener));
    format!("http://{addr}")
}

fn load(case: &Case, sim: &str, api_key: &str) -> PluginHost {
    let mut settings = vec![
        ("api_base".to_string(), sim.to_string()),
        ("api_key".to_string(), api_key.to_string()),
        ("webhook_secrets".to_string(), SECRET.to_string()),
        // The wallet's OAuth2 client credentials; the sandbox checks the secret.
        ("client_id".to_string(), "sandbox-client".to_string()),
        ("client_secret".to_string(), api_key.to_string()),
    ];
    settings.extend(case.extra.clone());
    PluginHost::load(
        vec![PluginSpec {
            name: case.name.into(),
            component: common::build_wasm(case.package),
            allowed_outbound_hosts: vec![sim.to_string()],
            settings,
            limits: Limits {
                memory_bytes: 32 << 20,
                fuel: 2_000_000_000,
                timeout: Duration::from_secs(20),
            },
        }],
        None,
    )
    .unwrap()
}

fn money(amount: u64) -> Money {
    Money {
        amount,
        currency: "EUR".into(),
    }
}

fn expect_error(result: Result<Output, CallError>, kinds: &[ErrorKind], what: &str) {
    match result {
        Err(CallError::Provider(e)) => assert!(
            kinds.contains(&e.kind),
            "{what}: unexpected kind {:?} ({})",
            e.kind,
            e.code
        ),
        Err(CallError::Plugin(reason)) => {
            panic!("{what}: the plugin trapped instead of answering: {reason}")
        }
        Ok(_) => panic!("{what}: expected a provider error"),
    }
}

#[tokio::test]
async fn every_plugin_honours_the_provider_contract() {
    let sim = start_simulator().await;
    for case in cases() {
        let host = load(&case, &sim, "sk_test_bazaar");
        let plugin = host.get(case.name).unwrap();
        let engine = host.engine();
        let call = |op| plugin.call(engine, op, None);
        let request = |source: PaymentSource| AuthorizeRequest {
            payment_id: format!("pay_contract_{}", case.name),
            amount: money(1000),
            source,
            description: "contract".into(),
        };

        let Ok(Output::Payment(created)) = call(Op::Authorize(request(case.source.clone()))).await
        else {
            panic!("{}: authorize failed", case.name);
        };
        assert_eq!(created.status, case.authorized, "{}", case.name);
        assert_eq!(created.authorized, 1000, "{}", case.name);
        assert_eq!(created.captured, 0, "{}", case.name);
        assert!(!created.reference.is_empty());
        let Ok(Output::Payment(status)) = call(Op::Status(created.reference.clone())).await else {
            panic!("{}: status failed", case.name);
        };
        assert_eq!(status.reference, created.reference);

        expect_error(
            call(Op::Authorize(request(case.wrong_source.clone()))).await,
            &[ErrorKind::InvalidRequest],
            "wrong source",
        );
        expect_error(
            call(Op::Status("does_not_exist".into())).await,
            &[ErrorKind::NotFound],
            "unknown reference",
        );
        expect_error(
            call(Op::Status("../../admin".into())).await,
            &[ErrorKind::InvalidRequest],
            "path traversal",
        );
        expect_error(
            call(Op::Refund(created.reference.clone(), money(1), "k".into())).await,
            &[ErrorKind::InvalidState, ErrorKind::InvalidRequest],
            "refund before capture",
        );
        expect_error(
            call(Op::VerifyWebhook(vec![], b"{}".to_vec(), 1_700_000_000_000)).await,
            &[ErrorKind::InvalidSignature],
            "unsigned webhook",
        );
        let body = br#"{"id":"evt"}"#.to_vec();
        let header = payment_plugin_kit::signature::header_value("wrong", 1_700_000_000, &body);
        expect_error(
            call(Op::VerifyWebhook(
                vec![("bazaar-signature".into(), header)],
                body,
                1_700_000_000_000,
            ))
            .await,
            &[ErrorKind::InvalidSignature],
            "wrongly signed webhook",
        );
        let Ok(Output::Payment(voided)) = call(Op::Void(created.reference.clone())).await else {
            panic!("{}: void failed", case.name);
        };
        assert_eq!(voided.status, ProviderStatus::Voided, "{}", case.name);
        // A repeated void is either replayed (idempotent) or refused; never a trap or a change.
        match call(Op::Void(created.reference.clone())).await {
            Ok(Output::Payment(again)) => {
                assert_eq!(again.status, ProviderStatus::Voided, "{}", case.name)
            }
            other => expect_error(
                other,
                &[ErrorKind::InvalidState, ErrorKind::InvalidRequest],
                "double void",
            ),
        }
        expect_error(
            call(Op::Capture(created.reference.clone(), money(1000))).await,
            &[ErrorKind::InvalidState, ErrorKind::InvalidRequest],
            "capture after void",
        );

        let wrong_key = load(&case, &sim, "sk_wrong");
        let plugin = wrong_key.get(case.name).unwrap();
        expect_error(
            plugin
                .call(
                    wrong_key.engine(),
                    Op::Authorize(request(case.source.clone())),
                    None,
                )
                .await,
            &[ErrorKind::Authentication],
            "wrong API key",
        );
    }
}

#[tokio::test]
async fn card_plugin_partial_capture_and_repeated_partial_refunds() {
    let sim = start_simulator().await;
    let case = &cases()[0];
    let host = load(case, &sim, "sk_test_bazaar");
    let plugin = Arc::clone(&host.get("card").unwrap());
    let engine = host.engine();
    let Ok(Output::Payment(p)) = plugin
        .call(
            engine,
            Op::Authorize(AuthorizeRequest {
                payment_id: "pay_partial".into(),
                amount: money(1000),
                source: card_source(),
                description: String::new(),
            }),
            None,
        )
        .await
    else {
        panic!("authorize failed")
    };
    assert!(
        p.expires_at.is_some(),
        "manual-capture authorizations expire"
    );
    let Ok(Output::Payment(c)) = plugin
        .call(engine, Op::Capture(p.reference.clone(), money(700)), None)
        .await
    else {
        panic!("capture failed")
    };
    assert_eq!((c.status, c.captured), (ProviderStatus::Captured, 700));
    for (n, key) in ["r1", "r2"].iter().enumerate() {
        let Ok(Output::Payment(r)) = plugin
            .call(
                engine,
                Op::Refund(p.reference.clone(), money(300), key.to_string()),
                None,
            )
            .await
        else {
            panic!("refund failed")
        };
        assert_eq!(r.refunded, 300 * (n as u64 + 1));
    }
    // The same idempotency key again is a no-op at the provider.
    let Ok(Output::Payment(r)) = plugin
        .call(
            engine,
            Op::Refund(p.reference.clone(), money(300), "r2".into()),
            None,
        )
        .await
    else {
        panic!("retry failed")
    };
    assert_eq!(r.refunded, 600);
    expect_error(
        plugin
            .call(
                engine,
                Op::Refund(p.reference.clone(), money(101), "r3".into()),
                None,
            )
            .await,
        &[ErrorKind::InvalidRequest],
        "refund over captured",
    );
}
