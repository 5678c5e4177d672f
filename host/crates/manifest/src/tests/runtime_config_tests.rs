use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Scratch, assert_err};
use crate::runtime_config::*;

const FILE: &str = "/srv/config/runtime-config.toml";
const CWD: &str = "/work/cwd";

fn parse(text: &str) -> anyhow::Result<RuntimeConfig> {
    RuntimeConfig::parse_with_cwd(text, Path::new(FILE), Path::new(CWD))
}

#[test]
fn every_supported_type_and_relative_path_rule() {
    let rc = parse(
        r#"
state_dir = ".state"
log_dir = ""
max_instance_memory = 10485760

[key_value_store.default]
type = "spin"
path = "data/kv.db"

[key_value_store.memory]
type = "spin"

[key_value_store.absolute]
type = "spin"
path = "/var/kv.db"

[key_value_store.cache]
type = "redis"
url = "redis://localhost:6379"

[sqlite_database.default]
type = "spin"
path = "db/app.db"
allow_attach_file = true

[sqlite_database.mem]
type = "spin"

[[variables_provider]]
type = "env"
prefix = "SHOP"
dotenv_path = "conf/.env"

[[variables_provider]]
type = "env"

[[variables_provider]]
type = "static"
values = { api_host = "api.internal", port = "8080" }

[[config_provider]]
type = "static"
values = { legacy = "yes" }

[outbound_http]
max_concurrent_requests = 16

[outbound_networking]
block_networks = ["private", "1.2.3.4/32", "fd00::/8", "9.9.9.9"]
"#,
    )
    .unwrap();
    assert_eq!(rc.source, Some(PathBuf::from(FILE)));
    assert_eq!(rc.state_dir.as_deref(), Some(".state"));
    assert_eq!(rc.log_dir.as_deref(), Some(""));
    assert_eq!(rc.max_instance_memory, Some(10 * 1024 * 1024));

    // Key-value paths: relative to the runtime-config file's directory.
    assert_eq!(
        rc.key_value_stores["default"],
        KeyValueStoreConfig::Spin {
            path: Some("/srv/config/data/kv.db".into())
        }
    );
    assert_eq!(
        rc.key_value_stores["memory"],
        KeyValueStoreConfig::Spin { path: None }
    );
    assert_eq!(
        rc.key_value_stores["absolute"],
        KeyValueStoreConfig::Spin {
            path: Some("/var/kv.db".into())
        }
    );
    assert_eq!(
        rc.key_value_stores["cache"],
        KeyValueStoreConfig::Redis {
            url: "redis://localhost:6379".into()
        }
    );

    // SQLite paths: relative to the current directory (Spin's rule), not the file.
    assert_eq!(
        rc.sqlite_databases["default"],
        SqliteDatabaseConfig::Spin {
            path: Some("/work/cwd/db/app.db".into()),
            allow_attach_file: true
        }
    );
    assert_eq!(
        rc.sqlite_databases["mem"],
        SqliteDatabaseConfig::Spin {
            path: None,
            allow_attach_file: false
        }
    );

    assert_eq!(
        rc.variables_providers,
        vec![
            VariablesProviderConfig::Env {
                prefix: "SHOP".into(),
                dotenv_path: Some("/work/cwd/conf/.env".into())
            },
            VariablesProviderConfig::Env {
                prefix: "SPIN_VARIABLE".into(),
                dotenv_path: None
            },
            VariablesProviderConfig::Static {
                values: BTreeMap::from([
                    ("api_host".into(), "api.internal".into()),
                    ("port".into(), "8080".into())
                ])
            },
            VariablesProviderConfig::Static {
                values: BTreeMap::from([("legacy".into(), "yes".into())])
            },
        ]
    );
    // Spin quirk: the table exists without `connection_pooling` → pooling is off.
    assert_eq!(
        rc.outbound_http,
        OutboundHttpConfig {
            connection_pooling: false,
            max_concurrent_requests: Some(16)
        }
    );
    assert_eq!(
        rc.block_networks,
        ["private", "1.2.3.4/32", "fd00::/8", "9.9.9.9"]
    );
}

#[test]
fn defaults_when_tables_are_absent() {
    let rc = parse("").unwrap();
    assert_eq!(
        rc.outbound_http,
        OutboundHttpConfig {
            connection_pooling: true,
            max_concurrent_requests: None
        }
    );
    assert!(
        rc.key_value_stores.is_empty()
            && rc.sqlite_databases.is_empty()
            && rc.variables_providers.is_empty()
    );
    assert_eq!(rc.state_dir, None);
    let rc = parse("[outbound_http]\nconnection_pooling = true").unwrap();
    assert!(rc.outbound_http.connection_pooling);
}

#[test]
fn relative_config_file_path_resolves_against_the_process_cwd() {
    let rc = RuntimeConfig::parse_str(
        "[key_value_store.x]\ntype = \"spin\"\npath = \"kv.db\"",
        Path::new("conf/rc.toml"),
    )
    .unwrap();
    let expected = std::env::current_dir().unwrap().join("conf/kv.db");
    assert_eq!(
        rc.key_value_stores["x"],
        KeyValueStoreConfig::Spin {
            path: Some(expected)
        }
    );
}

#[test]
fn error_paths() {
    let cases: &[(&str, &[&str])] = &[
        (
            "stat_dir = \"x\"",
            &["unknown key `stat_dir` in the top level"],
        ),
        (
            "[key_value_store.x]\ntype = \"spin\"\nurl = \"redis://x\"",
            &["unknown key `url` in [key_value_store.x]"],
        ),
        (
            "[key_value_store.x]\ntype = \"redis\"",
            &["missing required key `url` in [key_value_store.x]"],
        ),
        (
            "[key_value_store.x]\ntype = \"redis\"\nurl = \"redis://h\"\npath = \"p\"",
            &["unknown key `path` in [key_value_store.x]"],
        ),
        (
            "[key_value_store.x]\npath = \"p\"",
            &["missing required key `type` in [key_value_store.x]"],
        ),
        (
            "[key_value_store.x]\ntype = \"azure_cosmos\"\naccount = \"a\"",
            &[
                "[key_value_store.x]",
                "\"azure_cosmos\" is valid in Spin but not supported by bazaar",
            ],
        ),
        (
            "[key_value_store.x]\ntype = \"aws_dynamo\"\nregion = \"r\"",
            &["\"aws_dynamo\"", "not supported by bazaar"],
        ),
        (
            "[key_value_store.x]\ntype = \"memcached\"",
            &["unknown key-value store type \"memcached\""],
        ),
        (
            "key_value_store = { x = 1 }",
            &["[key_value_store.x] must be a table"],
        ),
        (
            "[sqlite_database.x]\ntype = \"libsql\"\nurl = \"https://x\"",
            &[
                "[sqlite_database.x]",
                "\"libsql\"",
                "not supported by bazaar",
            ],
        ),
        (
            "[sqlite_database.x]\ntype = \"spin\"\nattach = true",
            &["unknown key `attach` in [sqlite_database.x]"],
        ),
        (
            "[sqlite_database.x]\ntype = \"spin\"\nallow_attach_file = \"yes\"",
            &["`allow_attach_file` in [sqlite_database.x] must be a boolean"],
        ),
        (
            "[sqlite_database.x]\ntype = \"postgres\"",
            &["unknown SQLite database type \"postgres\""],
        ),
        (
            "[[variables_provider]]\ntype = \"vault\"\nurl = \"u\"",
            &[
                "[[variables_provider]] #1",
                "\"vault\"",
                "not supported by bazaar",
            ],
        ),
        (
            "[[config_provider]]\ntype = \"azure_key_vault\"",
            &[
                "[[config_provider]] #1",
                "\"azure_key_vault\"",
                "not supported",
            ],
        ),
        (
            "[[variables_provider]]\ntype = \"env\"\nprefixx = \"A\"",
            &["unknown key `prefixx` in [[variables_provider]] #1"],
        ),
        (
            "[[variables_provider]]\ntype = \"static\"\nvalues = { a = 1 }",
            &["`values.a` in [[variables_provider]] #1 must be a string"],
        ),
        (
            "[[variables_provider]]\ntype = \"consul\"",
            &["unknown variables provider type \"consul\""],
        ),
        (
            "variables_provider = [1]",
            &["[[variables_provider]] #1 must be a table"],
        ),
        (
            "[outbound_http]\npooling = true",
            &["unknown key `pooling` in [outbound_http]"],
        ),
        (
            "[outbound_http]\nmax_concurrent_requests = -1",
            &["must not be negative"],
        ),
        (
            "[outbound_networking]\nblock_networks = [\"10.0.0.0/33\"]",
            &["`10.0.0.0/33` is neither"],
        ),
        (
            "[outbound_networking]\nblock_networks = [\"corp\"]",
            &["`corp` is neither"],
        ),
        (
            "[outbound_networking]\nallow = []",
            &["unknown key `allow` in [outbound_networking]"],
        ),
        (
            "[llm_compute]\ntype = \"spin\"",
            &["`llm_compute`", "not supported by bazaar"],
        ),
        (
            "[[client_tls]]\nhosts = [\"x\"]",
            &["`client_tls`", "not supported by bazaar"],
        ),
        (
            "max_instance_memory = \"1GB\"",
            &["`max_instance_memory` in the top level must be an integer"],
        ),
        (
            "[key_value_store.x\ntype = \"spin\"",
            &["invalid TOML at line 1"],
        ),
    ];
    for (text, fragments) in cases {
        let e = assert_err(parse(text), fragments);
        assert!(
            e.starts_with(&format!("{FILE}: ")),
            "error does not name the file: {e}"
        );
    }
}

#[test]
fn load_reads_the_file_and_reports_missing_ones() {
    let s = Scratch::new();
    let p = s.write(
        "rc.toml",
        "[key_value_store.x]\ntype = \"spin\"\npath = \"kv.db\"",
    );
    let rc = RuntimeConfig::load(&p).unwrap();
    let dir = std::path::absolute(s.path()).unwrap();
    assert_eq!(
        rc.key_value_stores["x"],
        KeyValueStoreConfig::Spin {
            path: Some(dir.join("kv.db"))
        }
    );
    assert_eq!(rc.source, Some(dir.join("rc.toml")));
    assert_err(
        RuntimeConfig::load(&s.path().join("missing.toml")),
        &["missing.toml: cannot read runtime config"],
    );
}
