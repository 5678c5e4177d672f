use std::collections::BTreeMap;
use std::path::Path;

use super::{Scratch, assert_err};
use crate::runtime_config::VariablesProviderConfig;
use crate::variables::*;
use crate::{Manifest, VariableDecl};

fn decl_default(v: &str) -> VariableDecl {
    VariableDecl {
        default: Some(v.into()),
        ..Default::default()
    }
}

fn decl_required() -> VariableDecl {
    VariableDecl {
        required: true,
        ..Default::default()
    }
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'static {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Each variable `vN` is provided by layers N..=6; the winner must be layer N every time:
/// 0 = CLI, 1 = first configured provider (env `APP`, process env), 2 = its dotenv file,
/// 3 = second configured provider (static), 4 = default env provider (`SPIN_VARIABLE_*`),
/// 5 = `.env` in the cwd, 6 = manifest default.
#[test]
fn each_layer_beats_the_next() {
    let s = Scratch::new();
    let names = ["v0", "v1", "v2", "v3", "v4", "v5", "v6"];
    let from = |layer: usize, name: &str| format!("{name}-from-layer{layer}");
    let provides = |layer: usize| {
        names
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i <= layer)
            .map(|(_, n)| *n)
    };

    let app_dotenv: String = provides(2)
        .map(|n| format!("APP_{}={}\n", n.to_uppercase(), from(2, n)))
        .collect();
    s.write("conf/app.env", &app_dotenv);
    let cwd_dotenv: String = provides(5)
        .map(|n| format!("SPIN_VARIABLE_{}={}\n", n.to_uppercase(), from(5, n)))
        .collect();
    s.write(".env", &cwd_dotenv);

    let mut env = BTreeMap::new();
    for n in provides(1) {
        env.insert(format!("APP_{}", n.to_uppercase()), from(1, n));
    }
    for n in provides(4) {
        env.insert(format!("SPIN_VARIABLE_{}", n.to_uppercase()), from(4, n));
    }
    let cli: BTreeMap<String, String> = provides(0).map(|n| (n.to_string(), from(0, n))).collect();
    let static_values: BTreeMap<String, String> =
        provides(3).map(|n| (n.to_string(), from(3, n))).collect();
    let decls: BTreeMap<String, VariableDecl> = names
        .iter()
        .map(|n| (n.to_string(), decl_default(&from(6, n))))
        .collect();

    let providers = vec![
        VariablesProviderConfig::Env {
            prefix: "APP".into(),
            dotenv_path: Some("conf/app.env".into()),
        },
        VariablesProviderConfig::Static {
            values: static_values,
        },
    ];
    let resolved = VariableResolver::new()
        .cli_values(cli)
        .providers(&providers)
        .env_lookup(move |k| env.get(k).cloned())
        .cwd(s.path())
        .resolve(&decls)
        .unwrap();
    for (layer, name) in names.iter().enumerate() {
        assert_eq!(
            resolved.get(name),
            Some(from(layer, name).as_str()),
            "variable {name}"
        );
    }
}

#[test]
fn required_without_value_names_the_variable() {
    let s = Scratch::new();
    let decls = BTreeMap::from([
        ("payment_api_key".to_string(), decl_required()),
        ("a".to_string(), decl_default("x")),
    ]);
    let r = VariableResolver::new()
        .env_lookup(env_of(&[]))
        .cwd(s.path())
        .resolve(&decls);
    let e = assert_err(r, &[]);
    assert_eq!(
        e,
        "variable `payment_api_key` is required but no value was provided (set SPIN_VARIABLE_PAYMENT_API_KEY or --variable payment_api_key=...)"
    );
    // Provided through the default env provider: fine.
    let r = VariableResolver::new()
        .env_lookup(env_of(&[("SPIN_VARIABLE_PAYMENT_API_KEY", "k")]))
        .cwd(s.path())
        .resolve(&decls)
        .unwrap();
    assert_eq!(r.get("payment_api_key"), Some("k"));
    assert_eq!(r.get("a"), Some("x"));
}

#[test]
fn undeclared_cli_variable_is_an_error() {
    let s = Scratch::new();
    let decls = BTreeMap::from([("a".to_string(), decl_default("x"))]);
    let r = VariableResolver::new()
        .cli_values(map(&[("typo", "1")]))
        .env_lookup(env_of(&[]))
        .cwd(s.path())
        .resolve(&decls);
    assert_err(r, &["--variable `typo`", "declares no such variable"]);
}

#[test]
fn static_provider_values_for_unknown_names_are_ignored() {
    let s = Scratch::new();
    let decls = BTreeMap::from([("a".to_string(), decl_default("x"))]);
    let providers = [VariablesProviderConfig::Static {
        values: map(&[("other", "1"), ("a", "static")]),
    }];
    let r = VariableResolver::new()
        .providers(&providers)
        .env_lookup(env_of(&[]))
        .cwd(s.path())
        .resolve(&decls)
        .unwrap();
    assert_eq!(r.values, map(&[("a", "static")]));
}

#[test]
fn secrets_are_redacted_in_debug() {
    let s = Scratch::new();
    let decls = BTreeMap::from([
        (
            "api_key".to_string(),
            VariableDecl {
                required: true,
                secret: true,
                ..Default::default()
            },
        ),
        ("host".to_string(), decl_default("example.com")),
    ]);
    let r = VariableResolver::new()
        .env_lookup(env_of(&[("SPIN_VARIABLE_API_KEY", "hunter2")]))
        .cwd(s.path())
        .resolve(&decls)
        .unwrap();
    assert_eq!(r.get("api_key"), Some("hunter2"));
    assert!(r.is_secret("api_key") && !r.is_secret("host"));
    let dbg = format!("{r:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(
        dbg.contains("<redacted>") && dbg.contains("example.com"),
        "{dbg}"
    );
}

#[test]
fn dotenv_files() {
    let s = Scratch::new();
    let decls = BTreeMap::from([
        ("a".to_string(), decl_required()),
        ("b".to_string(), decl_required()),
    ]);
    s.write(
        ".env",
        "# comment\nSPIN_VARIABLE_A=\"quoted value\"\nSPIN_VARIABLE_B=plain\n",
    );
    let r = VariableResolver::new()
        .env_lookup(env_of(&[("SPIN_VARIABLE_B", "from-env")]))
        .cwd(s.path())
        .resolve(&decls)
        .unwrap();
    assert_eq!(r.values, map(&[("a", "quoted value"), ("b", "from-env")]));

    // A configured provider's dotenv_path (relative to the cwd); a missing one is just empty.
    s.write("custom.env", "X_A=custom\n");
    let providers = [
        VariablesProviderConfig::Env {
            prefix: "Y".into(),
            dotenv_path: Some("does-not-exist.env".into()),
        },
        VariablesProviderConfig::Env {
            prefix: "X".into(),
            dotenv_path: Some("custom.env".into()),
        },
    ];
    let r = VariableResolver::new()
        .providers(&providers)
        .env_lookup(env_of(&[]))
        .cwd(s.path())
        .resolve(&decls)
        .unwrap();
    assert_eq!(r.values, map(&[("a", "custom"), ("b", "plain")]));

    // A malformed dotenv file is a one-line error naming it.
    s.write(".env", "SPIN_VARIABLE_A='unterminated\n");
    let r = VariableResolver::new()
        .env_lookup(env_of(&[]))
        .cwd(s.path())
        .resolve(&decls);
    assert_err(r, &["dotenv file", ".env"]);
}

#[test]
fn component_variables_are_rendered_from_templates() {
    let m = Manifest::parse_str(
        r#"
spin_manifest_version = 2
[application]
name = "x"
[variables]
api_host = { default = "api.example.com" }
token = { required = true, secret = true }
unused = { default = "u" }
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "web.wasm"
[component.web.variables]
url = "https://{{ api_host }}/v1"
auth = "Bearer {{token}}"
plain = "literal"
"#,
        Path::new("spin.toml"),
    )
    .unwrap();
    let s = Scratch::new();
    let resolved = VariableResolver::new()
        .cli_values(map(&[("token", "t0k3n")]))
        .env_lookup(env_of(&[]))
        .cwd(s.path())
        .resolve(&m.variables)
        .unwrap();
    let web = component_variables(&resolved, m.component("web").unwrap()).unwrap();
    // Only the component's own names; `unused`/`api_host` are not readable by the guest.
    assert_eq!(
        web.values,
        map(&[
            ("auth", "Bearer t0k3n"),
            ("plain", "literal"),
            ("url", "https://api.example.com/v1")
        ])
    );
    assert!(web.is_secret("auth") && !web.is_secret("url"));
    assert!(!format!("{web:?}").contains("t0k3n"));

    // Rendering against values that lack a variable fails clearly instead of yielding "".
    let empty = ResolvedVariables::default();
    assert_err(
        component_variables(&empty, m.component("web").unwrap()),
        &["component `web` variable", "has no value"],
    );
}

#[test]
fn cli_variable_syntax() {
    let s = Scratch::new();
    s.write("secret.txt", "s3cret");
    s.write("vars.json", r#"{ "a": "1", "b": "two" }"#);
    s.write("vars.toml", "c = \"3\"\n");
    s.write("bad.json", r#"{ "a": 1 }"#);
    let cwd = s.path();
    assert_eq!(
        parse_cli_variable("a=b=c", cwd).unwrap(),
        [("a".to_string(), "b=c".to_string())]
    );
    assert_eq!(
        parse_cli_variable("key=@secret.txt", cwd).unwrap(),
        [("key".to_string(), "s3cret".to_string())]
    );
    assert_eq!(
        parse_cli_variable("@vars.json", cwd).unwrap(),
        [
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "two".to_string())
        ]
    );
    assert_eq!(
        parse_cli_variable("@vars.toml", cwd).unwrap(),
        [("c".to_string(), "3".to_string())]
    );
    assert_err(
        parse_cli_variable("novalue", cwd),
        &["must look like name=value"],
    );
    assert_err(parse_cli_variable("Bad=1", cwd), &["invalid name"]);
    assert_err(
        parse_cli_variable("@bad.json", cwd),
        &["value of `a` must be a string"],
    );
    assert_err(parse_cli_variable("@vars.yaml", cwd), &[".json or .toml"]);
    assert_err(parse_cli_variable("k=@missing.txt", cwd), &["cannot read"]);
    let all = parse_cli_variables(&["a=1", "@vars.toml", "a=2"], cwd).unwrap();
    assert_eq!(all, map(&[("a", "2"), ("c", "3")]));
}

/// The fallback layer (the runner's generated secrets) sits below every real source and above
/// the manifest default; `provided` reports only real sources.
#[test]
fn fallback_values_fill_only_what_nobody_provides() {
    let s = Scratch::new();
    let decls: BTreeMap<String, VariableDecl> = [
        ("from_env".to_string(), decl_required()),
        ("generated".to_string(), decl_required()),
        ("defaulted".to_string(), decl_default("manifest")),
    ]
    .into_iter()
    .collect();
    let resolver = VariableResolver::new()
        .cwd(s.path())
        .env_lookup(env_of(&[("SPIN_VARIABLE_FROM_ENV", "env")]))
        .fallback_values(map(&[
            ("from_env", "fallback"),
            ("generated", "fallback"),
            ("defaulted", "fallback"),
        ]));
    assert_eq!(
        resolver.provided("from_env").unwrap().as_deref(),
        Some("env")
    );
    assert_eq!(resolver.provided("generated").unwrap(), None);
    let resolved = resolver.resolve(&decls).unwrap();
    assert_eq!(resolved.get("from_env"), Some("env"));
    assert_eq!(resolved.get("generated"), Some("fallback"));
    assert_eq!(resolved.get("defaulted"), Some("fallback"));
}
