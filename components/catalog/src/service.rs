//! HTTP handlers: thin glue between requests, the domain and storage. Every failure is a
//! `Problem`; nothing a client sends reaches a panic.

use bazaar_platform::auth::{Identity, Role};
use bazaar_platform::body::{DEFAULT_JSON_LIMIT, parse_json};
use bazaar_platform::db::{Database, DbError};
use bazaar_platform::outbox::{self, NewEvent, PublishError};
use bazaar_platform::page::{Page, decode_cursor, parse_limit};
use bazaar_platform::time::now_millis;
use bazaar_platform::{Ctx, FieldError, Problem, REQUEST_ID_HEADER, ids};
use serde_json::{Value, json};
use spin_sdk::http::{Request, Response};

use crate::config::Config;
use crate::domain::category::{Category, NewCategory, subtree};
use crate::domain::discount::{Discount, current_price};
use crate::domain::image::{ImageKey, ImageType, if_none_match, image_url};
use crate::domain::listing::ListQuery;
use crate::domain::product::{MAX_IMAGES, NewProduct, ProductPatch, ProductRecord, parse_id};
use crate::kv::{ImageStore, ProductCache};
use crate::routes::{Endpoint, NoRoute, route};
use crate::store::{self, Viewer};

pub const COMPONENT: &str = "catalog";
/// The Redis channel product events are published on.
pub const CHANNEL: &str = "products";
/// Events published per call of `publish_pending` (after a write, and per job run).
const PUBLISH_BATCH: u32 = 100;
/// Most events one run of the outbox job publishes.
const JOB_MAX_EVENTS: usize = 1000;
/// Immutable, content-addressed objects may be cached for a year.
const IMAGE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// Handles one request.
pub fn handle(request: Request) -> Response {
    let ctx = Ctx::new(COMPONENT, &request);
    let method = request.method().to_string();
    let path = request.path().to_owned();
    let endpoint = match route(&method, &path) {
        Ok(e) => e,
        Err(NoRoute::NotFound) => {
            return ctx.problem(
                Problem::not_found(format!("No catalog route for {path}")).with_instance(path),
            );
        }
        Err(NoRoute::MethodNotAllowed(allowed)) => {
            let mut response = ctx
                .problem(Problem::method_not_allowed(&method, allowed).with_instance(path.clone()));
            response.set_header("allow", allowed.join(", "));
            return response;
        }
    };
    let result = Config::load().and_then(|config| {
        Handler {
            ctx: &ctx,
            config: &config,
            request: &request,
        }
        .dispatch(endpoint)
    });
    ctx.respond(result.map_err(|p| p.with_instance(path)))
}

struct Handler<'a> {
    ctx: &'a Ctx,
    config: &'a Config,
    request: &'a Request,
}

fn open_db(config: &Config) -> Result<Database, Problem> {
    Database::open(&config.database).map_err(|e| {
        bazaar_platform::log_json(
            bazaar_platform::Level::Error,
            COMPONENT,
            None,
            "database unavailable",
            &[("error", e.to_string().into())],
        );
        Problem::service_unavailable("The catalog database is unavailable")
    })
}

fn unprocessable(errors: Vec<FieldError>) -> Problem {
    Problem::unprocessable(errors)
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("No product {id}"))
}

/// Whether `identity` may see `p` at all (inactive products: admin and owner only).
fn visible(identity: Option<&Identity>, p: &ProductRecord) -> bool {
    p.active || identity.is_some_and(|i| i.is_admin() || i.user_id == p.vendor_id)
}

fn sku_conflict(sku: &str) -> Problem {
    Problem::conflict(format!("A product with SKU {sku} already exists"))
}

impl Handler<'_> {
    fn dispatch(&self, endpoint: Endpoint) -> Result<Response, Problem> {
        match endpoint {
            Endpoint::Live => Ok(self.ctx.json(200, &json!({"status": "live"}))),
            Endpoint::Ready => self.ready(),
            Endpoint::Migrate => self.migrate(),
            Endpoint::OutboxJob => self.outbox_job(),
            Endpoint::Events => self.events(),
            Endpoint::ListProducts => self.list_products(),
            Endpoint::CreateProduct => self.create_product(),
            Endpoint::GetProduct(id) => self.get_product(&id),
            Endpoint::UpdateProduct(id) => self.update_product(&id),
            Endpoint::DeleteProduct(id) => self.delete_product(&id),
            Endpoint::PutDiscount(id) => self.put_discount(&id),
            Endpoint::DeleteDiscount(id) => self.delete_discount(&id),
            Endpoint::UploadImage(id) => self.upload_image(&id),
            Endpoint::ListCategories => self.list_categories(),
            Endpoint::CreateCategory => self.create_category(),
            Endpoint::GetCategory(id) => self.get_category(&id),
            Endpoint::GetImage { key, head } => self.get_image(&key, head),
        }
    }

    fn content_type(&self) -> Option<&str> {
        self.request.header("content-type").and_then(|v| v.as_str())
    }

    fn json_body(&self) -> Result<Value, Problem> {
        parse_json(self.content_type(), self.request.body(), DEFAULT_JSON_LIMIT)
    }

    fn url(&self, key: &ImageKey) -> String {
        image_url(&self.config.cdn_base_url, key)
    }

    fn view(&self, p: &ProductRecord, now: i64) -> Value {
        p.view(now, |k| self.url(k))
    }

    // ---- health, admin, jobs, events ------------------------------------------------------

    fn ready(&self) -> Result<Response, Problem> {
        let expected = store::latest_version();
        let (database, version) = match Database::open(&self.config.database)
            .and_then(|db| db.schema_version().map(|v| (store::engine(&db), v)))
        {
            Ok((engine, v)) => (json!({"status": "ok", "engine": engine}), Some(v)),
            Err(e) => {
                self.ctx
                    .log
                    .warn("readiness: database", &[("error", e.to_string().into())]);
                (json!({"status": "unavailable"}), None)
            }
        };
        let schema_ok = version.is_some_and(|v| v >= expected);
        let kv = |label: &str| match spin_sdk::key_value::Store::open(label) {
            Ok(_) => json!({"status": "ok"}),
            Err(e) => json!({"status": "unavailable", "error": format!("{e:?}")}),
        };
        let checks = json!({
            "database": database,
            "schema": {"status": if schema_ok { "ok" } else { "behind" }, "version": version, "expected": expected},
            "cache": kv(crate::kv::CACHE_STORE),
            "images": kv(crate::kv::IMAGES_STORE),
        });
        let all_ok = ["database", "schema", "cache", "images"]
            .iter()
            .all(|k| checks[k]["status"] == "ok");
        if all_ok {
            Ok(self
                .ctx
                .json(200, &json!({"status": "ready", "checks": checks})))
        } else {
            Err(Problem::service_unavailable(
                "The catalog is not ready (run `bazaar admin migrate` if the schema is behind)",
            )
            .with_extension("checks", checks))
        }
    }

    fn migrate(&self) -> Result<Response, Problem> {
        let db = open_db(self.config)?;
        let applied = db.migrate(store::MIGRATIONS).map_err(|e| {
            self.ctx
                .log
                .error("migration failed", &[("error", e.to_string().into())]);
            Problem::internal("Applying the catalog migrations failed; see the catalog log")
        })?;
        let version = db.schema_version()?;
        self.ctx.log.info(
            "migrations applied",
            &[("applied", json!(applied)), ("version", version.into())],
        );
        Ok(self
            .ctx
            .json(200, &json!({"applied": applied, "version": version})))
    }

    /// A database whose schema is current, else 503: requests fail fast and clearly while a
    /// deployment waits for `bazaar admin migrate`.
    fn migrated_db(&self) -> Result<Database, Problem> {
        let db = open_db(self.config)?;
        if db.schema_version()? < store::latest_version() {
            return Err(Problem::service_unavailable(
                "The catalog schema is behind this code; run `bazaar admin migrate`",
            ));
        }
        Ok(db)
    }

    fn outbox_job(&self) -> Result<Response, Problem> {
        let db = self.migrated_db()?;
        let mut published = 0;
        // Drain a backlog (after an outage) in a few batches per run, bounded so one run stays
        // short; the rest goes in the next run.
        let outcome = loop {
            match outbox::publish_pending(&db, &self.config.redis_address, PUBLISH_BATCH) {
                Ok(n) => {
                    published += n;
                    if n < PUBLISH_BATCH as usize || published >= JOB_MAX_EVENTS {
                        break Ok(published);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        match outcome {
            Ok(published) => {
                if published > 0 {
                    self.ctx
                        .log
                        .info("outbox events published", &[("count", published.into())]);
                }
                Ok(self.ctx.json(200, &json!({"published": published})))
            }
            Err(PublishError::Redis(m)) => {
                self.ctx
                    .log
                    .warn("outbox publish deferred", &[("error", m.into())]);
                Err(Problem::service_unavailable(
                    "Redis is unavailable; unsent events stay in the outbox for the next run",
                ))
            }
            Err(PublishError::Db(e)) => Err(e.into()),
        }
    }

    fn events(&self) -> Result<Response, Problem> {
        let after = match self.ctx.query("after") {
            None | Some("") => 0,
            Some(t) => t.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                unprocessable(vec![FieldError::new(
                    "after",
                    "must be a non-negative integer position",
                )])
            })?,
        };
        let limit = parse_limit(self.ctx.query("limit"))?;
        let db = self.migrated_db()?;
        let items = outbox::events_after(&db, after, limit)?;
        let next_after = items.last().map_or(after, |e| e.position);
        Ok(self
            .ctx
            .json(200, &json!({"items": items, "next_after": next_after})))
    }

    /// After a committed write: drop the cached record and try to publish right away. Whatever
    /// Redis does not take now, the outbox job sends later.
    fn after_write(&self, db: &Database, product_id: &str) {
        ProductCache::open(&self.ctx.log).invalidate(product_id);
        match outbox::publish_pending(db, &self.config.redis_address, PUBLISH_BATCH) {
            Ok(_) => {}
            Err(e) => self.ctx.log.warn(
                "event publish deferred to the outbox job",
                &[("error", e.to_string().into())],
            ),
        }
    }

    fn append_event(
        &self,
        db: &Database,
        event_type: &str,
        p: &ProductRecord,
        data: Value,
    ) -> Result<(), DbError> {
        outbox::append(
            db,
            NewEvent {
                channel: CHANNEL,
                event_type,
                source: COMPONENT,
                aggregate_id: &p.id,
                version: p.version,
                request_id: Some(&self.ctx.request_id),
                data,
            },
        )
        .map(|_| ())
    }

    // ---- products ---------------------------------------------------------------------------

    fn list_products(&self) -> Result<Response, Problem> {
        let now = now_millis();
        let query = ListQuery::parse(|k| self.ctx.query(k), now)?;
        let db = self.migrated_db()?;
        let viewer = match &self.ctx.identity {
            Some(i) if i.is_admin() => Viewer::Admin,
            Some(i) if i.role == Role::Vendor => Viewer::Vendor(&i.user_id),
            _ => Viewer::Public,
        };
        let categories = match &query.category {
            Some(root) => Some(subtree(&store::category_edges(&db)?, root)),
            None => None,
        };
        let rows = store::list_products(&db, &query, categories.as_deref(), &viewer)?;
        let limit = query.limit as usize;
        let next_cursor = if rows.len() > limit {
            Some(query.cursor_after(&rows[limit - 1]))
        } else {
            None
        };
        let items: Vec<Value> = rows.iter().take(limit).map(|p| self.view(p, now)).collect();
        Ok(self.ctx.json(200, &Page { items, next_cursor }))
    }

    fn create_product(&self) -> Result<Response, Problem> {
        let identity = self.ctx.identity()?;
        identity.require_role(&[Role::Admin, Role::Vendor])?;
        let new = NewProduct::from_json(&self.json_body()?).map_err(unprocessable)?;
        let db = self.migrated_db()?;
        let now = now_millis();
        let mut record = ProductRecord {
            id: format!("prd_{}", ids::new_id()),
            sku: new.sku,
            name: new.name,
            description: new.description,
            category_id: new.category_id,
            list_price: new.price,
            discount: None,
            attributes: new.attributes,
            images: Vec::new(),
            active: new.active,
            vendor_id: identity.user_id.clone(),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        db.transaction(|db| {
            // Strictly increasing creation times make "newest first" the insertion order
            // (two products created in one millisecond would otherwise order by random id).
            if let Some(latest) = store::latest_created_at(db)?
                && latest >= record.created_at
            {
                record.created_at = latest + 1;
                record.updated_at = record.created_at;
            }
            self.check_category(db, record.category_id.as_deref())?;
            if store::sku_taken(db, record.sku.as_str(), &record.id)? {
                return Err(sku_conflict(record.sku.as_str()));
            }
            store::insert_product(db, &record).map_err(|e| match e {
                DbError::UniqueViolation(_) => sku_conflict(record.sku.as_str()),
                other => other.into(),
            })?;
            self.append_event(db, "product.created", &record, self.view(&record, now))?;
            Ok::<_, Problem>(())
        })?;
        self.after_write(&db, &record.id);
        self.ctx.log.info(
            "product created",
            &[
                ("product_id", record.id.clone().into()),
                ("vendor_id", record.vendor_id.clone().into()),
            ],
        );
        let mut response = self.ctx.json(201, &self.view(&record, now));
        response.set_header("location", format!("/api/v1/products/{}", record.id));
        Ok(response)
    }

    fn check_category(&self, db: &Database, category_id: Option<&str>) -> Result<(), Problem> {
        if let Some(c) = category_id
            && store::get_category(db, c)?.is_none()
        {
            return Err(unprocessable(vec![FieldError::new(
                "category_id",
                format!("no category {c}"),
            )]));
        }
        Ok(())
    }

    fn get_product(&self, id: &str) -> Result<Response, Problem> {
        let id = parse_id(id).map_err(|_| not_found(id))?;
        let cache = ProductCache::open(&self.ctx.log);
        let record = match cache.get(&id) {
            Some(r) => r,
            None => {
                let db = self.migrated_db()?;
                let r = store::get_product(&db, &id)?.ok_or_else(|| not_found(&id))?;
                cache.put(&r);
                r
            }
        };
        if !visible(self.ctx.identity.as_ref(), &record) {
            return Err(not_found(&id));
        }
        Ok(self.ctx.json(200, &self.view(&record, now_millis())))
    }

    /// Runs `change` on the locked product `id` inside one transaction, after the visibility
    /// (404) and ownership (403) checks; `change` returns the new record and its events, or
    /// `None` when nothing changes. Commits, invalidates the cache and publishes.
    fn modify(
        &self,
        id: &str,
        change: impl FnOnce(
            &Database,
            &ProductRecord,
            i64,
        )
            -> Result<Option<(ProductRecord, Vec<(&'static str, Value)>)>, Problem>,
    ) -> Result<(ProductRecord, i64), Problem> {
        let identity = self.ctx.identity()?;
        identity.require_role(&[Role::Admin, Role::Vendor])?;
        let id = parse_id(id).map_err(|_| not_found(id))?;
        let db = self.migrated_db()?;
        let now = now_millis();
        let (record, changed) = db.transaction(|db| {
            let current = store::lock_product(db, &id)?.ok_or_else(|| not_found(&id))?;
            if !visible(Some(identity), &current) {
                return Err(not_found(&id));
            }
            identity.require_self_or_admin(&current.vendor_id)?;
            let Some((mut next, events)) = change(db, &current, now)? else {
                return Ok((current, false));
            };
            next.version = current.version + 1;
            next.updated_at = now.max(current.updated_at);
            store::update_product(db, &next).map_err(|e| match e {
                DbError::UniqueViolation(_) => sku_conflict(next.sku.as_str()),
                other => other.into(),
            })?;
            for (event_type, data) in events {
                let data = if data.is_null() {
                    self.view(&next, now)
                } else {
                    data
                };
                self.append_event(db, event_type, &next, data)?;
            }
            Ok::<_, Problem>((next, true))
        })?;
        if changed {
            self.after_write(&db, &record.id);
        }
        Ok((record, now))
    }

    fn update_product(&self, id: &str) -> Result<Response, Problem> {
        self.ctx
            .identity()?
            .require_role(&[Role::Admin, Role::Vendor])?;
        let patch = ProductPatch::from_json(&self.json_body()?).map_err(unprocessable)?;
        let (record, now) = self.modify(id, |db, current, now| {
            let next = patch.apply(current).map_err(unprocessable)?;
            if next == *current {
                return Ok(None);
            }
            if next.category_id != current.category_id {
                self.check_category(db, next.category_id.as_deref())?;
            }
            if next.sku != current.sku && store::sku_taken(db, next.sku.as_str(), &next.id)? {
                return Err(sku_conflict(next.sku.as_str()));
            }
            let mut events = vec![("product.updated", Value::Null)];
            if next.list_price != current.list_price {
                events.push(("product.price_changed", price_change(current, &next, now)));
            }
            Ok(Some((next, events)))
        })?;
        Ok(self.ctx.json(200, &self.view(&record, now)))
    }

    fn delete_product(&self, id: &str) -> Result<Response, Problem> {
        self.modify(id, |_, current, _| {
            if !current.active {
                return Ok(None);
            }
            let mut next = current.clone();
            next.active = false;
            Ok(Some((next, vec![("product.updated", Value::Null)])))
        })?;
        Ok(self.ctx.empty(204))
    }

    fn put_discount(&self, id: &str) -> Result<Response, Problem> {
        self.ctx
            .identity()?
            .require_role(&[Role::Admin, Role::Vendor])?;
        let body = self.json_body()?;
        let (record, now) = self.modify(id, |_, current, now| {
            let discount =
                Discount::from_json(&body, &current.list_price, now).map_err(unprocessable)?;
            if current.discount == Some(discount) {
                return Ok(None);
            }
            let mut next = current.clone();
            next.discount = Some(discount);
            Ok(Some((
                next.clone(),
                vec![("product.price_changed", price_change(current, &next, now))],
            )))
        })?;
        Ok(self.ctx.json(200, &self.view(&record, now)))
    }

    fn delete_discount(&self, id: &str) -> Result<Response, Problem> {
        let (record, now) = self.modify(id, |_, current, now| {
            if current.discount.is_none() {
                return Ok(None);
            }
            let mut next = current.clone();
            next.discount = None;
            Ok(Some((
                next.clone(),
                vec![("product.price_changed", price_change(current, &next, now))],
            )))
        })?;
        Ok(self.ctx.json(200, &self.view(&record, now)))
    }

    fn upload_image(&self, id: &str) -> Result<Response, Problem> {
        let identity = self.ctx.identity()?;
        identity.require_role(&[Role::Admin, Role::Vendor])?;
        let bytes = self.request.body();
        if bytes.len() > self.config.max_image_bytes {
            return Err(Problem::payload_too_large(self.config.max_image_bytes));
        }
        if ImageType::from_declared(self.content_type()).is_none() {
            return Err(Problem::unsupported_media_type(
                "Upload the raw image with Content-Type image/png, image/jpeg or image/webp",
            ));
        }
        // The declared type only gates the request; what is stored and served is what the
        // bytes are.
        let kind = ImageType::sniff(bytes).ok_or_else(|| {
            unprocessable(vec![FieldError::new(
                "body",
                "is not a PNG, JPEG or WebP image",
            )])
        })?;
        let key = ImageKey::of(bytes, kind);
        let images = ImageStore::open().map_err(|e| {
            self.ctx
                .log
                .error("image store unavailable", &[("error", e.into())]);
            Problem::service_unavailable("The image store is unavailable")
        })?;
        // Check the product and ownership before storing anything.
        {
            let db = self.migrated_db()?;
            let current = store::get_product(&db, id)?.ok_or_else(|| not_found(id))?;
            if !visible(Some(identity), &current) {
                return Err(not_found(id));
            }
            identity.require_self_or_admin(&current.vendor_id)?;
        }
        images.put(&key, bytes).map_err(|e| {
            self.ctx
                .log
                .error("image write failed", &[("error", e.into())]);
            Problem::service_unavailable("The image could not be stored")
        })?;
        let mut added = false;
        self.modify(id, |_, current, _| {
            if current.images.contains(&key) {
                return Ok(None);
            }
            if current.images.len() >= MAX_IMAGES {
                return Err(Problem::conflict(format!(
                    "A product has at most {MAX_IMAGES} images"
                )));
            }
            let mut next = current.clone();
            next.images.push(key.clone());
            added = true;
            Ok(Some((next, vec![("product.updated", Value::Null)])))
        })?;
        let url = self.url(&key);
        let mut response = self.ctx.json(
            if added { 201 } else { 200 },
            &json!({"url": url, "key": key.to_string(), "content_type": kind.content_type(), "bytes": bytes.len()}),
        );
        response.set_header("location", url);
        Ok(response)
    }

    fn get_image(&self, key: &str, head: bool) -> Result<Response, Problem> {
        let missing = || Problem::not_found("No such image");
        let key = ImageKey::parse(key).ok_or_else(missing)?;
        let images = ImageStore::open().map_err(|e| {
            self.ctx
                .log
                .error("image store unavailable", &[("error", e.into())]);
            Problem::service_unavailable("The image store is unavailable")
        })?;
        let etag = key.etag();
        let bytes = images
            .get(&key)
            .map_err(|e| {
                self.ctx
                    .log
                    .error("image read failed", &[("error", e.into())]);
                Problem::service_unavailable("The image store is unavailable")
            })?
            .ok_or_else(missing)?;
        let not_modified = self
            .request
            .header("if-none-match")
            .and_then(|v| v.as_str())
            .is_some_and(|h| if_none_match(h, &etag));
        let mut builder = Response::builder();
        builder
            .header("etag", etag.as_str())
            .header("cache-control", IMAGE_CACHE_CONTROL)
            .header("x-content-type-options", "nosniff")
            .header(REQUEST_ID_HEADER, self.ctx.request_id.as_str());
        if not_modified {
            return Ok(builder.status(304).body(Vec::new()).build());
        }
        builder
            .status(200)
            .header("content-type", key.kind().content_type())
            .header("content-length", bytes.len().to_string());
        Ok(builder.body(if head { Vec::new() } else { bytes }).build())
    }

    // ---- categories -------------------------------------------------------------------------

    fn list_categories(&self) -> Result<Response, Problem> {
        let limit = parse_limit(self.ctx.query("limit"))?;
        let after: Option<(i64, String)> = match self.ctx.query("cursor").filter(|c| !c.is_empty())
        {
            Some(c) => Some(decode_cursor(c)?),
            None => None,
        };
        let db = self.migrated_db()?;
        let rows = store::list_categories(&db, after.as_ref(), limit)?;
        let page = Page::from_overfetch(rows, limit, |c| (c.created_at, c.id.clone()));
        Ok(self.ctx.json(
            200,
            &json!({
                "items": page.items.iter().map(Category::view).collect::<Vec<_>>(),
                "next_cursor": page.next_cursor,
            }),
        ))
    }

    fn create_category(&self) -> Result<Response, Problem> {
        self.ctx.identity()?.require_role(&[Role::Admin])?;
        let new = NewCategory::from_json(&self.json_body()?).map_err(unprocessable)?;
        let db = self.migrated_db()?;
        let category = Category {
            id: format!("cat_{}", ids::new_id()),
            name: new.name,
            parent_id: new.parent_id,
            created_at: now_millis(),
        };
        db.transaction(|db| {
            if let Some(parent) = &category.parent_id
                && store::get_category(db, parent)?.is_none()
            {
                return Err(unprocessable(vec![FieldError::new(
                    "parent_id",
                    format!("no category {parent}"),
                )]));
            }
            if store::sibling_named(db, category.parent_id.as_deref(), category.name.as_str())? {
                return Err(Problem::conflict(format!(
                    "A category named {} already exists at this level",
                    category.name.as_str()
                )));
            }
            store::insert_category(db, &category)?;
            Ok::<_, Problem>(())
        })?;
        let mut response = self.ctx.json(201, &category.view());
        response.set_header("location", format!("/api/v1/categories/{}", category.id));
        Ok(response)
    }

    fn get_category(&self, id: &str) -> Result<Response, Problem> {
        let missing = || Problem::not_found(format!("No category {id}"));
        let id = parse_id(id).map_err(|_| missing())?;
        let db = self.migrated_db()?;
        let category = store::get_category(&db, &id)?.ok_or_else(missing)?;
        Ok(self.ctx.json(200, &category.view()))
    }
}

/// The payload of `product.price_changed`.
fn price_change(before: &ProductRecord, after: &ProductRecord, now: i64) -> Value {
    json!({
        "product_id": after.id,
        "list_price": after.list_price,
        "previous_list_price": before.list_price,
        "price": current_price(&after.list_price, after.discount.as_ref(), now),
        "previous_price": current_price(&before.list_price, before.discount.as_ref(), now),
        "discount": after.discount.map(|d| d.to_json(&after.list_price, now)),
    })
}
