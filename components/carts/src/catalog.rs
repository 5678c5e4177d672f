//! Prices come from the catalog at read time, over Spin service chaining
//! (`http://catalog.spin.internal`), never from the cart record: a price change or a discount
//! shows up in every cart at once.

use bazaar_platform::REQUEST_ID_HEADER;
use futures::future::join_all;
use serde::Deserialize;
use spin_sdk::http::{Request, Response};

use crate::domain::{Money, Offer, ProductId};

const CATALOG: &str = "http://catalog.spin.internal";

#[derive(Deserialize)]
struct Product {
    name: String,
    price: Money,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

/// Why a lookup could not be answered (distinct from "the product does not exist").
#[derive(Debug)]
pub struct CatalogUnavailable(pub String);

/// The current offer for `product`.
pub async fn offer(product: &ProductId, request_id: &str) -> Result<Offer, CatalogUnavailable> {
    let request = Request::get(format!("{CATALOG}/api/v1/products/{}", product.as_str()))
        .header(REQUEST_ID_HEADER, request_id)
        .build();
    let response: Response = spin_sdk::http::send(request)
        .await
        .map_err(|e| CatalogUnavailable(format!("{e:?}")))?;
    match *response.status() {
        200 => match serde_json::from_slice::<Product>(response.body()) {
            Ok(p) if p.active => Ok(Offer::Available {
                name: p.name,
                price: p.price,
            }),
            Ok(_) => Ok(Offer::Unavailable),
            Err(e) => Err(CatalogUnavailable(format!("unexpected product JSON: {e}"))),
        },
        404 | 410 => Ok(Offer::Unavailable),
        status => Err(CatalogUnavailable(format!("catalog answered {status}"))),
    }
}

/// Offers for every product, looked up concurrently.
pub async fn offers(
    products: &[ProductId],
    request_id: &str,
) -> Result<Vec<Offer>, CatalogUnavailable> {
    join_all(products.iter().map(|p| offer(p, request_id)))
        .await
        .into_iter()
        .collect()
}
