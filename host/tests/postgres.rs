//! Integration tests for `spin:postgres/postgres@4.0.0`/`@3.0.0`: the spin-probe fixture, run
//! by the real `bazaar up`, talks to the PostgreSQL server at 127.0.0.1:5432 (override with
//! `BAZAAR_TEST_POSTGRES_URL`). They fail, never skip, without it. Each test uses a schema of
//! its own, created and dropped from the test itself.

mod common;

use common::{Runner, get_json, runner};
use serde_json::{Value, json};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn test_url() -> String {
    std::env::var("BAZAAR_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Two components running the probe: one allowed to reach the test server, one not.
const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "pg"

[[trigger.http]]
route = "/allowed/..."
component = "allowed"
[[trigger.http]]
route = "/denied/..."
component = "denied"

[component.allowed]
source = "{probe}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
[component.denied]
source = "{probe}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5433", "http://127.0.0.1:5432"]
"#;

/// Runs the probe's `pg` mode through `component` and returns its JSON answer.
async fn pg(app: &Runner, component: &str, op: &str, sql: &str, params: Value, api: u8) -> Value {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("probe", "pg")
        .append_pair("address", &test_url())
        .append_pair("op", op)
        .append_pair("sql", sql)
        .append_pair("params", &params.to_string())
        .append_pair("api", &api.to_string())
        .finish();
    let (status, body) = get_json(&app.url(&format!("/{component}?{query}"))).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A schema for one test, made and dropped over a direct connection (not through the guest).
struct Schema {
    name: String,
    client: tokio_postgres::Client,
}

impl Schema {
    async fn create() -> Self {
        let (client, connection) = tokio_postgres::connect(&test_url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {}: {e}", test_url()));
        tokio::spawn(connection);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("bazaar_pg_it_{}_{nanos}", std::process::id());
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        Self { name, client }
    }

    async fn drop_schema(self) {
        self.client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn allowed_and_denied_hosts_end_to_end() {
    let app = runner(APP).start();

    let ok = pg(
        &app,
        "allowed",
        "query",
        "SELECT 1::int4 AS one",
        json!([]),
        4,
    )
    .await;
    assert_eq!(
        ok,
        json!({ "columns": [{ "name": "one", "type": "int32" }], "rows": [[{ "int32": 1 }]] })
    );

    // Neither another port nor an HTTP permission for the same host:port lets it through.
    let denied = pg(&app, "denied", "query", "SELECT 1", json!([]), 4).await;
    assert_eq!(
        denied,
        json!({ "error": "connection-failed: address postgres://127.0.0.1:5432 is not permitted (add it to the component's allowed_outbound_hosts)" })
    );
    let denied = pg(&app, "denied", "query", "SELECT 1", json!([]), 3).await;
    assert!(
        denied["error"].as_str().is_some_and(|e| e
            .starts_with("connection-failed: address postgres://127.0.0.1:5432 is not permitted")),
        "{denied}"
    );
}

#[tokio::test]
async fn a_few_types_round_trip_end_to_end() {
    let schema = Schema::create().await;
    let app = runner(APP).start();
    let table = format!("{}.items", schema.name);
    let outcome = async {
        let created = pg(
            &app,
            "allowed",
            "execute",
            &format!(
                "CREATE TABLE {table} (id int8 PRIMARY KEY, name text, ok bool, price numeric, \
                 born date, tag uuid, doc jsonb, raw bytea, labels text[], note text)"
            ),
            json!([]),
            4,
        )
        .await;
        assert_eq!(created, json!({ "rows_affected": 0 }));

        let inserted = pg(
            &app,
            "allowed",
            "execute",
            &format!("INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
            json!([
                { "int32": 7 },
                { "str": "grüße" },
                { "boolean": true },
                { "decimal": "19.990" },
                { "date": [2024, 2, 29] },
                { "uuid": "67e55044-10b1-426f-9247-bb680e5fe0c8" },
                { "jsonb": { "tags": ["a", "b"], "n": 1 } },
                { "binary": "00ff10" },
                { "array-str": ["x", null] },
                null
            ]),
            4,
        )
        .await;
        assert_eq!(inserted, json!({ "rows_affected": 1 }));

        let rows = pg(
            &app,
            "allowed",
            "query",
            &format!("SELECT * FROM {table} WHERE id = $1"),
            json!([{ "int64": 7 }]),
            4,
        )
        .await;
        let types: Vec<&str> = rows["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "int64",
                "str",
                "boolean",
                "decimal",
                "date",
                "uuid",
                "jsonb",
                "binary",
                "array-str",
                "str"
            ]
        );
        assert_eq!(
            rows["rows"],
            json!([[
                { "int64": 7 },
                { "str": "grüße" },
                { "boolean": true },
                { "decimal": "19.990" },
                { "date": [2024, 2, 29] },
                { "uuid": "67e55044-10b1-426f-9247-bb680e5fe0c8" },
                { "jsonb": { "n": 1, "tags": ["a", "b"] } },
                { "binary": "00ff10" },
                { "array-str": ["x", null] },
                null
            ]])
        );

        // The guest's write is really in the database.
        let row = schema
            .client
            .query_one(&format!("SELECT name, price::text FROM {table}"), &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "grüße");
        assert_eq!(row.get::<_, String>(1), "19.990");

        // 3.0.0 reads the same row; types it lacks come back as `unsupported`.
        let v3 = pg(
            &app,
            "allowed",
            "query",
            &format!("SELECT id, name, ok, tag FROM {table} WHERE name = $1"),
            json!([{ "str": "grüße" }]),
            3,
        )
        .await;
        assert_eq!(
            v3,
            json!({
                "columns": [
                    { "name": "id", "type": "int64" },
                    { "name": "name", "type": "str" },
                    { "name": "ok", "type": "boolean" },
                    { "name": "tag", "type": "other" }
                ],
                "rows": [[{ "int64": 7 }, { "str": "grüße" }, { "boolean": true }, "unsupported"]]
            })
        );

        // Server errors carry their SQLSTATE; mismatched parameters are caught before sending.
        let missing = pg(
            &app,
            "allowed",
            "query",
            &format!("SELECT * FROM {}.nope", schema.name),
            json!([]),
            4,
        )
        .await;
        assert_eq!(missing["sqlstate"], "42P01", "{missing}");
        let duplicate = pg(
            &app,
            "allowed",
            "execute",
            &format!("INSERT INTO {table} (id) VALUES ($1)"),
            json!([{ "int64": 7 }]),
            4,
        )
        .await;
        assert_eq!(duplicate["sqlstate"], "23505", "{duplicate}");
        let bad = pg(
            &app,
            "allowed",
            "query",
            &format!("SELECT * FROM {table} WHERE id = $1"),
            json!([{ "str": "7" }]),
            4,
        )
        .await;
        assert_eq!(
            bad,
            json!({ "error": "bad-parameter: parameter $1: a str value cannot be used as int8" })
        );
    };
    // Drop the schema whatever happened, then report.
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    schema.drop_schema().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A guest that leaves a transaction open (it crashed, timed out or forgot COMMIT) must not
/// hand that transaction to the next instance that gets the pooled connection: the next
/// statement would silently join it and never commit.
#[tokio::test]
async fn a_transaction_left_open_does_not_leak_into_the_next_instance() {
    let schema = Schema::create().await;
    let table = format!("{}.leak", schema.name);
    schema
        .client
        .batch_execute(&format!("CREATE TABLE {table} (x BIGINT)"))
        .await
        .unwrap();
    let app = runner(APP).start();

    let begun = pg(&app, "allowed", "execute", "BEGIN", json!([]), 4).await;
    assert!(begun.get("error").is_none(), "{begun}");
    // The instance is gone; its connection went back to the pool mid-transaction.
    for n in 1..=3 {
        let inserted = pg(
            &app,
            "allowed",
            "execute",
            &format!("INSERT INTO {table} VALUES ($1)"),
            json!([{ "int64": n }]),
            4,
        )
        .await;
        assert!(inserted.get("error").is_none(), "{inserted}");
    }

    // Seen from outside the app: every insert was committed on its own.
    let count: i64 = schema
        .client
        .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3, "inserts were swallowed by a leaked transaction");
    drop(app);
    schema.drop_schema().await;
}
