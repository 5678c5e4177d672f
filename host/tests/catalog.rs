//! The catalog end to end: the real `spin.toml` (gateway, users, catalog, …) under `bazaar up`,
//! clients holding real Ed25519 access tokens that the gateway verifies.
//!
//! Tokens are minted here with `bazaar_platform::jwt` from the same fixed seed the shop is
//! started with (`--variable jwt_signing_keys=test=<seed>`), so the tests do not depend on the
//! users service's registration flow. The catalog's private routes (`/internal/...`) are reached
//! through a test-only public route added to the manifest (the gateway never forwards them).

mod common;

use bazaar_platform::auth::Role;
use common::{Runner, client, shop, signing_keys_variable, token};
use serde_json::{Value, json};

/// Exposes the catalog's private routes to the test process only.
const INTERNAL_ROUTE: &str = r#"
[[trigger.http]]
route = "/internal/..."
component = "catalog"
"#;

struct Shop {
    app: Runner,
    admin: String,
    vendor: String,
    other_vendor: String,
    customer: String,
}

async fn start(vars: &[&str]) -> Shop {
    let mut builder = shop(INTERNAL_ROUTE)
        .arg("--variable")
        .arg(&signing_keys_variable());
    for v in vars {
        builder = builder.arg("--variable").arg(v);
    }
    let shop = Shop {
        app: builder.start(),
        admin: token("usr_admin", Role::Admin),
        vendor: token("usr_vendor_a", Role::Vendor),
        other_vendor: token("usr_vendor_b", Role::Vendor),
        customer: token("usr_customer", Role::Customer),
    };
    // What `bazaar admin migrate` does; harmless when `bazaar up` already migrated.
    let (status, body) = shop
        .call("POST", "/internal/admin/migrate", None, None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 3, "{body}");
    let (status, again) = shop
        .call("POST", "/internal/admin/migrate", None, None)
        .await;
    assert_eq!(
        (status, again["applied"].clone()),
        (200, json!([])),
        "{again}"
    );
    shop
}

impl Shop {
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = client().request(method.parse().unwrap(), self.app.url(path));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(b) = body {
            request = request.body(b);
        }
        request.send().await.expect("request")
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let response = self
            .send(
                method,
                path,
                token,
                body.as_ref().map(|_| "application/json"),
                body.map(|b| b.to_string().into_bytes()),
                &[],
            )
            .await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create(&self, token: &str, body: Value) -> Value {
        let (status, product) = self
            .call("POST", "/api/v1/products", Some(token), Some(body))
            .await;
        assert_eq!(status, 201, "{product}");
        product
    }

    async fn category(&self, name: &str, parent: Option<&str>) -> String {
        let (status, c) = self
            .call(
                "POST",
                "/api/v1/categories",
                Some(&self.admin),
                Some(json!({"name": name, "parent_id": parent})),
            )
            .await;
        assert_eq!(status, 201, "{c}");
        c["id"].as_str().unwrap().to_owned()
    }

    /// Every id of a list query, following `next_cursor` with page size `limit`.
    async fn all_ids(&self, query: &str, limit: u32, token: Option<&str>) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/products?{query}&limit={limit}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = self.call("GET", &path, token, None).await;
            assert_eq!(status, 200, "{path}: {page}");
            ids.extend(ids_of(&page));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return ids,
            }
        }
    }
}

fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ids_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

fn product(sku: &str, name: &str, amount: i64) -> Value {
    json!({"sku": sku, "name": name, "description": format!("About {name}"),
           "price": {"amount": amount, "currency": "EUR"}})
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn products_crud_roles_validation_cache_discounts_and_soft_delete() {
    let shop = start(&[]).await;

    // Create as a vendor: the contract shape, owned by the caller.
    let mut body = product("TEE-1", "Organic T-shirt", 2000);
    body["attributes"] = json!({"size": "M", "organic": true});
    let created = shop.create(&shop.vendor, body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["vendor_id"], "usr_vendor_a");
    assert_eq!(created["price"], json!({"amount": 2000, "currency": "EUR"}));
    assert_eq!(created["list_price"], created["price"]);
    assert_eq!(created["attributes"], json!({"size": "M", "organic": true}));
    assert_eq!(
        (created["active"].clone(), created["images"].clone()),
        (json!(true), json!([]))
    );
    for key in [
        "sku",
        "name",
        "description",
        "category_id",
        "created_at",
        "updated_at",
    ] {
        assert!(created.get(key).is_some(), "{key} missing: {created}");
    }

    // Who may create.
    let p = product("TEE-2", "x", 1);
    assert_eq!(
        shop.call("POST", "/api/v1/products", None, Some(p.clone()))
            .await
            .0,
        401
    );
    assert_eq!(
        shop.call(
            "POST",
            "/api/v1/products",
            Some("not-a-token"),
            Some(p.clone())
        )
        .await
        .0,
        401
    );
    assert_eq!(
        shop.call(
            "POST",
            "/api/v1/products",
            Some(&shop.customer),
            Some(p.clone())
        )
        .await
        .0,
        403
    );
    let admin_made = shop.create(&shop.admin, p).await;
    assert_eq!(admin_made["vendor_id"], "usr_admin");

    // Duplicate SKU, malformed JSON, invalid fields, wrong media type.
    let (status, dup) = shop
        .call(
            "POST",
            "/api/v1/products",
            Some(&shop.vendor),
            Some(product("TEE-1", "Again", 5)),
        )
        .await;
    assert_eq!(status, 409, "{dup}");
    let malformed = shop
        .send(
            "POST",
            "/api/v1/products",
            Some(&shop.vendor),
            Some("application/json"),
            Some(b"{\"sku\": ".to_vec()),
            &[],
        )
        .await;
    assert_eq!(malformed.status().as_u16(), 400);
    assert!(
        malformed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json")
    );
    let (status, invalid) = shop
        .call(
            "POST",
            "/api/v1/products",
            Some(&shop.vendor),
            Some(json!({"sku": "bad sku", "name": "", "description": "d",
                        "price": {"amount": -5, "currency": "eur"}, "category_id": "cat_missing",
                        "colour": "red"})),
        )
        .await;
    assert_eq!(status, 422, "{invalid}");
    let mut f = fields(&invalid);
    f.sort();
    assert_eq!(
        f,
        ["colour", "name", "price.amount", "price.currency", "sku"],
        "{invalid}"
    );
    let (status, no_category) = shop
        .call(
            "POST",
            "/api/v1/products",
            Some(&shop.vendor),
            Some({
                let mut p = product("TEE-3", "x", 1);
                p["category_id"] = json!("cat_missing");
                p
            }),
        )
        .await;
    assert_eq!(
        (status, fields(&no_category)),
        (422, vec!["category_id".to_owned()])
    );
    let wrong_type = shop
        .send(
            "POST",
            "/api/v1/products",
            Some(&shop.vendor),
            Some("text/plain"),
            Some(b"{}".to_vec()),
            &[],
        )
        .await;
    assert_eq!(wrong_type.status().as_u16(), 415);

    // Read, then update, then read again: the cached record was invalidated.
    let path = format!("/api/v1/products/{id}");
    let (status, read) = shop.call("GET", &path, None, None).await;
    assert_eq!(
        (status, read["name"].clone()),
        (200, json!("Organic T-shirt"))
    );
    let (status, patched) = shop
        .call(
            "PATCH",
            &path,
            Some(&shop.vendor),
            Some(json!({"name": "Organic tee", "price": {"amount": 2400, "currency": "EUR"}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["list_price"]["amount"], 2400);
    let (_, read) = shop.call("GET", &path, None, None).await;
    assert_eq!(
        (read["name"].clone(), read["price"]["amount"].clone()),
        (json!("Organic tee"), json!(2400))
    );

    // Ownership: another vendor and a customer may not edit; admin may.
    let rename = Some(json!({"name": "Hijacked"}));
    assert_eq!(
        shop.call("PATCH", &path, Some(&shop.other_vendor), rename.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        shop.call("PATCH", &path, Some(&shop.customer), rename.clone())
            .await
            .0,
        403
    );
    assert_eq!(shop.call("PATCH", &path, None, rename.clone()).await.0, 401);
    assert_eq!(
        shop.call(
            "PUT",
            &format!("{path}/discount"),
            Some(&shop.other_vendor),
            Some(json!({"percent_off": 90}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        shop.call("DELETE", &path, Some(&shop.other_vendor), None)
            .await
            .0,
        403
    );
    let (status, by_admin) = shop
        .call(
            "PATCH",
            &path,
            Some(&shop.admin),
            Some(json!({"description": "Soft cotton"})),
        )
        .await;
    assert_eq!(
        (status, by_admin["description"].clone()),
        (200, json!("Soft cotton"))
    );
    let (status, bad_patch) = shop
        .call(
            "PATCH",
            &path,
            Some(&shop.vendor),
            Some(json!({"sku": "TEE-2"})),
        )
        .await;
    assert_eq!(status, 409, "SKU of the admin's product: {bad_patch}");
    let (status, bad_patch) = shop
        .call(
            "PATCH",
            &path,
            Some(&shop.vendor),
            Some(json!({"price": {"amount": 1.5, "currency": "EUR"}})),
        )
        .await;
    assert_eq!(
        (status, fields(&bad_patch)),
        (422, vec!["price.amount".to_owned()])
    );

    // Discounts change `price`, never `list_price`; a future-dated one changes nothing yet.
    let discount = format!("{path}/discount");
    let (status, discounted) = shop
        .call(
            "PUT",
            &discount,
            Some(&shop.vendor),
            Some(json!({"percent_off": 25})),
        )
        .await;
    assert_eq!(status, 200, "{discounted}");
    assert_eq!(
        discounted["price"],
        json!({"amount": 1800, "currency": "EUR"})
    );
    assert_eq!(
        discounted["list_price"],
        json!({"amount": 2400, "currency": "EUR"})
    );
    let (_, read) = shop.call("GET", &path, None, None).await;
    assert_eq!(
        read["price"]["amount"], 1800,
        "the cache must not keep the old price"
    );
    let (status, future) = shop
        .call(
            "PUT",
            &discount,
            Some(&shop.vendor),
            Some(json!({"amount_off": {"amount": 400, "currency": "EUR"},
                          "starts_at": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 200, "{future}");
    assert_eq!(
        (
            future["price"]["amount"].clone(),
            future["list_price"]["amount"].clone()
        ),
        (json!(2400), json!(2400))
    );
    assert_eq!(future["discount"]["active"], false);
    let (status, running) = shop
        .call(
            "PUT",
            &discount,
            Some(&shop.vendor),
            Some(json!({"amount_off": {"amount": 400, "currency": "EUR"},
                          "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(
        (status, running["price"]["amount"].clone()),
        (200, json!(2000)),
        "{running}"
    );
    for (bad, field) in [
        (
            json!({"percent_off": 10, "amount_off": {"amount": 1, "currency": "EUR"}}),
            "percent_off",
        ),
        (json!({"percent_off": 101}), "percent_off"),
        (
            json!({"amount_off": {"amount": 1, "currency": "USD"}}),
            "amount_off.currency",
        ),
        (
            json!({"amount_off": {"amount": 2401, "currency": "EUR"}}),
            "amount_off.amount",
        ),
        (
            json!({"percent_off": 5, "starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"}),
            "ends_at",
        ),
        (json!({"percent_off": 5, "starts_at": "soon"}), "starts_at"),
    ] {
        let (status, problem) = shop
            .call("PUT", &discount, Some(&shop.vendor), Some(bad.clone()))
            .await;
        assert_eq!(status, 422, "{bad}: {problem}");
        assert!(
            fields(&problem).contains(&field.to_owned()),
            "{bad}: {problem}"
        );
    }
    // A discount ending while the product sits in the read cache: the cache keeps the raw
    // record, so the price flips back at the boundary without any write.
    let ends_ms = unix_millis() + 2_000;
    let (status, ending) = shop
        .call(
            "PUT",
            &discount,
            Some(&shop.vendor),
            Some(json!({"percent_off": 50, "ends_at": rfc3339(ends_ms)})),
        )
        .await;
    assert_eq!(
        (status, ending["price"]["amount"].clone()),
        (200, json!(1200)),
        "{ending}"
    );
    let (_, cached) = shop.call("GET", &path, None, None).await;
    assert_eq!(cached["price"]["amount"], 1200);
    while unix_millis() <= ends_ms + 100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, after_end) = shop.call("GET", &path, None, None).await;
    assert_eq!(after_end["price"]["amount"], 2400, "{after_end}");
    assert_eq!(after_end["discount"]["active"], false);

    let (status, removed) = shop
        .call("DELETE", &discount, Some(&shop.vendor), None)
        .await;
    assert_eq!(
        (
            status,
            removed["price"]["amount"].clone(),
            removed["discount"].clone()
        ),
        (200, json!(2400), Value::Null)
    );

    // Soft delete: hidden from anonymous and customers, still there for the owner and admin.
    assert_eq!(
        shop.call("DELETE", &path, Some(&shop.vendor), None).await.0,
        204
    );
    assert_eq!(shop.call("GET", &path, None, None).await.0, 404);
    assert_eq!(
        shop.call("GET", &path, Some(&shop.customer), None).await.0,
        404
    );
    assert_eq!(
        shop.call("GET", &path, Some(&shop.other_vendor), None)
            .await
            .0,
        404
    );
    let (status, own) = shop.call("GET", &path, Some(&shop.vendor), None).await;
    assert_eq!((status, own["active"].clone()), (200, json!(false)));
    assert_eq!(
        shop.call("GET", &path, Some(&shop.admin), None).await.0,
        200
    );
    let public = shop.all_ids("sort=name", 100, None).await;
    assert!(!public.contains(&id), "{public:?}");
    assert!(
        shop.all_ids("sort=name", 100, Some(&shop.vendor))
            .await
            .contains(&id)
    );
    assert!(
        shop.all_ids("sort=name", 100, Some(&shop.admin))
            .await
            .contains(&id)
    );
    assert_eq!(
        shop.call("GET", "/api/v1/products/prd_nope", None, None)
            .await
            .0,
        404
    );
    // Reactivation by the owner.
    let (status, back) = shop
        .call(
            "PATCH",
            &path,
            Some(&shop.vendor),
            Some(json!({"active": true})),
        )
        .await;
    assert_eq!((status, back["active"].clone()), (200, json!(true)));
    assert_eq!(shop.call("GET", &path, None, None).await.0, 200);

    // Categories: admin only, parent must exist, siblings have distinct names.
    let root = shop.category("Clothing", None).await;
    assert_eq!(
        shop.call(
            "POST",
            "/api/v1/categories",
            Some(&shop.vendor),
            Some(json!({"name": "X"}))
        )
        .await
        .0,
        403
    );
    let (status, dup) = shop
        .call(
            "POST",
            "/api/v1/categories",
            Some(&shop.admin),
            Some(json!({"name": "clothing"})),
        )
        .await;
    assert_eq!(status, 409, "{dup}");
    let (status, orphan) = shop
        .call(
            "POST",
            "/api/v1/categories",
            Some(&shop.admin),
            Some(json!({"name": "Y", "parent_id": "cat_nope"})),
        )
        .await;
    assert_eq!(
        (status, fields(&orphan)),
        (422, vec!["parent_id".to_owned()])
    );
    let (status, cats) = shop.call("GET", "/api/v1/categories", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(cats["items"][0]["id"], json!(root));
    assert_eq!(cats["next_cursor"], Value::Null);
}

#[tokio::test]
async fn search_filters_sorts_and_pagination() {
    let shop = start(&[]).await;
    let clothing = shop.category("Clothing", None).await;
    let shirts = shop.category("Shirts", Some(&clothing)).await;
    let linen = shop.category("Linen", Some(&shirts)).await;
    let garden = shop.category("Garden", None).await;

    let mut made = std::collections::HashMap::new();
    for (sku, name, amount, category, description) in [
        ("SH-1", "Linen shirt", 5000, Some(&linen), "Breezy"),
        ("SH-2", "oxford shirt", 4000, Some(&shirts), "Classic"),
        ("JK-1", "Jacket", 9000, Some(&clothing), "Warm"),
        ("GD-1", "Hose", 2500, Some(&garden), "Now 50% longer"),
        ("GD-2", "Rake", 1500, Some(&garden), "500 tines"),
    ] {
        let mut p = product(sku, name, amount);
        p["description"] = json!(description);
        p["category_id"] = json!(category);
        let created = shop.create(&shop.vendor, p).await;
        made.insert(sku, created["id"].as_str().unwrap().to_owned());
    }
    let id = |sku: &str| made[sku].clone();
    // Jacket: 60% off → 3600, so it sorts and filters by its current price.
    let (status, _) = shop
        .call(
            "PUT",
            &format!("/api/v1/products/{}/discount", id("JK-1")),
            Some(&shop.vendor),
            Some(json!({"percent_off": 60})),
        )
        .await;
    assert_eq!(status, 200);

    let sorted = |v: Vec<String>| {
        let mut v = v;
        v.sort();
        v
    };
    // Text search: case-insensitive in name, description and SKU; `%` matches itself.
    assert_eq!(shop.all_ids("q=SHIRT", 10, None).await.len(), 2);
    assert_eq!(shop.all_ids("q=classic", 10, None).await, vec![id("SH-2")]);
    assert_eq!(shop.all_ids("q=gd-2", 10, None).await, vec![id("GD-2")]);
    assert_eq!(shop.all_ids("q=50%25", 10, None).await, vec![id("GD-1")]);
    assert!(
        shop.all_ids("q=nothing-like-this", 10, None)
            .await
            .is_empty()
    );
    // Category filters include the whole subtree.
    assert_eq!(
        sorted(
            shop.all_ids(&format!("category={clothing}"), 10, None)
                .await
        ),
        sorted(vec![id("SH-1"), id("SH-2"), id("JK-1")])
    );
    assert_eq!(
        sorted(shop.all_ids(&format!("category={shirts}"), 10, None).await),
        sorted(vec![id("SH-1"), id("SH-2")])
    );
    assert_eq!(
        shop.all_ids(&format!("category={linen}"), 10, None).await,
        vec![id("SH-1")]
    );
    assert!(
        shop.all_ids("category=cat_unknown", 10, None)
            .await
            .is_empty()
    );
    // Price filters apply to the current (discounted) price.
    assert_eq!(
        sorted(
            shop.all_ids("min_price=3000&max_price=4000", 10, None)
                .await
        ),
        sorted(vec![id("SH-2"), id("JK-1")])
    );
    assert_eq!(
        shop.all_ids("min_price=5000", 10, None).await,
        vec![id("SH-1")]
    );
    // Each sort, across pages of 2.
    assert_eq!(
        shop.all_ids("sort=price", 2, None).await,
        vec![id("GD-2"), id("GD-1"), id("JK-1"), id("SH-2"), id("SH-1")]
    );
    assert_eq!(
        shop.all_ids("sort=-price", 2, None).await,
        vec![id("SH-1"), id("SH-2"), id("JK-1"), id("GD-1"), id("GD-2")]
    );
    assert_eq!(
        shop.all_ids("sort=name", 2, None).await,
        vec![id("GD-1"), id("JK-1"), id("SH-1"), id("SH-2"), id("GD-2")]
    );
    assert_eq!(
        shop.all_ids("sort=-created_at", 2, None).await,
        vec![id("GD-2"), id("GD-1"), id("JK-1"), id("SH-2"), id("SH-1")]
    );
    let (_, first) = shop
        .call("GET", "/api/v1/products?sort=price&limit=2", None, None)
        .await;
    assert_eq!(first["items"][1]["price"]["amount"], 2500);

    // Invalid parameters, and a cursor from another sort.
    for bad in [
        "sort=cheapest",
        "limit=0",
        "limit=101",
        "min_price=-1",
        "max_price=x",
        "min_price=10&max_price=5",
        "cursor=garbage",
    ] {
        let (status, p) = shop
            .call("GET", &format!("/api/v1/products?{bad}"), None, None)
            .await;
        assert_eq!(status, 422, "{bad}: {p}");
    }
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (status, p) = shop
        .call(
            "GET",
            &format!("/api/v1/products?sort=name&cursor={cursor}"),
            None,
            None,
        )
        .await;
    assert_eq!((status, fields(&p)), (422, vec!["cursor".to_owned()]));

    // Inserts between pages neither duplicate nor skip the items already listed.
    for sort in ["-created_at", "price", "name"] {
        let (_, page1) = shop
            .call(
                "GET",
                &format!("/api/v1/products?sort={sort}&limit=2"),
                None,
                None,
            )
            .await;
        let mut seen = ids_of(&page1);
        let mut cursor = page1["next_cursor"].as_str().map(str::to_owned);
        let mut inserted = Vec::new();
        while let Some(c) = cursor {
            let sku = format!("NEW-{}-{}", sort.trim_start_matches('-'), inserted.len());
            // Cheap, early-named and newest: each lands before the cursor in its sort.
            let p = shop
                .create(&shop.vendor, product(&sku, &format!("Aaa {sku}"), 1))
                .await;
            inserted.push(p["id"].as_str().unwrap().to_owned());
            let (status, page) = shop
                .call(
                    "GET",
                    &format!("/api/v1/products?sort={sort}&limit=2&cursor={c}"),
                    None,
                    None,
                )
                .await;
            assert_eq!(status, 200, "{page}");
            seen.extend(ids_of(&page));
            cursor = page["next_cursor"].as_str().map(str::to_owned);
        }
        let mut dedup = seen.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), seen.len(), "{sort}: duplicates in {seen:?}");
        let before: Vec<String> = shop
            .all_ids(&format!("sort={sort}"), 100, None)
            .await
            .into_iter()
            .filter(|i| !inserted.contains(i))
            .collect();
        let listed: Vec<String> = seen.into_iter().filter(|i| !inserted.contains(i)).collect();
        assert_eq!(
            listed, before,
            "{sort}: every pre-existing product exactly once, in order"
        );
    }
}

/// A minimal valid-looking PNG: the signature, an IHDR chunk header and some payload.
fn png(payload: &[u8]) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

#[tokio::test]
async fn images_are_sniffed_limited_content_addressed_and_cacheable() {
    let shop = start(&["max_image_bytes=4096"]).await;
    let p = shop
        .create(&shop.vendor, product("IMG-1", "Lamp", 3000))
        .await;
    let images = format!("/api/v1/products/{}/images", p["id"].as_str().unwrap());
    let bytes = png(b"pixels");

    let upload = shop
        .send(
            "POST",
            &images,
            Some(&shop.vendor),
            Some("image/png"),
            Some(bytes.clone()),
            &[],
        )
        .await;
    assert_eq!(upload.status().as_u16(), 201);
    let body: Value = upload.json().await.unwrap();
    let url = body["url"].as_str().unwrap().to_owned();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    assert_eq!(url, format!("/images/{digest}.png"));
    let (_, read) = shop
        .call(
            "GET",
            &format!("/api/v1/products/{}", p["id"].as_str().unwrap()),
            None,
            None,
        )
        .await;
    assert_eq!(read["images"], json!([url]));

    let served = shop.send("GET", &url, None, None, None, &[]).await;
    assert_eq!(served.status().as_u16(), 200);
    let h = served.headers().clone();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["etag"].to_str().unwrap(), format!("\"{digest}\""));
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(served.bytes().await.unwrap().to_vec(), bytes);
    let etag = format!("\"{digest}\"");
    let revalidated = shop
        .send("GET", &url, None, None, None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(revalidated.status().as_u16(), 304);
    assert_eq!(revalidated.headers()["etag"].to_str().unwrap(), etag);
    let changed = shop
        .send(
            "GET",
            &url,
            None,
            None,
            None,
            &[("if-none-match", "\"other\"")],
        )
        .await;
    assert_eq!(changed.status().as_u16(), 200);
    let unknown = format!("/images/{}.png", "0".repeat(64));
    assert_eq!(
        shop.send("GET", &unknown, None, None, None, &[])
            .await
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        shop.send("GET", "/images/not-a-key", None, None, None, &[])
            .await
            .status()
            .as_u16(),
        404
    );

    // The same bytes again: already attached, nothing new.
    let again = shop
        .send(
            "POST",
            &images,
            Some(&shop.vendor),
            Some("image/png"),
            Some(bytes.clone()),
            &[],
        )
        .await;
    assert_eq!(again.status().as_u16(), 200);
    // The declared type is not trusted: JPEG bytes declared as PNG are stored as JPEG.
    let jpeg = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0rest".to_vec();
    let sniffed = shop
        .send(
            "POST",
            &images,
            Some(&shop.vendor),
            Some("image/png"),
            Some(jpeg),
            &[],
        )
        .await;
    assert_eq!(sniffed.status().as_u16(), 201);
    let sniffed: Value = sniffed.json().await.unwrap();
    assert!(
        sniffed["url"].as_str().unwrap().ends_with(".jpg"),
        "{sniffed}"
    );

    // Rejections: not an image behind an image type (422), a non-image type (415), too big
    // (413), not the owner (403), anonymous (401).
    let html = b"<html><script>alert(1)</script></html>".to_vec();
    let (status, problem) = {
        let r = shop
            .send(
                "POST",
                &images,
                Some(&shop.vendor),
                Some("image/png"),
                Some(html.clone()),
                &[],
            )
            .await;
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 422, "{problem}");
    let r = shop
        .send(
            "POST",
            &images,
            Some(&shop.vendor),
            Some("text/html"),
            Some(html),
            &[],
        )
        .await;
    assert_eq!(r.status().as_u16(), 415);
    let r = shop
        .send(
            "POST",
            &images,
            Some(&shop.vendor),
            Some("image/png"),
            Some(png(&[0u8; 5000])),
            &[],
        )
        .await;
    assert_eq!(r.status().as_u16(), 413);
    let r = shop
        .send(
            "POST",
            &images,
            Some(&shop.other_vendor),
            Some("image/png"),
            Some(png(b"x")),
            &[],
        )
        .await;
    assert_eq!(r.status().as_u16(), 403);
    let r = shop
        .send(
            "POST",
            &images,
            None,
            Some("image/png"),
            Some(png(b"x")),
            &[],
        )
        .await;
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn product_events_in_the_outbox_and_the_outbox_job() {
    let shop = start(&[]).await;
    // Subscribe first (pub/sub keeps nothing for late subscribers).
    let redis = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = redis
        .get_async_pubsub()
        .await
        .expect("Redis must be reachable at 127.0.0.1:6379");
    pubsub.subscribe("products").await.unwrap();
    let p = shop
        .create(&shop.vendor, product("EVT-1", "Kettle", 4000))
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/products/{id}");
    shop.call(
        "PATCH",
        &path,
        Some(&shop.vendor),
        Some(json!({"price": {"amount": 3500, "currency": "EUR"}})),
    )
    .await;
    shop.call(
        "PUT",
        &format!("{path}/discount"),
        Some(&shop.vendor),
        Some(json!({"percent_off": 10})),
    )
    .await;

    // Published right after commit (or by the job): the created event arrives on `products`.
    {
        use futures::StreamExt;
        let mut messages = pubsub.on_message();
        let created = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Some(message) = messages.next().await {
                let event: Value =
                    serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
                if event["aggregate_id"] == json!(id) && event["type"] == "product.created" {
                    return event;
                }
            }
            panic!("subscription ended");
        })
        .await
        .expect("product.created was not published to Redis");
        assert_eq!(created["source"], "catalog");
        assert!(created["position"].as_i64().unwrap() > 0);
        assert!(created["id"].as_str().unwrap().starts_with("evt_"));
    }

    let (status, events) = shop
        .call("GET", "/internal/events?after=0&limit=100", None, None)
        .await;
    assert_eq!(status, 200, "{events}");
    let mine: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["aggregate_id"] == json!(id))
        .collect();
    let kinds: Vec<(&str, i64)> = mine
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["version"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("product.created", 1),
            ("product.updated", 2),
            ("product.price_changed", 2),
            ("product.price_changed", 3)
        ],
        "{events}"
    );
    assert_eq!(mine[0]["source"], "catalog");
    assert_eq!(mine[0]["data"]["sku"], "EVT-1");
    assert_eq!(mine[2]["data"]["previous_list_price"]["amount"], 4000);
    assert_eq!(mine[3]["data"]["price"]["amount"], 3150);
    let positions: Vec<i64> = mine
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    // Catch-up resumes after a position.
    let (_, rest) = shop
        .call(
            "GET",
            &format!("/internal/events?after={}", positions[1]),
            None,
            None,
        )
        .await;
    assert_eq!(rest["items"][0]["position"].as_i64(), Some(positions[2]));
    assert_eq!(
        shop.call("GET", "/internal/events?after=-1", None, None)
            .await
            .0,
        422
    );

    // The outbox job is idempotent: run twice, nothing is left unsent and nothing fails.
    for _ in 0..2 {
        let (status, job) = shop.call("POST", "/internal/jobs/outbox", None, None).await;
        assert!(status == 200 || status == 503, "{status} {job}");
    }
}

#[tokio::test]
async fn the_same_catalog_runs_on_postgresql() {
    let admin_url = "postgres://postgres@127.0.0.1:5432/test";
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {admin_url}: {e}"));
    tokio::spawn(connection);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let db = format!("catalog_it_{}_{nanos}", std::process::id());
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();

    let shop = start(&[&format!(
        "catalog_database=postgres://postgres@127.0.0.1:5432/{db}"
    )])
    .await;
    let category = shop.category("Kitchen", None).await;
    let mut body = product("PG-1", "Pan", 3999);
    body["category_id"] = json!(category);
    let created = shop.create(&shop.vendor, body).await;
    shop.create(&shop.vendor, product("PG-2", "pot", 1999))
        .await;
    let id = created["id"].as_str().unwrap();
    let (status, read) = shop
        .call("GET", &format!("/api/v1/products/{id}"), None, None)
        .await;
    assert_eq!((status, read["sku"].clone()), (200, json!("PG-1")));
    let (status, _) = shop
        .call(
            "PUT",
            &format!("/api/v1/products/{id}/discount"),
            Some(&shop.vendor),
            Some(json!({"percent_off": 60})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(shop.all_ids("q=PAN", 10, None).await, vec![id.to_owned()]);
    assert_eq!(
        shop.all_ids(&format!("category={category}"), 10, None)
            .await,
        vec![id.to_owned()]
    );
    assert_eq!(
        shop.all_ids("sort=price", 1, None)
            .await
            .first()
            .map(String::as_str),
        Some(id)
    );
    assert_eq!(shop.all_ids("sort=name", 1, None).await.len(), 2);
    let (status, dup) = shop
        .call(
            "POST",
            "/api/v1/products",
            Some(&shop.vendor),
            Some(product("PG-1", "Again", 1)),
        )
        .await;
    assert_eq!(status, 409, "{dup}");
    // The rows really are in PostgreSQL.
    let (pg, connection) = tokio_postgres::connect(
        &format!("postgres://postgres@127.0.0.1:5432/{db}"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let count: i64 = pg
        .query_one("SELECT COUNT(*) FROM products", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
    let events: i64 = pg
        .query_one("SELECT COUNT(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 3);
    drop(pg);
    drop(shop);
    let _ = client
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await;
}

/// Only the catalog, on a public route, with a Redis address nothing listens on: writes still
/// succeed, the events wait in the outbox, and the job answers 503 without losing them.
#[tokio::test]
async fn redis_outage_keeps_events_in_the_outbox() {
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "catalog-redis-outage"
[[trigger.http]]
route = "/..."
component = "catalog"
[component.catalog]
source = "{wasm}"
sqlite_databases = ["catalog"]
key_value_stores = ["catalog_cache", "images"]
allowed_outbound_hosts = ["redis://127.0.0.1:1"]
[component.catalog.variables]
database = "sqlite:catalog"
redis_address = "redis://127.0.0.1:1"
cdn_base_url = "https://cdn.example.com"
max_image_bytes = "1000"
"#,
        wasm = common::build_wasm("catalog").display()
    );
    let runtime_config =
        std::fs::read_to_string(common::workspace_root().join("runtime-config.toml")).unwrap();
    let app = common::runner(&manifest)
        .file("runtime-config.toml", &runtime_config)
        .arg("--runtime-config-file")
        .arg("runtime-config.toml")
        .start();
    let http = client();
    let post = |path: &str| http.post(app.url(path));

    // Readiness follows the schema: behind before the migration, ready after it.
    let ready = http.get(app.url("/health/ready")).send().await.unwrap();
    let before = ready.status().as_u16();
    let migrate = post("/internal/admin/migrate").send().await.unwrap();
    assert_eq!(migrate.status().as_u16(), 200);
    let applied: Value = migrate.json().await.unwrap();
    if applied["applied"] != json!([]) {
        // Nobody migrated before us, so readiness must have said 503.
        assert_eq!(before, 503);
    }
    let ready = http.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["schema"]["version"], 3, "{ready}");

    let created = post("/api/v1/products")
        .header("x-bazaar-user-id", "usr_v")
        .header("x-bazaar-role", "vendor")
        .json(&product("OUT-1", "Torch", 1500))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    // Image URLs come from cdn_base_url.
    let image = post(&format!("/api/v1/products/{id}/images"))
        .header("x-bazaar-user-id", "usr_v")
        .header("x-bazaar-role", "vendor")
        .header("content-type", "image/webp")
        .body(b"RIFF\x24\0\0\0WEBPVP8 data".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(image.status().as_u16(), 201);
    let image: Value = image.json().await.unwrap();
    assert!(
        image["url"]
            .as_str()
            .unwrap()
            .starts_with("https://cdn.example.com/images/")
    );
    assert!(image["url"].as_str().unwrap().ends_with(".webp"));

    for _ in 0..2 {
        let job = post("/internal/jobs/outbox").send().await.unwrap();
        assert_eq!(job.status().as_u16(), 503);
    }
    let db = rusqlite::Connection::open(app.dir.path().join(".spin/catalog.db")).unwrap();
    let (total, unsent): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), COUNT(*) - COUNT(published_at) FROM outbox WHERE aggregate_id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (total, unsent),
        (2, 2),
        "created + image event, both still unsent"
    );
    let events: Value = http
        .get(app.url("/internal/events?after=0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["items"].as_array().unwrap().len(), 2, "{events}");
}
