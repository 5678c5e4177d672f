//! Conversions between the `spin:postgres@4.0.0` values and PostgreSQL's binary wire format.
//!
//! Parameters: [`param_accepts`] decides whether a WIT parameter may be bound to a statement
//! parameter of a given Postgres type (checked up front so the guest gets `bad-parameter` with a
//! useful message) and [`Param`] encodes it. The accepted pairs are tokio-postgres' own
//! `ToSql` rules (the ones Spin applies), plus lossless widening of integers and floats
//! (`int32` into `bigint`, `floating32` into `double precision`), `datetime`/`timestamp` into
//! both `timestamp` and `timestamptz` (the WIT defines both as UTC), `str` into enum types, and
//! domains over any accepted type. Everything Spin accepts is accepted the same way.
//!
//! Columns: [`data_type`] and [`column_value`] map a result column by its Postgres type; any type
//! without a WIT counterpart comes back as `unsupported` with its raw binary value, as in Spin.
//!
//! `numeric` is converted with our own codec ([`PgNumeric`]) rather than through a fixed-precision
//! decimal type, so any value Postgres can store (up to 131072 digits before the point, 16383
//! after, `NaN` and `±Infinity`) round-trips exactly as the decimal string Postgres itself prints.

use std::error::Error as StdError;
use std::fmt;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
// `postgres_protocol` has its own `IsNull`, distinct from `tokio_postgres::types::IsNull`.
use postgres_protocol::IsNull as ProtocolIsNull;
use postgres_protocol::types::{self as protocol, RangeBound};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};

use super::v4::{DbDataType, DbValue, Interval, ParameterValue, RangeBoundKind};

type BoxError = Box<dyn StdError + Sync + Send>;

/// A WIT range: optional lower and upper bounds, each with its kind. `(None, None)` is the
/// unbounded range; Postgres' `empty` range is also reported as `(None, None)` because the WIT
/// has no way to say "empty".
pub type WitRange<T> = (Option<(T, RangeBoundKind)>, Option<(T, RangeBoundKind)>);

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

/// The WIT name of a parameter's variant, for error messages.
pub fn param_kind(value: &ParameterValue) -> &'static str {
    use ParameterValue as P;
    match value {
        P::Boolean(_) => "boolean",
        P::Int8(_) => "int8",
        P::Int16(_) => "int16",
        P::Int32(_) => "int32",
        P::Int64(_) => "int64",
        P::Floating32(_) => "floating32",
        P::Floating64(_) => "floating64",
        P::Str(_) => "str",
        P::Binary(_) => "binary",
        P::Date(_) => "date",
        P::Time(_) => "time",
        P::Datetime(_) => "datetime",
        P::Timestamp(_) => "timestamp",
        P::Uuid(_) => "uuid",
        P::Jsonb(_) => "jsonb",
        P::Decimal(_) => "decimal",
        P::RangeInt32(_) => "range-int32",
        P::RangeInt64(_) => "range-int64",
        P::RangeDecimal(_) => "range-decimal",
        P::ArrayInt32(_) => "array-int32",
        P::ArrayInt64(_) => "array-int64",
        P::ArrayDecimal(_) => "array-decimal",
        P::ArrayStr(_) => "array-str",
        P::Interval(_) => "interval",
        P::DbNull => "db-null",
    }
}

/// A domain's values are sent in its base type's format.
fn base_type(ty: &Type) -> &Type {
    match ty.kind() {
        Kind::Domain(base) => base_type(base),
        _ => ty,
    }
}

/// Whether `value` may be bound to a statement parameter of Postgres type `ty`.
pub fn param_accepts(value: &ParameterValue, ty: &Type) -> bool {
    use ParameterValue as P;
    let ty = base_type(ty);
    match value {
        P::DbNull => true,
        P::Boolean(_) => <bool as ToSql>::accepts(ty),
        P::Int8(_) => matches!(*ty, Type::CHAR | Type::INT2 | Type::INT4 | Type::INT8),
        P::Int16(_) => matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8),
        P::Int32(_) => matches!(*ty, Type::INT4 | Type::INT8),
        P::Int64(_) => *ty == Type::INT8,
        P::Floating32(_) => matches!(*ty, Type::FLOAT4 | Type::FLOAT8),
        P::Floating64(_) => *ty == Type::FLOAT8,
        P::Str(_) => <&str as ToSql>::accepts(ty) || matches!(ty.kind(), Kind::Enum(_)),
        P::Binary(_) => <&[u8] as ToSql>::accepts(ty),
        P::Date(_) => <NaiveDate as ToSql>::accepts(ty),
        P::Time(_) => <NaiveTime as ToSql>::accepts(ty),
        P::Datetime(_) | P::Timestamp(_) => matches!(*ty, Type::TIMESTAMP | Type::TIMESTAMPTZ),
        P::Uuid(_) => <uuid::Uuid as ToSql>::accepts(ty),
        P::Jsonb(_) => matches!(*ty, Type::JSON | Type::JSONB),
        P::Decimal(_) => <PgNumeric as ToSql>::accepts(ty),
        P::RangeInt32(_) => <PgRange<i32> as ToSql>::accepts(ty),
        P::RangeInt64(_) => <PgRange<i64> as ToSql>::accepts(ty),
        P::RangeDecimal(_) => <PgRange<PgNumeric> as ToSql>::accepts(ty),
        P::ArrayInt32(_) => <Vec<Option<i32>> as ToSql>::accepts(ty),
        P::ArrayInt64(_) => <Vec<Option<i64>> as ToSql>::accepts(ty),
        P::ArrayDecimal(_) => <Vec<Option<PgNumeric>> as ToSql>::accepts(ty),
        P::ArrayStr(_) => <Vec<Option<String>> as ToSql>::accepts(ty),
        P::Interval(_) => <PgInterval as ToSql>::accepts(ty),
    }
}

/// A guest parameter bound to a statement. Its type was checked with [`param_accepts`] against
/// the prepared statement, so `accepts` says yes to everything and `to_sql` dispatches on the
/// actual type; values that do not fit (an invalid date, a malformed UUID) fail in `to_sql`.
#[derive(Debug)]
pub struct Param<'a> {
    /// Position in the guest's list (0-based), for error messages.
    pub index: usize,
    pub value: &'a ParameterValue,
}

/// A parameter value that cannot be encoded; surfaces as the source of the driver's error so
/// it can be told apart from server errors.
#[derive(Debug)]
pub struct ParamError(String);

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for ParamError {}

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        encode_param(self.value, base_type(ty), out).map_err(|e| {
            Box::new(ParamError(format!("parameter ${}: {e}", self.index + 1))) as BoxError
        })
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn encode_param(value: &ParameterValue, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    use ParameterValue as P;
    if !param_accepts(value, ty) {
        return Err(format!(
            "a {} value cannot be sent as {}",
            param_kind(value),
            ty.name()
        )
        .into());
    }
    match value {
        P::DbNull => Ok(IsNull::Yes),
        P::Boolean(v) => v.to_sql(ty, out),
        P::Int8(v) if *ty == Type::CHAR => v.to_sql(ty, out),
        P::Int8(v) => encode_int(i64::from(*v), ty, out),
        P::Int16(v) => encode_int(i64::from(*v), ty, out),
        P::Int32(v) => encode_int(i64::from(*v), ty, out),
        P::Int64(v) => encode_int(*v, ty, out),
        P::Floating32(v) if *ty == Type::FLOAT8 => f64::from(*v).to_sql(ty, out),
        P::Floating32(v) => v.to_sql(ty, out),
        P::Floating64(v) => v.to_sql(ty, out),
        // Enum values travel as their label's text.
        P::Str(v) if matches!(ty.kind(), Kind::Enum(_)) => {
            out.put_slice(v.as_bytes());
            Ok(IsNull::No)
        }
        P::Str(v) => v.as_str().to_sql(ty, out),
        P::Binary(v) => v.as_slice().to_sql(ty, out),
        P::Date(d) => date_from_wit(*d)?.to_sql(ty, out),
        P::Time(t) => time_from_wit(*t)?.to_sql(ty, out),
        P::Datetime(dt) => encode_utc(datetime_from_wit(*dt)?, ty, out),
        P::Timestamp(secs) => {
            let instant = DateTime::<Utc>::from_timestamp(*secs, 0)
                .ok_or_else(|| format!("timestamp {secs} is out of range"))?;
            encode_utc(instant.naive_utc(), ty, out)
        }
        P::Uuid(text) => uuid::Uuid::parse_str(text)
            .map_err(|e| format!("invalid UUID `{text}`: {e}"))?
            .to_sql(ty, out),
        P::Jsonb(bytes) => {
            serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
                .map_err(|e| format!("invalid JSON: {e}"))?;
            if *ty == Type::JSONB {
                out.put_u8(JSONB_VERSION);
            }
            out.put_slice(bytes);
            Ok(IsNull::No)
        }
        P::Decimal(text) => PgNumeric(text.clone()).to_sql(ty, out),
        P::RangeInt32(r) => PgRange(*r).to_sql(ty, out),
        P::RangeInt64(r) => PgRange(*r).to_sql(ty, out),
        P::RangeDecimal((lower, upper)) => {
            let bound = |b: &Option<(String, RangeBoundKind)>| {
                b.as_ref().map(|(v, kind)| (PgNumeric(v.clone()), *kind))
            };
            PgRange((bound(lower), bound(upper))).to_sql(ty, out)
        }
        P::ArrayInt32(v) => v.to_sql(ty, out),
        P::ArrayInt64(v) => v.to_sql(ty, out),
        P::ArrayDecimal(v) => v
            .iter()
            .map(|d| d.clone().map(PgNumeric))
            .collect::<Vec<_>>()
            .to_sql(ty, out),
        P::ArrayStr(v) => v.to_sql(ty, out),
        P::Interval(i) => PgInterval(*i).to_sql(ty, out),
    }
}

/// Integers are accepted by any integer type at least as wide (checked in [`param_accepts`]).
fn encode_int(v: i64, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    match *ty {
        Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
        Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
        _ => v.to_sql(ty, out),
    }
}

/// `timestamp` stores the UTC wall-clock time as is; `timestamptz` stores the instant.
fn encode_utc(naive_utc: NaiveDateTime, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    if *ty == Type::TIMESTAMPTZ {
        naive_utc.and_utc().to_sql(ty, out)
    } else {
        naive_utc.to_sql(ty, out)
    }
}

fn date_from_wit((year, month, day): (i32, u8, u8)) -> Result<NaiveDate, BoxError> {
    NaiveDate::from_ymd_opt(year, month.into(), day.into())
        .ok_or_else(|| format!("invalid date {year:04}-{month:02}-{day:02}").into())
}

fn time_from_wit((hour, minute, second, nanos): (u8, u8, u8, u32)) -> Result<NaiveTime, BoxError> {
    NaiveTime::from_hms_nano_opt(hour.into(), minute.into(), second.into(), nanos)
        .ok_or_else(|| format!("invalid time {hour:02}:{minute:02}:{second:02}.{nanos:09}").into())
}

fn datetime_from_wit(
    (year, month, day, hour, minute, second, nanos): (i32, u8, u8, u8, u8, u8, u32),
) -> Result<NaiveDateTime, BoxError> {
    Ok(date_from_wit((year, month, day))?.and_time(time_from_wit((hour, minute, second, nanos))?))
}

// ---------------------------------------------------------------------------------------------
// Columns
// ---------------------------------------------------------------------------------------------

/// The WIT data type reported for a result column of Postgres type `ty`. Must agree with
/// [`column_value`].
pub fn data_type(ty: &Type) -> DbDataType {
    use DbDataType as D;
    match *ty {
        Type::BOOL => D::Boolean,
        // `"char"` is the one-byte integer type, tokio-postgres' `i8`.
        Type::CHAR => D::Int8,
        Type::INT2 => D::Int16,
        Type::INT4 => D::Int32,
        Type::INT8 => D::Int64,
        Type::FLOAT4 => D::Floating32,
        Type::FLOAT8 => D::Floating64,
        Type::BYTEA => D::Binary,
        Type::DATE => D::Date,
        Type::TIME => D::Time,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => D::Datetime,
        Type::UUID => D::Uuid,
        Type::JSON | Type::JSONB => D::Jsonb,
        Type::NUMERIC => D::Decimal,
        Type::INT4_RANGE => D::RangeInt32,
        Type::INT8_RANGE => D::RangeInt64,
        Type::NUM_RANGE => D::RangeDecimal,
        Type::INT4_ARRAY => D::ArrayInt32,
        Type::INT8_ARRAY => D::ArrayInt64,
        Type::NUMERIC_ARRAY => D::ArrayDecimal,
        Type::INTERVAL => D::Interval,
        _ if is_text(ty) => D::Str,
        _ if <Vec<Option<String>> as FromSql>::accepts(ty) => D::ArrayStr,
        _ => D::Other(ty.name().to_owned()),
    }
}

fn is_text(ty: &Type) -> bool {
    <String as FromSql>::accepts(ty) || matches!(ty.kind(), Kind::Enum(_))
}

/// Reads column `index` of `row` as a WIT value (`db-null` for SQL `NULL`).
pub fn column_value(row: &Row, index: usize) -> Result<DbValue, tokio_postgres::Error> {
    use DbValue as V;
    let ty = row.columns()[index].type_();
    /// Reads the column as `Option<$t>` and maps a present value with `$f`.
    macro_rules! get {
        ($t:ty, $f:expr) => {
            row.try_get::<_, Option<$t>>(index)?
                .map($f)
                .unwrap_or(V::DbNull)
        };
    }
    Ok(match *ty {
        Type::BOOL => get!(bool, V::Boolean),
        Type::CHAR => get!(i8, V::Int8),
        Type::INT2 => get!(i16, V::Int16),
        Type::INT4 => get!(i32, V::Int32),
        Type::INT8 => get!(i64, V::Int64),
        Type::FLOAT4 => get!(f32, V::Floating32),
        Type::FLOAT8 => get!(f64, V::Floating64),
        Type::BYTEA => get!(Vec<u8>, V::Binary),
        Type::DATE => get!(NaiveDate, |d| V::Date(date_to_wit(d))),
        Type::TIME => get!(NaiveTime, |t| V::Time(time_to_wit(t))),
        Type::TIMESTAMP => get!(NaiveDateTime, |dt| V::Datetime(datetime_to_wit(dt))),
        Type::TIMESTAMPTZ => get!(DateTime<Utc>, |dt| {
            V::Datetime(datetime_to_wit(dt.naive_utc()))
        }),
        Type::UUID => get!(uuid::Uuid, |u| V::Uuid(u.to_string())),
        Type::JSON | Type::JSONB => get!(PgJson, |j| V::Jsonb(j.0)),
        Type::NUMERIC => get!(PgNumeric, |n| V::Decimal(n.0)),
        Type::INT4_RANGE => get!(PgRange<i32>, |r| V::RangeInt32(r.0)),
        Type::INT8_RANGE => get!(PgRange<i64>, |r| V::RangeInt64(r.0)),
        Type::NUM_RANGE => get!(PgRange<PgNumeric>, |PgRange((lower, upper))| {
            let bound = |b: Option<(PgNumeric, RangeBoundKind)>| b.map(|(n, kind)| (n.0, kind));
            V::RangeDecimal((bound(lower), bound(upper)))
        }),
        Type::INT4_ARRAY => get!(Vec<Option<i32>>, V::ArrayInt32),
        Type::INT8_ARRAY => get!(Vec<Option<i64>>, V::ArrayInt64),
        Type::NUMERIC_ARRAY => get!(Vec<Option<PgNumeric>>, |v| {
            V::ArrayDecimal(v.into_iter().map(|d| d.map(|d| d.0)).collect())
        }),
        Type::INTERVAL => get!(PgInterval, |i| V::Interval(i.0)),
        _ if is_text(ty) => get!(PgText, |t| V::Str(t.0)),
        _ if <Vec<Option<String>> as FromSql>::accepts(ty) => {
            get!(Vec<Option<String>>, V::ArrayStr)
        }
        _ => get!(PgRaw, |raw| V::Unsupported(raw.0)),
    })
}

// chrono guarantees month 1..=12, day 1..=31, hour < 24, minute/second < 60: the casts are exact.
fn date_to_wit(d: NaiveDate) -> (i32, u8, u8) {
    (d.year(), d.month() as u8, d.day() as u8)
}

fn time_to_wit(t: NaiveTime) -> (u8, u8, u8, u32) {
    (
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.nanosecond(),
    )
}

fn datetime_to_wit(dt: NaiveDateTime) -> (i32, u8, u8, u8, u8, u8, u32) {
    let (y, mo, d) = date_to_wit(dt.date());
    let (h, mi, s, ns) = time_to_wit(dt.time());
    (y, mo, d, h, mi, s, ns)
}

// ---------------------------------------------------------------------------------------------
// Wire-format helpers for the types tokio-postgres has no (suitable) Rust type for
// ---------------------------------------------------------------------------------------------

/// Any column's raw binary value, for `unsupported`.
struct PgRaw(Vec<u8>);

impl<'a> FromSql<'a> for PgRaw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Self(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Text-like columns, enum labels included (they are sent as their text).
struct PgText(String);

impl<'a> FromSql<'a> for PgText {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        if matches!(ty.kind(), Kind::Enum(_)) {
            return Ok(Self(std::str::from_utf8(raw)?.to_owned()));
        }
        String::from_sql(ty, raw).map(Self)
    }

    fn accepts(ty: &Type) -> bool {
        is_text(ty)
    }
}

/// `jsonb`'s binary format is a version byte followed by the JSON text.
const JSONB_VERSION: u8 = 1;

/// A `json`/`jsonb` value's text, passed through without re-serialising it.
struct PgJson(Vec<u8>);

impl<'a> FromSql<'a> for PgJson {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        if *ty == Type::JSONB {
            match raw.split_first() {
                Some((&JSONB_VERSION, text)) => Ok(Self(text.to_vec())),
                _ => Err("unsupported jsonb binary format version".into()),
            }
        } else {
            Ok(Self(raw.to_vec()))
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }
}

/// `interval`: microseconds, days and months, each kept separately as Postgres does.
#[derive(Debug)]
pub struct PgInterval(pub Interval);

impl ToSql for PgInterval {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_i64(self.0.micros);
        out.put_i32(self.0.days);
        out.put_i32(self.0.months);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgInterval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let raw: &[u8; 16] = raw
            .try_into()
            .map_err(|_| "invalid interval binary value (expected 16 bytes)")?;
        let (micros, rest) = raw.split_at(8);
        let (days, months) = rest.split_at(4);
        Ok(Self(Interval {
            micros: i64::from_be_bytes(micros.try_into()?),
            days: i32::from_be_bytes(days.try_into()?),
            months: i32::from_be_bytes(months.try_into()?),
        }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// A range over `T` (`int4range`, `int8range`, `numrange`), in the WIT's shape. The element
/// type comes from the range type, so one implementation serves all three.
#[derive(Debug)]
pub struct PgRange<T>(pub WitRange<T>);

impl<T: ToSql> ToSql for PgRange<T> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let Kind::Range(element) = ty.kind() else {
            return Err(format!("{} is not a range type", ty.name()).into());
        };
        protocol::range_to_sql(
            |buf| write_range_bound(&self.0.0, element, buf),
            |buf| write_range_bound(&self.0.1, element, buf),
            out,
        )?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Range(element) if T::accepts(element))
    }

    to_sql_checked!();
}

fn write_range_bound<T: ToSql>(
    bound: &Option<(T, RangeBoundKind)>,
    element: &Type,
    buf: &mut BytesMut,
) -> Result<RangeBound<ProtocolIsNull>, BoxError> {
    let Some((value, kind)) = bound else {
        return Ok(RangeBound::Unbounded);
    };
    if let IsNull::Yes = value.to_sql(element, buf)? {
        return Err("a range bound cannot be NULL".into());
    }
    Ok(match kind {
        RangeBoundKind::Inclusive => RangeBound::Inclusive(ProtocolIsNull::No),
        RangeBoundKind::Exclusive => RangeBound::Exclusive(ProtocolIsNull::No),
    })
}

impl<'a, T: FromSql<'a>> FromSql<'a> for PgRange<T> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let Kind::Range(element) = ty.kind() else {
            return Err(format!("{} is not a range type", ty.name()).into());
        };
        let bound = |b: RangeBound<Option<&'a [u8]>>| -> Result<_, BoxError> {
            let (raw, kind) = match b {
                RangeBound::Unbounded => return Ok(None),
                RangeBound::Inclusive(raw) => (raw, RangeBoundKind::Inclusive),
                RangeBound::Exclusive(raw) => (raw, RangeBoundKind::Exclusive),
            };
            let raw = raw.ok_or("a range bound is NULL")?;
            Ok(Some((T::from_sql(element, raw)?, kind)))
        };
        match protocol::range_from_sql(raw)? {
            protocol::Range::Empty => Ok(Self((None, None))),
            protocol::Range::Nonempty(lower, upper) => Ok(Self((bound(lower)?, bound(upper)?))),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Range(element) if T::accepts(element))
    }
}

// ---------------------------------------------------------------------------------------------
// numeric
// ---------------------------------------------------------------------------------------------

/// A `numeric` value as the decimal text Postgres prints for it (`-12.50`, `NaN`, `Infinity`).
#[derive(Debug, Clone, PartialEq)]
pub struct PgNumeric(pub String);

// Sign word of the binary format.
const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
/// Largest display scale Postgres can store.
const NUMERIC_MAX_DSCALE: usize = 0x3FFF;
/// Digits per base-10000 "digit" of the binary format.
const DEC_DIGITS: usize = 4;

impl ToSql for PgNumeric {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        encode_numeric(&self.0, out)?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgNumeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        decode_numeric(raw).map(Self)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

#[derive(Debug)]
pub struct NumericError(String);

impl fmt::Display for NumericError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for NumericError {}

/// Encodes decimal text (`[+-]digits[.digits][e[+-]digits]`, or `NaN`/`[+-]Infinity`,
/// case-insensitive) in `numeric`'s binary format, keeping the text's scale as Postgres'
/// `numeric_in` does (`1.50` has scale 2).
pub fn encode_numeric(text: &str, out: &mut BytesMut) -> Result<(), NumericError> {
    let invalid = || NumericError(format!("invalid decimal `{text}`"));
    let trimmed = text.trim();
    let special = match trimmed.to_ascii_lowercase().as_str() {
        "nan" => Some(NUMERIC_NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => Some(NUMERIC_PINF),
        "-infinity" | "-inf" => Some(NUMERIC_NINF),
        _ => None,
    };
    if let Some(sign) = special {
        put_numeric_header(out, 0, 0, sign, 0);
        return Ok(());
    }

    let (negative, unsigned) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => {
            let exponent: i32 = unsigned[at + 1..].parse().map_err(|_| invalid())?;
            (&unsigned[..at], exponent)
        }
        None => (unsigned, 0),
    };
    let (int_text, frac_text) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_text.len() + frac_text.len() == 0 || !all_digits(int_text) || !all_digits(frac_text) {
        return Err(invalid());
    }
    // Postgres' own limits (131072 digits before the point, 16383 after) bound everything
    // below; checking the exponent first keeps absurd ones from allocating.
    if exponent.unsigned_abs() > 200_000 {
        return Err(NumericError(format!("decimal `{text}` is out of range")));
    }

    // Move the decimal point by the exponent: `digits` with the point after `point` of them.
    let digits: Vec<u8> = int_text
        .bytes()
        .chain(frac_text.bytes())
        .map(|b| b - b'0')
        .collect();
    let point = int_text.len() as i64 + i64::from(exponent);
    let (int_digits, frac_digits): (Vec<u8>, Vec<u8>) = if point <= 0 {
        let zeros = std::iter::repeat_n(0, point.unsigned_abs() as usize);
        (Vec::new(), zeros.chain(digits).collect())
    } else if point as usize >= digits.len() {
        let zeros = std::iter::repeat_n(0, point as usize - digits.len());
        (digits.into_iter().chain(zeros).collect(), Vec::new())
    } else {
        let (i, f) = digits.split_at(point as usize);
        (i.to_vec(), f.to_vec())
    };
    let dscale = frac_digits.len();
    if dscale > NUMERIC_MAX_DSCALE {
        return Err(NumericError(format!(
            "decimal `{text}` has more than {NUMERIC_MAX_DSCALE} digits after the point"
        )));
    }

    // Group into base-10000 digits aligned on the decimal point.
    let int_pad = (DEC_DIGITS - int_digits.len() % DEC_DIGITS) % DEC_DIGITS;
    let frac_pad = (DEC_DIGITS - frac_digits.len() % DEC_DIGITS) % DEC_DIGITS;
    let int_groups = (int_digits.len() + int_pad) / DEC_DIGITS;
    let padded: Vec<u8> = std::iter::repeat_n(0, int_pad)
        .chain(int_digits)
        .chain(frac_digits)
        .chain(std::iter::repeat_n(0, frac_pad))
        .collect();
    let mut groups: Vec<i16> = padded
        .chunks(DEC_DIGITS)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(*d)))
        .collect();
    let mut weight = int_groups as i64 - 1;
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= leading as i64;
    while groups.last() == Some(&0) {
        groups.pop();
    }

    if groups.is_empty() {
        // Zero has no digits and is never negative.
        put_numeric_header(out, 0, 0, NUMERIC_POS, dscale as u16);
        return Ok(());
    }
    let out_of_range = || NumericError(format!("decimal `{text}` is out of range"));
    let weight = i16::try_from(weight).map_err(|_| out_of_range())?;
    let ndigits = i16::try_from(groups.len()).map_err(|_| out_of_range())?;
    let sign = if negative { NUMERIC_NEG } else { NUMERIC_POS };
    put_numeric_header(out, ndigits, weight, sign, dscale as u16);
    for group in groups {
        out.put_i16(group);
    }
    Ok(())
}

fn put_numeric_header(out: &mut BytesMut, ndigits: i16, weight: i16, sign: u16, dscale: u16) {
    out.put_i16(ndigits);
    out.put_i16(weight);
    out.put_u16(sign);
    out.put_u16(dscale);
}

/// Decodes `numeric`'s binary format to the text Postgres would print.
pub fn decode_numeric(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<[u8; 2], BoxError> {
        raw.get(i..i + 2)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| "truncated numeric value".into())
    };
    let ndigits = usize::try_from(i16::from_be_bytes(word(0)?))?;
    let weight = i64::from(i16::from_be_bytes(word(2)?));
    let sign = u16::from_be_bytes(word(4)?);
    let dscale = usize::from(u16::from_be_bytes(word(6)?) & NUMERIC_MAX_DSCALE as u16);
    if raw.len() != 8 + 2 * ndigits {
        return Err("invalid numeric binary value length".into());
    }
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        NUMERIC_POS | NUMERIC_NEG => {}
        other => return Err(format!("invalid numeric sign {other:#x}").into()),
    }
    let mut groups = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let group = i16::from_be_bytes(word(8 + 2 * i)?);
        if !(0..10000).contains(&group) {
            return Err(format!("invalid numeric digit {group}").into());
        }
        groups.push(group);
    }
    // The base-10000 digit at `power` (10000^power), zero outside the stored ones.
    let group_at = |power: i64| -> i16 {
        usize::try_from(weight - power)
            .ok()
            .and_then(|i| groups.get(i).copied())
            .unwrap_or(0)
    };

    let mut text = String::new();
    if sign == NUMERIC_NEG {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        text.push_str(&group_at(weight).to_string());
        for power in (0..weight).rev() {
            text.push_str(&format!("{:04}", group_at(power)));
        }
    }
    if dscale > 0 {
        text.push('.');
        let mut frac = String::with_capacity(dscale + DEC_DIGITS);
        let mut power = -1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", group_at(power)));
            power -= 1;
        }
        frac.truncate(dscale);
        text.push_str(&frac);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let mut buf = BytesMut::new();
        encode_numeric(text, &mut buf).unwrap();
        decode_numeric(&buf).unwrap()
    }

    #[test]
    fn numeric_codec_keeps_digits_and_scale() {
        for (input, printed) in [
            ("0", "0"),
            ("-0", "0"),
            ("0.00", "0.00"),
            ("1", "1"),
            ("-1", "-1"),
            ("12.50", "12.50"),
            ("+7", "7"),
            ("10000", "10000"),
            ("9999.9999", "9999.9999"),
            ("0.0001", "0.0001"),
            ("0.00001", "0.00001"),
            ("-0.000000012345", "-0.000000012345"),
            (
                "123456789012345678901234567890.123456789012345678901234567890",
                "123456789012345678901234567890.123456789012345678901234567890",
            ),
            ("1.5e3", "1500"),
            ("1.50E-1", "0.150"),
            ("5e-3", "0.005"),
            ("00012.3400", "12.3400"),
            (".5", "0.5"),
            ("5.", "5"),
            ("NaN", "NaN"),
            ("infinity", "Infinity"),
            ("-Infinity", "-Infinity"),
        ] {
            assert_eq!(round_trip(input), printed, "{input}");
        }
    }

    #[test]
    fn numeric_binary_layout_matches_postgres() {
        // 12.5 with scale 2: two base-10000 digits (12, 5000), weight 0.
        let mut buf = BytesMut::new();
        encode_numeric("-12.50", &mut buf).unwrap();
        assert_eq!(
            buf.as_ref(),
            &[0, 2, 0, 0, 0x40, 0, 0, 2, 0, 12, 0x13, 0x88][..]
        );
    }

    #[test]
    fn numeric_rejects_garbage() {
        for bad in ["", "-", "1.2.3", "abc", "1e", "1e5x", "١٢", "0x10", "1 2"] {
            let mut buf = BytesMut::new();
            assert!(encode_numeric(bad, &mut buf).is_err(), "{bad:?}");
        }
        let mut buf = BytesMut::new();
        assert!(encode_numeric("1e999999", &mut buf).is_err());
        assert!(encode_numeric(&format!("0.{}", "1".repeat(16384)), &mut buf).is_err());
        assert!(
            decode_numeric(&[0, 1, 0, 0, 0, 0, 0, 0]).is_err(),
            "truncated"
        );
        assert!(
            decode_numeric(&[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10]).is_err(),
            "digit 10000"
        );
    }
}
