//! TEST FIXTURE, not a provider: a plugin that misbehaves on purpose so the payment host's
//! isolation can be tested. `authorize` picks its misbehaviour from the request description:
//! `loop` spins forever, `alloc` grows memory without bound, `egress` calls the URL in its
//! `forbidden_url` setting; anything else authorizes normally (so one instance can show that
//! other payments keep working).

// Only the wasm build is a plugin: natively the wit-bindgen imports cannot be linked, so the
// crate is empty there and is exercised through the payment host's contract tests.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: "../../wit",
    world: "bazaar:payments/payment-provider",
    generate_all,
});

use bazaar::payments::types::{
    AuthorizeRequest, ErrorKind, Money, ProviderError, ProviderPayment, ProviderStatus,
    WebhookEvent,
};
use exports::bazaar::payments::provider::Guest;

struct Hostile;

fn unsupported() -> ProviderError {
    ProviderError {
        kind: ErrorKind::InvalidRequest,
        code: "unsupported".into(),
        message: "test fixture".into(),
    }
}

impl Guest for Hostile {
    fn authorize(
        config: Vec<(String, String)>,
        request: AuthorizeRequest,
    ) -> Result<ProviderPayment, ProviderError> {
        match request.description.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "egress" => {
                let url = payment_plugin_kit::setting(&config, "forbidden_url")
                    .unwrap_or("http://example.com/");
                return match payment_plugin_kit::http::send("GET", url, &[], &[]) {
                    Ok(r) => Err(ProviderError {
                        kind: ErrorKind::Unavailable,
                        code: "egress_allowed".into(),
                        message: format!("reached it: {}", r.status),
                    }),
                    Err(e) => Err(ProviderError {
                        kind: ErrorKind::Unavailable,
                        code: "egress_denied".into(),
                        message: e.0,
                    }),
                };
            }
            _ => {}
        }
        Ok(ProviderPayment {
            reference: format!(
                "hostile_{}",
                request
                    .payment_id
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "")
            ),
            status: ProviderStatus::Authorized,
            authorized: request.amount.amount,
            captured: 0,
            refunded: 0,
            expires_at: None,
            next_action: None,
        })
    }

    fn capture(
        _: Vec<(String, String)>,
        _: String,
        _: Money,
    ) -> Result<ProviderPayment, ProviderError> {
        Err(unsupported())
    }

    fn void(_: Vec<(String, String)>, _: String) -> Result<ProviderPayment, ProviderError> {
        Err(unsupported())
    }

    fn refund(
        _: Vec<(String, String)>,
        _: String,
        _: Money,
        _: String,
    ) -> Result<ProviderPayment, ProviderError> {
        Err(unsupported())
    }

    fn status(_: Vec<(String, String)>, _: String) -> Result<ProviderPayment, ProviderError> {
        Err(unsupported())
    }

    fn verify_webhook(
        _: Vec<(String, String)>,
        _: Vec<(String, String)>,
        _: Vec<u8>,
        _: u64,
    ) -> Result<WebhookEvent, ProviderError> {
        Err(unsupported())
    }
}

export!(Hostile);
