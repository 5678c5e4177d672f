//! SQL storage of categories and products (one portable dialect through
//! `bazaar_platform::db`, so the same code runs on SQLite and PostgreSQL).

use bazaar_platform::db::{Database, DbError, Dialect, Migration, Row, Value};

use crate::domain::category::Category;
use crate::domain::discount::{Discount, Reduction};
use crate::domain::image::ImageKey;
use crate::domain::listing::{ListQuery, Sort, SortKey};
use crate::domain::money::{Currency, Money};
use crate::domain::product::{Attributes, Description, Name, ProductRecord, Sku};

/// The catalog's schema, in order. Applied only by `POST /internal/admin/migrate`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "catalog",
        sqlite: "CREATE TABLE categories (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  parent_id TEXT REFERENCES categories (id),
  created_at BIGINT NOT NULL
);
CREATE INDEX categories_created ON categories (created_at, id);
CREATE TABLE products (
  id TEXT PRIMARY KEY,
  sku TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  name_sort TEXT NOT NULL,
  description TEXT NOT NULL,
  search_text TEXT NOT NULL,
  category_id TEXT REFERENCES categories (id),
  list_amount BIGINT NOT NULL,
  currency TEXT NOT NULL,
  discount_percent BIGINT,
  discount_amount BIGINT,
  discount_starts_at BIGINT,
  discount_ends_at BIGINT,
  attributes TEXT NOT NULL,
  images TEXT NOT NULL,
  active BOOLEAN NOT NULL,
  vendor_id TEXT NOT NULL,
  version BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX products_created ON products (created_at, id);
CREATE INDEX products_name ON products (name_sort, id);
CREATE INDEX products_category ON products (category_id);
CREATE INDEX products_vendor ON products (vendor_id);",
        // `COLLATE "C"`: byte order, the order SQLite's BINARY collation gives, so `name` sort
        // and its cursors behave the same on both engines whatever the server's locale.
        postgres: "CREATE TABLE categories (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  parent_id TEXT REFERENCES categories (id),
  created_at BIGINT NOT NULL
);
CREATE INDEX categories_created ON categories (created_at, id);
CREATE TABLE products (
  id TEXT COLLATE \"C\" PRIMARY KEY,
  sku TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  name_sort TEXT COLLATE \"C\" NOT NULL,
  description TEXT NOT NULL,
  search_text TEXT NOT NULL,
  category_id TEXT REFERENCES categories (id),
  list_amount BIGINT NOT NULL,
  currency TEXT NOT NULL,
  discount_percent BIGINT,
  discount_amount BIGINT,
  discount_starts_at BIGINT,
  discount_ends_at BIGINT,
  attributes TEXT NOT NULL,
  images TEXT NOT NULL,
  active BOOLEAN NOT NULL,
  vendor_id TEXT NOT NULL,
  version BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX products_created ON products (created_at, id);
CREATE INDEX products_name ON products (name_sort, id);
CREATE INDEX products_category ON products (category_id);
CREATE INDEX products_vendor ON products (vendor_id);",
    },
    bazaar_platform::outbox::migration(2),
    // Catch-up positions in commit order (see the outbox module docs).
    bazaar_platform::outbox::migration_v2(3),
];

/// The schema version this code needs.
pub fn latest_version() -> u32 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The price a customer pays at the instant bound to the two `?` (the same instant twice),
/// the SQL twin of `domain::discount::current_price`.
const CURRENT_PRICE_SQL: &str = "CASE WHEN (discount_percent IS NOT NULL OR discount_amount IS NOT NULL) \
  AND (discount_starts_at IS NULL OR discount_starts_at <= ?) \
  AND (discount_ends_at IS NULL OR discount_ends_at > ?) \
THEN CASE WHEN discount_percent IS NOT NULL THEN list_amount - (list_amount * discount_percent) / 100 \
  WHEN discount_amount >= list_amount THEN 0 \
  ELSE list_amount - discount_amount END \
ELSE list_amount END";

const PRODUCT_COLUMNS: &str = "id, sku, name, description, category_id, list_amount, currency, \
  discount_percent, discount_amount, discount_starts_at, discount_ends_at, attributes, images, \
  active, vendor_id, version, created_at, updated_at";

fn decode(field: &str, e: impl std::fmt::Display) -> DbError {
    DbError::Decode(format!("{field}: {e}"))
}

fn product_from_row(row: &Row) -> Result<ProductRecord, DbError> {
    let currency = Currency::parse(&row.text("currency")?).map_err(|e| decode("currency", e))?;
    let list_price =
        Money::new(row.i64("list_amount")?, currency).map_err(|e| decode("list_amount", e))?;
    let reduction = match (
        row.opt_i64("discount_percent")?,
        row.opt_i64("discount_amount")?,
    ) {
        (Some(p), _) => Some(Reduction::Percent(
            u8::try_from(p).map_err(|e| decode("discount_percent", e))?,
        )),
        (None, Some(a)) => Some(Reduction::Amount(a)),
        (None, None) => None,
    };
    let discount = reduction
        .map(|r| {
            Discount::new(
                r,
                row.opt_i64("discount_starts_at")?,
                row.opt_i64("discount_ends_at")?,
            )
            .map_err(|e| decode("discount", e))
        })
        .transpose()?;
    let attributes: Attributes =
        serde_json::from_str(&row.text("attributes")?).map_err(|e| decode("attributes", e))?;
    let images: Vec<ImageKey> =
        serde_json::from_str(&row.text("images")?).map_err(|e| decode("images", e))?;
    Ok(ProductRecord {
        id: row.text("id")?,
        sku: Sku::parse(&row.text("sku")?).map_err(|e| decode("sku", e))?,
        name: Name::parse(&row.text("name")?).map_err(|e| decode("name", e))?,
        description: Description::parse(&row.text("description")?)
            .map_err(|e| decode("description", e))?,
        category_id: row.opt_text("category_id")?,
        list_price,
        discount,
        attributes,
        images,
        active: row.bool("active")?,
        vendor_id: row.text("vendor_id")?,
        version: row.i64("version")?,
        created_at: row.i64("created_at")?,
        updated_at: row.i64("updated_at")?,
    })
}

/// The column values of `p`, in [`PRODUCT_COLUMNS`] order plus `name_sort` and `search_text`.
fn product_values(p: &ProductRecord) -> Vec<Value> {
    let (percent, amount) = match p.discount.map(|d| d.reduction()) {
        Some(Reduction::Percent(x)) => (Some(i64::from(x)), None),
        Some(Reduction::Amount(a)) => (None, Some(a)),
        None => (None, None),
    };
    vec![
        p.id.clone().into(),
        p.sku.as_str().into(),
        p.name.as_str().into(),
        p.description.as_str().into(),
        p.category_id.clone().into(),
        p.list_price.amount().into(),
        p.list_price.currency().as_str().into(),
        percent.into(),
        amount.into(),
        p.discount.and_then(|d| d.starts_at()).into(),
        p.discount.and_then(|d| d.ends_at()).into(),
        serde_json::to_string(&p.attributes)
            .unwrap_or_else(|_| "{}".into())
            .into(),
        serde_json::to_string(&p.images)
            .unwrap_or_else(|_| "[]".into())
            .into(),
        p.active.into(),
        p.vendor_id.clone().into(),
        p.version.into(),
        p.created_at.into(),
        p.updated_at.into(),
        p.name_sort_key().into(),
        p.search_text().into(),
    ]
}

pub fn insert_product(db: &Database, p: &ProductRecord) -> Result<(), DbError> {
    db.execute(
        &format!(
            "INSERT INTO products ({PRODUCT_COLUMNS}, name_sort, search_text) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        &product_values(p),
    )?;
    Ok(())
}

/// Replaces the stored row of `p.id` (every column; the id stays).
pub fn update_product(db: &Database, p: &ProductRecord) -> Result<(), DbError> {
    let mut values = product_values(p);
    let id = values.remove(0);
    values.push(id);
    db.execute(
        "UPDATE products SET sku = ?, name = ?, description = ?, category_id = ?, list_amount = ?, \
         currency = ?, discount_percent = ?, discount_amount = ?, discount_starts_at = ?, \
         discount_ends_at = ?, attributes = ?, images = ?, active = ?, vendor_id = ?, version = ?, \
         created_at = ?, updated_at = ?, name_sort = ?, search_text = ? WHERE id = ?",
        &values,
    )?;
    Ok(())
}

pub fn get_product(db: &Database, id: &str) -> Result<Option<ProductRecord>, DbError> {
    db.query_opt(
        &format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ?"),
        &[id.into()],
    )?
    .as_ref()
    .map(product_from_row)
    .transpose()
}

/// The row of `id`, locked until the end of the surrounding transaction.
pub fn lock_product(db: &Database, id: &str) -> Result<Option<ProductRecord>, DbError> {
    db.query_opt(
        &format!(
            "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ?{}",
            db.for_update()
        ),
        &[id.into()],
    )?
    .as_ref()
    .map(product_from_row)
    .transpose()
}

/// The newest `created_at` of any product.
pub fn latest_created_at(db: &Database) -> Result<Option<i64>, DbError> {
    match db.query_opt("SELECT MAX(created_at) AS latest FROM products", &[])? {
        Some(row) => row.opt_i64("latest"),
        None => Ok(None),
    }
}

pub fn sku_taken(db: &Database, sku: &str, except_id: &str) -> Result<bool, DbError> {
    Ok(db
        .query_opt(
            "SELECT id FROM products WHERE sku = ? AND id <> ?",
            &[sku.into(), except_id.into()],
        )?
        .is_some())
}

/// Who is listing: decides which inactive products are visible.
pub enum Viewer<'a> {
    /// Anonymous callers and customers: active products only.
    Public,
    /// A vendor: active products and their own inactive ones.
    Vendor(&'a str),
    /// Everything.
    Admin,
}

/// Up to `query.limit + 1` products (the extra one proves a next page) matching `query`,
/// restricted to `category_ids` when given (an empty list matches nothing).
pub fn list_products(
    db: &Database,
    query: &ListQuery,
    category_ids: Option<&[String]>,
    viewer: &Viewer<'_>,
) -> Result<Vec<ProductRecord>, DbError> {
    let mut sql = format!(
        "SELECT {PRODUCT_COLUMNS}, current_price FROM (SELECT {PRODUCT_COLUMNS}, search_text, name_sort, \
         {CURRENT_PRICE_SQL} AS current_price FROM products) AS p WHERE 1 = 1"
    );
    let mut params: Vec<Value> = vec![query.priced_at.into(), query.priced_at.into()];
    match viewer {
        Viewer::Public => {
            sql.push_str(" AND active = ?");
            params.push(true.into());
        }
        Viewer::Vendor(id) => {
            sql.push_str(" AND (active = ? OR vendor_id = ?)");
            params.push(true.into());
            params.push((*id).into());
        }
        Viewer::Admin => {}
    }
    if let Some(q) = &query.q {
        sql.push_str(" AND search_text LIKE ? ESCAPE '\\'");
        params.push(q.like_pattern().into());
    }
    if let Some(ids) = category_ids {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        sql.push_str(" AND category_id IN (");
        sql.push_str(&vec!["?"; ids.len()].join(", "));
        sql.push(')');
        params.extend(ids.iter().map(Value::from));
    }
    if let Some(min) = query.min_price {
        sql.push_str(" AND current_price >= ?");
        params.push(min.into());
    }
    if let Some(max) = query.max_price {
        sql.push_str(" AND current_price <= ?");
        params.push(max.into());
    }
    let column = match query.sort {
        Sort::PriceAsc | Sort::PriceDesc => "current_price",
        Sort::NameAsc => "name_sort",
        Sort::CreatedDesc => "created_at",
    };
    let (cmp, dir) = if query.sort.descending() {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((key, id)) = &query.after {
        sql.push_str(&format!(
            " AND ({column} {cmp} ? OR ({column} = ? AND id {cmp} ?))"
        ));
        let key: Value = match key {
            SortKey::Int(n) => (*n).into(),
            SortKey::Text(s) => s.clone().into(),
        };
        params.push(key.clone());
        params.push(key);
        params.push(id.clone().into());
    }
    sql.push_str(&format!(" ORDER BY {column} {dir}, id {dir} LIMIT ?"));
    params.push(i64::from(query.limit + 1).into());
    db.query(&sql, &params)?
        .iter()
        .map(product_from_row)
        .collect()
}

fn category_from_row(row: &Row) -> Result<Category, DbError> {
    Ok(Category {
        id: row.text("id")?,
        name: Name::parse(&row.text("name")?).map_err(|e| decode("name", e))?,
        parent_id: row.opt_text("parent_id")?,
        created_at: row.i64("created_at")?,
    })
}

pub fn insert_category(db: &Database, c: &Category) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO categories (id, name, parent_id, created_at) VALUES (?, ?, ?, ?)",
        &[
            c.id.clone().into(),
            c.name.as_str().into(),
            c.parent_id.clone().into(),
            c.created_at.into(),
        ],
    )?;
    Ok(())
}

pub fn get_category(db: &Database, id: &str) -> Result<Option<Category>, DbError> {
    db.query_opt(
        "SELECT id, name, parent_id, created_at FROM categories WHERE id = ?",
        &[id.into()],
    )?
    .as_ref()
    .map(category_from_row)
    .transpose()
}

/// Whether `parent_id` already has a child called `name` (compared case-insensitively).
pub fn sibling_named(db: &Database, parent_id: Option<&str>, name: &str) -> Result<bool, DbError> {
    let rows = match parent_id {
        Some(p) => db.query(
            "SELECT name FROM categories WHERE parent_id = ?",
            &[p.into()],
        )?,
        None => db.query("SELECT name FROM categories WHERE parent_id IS NULL", &[])?,
    };
    let wanted = name.to_lowercase();
    for row in rows {
        if row.text("name")?.to_lowercase() == wanted {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `(id, parent_id)` of every category, to compute subtrees.
pub fn category_edges(db: &Database) -> Result<Vec<(String, Option<String>)>, DbError> {
    db.query("SELECT id, parent_id FROM categories", &[])?
        .iter()
        .map(|r| Ok((r.text("id")?, r.opt_text("parent_id")?)))
        .collect()
}

/// Categories oldest first (id as tie-breaker), after the `(created_at, id)` position.
pub fn list_categories(
    db: &Database,
    after: Option<&(i64, String)>,
    limit: u32,
) -> Result<Vec<Category>, DbError> {
    let limit = i64::from(limit + 1);
    let rows = match after {
        Some((t, id)) => db.query(
            "SELECT id, name, parent_id, created_at FROM categories \
             WHERE created_at > ? OR (created_at = ? AND id > ?) ORDER BY created_at, id LIMIT ?",
            &[(*t).into(), (*t).into(), id.clone().into(), limit.into()],
        )?,
        None => db.query(
            "SELECT id, name, parent_id, created_at FROM categories ORDER BY created_at, id LIMIT ?",
            &[limit.into()],
        )?,
    };
    rows.iter().map(category_from_row).collect()
}

/// Which engine is behind `db` (for docs and readiness output).
pub fn engine(db: &Database) -> &'static str {
    match db.dialect() {
        Dialect::Sqlite => "sqlite",
        Dialect::Postgres => "postgres",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::discount::current_price;

    /// `CURRENT_PRICE_SQL` and `domain::discount::current_price` must agree everywhere, or
    /// price filters and sorts would disagree with the prices shown.
    #[test]
    fn sql_and_rust_prices_agree() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let sql = format!(
            "SELECT {CURRENT_PRICE_SQL} FROM (SELECT ?3 AS list_amount, ?4 AS discount_percent, \
             ?5 AS discount_amount, ?6 AS discount_starts_at, ?7 AS discount_ends_at)"
        )
        // Bind the instant by number, as both `?` of the expression take the same value.
        .replacen("<= ?", "<= ?1", 1)
        .replacen("> ?", "> ?2", 1);
        let eur = Currency::parse("EUR").unwrap();
        let now = 1_000_000;
        let reductions = [
            None,
            Some(Reduction::Percent(1)),
            Some(Reduction::Percent(15)),
            Some(Reduction::Percent(33)),
            Some(Reduction::Percent(100)),
            Some(Reduction::Amount(1)),
            Some(Reduction::Amount(999)),
            Some(Reduction::Amount(5000)),
        ];
        let windows = [
            (None, None),
            (Some(now), None),
            (Some(now + 1), None),
            (None, Some(now)),
            (None, Some(now + 1)),
            (Some(now - 10), Some(now + 10)),
        ];
        let mut checked = 0;
        for list in [0, 1, 99, 999, 1000, 4999, 123_456_789, MAX_LIST] {
            let list_price = Money::new(list, eur).unwrap();
            for reduction in reductions {
                for (starts, ends) in windows {
                    let discount = reduction.map(|r| Discount::new(r, starts, ends).unwrap());
                    let (percent, amount) = match reduction {
                        Some(Reduction::Percent(p)) => (Some(i64::from(p)), None),
                        Some(Reduction::Amount(a)) => (None, Some(a)),
                        None => (None, None),
                    };
                    let from_sql: i64 = db
                        .query_row(
                            &sql,
                            rusqlite::params![now, now, list, percent, amount, starts, ends],
                            |r| r.get(0),
                        )
                        .unwrap();
                    let from_rust = current_price(&list_price, discount.as_ref(), now).amount();
                    assert_eq!(
                        from_sql, from_rust,
                        "list {list}, {reduction:?}, {starts:?}..{ends:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 8 * 8 * 6);
    }

    const MAX_LIST: i64 = crate::domain::money::MAX_AMOUNT;
}
