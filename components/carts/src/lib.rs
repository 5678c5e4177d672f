//! Bazaar's cart service (private route; the gateway forwards `/api/v1/cart...`).
//!
//! * `GET /api/v1/cart`, `POST /api/v1/cart/items`, `PATCH|DELETE /api/v1/cart/items/{product_id}`
//!   — API.md "Cart";
//! * `POST /internal/jobs/sweep` — scheduled: deletes expired guest carts (expiry is also checked
//!   at read time, so correctness never waits for the sweep);
//! * `GET /health/live`, `GET /health/ready`.
//!
//! Guests are identified by the unguessable cart id returned in `x-cart-id` by the first response
//! that stored their cart (the first item added); signed-in users by their verified id. A guest
//! answer about a cart that is not stored carries `id: null` and no `x-cart-id`: an id is only
//! handed out once it names a stored cart, so sending it back finds that cart, anonymous reads
//! store nothing (crawlers cannot fill the store), and an id the client made up or kept after
//! expiry is never adopted (no cart fixation) — it starts a new cart with a new id. A signed-in
//! request that still carries a guest `x-cart-id` merges that guest cart into the user's cart
//! and deletes it — so "log in, keep sending the header" merges on the first cart call after
//! login.
//!
//! Component variable: `guest_cart_ttl_secs` (guest carts expire this long after their last
//! change).

// `Problem` is every handler's error type (see bazaar-platform).
#![allow(clippy::result_large_err)]

pub mod catalog;
pub mod domain;
pub mod store;

use bazaar_platform::body::{DEFAULT_JSON_LIMIT, parse_json};
use bazaar_platform::{Ctx, FieldError, Problem};
use spin_sdk::http::{Method, Request, Response};

use crate::domain::{Cart, NewLine, NewQuantity, PricedCart, ProductId};
use crate::store::{CartStore, KvCarts, guest_key, user_key};

const COMPONENT: &str = "carts";
pub const CART_ID_HEADER: &str = "x-cart-id";
const DEFAULT_GUEST_TTL_SECS: i64 = 7 * 24 * 3600;

#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
async fn handle(request: Request) -> Response {
    let ctx = Ctx::new(COMPONENT, &request);
    let result = route(&ctx, &request).await;
    ctx.respond(result)
}

async fn route(ctx: &Ctx, request: &Request) -> Result<Response, Problem> {
    let path = request.path();
    let method = request.method();
    match (method, path) {
        (Method::Get, "/health/live") => Ok(ctx.json(200, &serde_json::json!({"status": "ok"}))),
        (Method::Get, "/health/ready") => {
            KvCarts::open()?.load("readiness-probe")?;
            Ok(ctx.json(200, &serde_json::json!({"status": "ok"})))
        }
        (Method::Post, "/internal/jobs/sweep") => sweep(ctx),
        (Method::Get, "/api/v1/cart") => {
            let (cart, key) = current_cart(ctx, request, &KvCarts::open()?)?;
            respond_priced(ctx, cart, key.is_some()).await
        }
        (_, "/api/v1/cart") => Err(Problem::method_not_allowed(
            method.to_string().as_str(),
            &["GET"],
        )),
        (Method::Post, "/api/v1/cart/items") => add_item(ctx, request).await,
        (_, "/api/v1/cart/items") => Err(Problem::method_not_allowed(
            method.to_string().as_str(),
            &["POST"],
        )),
        (method, path) => match path.strip_prefix("/api/v1/cart/items/") {
            Some(raw) => {
                let product = ProductId::try_from(raw.to_owned()).map_err(|m| {
                    Problem::not_found(format!("No such cart item: the product id {m}"))
                })?;
                match method {
                    Method::Patch => set_quantity(ctx, request, &product).await,
                    Method::Delete => remove_item(ctx, request, &product).await,
                    other => Err(Problem::method_not_allowed(
                        other.to_string().as_str(),
                        &["PATCH", "DELETE"],
                    )),
                }
            }
            None => Err(Problem::not_found("No such cart route")),
        },
    }
}

fn now() -> i64 {
    bazaar_platform::time::now_millis()
}

fn guest_ttl_millis() -> i64 {
    spin_sdk::variables::get("guest_cart_ttl_secs")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|secs| *secs > 0)
        .unwrap_or(DEFAULT_GUEST_TTL_SECS)
        .saturating_mul(1000)
}

/// A guest cart id we issued: `gc_` + 32 hex characters.
fn guest_id(header: Option<&str>) -> Option<&str> {
    let id = header?.trim();
    let hex = id.strip_prefix("gc_")?;
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The caller's cart and its storage key, merging a guest cart into a user's cart when a
/// signed-in request still carries the guest id. Not saved unless it changed.
///
/// The key is `None` for a guest without a stored cart: the returned cart is new, and its id is
/// issued to the client only once [`save`] stored it.
fn current_cart(
    ctx: &Ctx,
    request: &Request,
    store: &impl CartStore,
) -> Result<(Cart, Option<String>), Problem> {
    let now = now();
    let header = request.header(CART_ID_HEADER).and_then(|v| v.as_str());
    let guest = match guest_id(header) {
        Some(id) => match store.load(&guest_key(id))? {
            Some(cart) if cart.id == id && !cart.is_expired(now) => Some(cart),
            // Expired (or unreadable): gone from now on, not only once the hourly sweep runs.
            Some(_) => {
                store.delete(&guest_key(id))?;
                None
            }
            None => None,
        },
        None => None,
    };
    match &ctx.identity {
        Some(identity) => {
            let key = user_key(&identity.user_id);
            let mut cart = store
                .load(&key)?
                .unwrap_or_else(|| Cart::new(format!("uc_{}", identity.user_id), now, None));
            if let Some(guest) = guest {
                cart.merge_from(&guest);
                cart.updated_at = now;
                store.save(&key, &cart)?;
                store.delete(&guest_key(&guest.id))?;
                ctx.log.info(
                    "guest cart merged",
                    &[("lines", (guest.lines.len() as u64).into())],
                );
            }
            Ok((cart, Some(key)))
        }
        None => Ok(match guest {
            Some(cart) => {
                let key = guest_key(&cart.id);
                (cart, Some(key))
            }
            None => {
                let id = format!("gc_{}", bazaar_platform::ids::new_id());
                (Cart::new(id, now, Some(now + guest_ttl_millis())), None)
            }
        }),
    }
}

/// Stores a changed cart (under its guest key when it is a guest's first save).
fn save(store: &impl CartStore, key: Option<String>, cart: &Cart) -> Result<(), Problem> {
    let key = key.unwrap_or_else(|| guest_key(&cart.id));
    store.save(&key, cart)
}

fn touch(cart: &mut Cart) {
    let now = now();
    cart.updated_at = now;
    if cart.expires_at.is_some() {
        cart.expires_at = Some(now + guest_ttl_millis());
    }
}

async fn priced(ctx: &Ctx, cart: &Cart) -> Result<PricedCart, Problem> {
    let products: Vec<ProductId> = cart.lines.iter().map(|l| l.product_id.clone()).collect();
    let offers = catalog::offers(&products, &ctx.request_id)
        .await
        .map_err(|e| {
            ctx.log
                .error("catalog lookup failed", &[("error", e.0.into())]);
            Problem::bad_gateway("The catalog could not be reached to price the cart")
        })?;
    domain::price(cart, &offers)
}

/// The priced cart; `stored` says whether its id names a stored cart, and only such an id is
/// shown (body `id` and `x-cart-id`) — see the module docs.
async fn respond_priced(ctx: &Ctx, cart: Cart, stored: bool) -> Result<Response, Problem> {
    let mut priced = priced(ctx, &cart).await?;
    if !stored {
        priced.id = None;
    }
    let mut response = ctx.json(200, &priced);
    if stored {
        response.set_header(CART_ID_HEADER, cart.id.as_str());
    }
    Ok(response)
}

/// The JSON body, with 400/413/415 from the platform; field rules are the domain's (422).
fn json_body(request: &Request) -> Result<serde_json::Value, Problem> {
    parse_json(
        request.header("content-type").and_then(|v| v.as_str()),
        request.body(),
        DEFAULT_JSON_LIMIT,
    )
}

async fn add_item(ctx: &Ctx, request: &Request) -> Result<Response, Problem> {
    let input = NewLine::from_json(&json_body(request)?).map_err(Problem::unprocessable)?;
    // Only products the catalog sells right now can be added.
    match catalog::offer(&input.product_id, &ctx.request_id).await {
        Ok(domain::Offer::Available { .. }) => {}
        Ok(domain::Offer::Unavailable) => {
            return Err(Problem::unprocessable(vec![FieldError::new(
                "product_id",
                "no such product is for sale",
            )]));
        }
        Err(e) => {
            ctx.log
                .error("catalog lookup failed", &[("error", e.0.into())]);
            return Err(Problem::bad_gateway("The catalog could not be reached"));
        }
    }
    let store = KvCarts::open()?;
    let (mut cart, key) = current_cart(ctx, request, &store)?;
    cart.add(input.product_id, input.quantity)?;
    touch(&mut cart);
    save(&store, key, &cart)?;
    respond_priced(ctx, cart, true).await
}

async fn set_quantity(
    ctx: &Ctx,
    request: &Request,
    product: &ProductId,
) -> Result<Response, Problem> {
    let NewQuantity(quantity) =
        NewQuantity::from_json(&json_body(request)?).map_err(Problem::unprocessable)?;
    let store = KvCarts::open()?;
    let (mut cart, key) = current_cart(ctx, request, &store)?;
    cart.set_quantity(product, quantity)?;
    touch(&mut cart);
    save(&store, key, &cart)?;
    respond_priced(ctx, cart, true).await
}

async fn remove_item(
    ctx: &Ctx,
    request: &Request,
    product: &ProductId,
) -> Result<Response, Problem> {
    let store = KvCarts::open()?;
    let (mut cart, key) = current_cart(ctx, request, &store)?;
    // Removing from a guest cart that is not stored changes nothing, so nothing is stored.
    let stored = key.is_some();
    if cart.quantity_of(product).is_some() {
        cart.remove(product);
        touch(&mut cart);
        save(&store, key, &cart)?;
    }
    respond_priced(ctx, cart, stored).await
}

/// Deletes expired guest carts. Idempotent; safe to run at any interval.
fn sweep(ctx: &Ctx) -> Result<Response, Problem> {
    let store = KvCarts::open()?;
    let now = now();
    let mut deleted = 0u64;
    for key in store.keys()?.iter().filter(|k| k.starts_with("guest:")) {
        match store.load(key)? {
            Some(cart) if !cart.is_expired(now) => {}
            _ => {
                store.delete(key)?;
                deleted += 1;
            }
        }
    }
    if deleted > 0 {
        ctx.log
            .info("expired guest carts deleted", &[("count", deleted.into())]);
    }
    Ok(ctx.json(200, &serde_json::json!({ "deleted": deleted })))
}
