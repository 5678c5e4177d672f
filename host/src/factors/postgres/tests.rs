//! Tests against the real PostgreSQL server (`BAZAAR_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). They fail, not skip, when it is unreachable.
//! Each test works in a schema of its own, dropped at the end even if the test fails.

use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;

use super::v4::{DbDataType as T, DbValue as V, ParameterValue as P, RangeBoundKind as K};
use super::*;
use crate::factors::postgres::v4::HostConnection as _;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn test_url() -> String {
    std::env::var("BAZAAR_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn allowed(entries: &[&str]) -> Arc<AllowedHosts> {
    let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
    Arc::new(AllowedHosts::parse(&entries, &[]).unwrap())
}

/// An instance allowed to reach the test server only.
fn instance(factor: &PostgresFactor) -> PostgresInstance {
    factor.instance_state(allowed(&["postgres://127.0.0.1:5432"]))
}

/// A second (borrowed) handle to the same table entry, as a guest method call would pass it.
fn borrow(handle: &Resource<ConnectionHandle>) -> Resource<ConnectionHandle> {
    Resource::new_borrow(handle.rep())
}

async fn open(inst: &mut PostgresInstance) -> Resource<ConnectionHandle> {
    inst.open(test_url())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {}: {e:?}", test_url()))
}

async fn query(
    inst: &mut PostgresInstance,
    conn: &Resource<ConnectionHandle>,
    sql: &str,
    params: Vec<P>,
) -> Result<v4::RowSet, v4::Error> {
    inst.query(borrow(conn), sql.to_owned(), params).await
}

async fn execute(
    inst: &mut PostgresInstance,
    conn: &Resource<ConnectionHandle>,
    sql: &str,
    params: Vec<P>,
) -> Result<u64, v4::Error> {
    inst.execute(borrow(conn), sql.to_owned(), params).await
}

/// The single row of a query's result.
async fn one_row(
    inst: &mut PostgresInstance,
    conn: &Resource<ConnectionHandle>,
    sql: &str,
    params: Vec<P>,
) -> Vec<V> {
    let rows = query(inst, conn, sql, params).await.unwrap().rows;
    assert_eq!(rows.len(), 1, "{sql}");
    rows.into_iter().next().unwrap()
}

/// Runs `body` with an instance, an open connection and a fresh schema name, then drops the
/// schema whatever happened and re-raises a failure.
async fn with_schema<F>(body: F)
where
    F: for<'a> AsyncFnOnce(&'a mut PostgresInstance, &'a Resource<ConnectionHandle>, &'a str),
{
    let factor = PostgresFactor::new();
    let mut inst = instance(&factor);
    let conn = open(&mut inst).await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("bazaar_pg_test_{}_{nanos}", std::process::id());
    execute(&mut inst, &conn, &format!("CREATE SCHEMA {schema}"), vec![])
        .await
        .unwrap();
    let outcome = AssertUnwindSafe(body(&mut inst, &conn, &schema))
        .catch_unwind()
        .await;
    let cleanup = execute(
        &mut inst,
        &conn,
        &format!("DROP SCHEMA {schema} CASCADE"),
        vec![],
    )
    .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    cleanup.unwrap();
}

/// One column per WIT type, in the order of [`sample_params`].
const ALL_TYPES_COLUMNS: &str = "b bool, i8 \"char\", i16 int2, i32 int4, i64 int8, f32 float4, \
     f64 float8, s text, bin bytea, d date, t time, dt timestamp, ts timestamptz, u uuid, \
     j jsonb, dec numeric, r32 int4range, r64 int8range, rdec numrange, a32 int4[], a64 int8[], \
     adec numeric[], astr text[], iv interval";

fn sample_params() -> Vec<P> {
    vec![
        P::Boolean(true),
        P::Int8(-5),
        P::Int16(-32768),
        P::Int32(2_147_483_647),
        P::Int64(-9_007_199_254_740_993),
        P::Floating32(1.5),
        P::Floating64(-2.25e-300),
        P::Str("héllo ✓ 'quoted'".into()),
        P::Binary(vec![0, 1, 127, 128, 255]),
        P::Date((2024, 2, 29)),
        P::Time((23, 59, 58, 123_456_000)),
        P::Datetime((1999, 12, 31, 23, 59, 59, 999_999_000)),
        P::Timestamp(1_700_000_000),
        P::Uuid("67E55044-10B1-426F-9247-BB680E5FE0C8".into()),
        P::Jsonb(br#"{"a": [1, 2.5, {"b": null}], "c": "\u00e9"}"#.to_vec()),
        P::Decimal("-12345678901234567890.123456789000".into()),
        P::RangeInt32((Some((1, K::Inclusive)), Some((10, K::Exclusive)))),
        P::RangeInt64((Some((-5_000_000_000, K::Inclusive)), None)),
        P::RangeDecimal((
            Some(("1.5".into(), K::Exclusive)),
            Some(("2.25".into(), K::Inclusive)),
        )),
        P::ArrayInt32(vec![Some(1), None, Some(-3)]),
        P::ArrayInt64(vec![Some(i64::MIN), Some(i64::MAX), None]),
        P::ArrayDecimal(vec![Some("1.10".into()), None, Some("-0.0005".into())]),
        P::ArrayStr(vec![Some("a".into()), None, Some("ü,{}\"".into())]),
        P::Interval(v4::Interval {
            micros: 3_723_000_001,
            days: -2,
            months: 14,
        }),
    ]
}

/// What [`sample_params`] read back as: the same values, except that the `timestamp`
/// parameter reads as the `datetime` it denotes and the UUID in canonical lower case.
fn sample_values() -> Vec<V> {
    vec![
        V::Boolean(true),
        V::Int8(-5),
        V::Int16(-32768),
        V::Int32(2_147_483_647),
        V::Int64(-9_007_199_254_740_993),
        V::Floating32(1.5),
        V::Floating64(-2.25e-300),
        V::Str("héllo ✓ 'quoted'".into()),
        V::Binary(vec![0, 1, 127, 128, 255]),
        V::Date((2024, 2, 29)),
        V::Time((23, 59, 58, 123_456_000)),
        V::Datetime((1999, 12, 31, 23, 59, 59, 999_999_000)),
        V::Datetime((2023, 11, 14, 22, 13, 20, 0)),
        V::Uuid("67e55044-10b1-426f-9247-bb680e5fe0c8".into()),
        // Compared as parsed JSON below: jsonb normalises spacing.
        V::Jsonb(br#"{"a": [1, 2.5, {"b": null}], "c": "\u00e9"}"#.to_vec()),
        V::Decimal("-12345678901234567890.123456789000".into()),
        V::RangeInt32((Some((1, K::Inclusive)), Some((10, K::Exclusive)))),
        V::RangeInt64((Some((-5_000_000_000, K::Inclusive)), None)),
        V::RangeDecimal((
            Some(("1.5".into(), K::Exclusive)),
            Some(("2.25".into(), K::Inclusive)),
        )),
        V::ArrayInt32(vec![Some(1), None, Some(-3)]),
        V::ArrayInt64(vec![Some(i64::MIN), Some(i64::MAX), None]),
        V::ArrayDecimal(vec![Some("1.10".into()), None, Some("-0.0005".into())]),
        V::ArrayStr(vec![Some("a".into()), None, Some("ü,{}\"".into())]),
        V::Interval(v4::Interval {
            micros: 3_723_000_001,
            days: -2,
            months: 14,
        }),
    ]
}

fn sample_types() -> Vec<T> {
    vec![
        T::Boolean,
        T::Int8,
        T::Int16,
        T::Int32,
        T::Int64,
        T::Floating32,
        T::Floating64,
        T::Str,
        T::Binary,
        T::Date,
        T::Time,
        T::Datetime,
        T::Datetime,
        T::Uuid,
        T::Jsonb,
        T::Decimal,
        T::RangeInt32,
        T::RangeInt64,
        T::RangeDecimal,
        T::ArrayInt32,
        T::ArrayInt64,
        T::ArrayDecimal,
        T::ArrayStr,
        T::Interval,
    ]
}

fn json(value: &V) -> serde_json::Value {
    match value {
        V::Jsonb(bytes) => serde_json::from_slice(bytes).expect("valid JSON"),
        other => panic!("expected jsonb, got {other:?}"),
    }
}

fn db_error(result: Result<impl std::fmt::Debug, v4::Error>) -> v4::DbError {
    match result {
        Err(v4::Error::QueryFailed(v4::QueryError::DbError(e))) => e,
        other => panic!("expected query-failed(db-error), got {other:?}"),
    }
}

fn bad_parameter(result: Result<impl std::fmt::Debug, v4::Error>) -> String {
    match result {
        Err(v4::Error::BadParameter(m)) => m,
        other => panic!("expected bad-parameter, got {other:?}"),
    }
}

fn connection_failed(result: Result<impl std::fmt::Debug, v4::Error>) -> String {
    match result {
        Err(v4::Error::ConnectionFailed(m)) => m,
        other => panic!("expected connection-failed, got {other:?}"),
    }
}

#[tokio::test]
async fn every_type_round_trips_through_a_table() {
    with_schema(async |inst, conn, schema| {
        let table = format!("{schema}.all_types");
        execute(
            inst,
            conn,
            &format!("CREATE TABLE {table} (id int4 PRIMARY KEY, {ALL_TYPES_COLUMNS})"),
            vec![],
        )
        .await
        .unwrap();

        let params = sample_params();
        let placeholders: Vec<String> = (2..=params.len() + 1).map(|i| format!("${i}")).collect();
        let insert = format!(
            "INSERT INTO {table} VALUES ($1, {})",
            placeholders.join(", ")
        );
        let mut with_id = vec![P::Int32(1)];
        with_id.extend(params);
        assert_eq!(execute(inst, conn, &insert, with_id).await.unwrap(), 1);

        let rows = query(
            inst,
            conn,
            &format!("SELECT * FROM {table} WHERE id = $1"),
            vec![P::Int32(1)],
        )
        .await
        .unwrap();
        let names: Vec<&str> = rows.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names[..3], ["id", "b", "i8"]);
        let types: Vec<T> = rows.columns[1..]
            .iter()
            .map(|c| c.data_type.clone())
            .collect();
        assert_eq!(types, sample_types());

        assert_eq!(rows.rows.len(), 1);
        let got = &rows.rows[0][1..];
        let expected = sample_values();
        assert_eq!(got.len(), expected.len());
        for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
            if matches!(want, V::Jsonb(_)) {
                assert_eq!(json(got), json(want), "column {}", names[i + 1]);
            } else {
                assert_eq!(got, want, "column {}", names[i + 1]);
            }
        }
    })
    .await;
}

#[tokio::test]
async fn nulls_round_trip_for_every_type() {
    with_schema(async |inst, conn, schema| {
        let table = format!("{schema}.all_nulls");
        execute(
            inst,
            conn,
            &format!("CREATE TABLE {table} ({ALL_TYPES_COLUMNS})"),
            vec![],
        )
        .await
        .unwrap();
        let n = sample_types().len();
        let placeholders: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        let insert = format!("INSERT INTO {table} VALUES ({})", placeholders.join(", "));
        assert_eq!(
            execute(inst, conn, &insert, vec![P::DbNull; n])
                .await
                .unwrap(),
            1
        );
        let row = one_row(inst, conn, &format!("SELECT * FROM {table}"), vec![]).await;
        assert_eq!(row, vec![V::DbNull; n]);

        // NULL inside arrays, and a NULL of a type with no WIT counterpart.
        let row = one_row(
            inst,
            conn,
            "SELECT ARRAY[NULL, 2]::int4[], NULL::inet, $1::text IS NULL",
            vec![P::DbNull],
        )
        .await;
        assert_eq!(
            row,
            vec![
                V::ArrayInt32(vec![None, Some(2)]),
                V::DbNull,
                V::Boolean(true)
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn arrays_and_ranges_edge_cases() {
    with_schema(async |inst, conn, _schema| {
        // Empty arrays; discrete ranges come back in Postgres' canonical `[a,b)` form.
        let row = one_row(
            inst,
            conn,
            "SELECT $1::int4[], $2::text[], $3::int4range, $4::int8range, \
             'empty'::int4range, '(,)'::numrange, ARRAY['x','y']::varchar[]",
            vec![
                P::ArrayInt32(vec![]),
                P::ArrayStr(vec![]),
                P::RangeInt32((Some((1, K::Exclusive)), Some((5, K::Inclusive)))),
                P::RangeInt64((None, Some((7, K::Exclusive)))),
            ],
        )
        .await;
        assert_eq!(
            row,
            vec![
                V::ArrayInt32(vec![]),
                V::ArrayStr(vec![]),
                V::RangeInt32((Some((2, K::Inclusive)), Some((6, K::Exclusive)))),
                V::RangeInt64((None, Some((7, K::Exclusive)))),
                // `empty` has no WIT form: it reads like the unbounded range.
                V::RangeInt32((None, None)),
                V::RangeDecimal((None, None)),
                V::ArrayStr(vec![Some("x".into()), Some("y".into())]),
            ]
        );

        // Range and array operators work on bound parameters.
        let row = one_row(
            inst,
            conn,
            "SELECT $1::int8range @> 10::int8, 3 = ANY($2), array_length($3::numeric[], 1)",
            vec![
                P::RangeInt64((Some((0, K::Inclusive)), Some((11, K::Exclusive)))),
                P::ArrayInt32(vec![Some(1), Some(3)]),
                P::ArrayDecimal(vec![Some("NaN".into()), Some("1e3".into())]),
            ],
        )
        .await;
        assert_eq!(
            row,
            vec![V::Boolean(true), V::Boolean(true), V::Int32(2)]
        );

        // Decimals beyond any fixed-precision type, and the special values.
        let big = format!("{}.{}", "9".repeat(120), "0123456789".repeat(5));
        let row = one_row(
            inst,
            conn,
            "SELECT $1::numeric, $1::numeric::text, 'NaN'::numeric, 'Infinity'::numeric, 0.000::numeric",
            vec![P::Decimal(big.clone())],
        )
        .await;
        assert_eq!(
            row,
            vec![
                V::Decimal(big.clone()),
                V::Str(big),
                V::Decimal("NaN".into()),
                V::Decimal("Infinity".into()),
                V::Decimal("0.000".into()),
            ]
        );

        // Multi-dimensional arrays and infinite dates have no WIT form.
        for (sql, column) in [
            ("SELECT '{{1,2},{3,4}}'::int4[] AS grid", "grid"),
            ("SELECT 'infinity'::date AS forever", "forever"),
        ] {
            match query(inst, conn, sql, vec![]).await {
                Err(v4::Error::ValueConversionFailed(m)) => {
                    assert!(m.starts_with(&format!("column `{column}`: ")), "{m}")
                }
                other => panic!("expected value-conversion-failed, got {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn other_types_enums_and_domains() {
    with_schema(async |inst, conn, schema| {
        // A type with no WIT counterpart: its name and raw binary value (inet: family, bits,
        // is_cidr, length, address).
        let rows = query(inst, conn, "SELECT '10.1.2.3'::inet AS addr", vec![])
            .await
            .unwrap();
        assert_eq!(rows.columns[0].data_type, T::Other("inet".into()));
        assert_eq!(
            rows.rows[0][0],
            V::Unsupported(vec![2, 32, 0, 4, 10, 1, 2, 3])
        );

        execute(
            inst,
            conn,
            &format!("CREATE TYPE {schema}.mood AS ENUM ('ok', 'sad')"),
            vec![],
        )
        .await
        .unwrap();
        execute(
            inst,
            conn,
            &format!("CREATE DOMAIN {schema}.positive AS int4 CHECK (VALUE > 0)"),
            vec![],
        )
        .await
        .unwrap();
        execute(
            inst,
            conn,
            &format!(
                "CREATE TABLE {schema}.t (m {schema}.mood, p {schema}.positive, n name, v varchar(5))"
            ),
            vec![],
        )
        .await
        .unwrap();
        let insert = format!("INSERT INTO {schema}.t VALUES ($1, $2, $3, $4)");
        execute(
            inst,
            conn,
            &insert,
            vec![
                P::Str("sad".into()),
                P::Int32(7),
                P::Str("nm".into()),
                P::Str("short".into()),
            ],
        )
        .await
        .unwrap();
        let rows = query(inst, conn, &format!("SELECT * FROM {schema}.t"), vec![])
            .await
            .unwrap();
        let types: Vec<T> = rows.columns.iter().map(|c| c.data_type.clone()).collect();
        assert_eq!(types, vec![T::Str, T::Int32, T::Str, T::Str]);
        assert_eq!(
            rows.rows[0],
            vec![
                V::Str("sad".into()),
                V::Int32(7),
                V::Str("nm".into()),
                V::Str("short".into())
            ]
        );

        // The domain's constraint is the server's business.
        let e = db_error(execute(inst, conn, &insert, vec![P::DbNull, P::Int32(-1), P::DbNull, P::DbNull]).await);
        assert_eq!(e.code, "23514", "{e:?}"); // check_violation
    })
    .await;
}

#[tokio::test]
async fn parameters_widen_losslessly_and_mismatches_are_bad_parameters() {
    with_schema(async |inst, conn, schema| {
        let row = one_row(
            inst,
            conn,
            "SELECT $1::int8, $2::int4, $3::int2, $4::float8, $5::timestamptz, $6::timestamp",
            vec![
                P::Int32(7),
                P::Int16(-3),
                P::Int8(9),
                P::Floating32(0.5),
                P::Datetime((2020, 1, 2, 3, 4, 5, 0)),
                P::Timestamp(0),
            ],
        )
        .await;
        assert_eq!(
            row,
            vec![
                V::Int64(7),
                V::Int32(-3),
                V::Int16(9),
                V::Floating64(0.5),
                V::Datetime((2020, 1, 2, 3, 4, 5, 0)),
                V::Datetime((1970, 1, 1, 0, 0, 0, 0)),
            ]
        );

        // Narrowing and unrelated types are refused before anything is sent.
        let m = bad_parameter(query(inst, conn, "SELECT $1::int4", vec![P::Int64(1)]).await);
        assert_eq!(m, "parameter $1: a int64 value cannot be used as int4");
        let m = bad_parameter(
            query(
                inst,
                conn,
                "SELECT $1::int4, $2::int4",
                vec![P::Int32(1), P::Str("2".into())],
            )
            .await,
        );
        assert!(m.starts_with("parameter $2: a str value"), "{m}");
        let m = bad_parameter(query(inst, conn, "SELECT $1::int4", vec![]).await);
        assert_eq!(
            m,
            "the statement has 1 parameter(s) but 0 value(s) were given"
        );
        let m = bad_parameter(execute(inst, conn, "SELECT 1", vec![P::Int32(1)]).await);
        assert!(m.contains("0 parameter(s) but 1"), "{m}");

        // Values that cannot be encoded.
        for (sql, param, needle) in [
            (
                "SELECT $1::uuid",
                P::Uuid("not-a-uuid".into()),
                "invalid UUID",
            ),
            (
                "SELECT $1::date",
                P::Date((2023, 2, 30)),
                "invalid date 2023-02-30",
            ),
            ("SELECT $1::time", P::Time((24, 0, 0, 0)), "invalid time"),
            (
                "SELECT $1::jsonb",
                P::Jsonb(b"{oops".to_vec()),
                "invalid JSON",
            ),
            (
                "SELECT $1::numeric",
                P::Decimal("12,5".into()),
                "invalid decimal `12,5`",
            ),
            (
                "SELECT $1::numrange",
                P::RangeDecimal((Some(("x".into(), K::Inclusive)), None)),
                "invalid decimal `x`",
            ),
            (
                "SELECT $1::timestamptz",
                P::Timestamp(i64::MAX),
                "out of range",
            ),
        ] {
            let m = bad_parameter(query(inst, conn, sql, vec![param]).await);
            assert!(m.starts_with("parameter $1: "), "{sql}: {m}");
            assert!(m.contains(needle), "{sql}: {m}");
        }

        // Nothing was written by a refused execute, and the connection is still usable.
        execute(
            inst,
            conn,
            &format!("CREATE TABLE {schema}.t (id int8)"),
            vec![],
        )
        .await
        .unwrap();
        bad_parameter(
            execute(
                inst,
                conn,
                &format!("INSERT INTO {schema}.t VALUES ($1)"),
                vec![P::Str("1".into())],
            )
            .await,
        );
        let row = one_row(
            inst,
            conn,
            &format!("SELECT count(*) FROM {schema}.t"),
            vec![],
        )
        .await;
        assert_eq!(row, vec![V::Int64(0)]);
    })
    .await;
}

#[tokio::test]
async fn query_errors_carry_sqlstate_and_details() {
    with_schema(async |inst, conn, schema| {
        let e = db_error(query(inst, conn, &format!("SELECT * FROM {schema}.nope"), vec![]).await);
        assert_eq!(e.code, "42P01"); // undefined_table
        assert_eq!(e.severity, "ERROR");
        assert!(e.message.contains("does not exist"), "{e:?}");
        assert!(e.as_text.contains(&e.message), "{e:?}");

        let e = db_error(query(inst, conn, "SELEC 1", vec![]).await);
        assert_eq!(e.code, "42601"); // syntax_error

        let e = db_error(execute(inst, conn, "SELECT 1 / 0", vec![]).await);
        assert_eq!(e.code, "22012"); // division_by_zero

        execute(
            inst,
            conn,
            &format!("CREATE TABLE {schema}.u (k text CONSTRAINT u_k UNIQUE)"),
            vec![],
        )
        .await
        .unwrap();
        let insert = format!("INSERT INTO {schema}.u VALUES ($1)");
        assert_eq!(
            execute(inst, conn, &insert, vec![P::Str("a".into())])
                .await
                .unwrap(),
            1
        );
        let e = db_error(execute(inst, conn, &insert, vec![P::Str("a".into())]).await);
        assert_eq!(e.code, "23505"); // unique_violation
        assert!(
            e.detail.as_deref().is_some_and(|d| d.contains("(k)=(a)")),
            "{e:?}"
        );
        let extra = |name: &str| {
            e.extras
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(extra("constraint"), Some("u_k"));
        assert_eq!(extra("table"), Some("u"));
        assert_eq!(extra("schema"), Some(schema));

        // After errors the connection still works; row counts are reported.
        let values = format!("INSERT INTO {schema}.u VALUES ('b'), ('c'), ('d')");
        assert_eq!(execute(inst, conn, &values, vec![]).await.unwrap(), 3);
        let update = format!("UPDATE {schema}.u SET k = k || '!' WHERE k <> $1");
        assert_eq!(
            execute(inst, conn, &update, vec![P::Str("a".into())])
                .await
                .unwrap(),
            3
        );

        // An empty result still describes its columns.
        let rows = query(
            inst,
            conn,
            &format!("SELECT k, 1::int8 AS n FROM {schema}.u WHERE false"),
            vec![],
        )
        .await
        .unwrap();
        assert!(rows.rows.is_empty());
        let columns: Vec<(String, T)> = rows
            .columns
            .into_iter()
            .map(|c| (c.name, c.data_type))
            .collect();
        assert_eq!(columns, vec![("k".into(), T::Str), ("n".into(), T::Int64)]);
    })
    .await;
}

#[tokio::test]
async fn denied_hosts_fail_before_connecting() {
    let factor = PostgresFactor::new();
    let mut inst = instance(&factor);
    let denied = [
        // Another name for the same server is still another host.
        (
            "postgres://postgres@localhost:5432/test",
            "postgres://localhost:5432",
        ),
        (
            "postgres://postgres@127.0.0.1:5433/test",
            "postgres://127.0.0.1:5433",
        ),
        ("postgresql://postgres@[::1]/test", "postgres://[::1]:5432"),
        // `hostaddr` is where the connection really goes.
        (
            "host=127.0.0.1 hostaddr=127.0.0.2 user=postgres dbname=test",
            "postgres://127.0.0.2:5432",
        ),
        // Every host of a multi-host string is checked.
        (
            "postgres://postgres@127.0.0.1,127.0.0.3/test",
            "postgres://127.0.0.3:5432",
        ),
    ];
    for (address, shown) in denied {
        let m = connection_failed(inst.open(address.to_owned()).await);
        assert_eq!(
            m,
            format!(
                "address {shown} is not permitted (add it to the component's allowed_outbound_hosts)"
            ),
            "{address}"
        );
    }
    let m = connection_failed(
        inst.open("host=/var/run/postgresql user=postgres".into())
            .await,
    );
    assert!(
        m.starts_with("Unix-domain sockets are not supported"),
        "{m}"
    );

    // A component without allowed_outbound_hosts reaches nothing.
    let mut sandboxed = factor.instance_state(allowed(&[]));
    let m = connection_failed(sandboxed.open(test_url()).await);
    assert!(m.contains("is not permitted"), "{m}");
    // Schemes matter: an HTTP permission is not a PostgreSQL one.
    let mut http_only = factor.instance_state(allowed(&["http://127.0.0.1:5432"]));
    connection_failed(http_only.open(test_url()).await);

    assert_eq!(factor.pool_count(), 0, "denied addresses create no pool");
    assert!(inst.table.is_empty());
}

#[tokio::test]
async fn allowed_host_forms_connect() {
    let factor = PostgresFactor::new();
    for (entries, address) in [
        // No port in the entry or the address: both mean 5432.
        (
            &["postgres://127.0.0.1"][..],
            "postgres://postgres@127.0.0.1/test",
        ),
        (
            &["postgres://127.0.0.1:5000..6000"][..],
            "host=127.0.0.1 port=5432 user=postgres dbname=test",
        ),
        (
            &["postgres://127.0.0.0/8:*"][..],
            "postgresql://postgres@127.0.0.1:5432/test",
        ),
        (&["*://*:*"][..], "postgres://postgres@127.0.0.1:5432/test"),
    ] {
        let mut inst = factor.instance_state(allowed(entries));
        let conn = inst
            .open(address.to_owned())
            .await
            .unwrap_or_else(|e| panic!("{entries:?} {address}: {e:?}"));
        let row = one_row(&mut inst, &conn, "SELECT 1::int4", vec![]).await;
        assert_eq!(row, vec![V::Int32(1)]);
        inst.drop(conn).await.unwrap();
    }
}

#[tokio::test]
async fn bad_connection_strings_and_unreachable_servers() {
    let factor = PostgresFactor::new();
    let mut inst = factor.instance_state(allowed(&["postgres://127.0.0.1:*"]));
    for address in [
        "not a connection string",
        "postgres://postgres@127.0.0.1:notaport/test",
        "mysql://root@127.0.0.1:3306/test",
        "postgres:///test",
    ] {
        let m = connection_failed(inst.open(address.to_owned()).await);
        assert!(
            m.starts_with("invalid connection string") || m.contains("names no host"),
            "{address}: {m}"
        );
    }
    assert_eq!(factor.pool_count(), 0);

    // Allowed but nothing listens: refused quickly, reported as connection-failed.
    let started = std::time::Instant::now();
    let m = connection_failed(
        inst.open("postgres://postgres@127.0.0.1:1/test".into())
            .await,
    );
    assert!(m.contains("error connecting to server"), "{m}");
    assert!(started.elapsed() < CONNECT_TIMEOUT);

    // The server answers but refuses the database.
    let m = connection_failed(
        inst.open("postgres://postgres@127.0.0.1:5432/bazaar_no_such_database".into())
            .await,
    );
    assert!(
        m.contains("bazaar_no_such_database") && m.contains("does not exist"),
        "{m}"
    );
}

/// The backend process id identifies the server connection behind a handle.
async fn backend_pid(inst: &mut PostgresInstance, conn: &Resource<ConnectionHandle>) -> i32 {
    match one_row(inst, conn, "SELECT pg_backend_pid()", vec![]).await[..] {
        [V::Int32(pid)] => pid,
        ref other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn pools_are_shared_per_connection_string_and_reset_between_uses() {
    let factor = PostgresFactor::new();
    let mut first = instance(&factor);
    let conn = open(&mut first).await;
    let pid = backend_pid(&mut first, &conn).await;
    execute(
        &mut first,
        &conn,
        "CREATE TEMP TABLE scratch (x int4)",
        vec![],
    )
    .await
    .unwrap();
    execute(
        &mut first,
        &conn,
        "SET application_name = 'changed'",
        vec![],
    )
    .await
    .unwrap();
    first.drop(conn).await.unwrap();
    assert_eq!(factor.pool_count(), 1);

    // Another instance (another component, even) gets the same server connection back, with
    // the previous user's session state gone.
    let mut second = instance(&factor);
    let conn = open(&mut second).await;
    assert_eq!(backend_pid(&mut second, &conn).await, pid);
    let e = db_error(query(&mut second, &conn, "SELECT * FROM scratch", vec![]).await);
    assert_eq!(e.code, "42P01");
    let row = one_row(&mut second, &conn, "SHOW application_name", vec![]).await;
    assert_eq!(row, vec![V::Str("bazaar".into())]);

    // While it is held, a second open needs another connection from the same pool.
    let other = open(&mut second).await;
    assert_ne!(backend_pid(&mut second, &other).await, pid);
    assert_eq!(factor.pool_count(), 1);

    // A different connection string is a different pool.
    let mut third = factor.instance_state(allowed(&["postgres://127.0.0.1:5432"]));
    let conn3 = third
        .open("host=127.0.0.1 port=5432 user=postgres dbname=test".into())
        .await
        .unwrap();
    assert_eq!(factor.pool_count(), 2);
    third.drop(conn3).await.unwrap();

    // Ending an instance (dropping its state) returns its connections too.
    drop(second);
    let mut fourth = instance(&factor);
    let a = open(&mut fourth).await;
    let b = open(&mut fourth).await;
    let mut pids = [
        backend_pid(&mut fourth, &a).await,
        backend_pid(&mut fourth, &b).await,
    ];
    pids.sort();
    assert!(pids.contains(&pid), "{pids:?} reuses {pid}");
}

#[tokio::test]
async fn least_recently_used_pools_are_evicted() {
    let factor = PostgresFactor::new();
    let mut inst = instance(&factor);
    for i in 0..=MAX_POOLS {
        let conn = inst
            .open(format!("{}?application_name=bazaar_lru_{i}", test_url()))
            .await
            .unwrap();
        inst.drop(conn).await.unwrap();
    }
    assert_eq!(factor.pool_count(), MAX_POOLS);
}

#[tokio::test]
async fn instance_connection_limit() {
    let factor = PostgresFactor::new();
    let mut inst = instance(&factor);
    let mut held = Vec::new();
    for _ in 0..MAX_OPEN_CONNECTIONS {
        held.push(open(&mut inst).await);
    }
    let m = connection_failed(inst.open(test_url()).await);
    assert!(m.starts_with("too many open connections"), "{m}");
    inst.drop(held.pop().unwrap()).await.unwrap();
    let conn = open(&mut inst).await;
    assert_eq!(
        one_row(&mut inst, &conn, "SELECT true", vec![]).await,
        vec![V::Boolean(true)]
    );
}

#[tokio::test]
async fn version_3_maps_onto_the_same_implementation() {
    use super::v3::{DbDataType as T3, DbValue as V3, ParameterValue as P3};
    let factor = PostgresFactor::new();
    let mut inst = instance(&factor);
    let conn = v3::HostConnection::open(&mut inst, test_url())
        .await
        .unwrap();
    let rows = v3::HostConnection::query(
        &mut inst,
        borrow(&conn),
        "SELECT $1::int8 AS n, $2::text AS s, $3::date AS d, $4::timestamptz AS ts, \
         gen_random_uuid() AS u, 1.5::numeric AS dec"
            .into(),
        vec![
            P3::Int64(42),
            P3::Str("x".into()),
            P3::Date((2000, 1, 1)),
            P3::Timestamp(86_400),
        ],
    )
    .await
    .unwrap();
    let types: Vec<T3> = rows.columns.iter().map(|c| c.data_type).collect();
    assert_eq!(
        types,
        vec![
            T3::Int64,
            T3::Str,
            T3::Date,
            T3::Datetime,
            T3::Other,
            T3::Other
        ]
    );
    assert_eq!(
        rows.rows,
        vec![vec![
            V3::Int64(42),
            V3::Str("x".into()),
            V3::Date((2000, 1, 1)),
            V3::Datetime((1970, 1, 2, 0, 0, 0, 0)),
            V3::Unsupported,
            V3::Unsupported,
        ]]
    );
    match v3::HostConnection::execute(
        &mut inst,
        borrow(&conn),
        "SELECT * FROM bazaar_nope".into(),
        vec![],
    )
    .await
    {
        Err(v3::Error::QueryFailed(text)) => assert!(text.contains("does not exist"), "{text}"),
        other => panic!("expected query-failed, got {other:?}"),
    }
    match v3::HostConnection::open(&mut inst, "postgres://postgres@localhost/test".into()).await {
        Err(v3::Error::ConnectionFailed(m)) => assert!(m.contains("not permitted"), "{m}"),
        other => panic!("expected connection-failed, got {other:?}"),
    }
    v3::HostConnection::drop(&mut inst, conn).await.unwrap();
    assert!(inst.table.is_empty());
}
