//! The card-network provider plugin: Stripe PaymentIntents with `capture_method=manual`, spoken
//! over `wasi:http` to the configured `api_base` (the local sandbox simulator, or a real
//! endpoint). Form-encoded requests, JSON answers, `Idempotency-Key` on every mutation.
//!
//! The plugin never sees a card number: it sends the vault token where the number goes and the
//! payment host swaps it for the number on the way out to the declared provider host.

// Only the wasm build is a plugin: natively the wit-bindgen imports cannot be linked, so the
// crate is empty there and is exercised through the payment host's contract tests.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: "../../wit",
    world: "bazaar:payments/payment-provider",
    generate_all,
});

mod protocol;

use bazaar::payments::types::{
    AuthorizeRequest, ErrorKind, Money, PaymentSource, ProviderError, ProviderPayment, WebhookEvent,
};
use exports::bazaar::payments::provider::Guest;
use payment_plugin_kit::{form, http, setting, signature};

struct CardPlugin;

type Settings = Vec<(String, String)>;

fn error(kind: ErrorKind, code: &str, message: impl Into<String>) -> ProviderError {
    ProviderError {
        kind,
        code: code.to_string(),
        message: message.into(),
    }
}

struct Api<'a> {
    base: &'a str,
    key: &'a str,
}

impl<'a> Api<'a> {
    fn from(config: &'a Settings) -> Result<Self, ProviderError> {
        let base = setting(config, "api_base")
            .ok_or_else(|| {
                error(
                    ErrorKind::InvalidRequest,
                    "misconfigured",
                    "api_base is not set",
                )
            })?
            .trim_end_matches('/');
        let key = setting(config, "api_key").ok_or_else(|| {
            error(
                ErrorKind::InvalidRequest,
                "misconfigured",
                "api_key is not set",
            )
        })?;
        Ok(Self { base, key })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Result<serde_json::Value, ProviderError> {
        let auth = format!("Bearer {}", self.key);
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ];
        if let Some(key) = idempotency_key {
            headers.push(("idempotency-key", key));
        }
        let encoded = form::encode(body);
        let url = format!("{}{}", self.base, path);
        let response = http::send(method, &url, &headers, encoded.as_bytes())
            .map_err(|e| error(ErrorKind::Unavailable, "network_error", e.0))?;
        protocol::interpret(response.status, &response.body)
    }
}

impl Guest for CardPlugin {
    fn authorize(
        config: Settings,
        request: AuthorizeRequest,
    ) -> Result<ProviderPayment, ProviderError> {
        let PaymentSource::Card(card) = &request.source else {
            return Err(error(
                ErrorKind::InvalidRequest,
                "unsupported_source",
                "the card provider only accepts card payment methods",
            ));
        };
        let api = Api::from(&config)?;
        let amount = request.amount.amount.to_string();
        let currency = request.amount.currency.to_ascii_lowercase();
        let exp_month = card.exp_month.to_string();
        let exp_year = card.exp_year.to_string();
        let body = [
            ("amount", amount.as_str()),
            ("currency", currency.as_str()),
            ("capture_method", "manual"),
            ("confirm", "true"),
            ("payment_method_data[type]", "card"),
            ("payment_method_data[card][number]", card.token.as_str()),
            ("payment_method_data[card][exp_month]", exp_month.as_str()),
            ("payment_method_data[card][exp_year]", exp_year.as_str()),
            (
                "payment_method_data[billing_details][name]",
                card.holder_name.as_str(),
            ),
            ("description", request.description.as_str()),
            ("metadata[bazaar_payment_id]", request.payment_id.as_str()),
        ];
        let intent = api.call(
            "POST",
            "/v1/payment_intents",
            &body,
            Some(&request.payment_id),
        )?;
        protocol::payment_intent(&intent)
    }

    fn capture(
        config: Settings,
        reference: String,
        amount: Money,
    ) -> Result<ProviderPayment, ProviderError> {
        let api = Api::from(&config)?;
        let amount_text = amount.amount.to_string();
        let path = format!(
            "/v1/payment_intents/{}/capture",
            protocol::path_segment(&reference)?
        );
        let key = format!("capture-{reference}-{amount_text}");
        let intent = api.call(
            "POST",
            &path,
            &[("amount_to_capture", &amount_text)],
            Some(&key),
        )?;
        protocol::payment_intent(&intent)
    }

    fn void(config: Settings, reference: String) -> Result<ProviderPayment, ProviderError> {
        let api = Api::from(&config)?;
        let path = format!(
            "/v1/payment_intents/{}/cancel",
            protocol::path_segment(&reference)?
        );
        let key = format!("cancel-{reference}");
        let intent = api.call("POST", &path, &[], Some(&key))?;
        protocol::payment_intent(&intent)
    }

    fn refund(
        config: Settings,
        reference: String,
        amount: Money,
        idempotency_key: String,
    ) -> Result<ProviderPayment, ProviderError> {
        let api = Api::from(&config)?;
        let amount_text = amount.amount.to_string();
        api.call(
            "POST",
            "/v1/refunds",
            &[("payment_intent", &reference), ("amount", &amount_text)],
            Some(&idempotency_key),
        )?;
        Self::status(config.clone(), reference)
    }

    fn status(config: Settings, reference: String) -> Result<ProviderPayment, ProviderError> {
        let api = Api::from(&config)?;
        let path = format!(
            "/v1/payment_intents/{}",
            protocol::path_segment(&reference)?
        );
        let intent = api.call("GET", &path, &[], None)?;
        protocol::payment_intent(&intent)
    }

    fn verify_webhook(
        config: Settings,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        now: u64,
    ) -> Result<WebhookEvent, ProviderError> {
        let secrets = signature::secrets(setting(&config, "webhook_secrets"));
        signature::verify(&headers, &body, &secrets, now / 1000).map_err(|e| {
            error(
                ErrorKind::InvalidSignature,
                "invalid_signature",
                e.message(),
            )
        })?;
        protocol::webhook_event(&body)
    }
}

export!(CardPlugin);
