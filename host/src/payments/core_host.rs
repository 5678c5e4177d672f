//! The payment host's side of the `bazaar:payments/payment-core` world: the imports the payment
//! core component (`components/payment-core`, run from `payments/spin.toml`) uses to reach the
//! provider plugins and the card vault.
//!
//! * `providers` routes each call to the named plugin ([`plugins::Plugin::call`]: a fresh,
//!   limited instance per call). For a card, the core passes the sealed number it stored when
//!   the card was saved; only here is it opened (AES-GCM, bound to the token) and handed to the
//!   plugin's detokenizing egress, so neither the core nor the plugin ever holds the number.
//! * `vault` validates and seals cards and computes keyed fingerprints: the vault keys never
//!   enter the core.
//!
//! Only the payment host's app links these ([`crate::app::AppOptions::payment_services`]); the
//! shop's app does not, so a shop component importing them fails to load.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use super::plugins::{self, CallError, Detokenize, ErrorKind, Op, Output, PluginHost};
use super::vault::{self, KeyRing};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "bazaar:payments/payment-core",
        imports: { default: async },
        // One set of payment types for the plugins and the core, so values pass through as is.
        with: {
            "bazaar:payments/types": crate::payments::plugins::bazaar::payments::types,
        },
    });
}

use bindings::bazaar::payments::{providers, vault as vault_wit};
use plugins::{AuthorizeRequest, Money, PaymentSource, ProviderError, ProviderPayment};

/// What the payment core may reach: the loaded plugins and the vault key ring.
pub struct PaymentServices {
    plugins: PluginHost,
    vault: KeyRing,
    /// The longest wall-clock limit of any plugin, for `call-deadline-ms`.
    call_deadline_ms: u64,
}

impl std::fmt::Debug for PaymentServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `KeyRing`'s Debug shows key ids only.
        f.debug_struct("PaymentServices")
            .field("providers", &self.plugins.names())
            .field("vault", &self.vault)
            .field("call_deadline_ms", &self.call_deadline_ms)
            .finish()
    }
}

impl PaymentServices {
    pub fn new(plugins: PluginHost, vault: KeyRing) -> Self {
        let call_deadline_ms = plugins
            .max_timeout()
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        Self {
            plugins,
            vault,
            call_deadline_ms,
        }
    }

    pub fn provider_names(&self) -> Vec<String> {
        self.plugins.names()
    }

    async fn call(
        &self,
        provider: &str,
        op: Op,
        detokenize: Option<Arc<Detokenize>>,
    ) -> Result<Output, ProviderError> {
        let Some(plugin) = self.plugins.get(provider) else {
            return Err(ProviderError {
                kind: ErrorKind::InvalidRequest,
                code: "unknown_provider".into(),
                message: format!("no payment provider `{provider}` is configured"),
            });
        };
        match plugin.call(self.plugins.engine(), op, detokenize).await {
            Ok(output) => Ok(output),
            Err(CallError::Provider(error)) => Err(error),
            // The reason (trap, fuel, memory, deadline) is logged by `Plugin::call`; the core
            // only needs to know the provider is unavailable and nothing was done.
            Err(CallError::Plugin(_)) => Err(ProviderError {
                kind: ErrorKind::Unavailable,
                code: "plugin_failed".into(),
                message: "the provider plugin failed".into(),
            }),
        }
    }

    async fn payment(
        &self,
        provider: &str,
        op: Op,
        detokenize: Option<Arc<Detokenize>>,
    ) -> Result<ProviderPayment, ProviderError> {
        match self.call(provider, op, detokenize).await? {
            Output::Payment(payment) => Ok(payment),
            Output::Event(_) => Err(mismatched_output()),
        }
    }

    /// Opens the sealed number of a card source for the plugin's egress. A seal that does not
    /// open (a dropped key, tampering, a token it was not made for) is refused before any
    /// provider is called.
    fn detokenize(
        &self,
        source: &PaymentSource,
        card: Option<&providers::SealedCard>,
    ) -> Result<Option<Arc<Detokenize>>, ProviderError> {
        let PaymentSource::Card(card_source) = source else {
            return Ok(None);
        };
        let refused = |why: &str| {
            tracing::warn!(reason = why, "sealed card refused");
            ProviderError {
                kind: ErrorKind::InvalidRequest,
                code: "card_unavailable".into(),
                message: "the saved card cannot be used; save it again".into(),
            }
        };
        let Some(sealed) = card else {
            return Err(refused("a card source came without its sealed number"));
        };
        let pan = self
            .vault
            .open(
                &sealed.key_id,
                &sealed.ciphertext,
                card_source.token.as_bytes(),
            )
            .map_err(|e| refused(&e.to_string()))?;
        let pan = String::from_utf8(pan).map_err(|_| refused("sealed data is not text"))?;
        Ok(Some(Arc::new(Detokenize {
            token: card_source.token.clone(),
            pan,
        })))
    }
}

fn mismatched_output() -> ProviderError {
    ProviderError {
        kind: ErrorKind::Unavailable,
        code: "plugin_failed".into(),
        message: "the provider plugin failed".into(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Per-instance state: a handle on the payment host's services.
pub struct PaymentsInstance {
    services: Arc<PaymentServices>,
}

impl PaymentsInstance {
    pub fn new(services: Arc<PaymentServices>) -> Self {
        Self { services }
    }
}

impl providers::Host for PaymentsInstance {
    async fn list_providers(&mut self) -> Vec<String> {
        self.services.plugins.names()
    }

    async fn call_deadline_ms(&mut self) -> u64 {
        self.services.call_deadline_ms
    }

    async fn authorize(
        &mut self,
        provider: String,
        request: AuthorizeRequest,
        card: Option<providers::SealedCard>,
    ) -> Result<ProviderPayment, ProviderError> {
        let detokenize = self.services.detokenize(&request.source, card.as_ref())?;
        self.services
            .payment(&provider, Op::Authorize(request), detokenize)
            .await
    }

    async fn capture(
        &mut self,
        provider: String,
        reference: String,
        amount: Money,
    ) -> Result<ProviderPayment, ProviderError> {
        self.services
            .payment(&provider, Op::Capture(reference, amount), None)
            .await
    }

    async fn void(
        &mut self,
        provider: String,
        reference: String,
    ) -> Result<ProviderPayment, ProviderError> {
        self.services
            .payment(&provider, Op::Void(reference), None)
            .await
    }

    async fn refund(
        &mut self,
        provider: String,
        reference: String,
        amount: Money,
        idempotency_key: String,
    ) -> Result<ProviderPayment, ProviderError> {
        self.services
            .payment(
                &provider,
                Op::Refund(reference, amount, idempotency_key),
                None,
            )
            .await
    }

    async fn status(
        &mut self,
        provider: String,
        reference: String,
    ) -> Result<ProviderPayment, ProviderError> {
        self.services
            .payment(&provider, Op::Status(reference), None)
            .await
    }

    async fn verify_webhook(
        &mut self,
        provider: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<plugins::WebhookEvent, ProviderError> {
        let op = Op::VerifyWebhook(headers, body, now_ms());
        match self.services.call(&provider, op, None).await? {
            Output::Event(event) => Ok(event),
            Output::Payment(_) => Err(mismatched_output()),
        }
    }
}

impl vault_wit::Host for PaymentsInstance {
    async fn tokenize_card(
        &mut self,
        card: vault_wit::CardInput,
    ) -> Result<vault_wit::TokenizedCard, Vec<vault_wit::FieldError>> {
        let today = chrono::Utc::now();
        let now = (
            chrono::Datelike::year(&today),
            chrono::Datelike::month(&today),
        );
        let parsed = vault::parse_card(
            card.number.as_deref(),
            card.exp_month,
            card.exp_year,
            card.cvc.as_deref(),
            card.holder_name.as_deref(),
            now,
        )
        .map_err(|errors| {
            errors
                .into_iter()
                .map(|(field, message)| vault_wit::FieldError {
                    field: field.to_string(),
                    message,
                })
                .collect::<Vec<_>>()
        })?;
        let token = vault::new_token();
        // Bound to the token, so a sealed number cannot be replayed under another token.
        let (key_id, ciphertext) = self
            .services
            .vault
            .seal(parsed.pan.expose().as_bytes(), token.as_bytes());
        Ok(vault_wit::TokenizedCard {
            brand: parsed.pan.brand().as_str().to_string(),
            last4: parsed.pan.last4().to_string(),
            bin: parsed.pan.bin().to_string(),
            exp_month: parsed.exp_month,
            exp_year: parsed.exp_year,
            holder_name: parsed.name.clone(),
            sealed: vault_wit::SealedCard { key_id, ciphertext },
            token,
        })
    }

    async fn fingerprint(&mut self, secret: String) -> String {
        self.services.vault.fingerprint(&secret)
    }
}

struct HasPayments;

impl HasData for HasPayments {
    type Data<'a> = &'a mut PaymentsInstance;
}

/// Links `providers` and `vault` (and their shared `types`) for the payment core.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut PaymentsInstance,
) -> anyhow::Result<()> {
    providers::add_to_linker::<T, HasPayments>(linker, get)?;
    vault_wit::add_to_linker::<T, HasPayments>(linker, get)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugins::CardSource;
    use providers::Host as _;
    use vault_wit::Host as _;

    fn instance() -> (PaymentsInstance, KeyRing) {
        let entry = KeyRing::generate_entry("t1");
        let services = PaymentServices::new(
            PluginHost::load(Vec::new(), None).unwrap(),
            KeyRing::parse(&entry).unwrap(),
        );
        (
            PaymentsInstance::new(Arc::new(services)),
            KeyRing::parse(&entry).unwrap(),
        )
    }

    fn card_input(number: &str) -> vault_wit::CardInput {
        vault_wit::CardInput {
            number: Some(number.into()),
            exp_month: Some(12),
            exp_year: Some(2040),
            cvc: Some("739".into()),
            holder_name: Some(" Ada Lovelace ".into()),
        }
    }

    fn request(token: &str) -> AuthorizeRequest {
        AuthorizeRequest {
            payment_id: "pay_1".into(),
            amount: Money {
                amount: 100,
                currency: "EUR".into(),
            },
            source: PaymentSource::Card(CardSource {
                token: token.into(),
                brand: "visa".into(),
                last4: "4242".into(),
                exp_month: 12,
                exp_year: 2040,
                holder_name: "Ada".into(),
            }),
            description: String::new(),
        }
    }

    #[tokio::test]
    async fn a_tokenized_card_carries_only_safe_fields_and_a_seal_bound_to_its_token() {
        let (mut host, keys) = instance();
        let card = host
            .tokenize_card(card_input("4242 4242 4242 4242"))
            .await
            .unwrap_or_else(|_| panic!("valid card refused"));
        assert_eq!(
            (card.brand.as_str(), card.last4.as_str(), card.bin.as_str()),
            ("visa", "4242", "42424242")
        );
        assert_eq!((card.exp_month, card.exp_year), (12, 2040));
        assert_eq!(card.holder_name, "Ada Lovelace");
        assert_eq!(card.sealed.key_id, "t1");
        assert!(card.token.starts_with("pm_"));
        let opened = keys
            .open(
                &card.sealed.key_id,
                &card.sealed.ciphertext,
                card.token.as_bytes(),
            )
            .unwrap();
        assert_eq!(opened, b"4242424242424242");
        assert!(
            keys.open(&card.sealed.key_id, &card.sealed.ciphertext, b"pm_other")
                .is_err()
        );
    }

    #[tokio::test]
    async fn invalid_cards_are_refused_field_by_field() {
        let (mut host, _) = instance();
        let errors = host
            .tokenize_card(vault_wit::CardInput {
                number: Some("4242424242424241".into()),
                exp_month: Some(13),
                exp_year: None,
                cvc: Some("12".into()),
                holder_name: None,
            })
            .await
            .err()
            .unwrap();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["number", "exp_month", "exp_year", "cvc", "name"]);
    }

    #[tokio::test]
    async fn a_seal_that_does_not_open_is_refused_before_any_provider_is_called() {
        let (mut host, _) = instance();
        let card = host
            .tokenize_card(card_input("4242424242424242"))
            .await
            .unwrap_or_else(|_| panic!("valid card refused"));
        // The seal moved to another token: refused as unusable, not sent anywhere.
        let moved = host
            .authorize(
                "card".into(),
                request("pm_someone_else"),
                Some(card.sealed.clone()),
            )
            .await
            .unwrap_err();
        assert_eq!(
            (moved.kind, moved.code.as_str()),
            (ErrorKind::InvalidRequest, "card_unavailable")
        );
        let missing = host
            .authorize("card".into(), request(&card.token), None)
            .await
            .unwrap_err();
        assert_eq!(missing.code, "card_unavailable");
        // With an intact seal the call reaches routing: no `card` plugin is configured here.
        let unknown = host
            .authorize("card".into(), request(&card.token), Some(card.sealed))
            .await
            .unwrap_err();
        assert_eq!(
            (unknown.kind, unknown.code.as_str()),
            (ErrorKind::InvalidRequest, "unknown_provider")
        );
    }

    #[tokio::test]
    async fn fingerprints_are_keyed_and_stable() {
        let (mut first, _) = instance();
        let (mut second, _) = instance();
        let a = first.fingerprint("4242424242424242".into()).await;
        assert_eq!(a, first.fingerprint("4242424242424242".into()).await);
        assert_ne!(a, first.fingerprint("4000000000000002".into()).await);
        assert_ne!(
            a,
            second.fingerprint("4242424242424242".into()).await,
            "another vault key gives another digest"
        );
        assert!(!a.contains("4242424242424242"));
    }

    #[tokio::test]
    async fn without_plugins_there_are_no_providers_and_no_deadline() {
        let (mut host, _) = instance();
        assert!(host.list_providers().await.is_empty());
        assert_eq!(host.call_deadline_ms().await, 0);
        let err = host
            .capture(
                "nope".into(),
                "ref".into(),
                Money {
                    amount: 1,
                    currency: "EUR".into(),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, "unknown_provider");
    }
}
